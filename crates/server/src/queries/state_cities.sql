-- /api/drill?state=: the top 10 customer cities of state $3 by orders in ($1, $2].
SELECT customer_city AS city, COUNT(*) AS totalOrders
FROM orders
WHERE time_ms > $1 AND time_ms <= $2 AND customer_state = $3
GROUP BY customer_city
ORDER BY totalOrders DESC, city
LIMIT 10
