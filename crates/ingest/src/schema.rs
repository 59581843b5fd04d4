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
pub const PLAIN_COLUMNS: [&str; 17] = [
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
    "__shipment_id.list.item",
    "__shipment_timestamp.list.item",
    "__shipment_tracking_number.list.item",
];

/// Stored columns whose names start with this are not columns of SQL's `orders`: they hold
/// what the JSON columns need beyond the other columns.
pub const HIDDEN_PREFIX: &str = "__";
/// `line_items[*].product.out_of_stock`.
pub const ITEM_OUT_OF_STOCK: &str = "__item_out_of_stock";
/// `shipments[*].shipment_id`, `.shipment_status`, `.shipment_timestamp`, `.tracking_number`.
pub const SHIPMENT_ID: &str = "__shipment_id";
pub const SHIPMENT_STATUS: &str = "__shipment_status";
pub const SHIPMENT_TIMESTAMP: &str = "__shipment_timestamp";
pub const SHIPMENT_TRACKING_NUMBER: &str = "__shipment_tracking_number";
/// How many line items each shipment holds: shipment k holds the next `n` of `line_items`, in
/// order (how orders are shipped, SPEC 1). NULL when the order's shipments are not such a split;
/// then [`SHIPMENTS_TEXT`] keeps them as text.
pub const SHIPMENT_ITEMS: &str = "__shipment_items";
/// The order's `shipments` as JSON text, only when they cannot be rebuilt from the columns.
pub const SHIPMENTS_TEXT: &str = "__shipments_text";

/// Pinot's JSON columns of the original schema (the order's nested objects and arrays), with
/// the stored columns each is rebuilt from. SQL sees them as text columns; they cost no disk:
/// only what the other columns do not hold is stored (the hidden columns above).
pub const JSON_COLUMNS: [(&str, &[&str]); 7] = [
    (
        "customer",
        &[
            "customer_address",
            "customer_city",
            "customer_id",
            "customer_email",
            "customer_name",
            "customer_phone",
            "customer_state",
            "customer_zipcode",
        ],
    ),
    (
        "billing_address",
        &[
            "billing_address_city",
            "billing_address_state",
            "billing_address_street",
            "billing_address_zipcode",
        ],
    ),
    (
        "shipping_address",
        &[
            "shipping_address_city",
            "shipping_address_state",
            "shipping_address_street",
            "shipping_address_zipcode",
        ],
    ),
    ("coupon_codes", &["coupon"]),
    (
        "status_history",
        &["status", "status_id", "status_timestamp"],
    ),
    ("line_items", &LINE_ITEM_COLUMNS),
    ("shipments", &SHIPMENT_COLUMNS),
];

/// A line item's leaves in the key order of its JSON: `free_qty`, then the product's
/// `category`, `name`, `out_of_stock`, `price`, `product_id`, `stock`, then `quantity`.
pub const LINE_ITEM_COLUMNS: [&str; 8] = [
    "itemFreeQtys",
    "itemCategories",
    "itemNames",
    ITEM_OUT_OF_STOCK,
    "itemPrices",
    "itemProductIds",
    "itemStocks",
    "itemQtys",
];

/// A shipment's columns: its line items (see [`LINE_ITEM_COLUMNS`]), then how many each
/// shipment holds, its keys in JSON order, and the text kept when it is not a split.
pub const SHIPMENT_COLUMNS: [&str; 14] = concat(
    LINE_ITEM_COLUMNS,
    [
        SHIPMENT_ITEMS,
        SHIPMENT_ID,
        SHIPMENT_STATUS,
        SHIPMENT_TIMESTAMP,
        SHIPMENT_TRACKING_NUMBER,
        SHIPMENTS_TEXT,
    ],
);

/// `a` then `b` (`C` = `A` + `B`, checked when the constant is evaluated).
const fn concat<const A: usize, const B: usize, const C: usize>(
    a: [&'static str; A],
    b: [&'static str; B],
) -> [&'static str; C] {
    assert!(A + B == C);
    let mut out = [""; C];
    let mut i = 0;
    while i < A {
        out[i] = a[i];
        i += 1;
    }
    while i < C {
        out[i] = b[i - A];
        i += 1;
    }
    out
}

/// Field metadata naming a column's Pinot type where the Arrow type does not say it (`JSON`).
pub const PINOT_TYPE: &str = "pinot_type";

/// The columns of SQL's `orders`: the stored ones but the hidden, then the JSON columns (text).
pub fn query_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let stored = order_schema();
            let mut fields: Vec<Field> = stored
                .fields()
                .iter()
                .filter(|f| !f.name().starts_with(HIDDEN_PREFIX))
                .map(|f| f.as_ref().clone())
                .collect();
            fields.extend(JSON_COLUMNS.iter().map(|(name, _)| {
                Field::new(*name, DataType::Utf8, true).with_metadata(
                    [(PINOT_TYPE.to_string(), "JSON".to_string())]
                        .into_iter()
                        .collect(),
                )
            }));
            Arc::new(Schema::new(fields))
        })
        .clone()
}

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
                // Stored only to rebuild the JSON columns (see [`JSON_COLUMNS`]); not in SQL.
                list(ITEM_OUT_OF_STOCK, DataType::Boolean),
                list(SHIPMENT_ID, DataType::Utf8),
                list(SHIPMENT_STATUS, DataType::Utf8),
                list(SHIPMENT_TIMESTAMP, DataType::Utf8),
                list(SHIPMENT_TRACKING_NUMBER, DataType::Utf8),
                list(SHIPMENT_ITEMS, DataType::Int32),
                utf8(SHIPMENTS_TEXT),
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
