-- /orders/ordersperminute and /api/range: orders per {UNIT} in ($1, $2], newest first
-- ({UNIT} is MINUTE or HOUR, set by the server, never by the caller).
SELECT
  DATETRUNC('{UNIT}', time_ms, 'MILLISECONDS')                                            AS bucket_start,
  ToDateTime(DATETRUNC('{UNIT}', time_ms, 'MILLISECONDS'), 'yyyy-MM-dd HH:mm:ss', 'America/New_York') AS bucket,
  COUNT(*)                                              AS orders,
  SUM(order_total)                                      AS revenue,
  COUNT(*) FILTER (WHERE fraud_flag = true)             AS fraud,
  COUNT(*) FILTER (WHERE delivered = 'yes')             AS delivered,
  COUNT(*) FILTER (WHERE refunded = 'yes')              AS refunded
FROM orders
WHERE time_ms > $1 AND time_ms <= $2
GROUP BY DATETRUNC('{UNIT}', time_ms, 'MILLISECONDS')
ORDER BY DATETRUNC('{UNIT}', time_ms, 'MILLISECONDS') DESC
LIMIT 1000
