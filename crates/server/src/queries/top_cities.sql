-- /orders/toplocations, cities: top 5 customer cities by orders in ($1, $2].
SELECT customer_city AS city, COUNT(*) AS totalOrders
FROM orders
WHERE time_ms > $1 AND time_ms <= $2
GROUP BY customer_city
ORDER BY totalOrders DESC, city
LIMIT 5
