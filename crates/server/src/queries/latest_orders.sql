-- /orders/latestorders: the 10 newest orders with time_ms > $1.
SELECT order_id,
       ToDateTime(time_ms, 'yyyy-MM-dd HH:mm:ss', 'America/New_York') AS ts,
       order_total, customer_id, productsOrdered, totalQuantity
FROM orders
WHERE time_ms > $1
ORDER BY time_ms DESC, order_id
LIMIT 10
