-- /orders/popular, categories: top 5 categories by quantity in ($1, $2] (item grain).
SELECT line_items.product.category AS category,
       COUNT(DISTINCT order_id)     AS orders,
       SUM(line_items.quantity)     AS quantity
FROM orders
WHERE time_ms > $1 AND time_ms <= $2
GROUP BY line_items.product.category
ORDER BY quantity DESC, category
LIMIT 5
