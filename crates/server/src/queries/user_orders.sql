-- /users/{customerId}/orders: one customer's orders, newest first ($1 is bound, never spliced; with --olap it is sent as a quoted literal, quotes doubled).
SELECT order_id, order_total,
       ToDateTime(time_ms, 'yyyy-MM-dd HH:mm:ss', 'America/New_York') AS ts
FROM orders
WHERE customer_id = $1
ORDER BY time_ms DESC, order_id
LIMIT 1000
