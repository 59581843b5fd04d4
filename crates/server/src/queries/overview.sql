-- /orders/overview2: the current window [$2, $3) and the one before [$1, $2), on the same
-- second-aligned bounds as the rolling windows, each order once.
SELECT
  COUNT(*)                                                     FILTER (WHERE time_ms >= $2) AS orders_now,
  COALESCE(SUM(order_total)                                    FILTER (WHERE time_ms >= $2), 0) AS revenue_now,
  COUNT(*) FILTER (WHERE fraud_flag = true AND time_ms >= $2)  AS fraud_now,
  COUNT(*) FILTER (WHERE delivered = 'yes' AND time_ms >= $2)  AS delivered_now,
  COUNT(*) FILTER (WHERE refunded = 'yes' AND time_ms >= $2)   AS refunded_now,
  COUNT(*)                                                     FILTER (WHERE time_ms < $2) AS orders_before,
  COALESCE(SUM(order_total)                                    FILTER (WHERE time_ms < $2), 0) AS revenue_before,
  COUNT(*) FILTER (WHERE fraud_flag = true AND time_ms < $2)   AS fraud_before,
  COUNT(*) FILTER (WHERE delivered = 'yes' AND time_ms < $2)   AS delivered_before,
  COUNT(*) FILTER (WHERE refunded = 'yes' AND time_ms < $2)    AS refunded_before
FROM orders
WHERE time_ms >= $1 AND time_ms < $3
