-- /orders/ordersperminute: per minute of the last hour ($1, $2], newest first.
SELECT
  ToDateTime(DATETRUNC('MINUTE', time_ms, 'MILLISECONDS'), 'yyyy-MM-dd HH:mm:ss', 'America/New_York') AS minute,
  COUNT(*)                                              AS orders,
  SUM(order_total)                                      AS revenue,
  COUNT(*) FILTER (WHERE fraud_flag = true)             AS fraud,
  COUNT(*) FILTER (WHERE delivered = 'yes')             AS delivered,
  COUNT(*) FILTER (WHERE refunded = 'yes')              AS refunded
FROM orders
WHERE time_ms > $1 AND time_ms <= $2
GROUP BY DATETRUNC('MINUTE', time_ms, 'MILLISECONDS')
ORDER BY DATETRUNC('MINUTE', time_ms, 'MILLISECONDS') DESC
LIMIT 60
