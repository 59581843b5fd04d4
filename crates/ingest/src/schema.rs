//! The columns of table `orders` (SPEC section 4): one row per order.
//!
//! Scalar top-level fields keep their names; nested objects are flattened (`customer_*`,
//! `billing_address_*`, `shipping_address_*`); line items, coupons and the status history become
//! list columns (Pinot's multi-value columns). The item and coupon grains of SPEC 4 are not
//! stored as extra rows: the SQL layer unnests these lists when a query names a
//! `line_items.*` or `coupon_codes.name` column (see [`ITEM_GRAIN`], [`COUPON_GRAIN`]).

use std::sync::{Arc, OnceLock};

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};

pub const ORDER_ID: &str = "order_id";
pub const TIME_MS: &str = "time_ms";

/// Lookup indexes written beside each segment (key column, carried columns): one customer's
/// orders (`/users/{id}/orders`, `WHERE customer_id = ...` selecting these columns) are read
/// from a few KB per segment instead of a scan. About 43 bytes per order on disk (BENCHMARKS.md, 1 M orders).
pub const LOOKUPS: [(&str, &[&str]); 1] = [("customer_id", &[TIME_MS, ORDER_ID, "order_total"])];

/// Item-grain columns of SPEC 4 and the list column each one unnests.
pub const ITEM_GRAIN: [(&str, &str); 7] = [
    ("line_items.product.name", "itemNames"),
    ("line_items.product.category", "itemCategories"),
    ("line_items.product.product_id", "itemProductIds"),
    ("line_items.product.price", "itemPrices"),
    ("line_items.product.stock", "itemStocks"),
    ("line_items.quantity", "itemQtys"),
    ("line_items.free_qty", "itemFreeQtys"),
];

/// The coupon-grain column of SPEC 4 and the list column it unnests.
pub const COUPON_GRAIN: (&str, &str) = ("coupon_codes.name", "coupon");

/// Leaf columns whose values are (nearly) unique per order, or per customer with customers
/// rarely repeating inside one row group: segments store them without a Parquet dictionary,
/// which would cost time to build and be abandoned at its size limit anyway (BENCHMARKS.md).
pub const PLAIN_COLUMNS: [&str; 14] = [
    ORDER_ID,
    "timestamp",
    "customer_id",
    "customer_name",
    "customer_email",
    "customer_phone",
    "customer_address",
    "billing_address_street",
    "shipping_address_street",
    "subscription_id",
    "tracking_number",
    "payment_info",
    "status_id.list.item",
    "status_timestamp.list.item",
];

fn list(name: &str, item: DataType) -> Field {
    Field::new(
        name,
        DataType::List(Arc::new(Field::new("item", item, true))),
        true,
    )
}

/// The schema of table `orders`.
pub fn order_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let utf8 = |n: &str| Field::new(n, DataType::Utf8, true);
            let f64 = |n: &str| Field::new(n, DataType::Float64, true);
            let i32 = |n: &str| Field::new(n, DataType::Int32, true);
            let fields = vec![
                Field::new(ORDER_ID, DataType::Utf8, false),
                Field::new(TIME_MS, DataType::Int64, false),
                utf8("timestamp"),
                utf8("customer_id"),
                utf8("customer_name"),
                utf8("customer_email"),
                utf8("customer_phone"),
                utf8("customer_address"),
                utf8("customer_city"),
                utf8("customer_state"),
                utf8("customer_zipcode"),
                utf8("billing_address_street"),
                utf8("billing_address_city"),
                utf8("billing_address_state"),
                utf8("billing_address_zipcode"),
                utf8("shipping_address_street"),
                utf8("shipping_address_city"),
                utf8("shipping_address_state"),
                utf8("shipping_address_zipcode"),
                f64("subtotal_before_promos"),
                f64("subtotal_after_coupon"),
                f64("shipping_cost"),
                f64("env_fee"),
                f64("tax_rate"),
                f64("tax_amount"),
                f64("order_total"),
                f64("partial_refund_amount"),
                f64("exchange_rate"),
                utf8("currency"),
                utf8("payment_info"),
                utf8("payment_method"),
                utf8("payment_status"),
                utf8("pet_name"),
                utf8("shipping_status"),
                utf8("delivered"),
                utf8("refunded"),
                utf8("expected_delivery_date"),
                utf8("delivery_date"),
                Field::new("fraud_flag", DataType::Boolean, true),
                i32("risk_score"),
                utf8("fulfillment_center"),
                utf8("shipping_speed"),
                utf8("loyalty_tier"),
                i32("loyalty_points_used"),
                utf8("subscription_id"),
                utf8("subscription_frequency"),
                utf8("tracking_number"),
                utf8("shipping_provider"),
                i32("productsOrdered"),
                i32("totalQuantity"),
                list("itemNames", DataType::Utf8),
                list("itemCategories", DataType::Utf8),
                list("itemQtys", DataType::Int32),
                list("itemProductIds", DataType::Utf8),
                list("itemPrices", DataType::Float64),
                list("itemStocks", DataType::Int32),
                list("itemFreeQtys", DataType::Int32),
                list("coupon", DataType::Utf8),
                list("status", DataType::Utf8),
                list("status_id", DataType::Utf8),
                list("status_timestamp", DataType::Utf8),
            ];
            Arc::new(Schema::new(fields))
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::parquet::arrow::ArrowSchemaConverter;

    #[test]
    fn every_plain_column_is_a_leaf_of_the_parquet_schema() {
        // The Parquet writer ignores settings for paths it does not have: a renamed column
        // would silently get its dictionary back.
        let parquet = ArrowSchemaConverter::new()
            .convert(&order_schema())
            .expect("convert");
        let leaves: Vec<String> = parquet
            .columns()
            .iter()
            .map(|c| c.path().string())
            .collect();
        for name in PLAIN_COLUMNS {
            assert!(
                leaves.iter().any(|l| l == name),
                "{name} is not in {leaves:?}"
            );
        }
    }
}
