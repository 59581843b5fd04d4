-- /orders/toplocations, states: top 5 customer states by orders in ($1, $2].
SELECT customer_state AS state, COUNT(*) AS totalOrders
FROM orders
WHERE time_ms > $1 AND time_ms <= $2
GROUP BY customer_state
ORDER BY totalOrders DESC, state
LIMIT 5
