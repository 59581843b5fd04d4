//! Rows of an `orders` batch as [`rolling::recent::RecentRow`]s, borrowed from the Arrow arrays:
//! one pass, no allocation per row beyond two reused buffers. Used at ingest (batches the decoder
//! built) and when the recent answers are rebuilt from the table after a restart (batches SQL
//! returned, which may carry other string encodings: those are cast first).

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, Int32Array, Int64Array, ListArray,
    RecordBatch, StringArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Float64Type, Int32Type, Int64Type};
use datafusion::error::{DataFusionError, Result};
use rolling::recent::{RecentItem, RecentRow};

/// The columns a [`RecentRow`] is read from (select these when rebuilding from SQL).
pub const RECENT_COLUMNS: &[&str] = &[
    "order_id",
    "time_ms",
    "order_total",
    "customer_id",
    "productsOrdered",
    "totalQuantity",
    "fraud_flag",
    "delivered",
    "refunded",
    "customer_city",
    "customer_state",
    "itemNames",
    "itemCategories",
    "itemQtys",
    "coupon",
];

fn column(batch: &RecordBatch, name: &str, want: &DataType) -> Result<ArrayRef> {
    let c = batch
        .column_by_name(name)
        .ok_or_else(|| DataFusionError::Plan(format!("recent answers: no column {name}")))?;
    if c.data_type() == want {
        Ok(c.clone())
    } else {
        Ok(cast(c, want)?)
    }
}

fn text_list() -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)))
}

fn opt<T>(valid: bool, v: T) -> Option<T> {
    valid.then_some(v)
}

fn text(a: &StringArray, i: usize) -> Option<&str> {
    opt(a.is_valid(i), a.value(i))
}

/// Calls `f` with every row of `batch`, in row order. Err: a column is missing or of a type
/// that cannot be read as the table's.
pub fn for_each_recent_row(batch: &RecordBatch, mut f: impl FnMut(&RecentRow<'_>)) -> Result<()> {
    let utf8 = DataType::Utf8;
    let ids = column(batch, "order_id", &utf8)?;
    let time = column(batch, "time_ms", &DataType::Int64)?;
    let total = column(batch, "order_total", &DataType::Float64)?;
    let customer = column(batch, "customer_id", &utf8)?;
    let products = column(batch, "productsOrdered", &DataType::Int32)?;
    let quantity = column(batch, "totalQuantity", &DataType::Int32)?;
    let fraud = column(batch, "fraud_flag", &DataType::Boolean)?;
    let delivered = column(batch, "delivered", &utf8)?;
    let refunded = column(batch, "refunded", &utf8)?;
    let city = column(batch, "customer_city", &utf8)?;
    let state = column(batch, "customer_state", &utf8)?;
    let names = column(batch, "itemNames", &text_list())?;
    let categories = column(batch, "itemCategories", &text_list())?;
    let qtys = column(
        batch,
        "itemQtys",
        &DataType::List(Arc::new(Field::new("item", DataType::Int32, true))),
    )?;
    let coupons = column(batch, "coupon", &text_list())?;

    let ids: &StringArray = ids.as_string::<i32>();
    let time: &Int64Array = time.as_primitive::<Int64Type>();
    let total: &Float64Array = total.as_primitive::<Float64Type>();
    let customer: &StringArray = customer.as_string::<i32>();
    let products: &Int32Array = products.as_primitive::<Int32Type>();
    let quantity: &Int32Array = quantity.as_primitive::<Int32Type>();
    let fraud: &BooleanArray = fraud.as_boolean();
    let delivered: &StringArray = delivered.as_string::<i32>();
    let refunded: &StringArray = refunded.as_string::<i32>();
    let city: &StringArray = city.as_string::<i32>();
    let state: &StringArray = state.as_string::<i32>();
    let names: &ListArray = names.as_list::<i32>();
    let categories: &ListArray = categories.as_list::<i32>();
    let qtys: &ListArray = qtys.as_list::<i32>();
    let coupons: &ListArray = coupons.as_list::<i32>();
    let name_values = names.values().as_string::<i32>();
    let category_values = categories.values().as_string::<i32>();
    let qty_values = qtys.values().as_primitive::<Int32Type>();
    let coupon_values = coupons.values().as_string::<i32>();

    let mut items: Vec<RecentItem<'_>> = Vec::new();
    let mut codes: Vec<Option<&str>> = Vec::new();
    for i in 0..batch.num_rows() {
        items.clear();
        if names.is_valid(i) {
            let range = names.value_offsets()[i] as usize..names.value_offsets()[i + 1] as usize;
            let cat_start = categories.value_offsets()[i] as usize;
            let qty_start = qtys.value_offsets()[i] as usize;
            let cats = categories
                .is_valid(i)
                .then(|| categories.value_length(i) as usize);
            let qs = qtys.is_valid(i).then(|| qtys.value_length(i) as usize);
            for (k, j) in range.enumerate() {
                // The decoder builds the three lists together, one entry per line item. Lists
                // of other lengths (never made here) are read along the names: a shorter one
                // as NULLs, the rest of a longer one not at all (SQL's unnest would pad the
                // names instead).
                let category = (cats.is_some_and(|n| k < n))
                    .then(|| text(category_values, cat_start + k))
                    .flatten();
                let q = (qs.is_some_and(|n| k < n))
                    .then(|| {
                        let at = qty_start + k;
                        opt(qty_values.is_valid(at), qty_values.value(at))
                    })
                    .flatten();
                items.push(RecentItem {
                    name: text(name_values, j),
                    category,
                    quantity: q,
                });
            }
        }
        codes.clear();
        if coupons.is_valid(i) {
            let range =
                coupons.value_offsets()[i] as usize..coupons.value_offsets()[i + 1] as usize;
            codes.extend(range.map(|j| text(coupon_values, j)));
        }
        f(&RecentRow {
            order_id: if ids.is_valid(i) { ids.value(i) } else { "" },
            time_ms: time.value(i),
            order_total: opt(total.is_valid(i), total.value(i)),
            customer_id: text(customer, i),
            products_ordered: opt(products.is_valid(i), products.value(i)),
            total_quantity: opt(quantity.is_valid(i), quantity.value(i)),
            fraud: fraud.is_valid(i) && fraud.value(i),
            delivered: delivered.is_valid(i) && delivered.value(i) == "yes",
            refunded: refunded.is_valid(i) && refunded.value(i) == "yes",
            city: text(city, i),
            state: text(state, i),
            items: &items,
            coupons: &codes,
        });
    }
    Ok(())
}
