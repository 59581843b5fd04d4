-- /orders/couponslastminute: uses of each code in ($1, $2] (coupon grain).
SELECT coupon_codes.name AS coupon_code, COUNT(*) AS times_used
FROM orders
WHERE time_ms > $1 AND time_ms <= $2
GROUP BY coupon_codes.name
ORDER BY times_used DESC, coupon_code
LIMIT 1000
