-- /users/: the 50 most recently active customers with orders after $1.
SELECT customer_id,
       ToDateTime(MAX(time_ms), 'yyyy-MM-dd HH:mm:ss', 'America/New_York') AS ts
FROM orders
WHERE time_ms > $1
GROUP BY customer_id
ORDER BY MAX(time_ms) DESC, customer_id
LIMIT 50
