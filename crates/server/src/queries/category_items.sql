-- /api/drill?category=: the top 10 products of category $3 by quantity in ($1, $2] (item grain).
SELECT line_items.product.name AS itemName,
       COUNT(DISTINCT order_id) AS orders,
       SUM(line_items.quantity)  AS quantity
FROM orders
WHERE time_ms > $1 AND time_ms <= $2 AND line_items.product.category = $3
GROUP BY line_items.product.name
ORDER BY quantity DESC, itemName
LIMIT 10
