//! Pinot's JSON columns of table `orders` (`customer`, `billing_address`, `shipping_address`,
//! `coupon_codes`, `status_history`, `line_items`, `shipments`): SQL sees them as text columns
//! holding the order's nested object or array, exactly as the orders API writes it (keys in
//! alphabetical order, numbers as serde_json prints them).
//!
//! They are not stored as text: [`OrdersView`] builds them, when a query names one, from the
//! columns the table stores anyway (see [`ingest::schema::JSON_COLUMNS`]); what the others do
//! not hold is in a few hidden columns (an item's `out_of_stock`, the shipments' ids, statuses,
//! times, tracking numbers and item counts: about 45 bytes an order on disk, BENCHMARKS.md).
//! An object whose every field is missing is NULL; a field the order did not have is `null`
//! inside its object; fields beyond SPEC section 1 are not kept.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, GenericListArray, Int32Array,
    StringArray, StringBuilder,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{exec_err, Result};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    TableProviderFilterPushDown, TableType, Volatility,
};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::{PhysicalExpr, ScalarFunctionExpr};
use datafusion::physical_plan::projection::{ProjectionExec, ProjectionExpr};
use datafusion::physical_plan::ExecutionPlan;
use ingest::schema::{order_schema, query_schema, JSON_COLUMNS};
use serde::Serialize;
use table::TableScan;

/// Table `orders` as SQL sees it: the stored columns but the hidden ones, and the JSON columns.
#[derive(Debug)]
pub struct OrdersView {
    inner: TableScan,
    stored: SchemaRef,
    schema: SchemaRef,
    builders: Vec<Arc<ScalarUDF>>,
}

impl OrdersView {
    pub fn new(inner: TableScan) -> Self {
        OrdersView {
            inner,
            stored: order_schema(),
            schema: query_schema(),
            builders: (0..JSON_COLUMNS.len())
                .map(|kind| Arc::new(ScalarUDF::new_from_impl(BuildJson::new(kind))))
                .collect(),
        }
    }

    fn json_column(name: &str) -> Option<usize> {
        JSON_COLUMNS.iter().position(|(n, _)| *n == name)
    }
}

#[async_trait]
impl TableProvider for OrdersView {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        // A filter on a JSON column is evaluated above the scan (the stored table has no such
        // column); the others are pushed down as the table's own scan takes them.
        Ok(filters
            .iter()
            .map(|f| {
                let on_json = f
                    .column_refs()
                    .iter()
                    .any(|c| Self::json_column(&c.name).is_some());
                if on_json {
                    TableProviderFilterPushDown::Unsupported
                } else {
                    TableProviderFilterPushDown::Inexact
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let wanted: Vec<usize> = match projection {
            Some(p) => p.clone(),
            None => (0..self.schema.fields().len()).collect(),
        };
        // The stored columns to read, each once, in first-use order.
        let mut read: Vec<usize> = Vec::new();
        let mut at = |name: &str| -> Result<usize> {
            let i = self.stored.index_of(name)?;
            Ok(match read.iter().position(|&r| r == i) {
                Some(p) => p,
                None => {
                    read.push(i);
                    read.len() - 1
                }
            })
        };
        enum Out {
            Stored(usize),
            Json(usize, Vec<usize>),
        }
        let mut outputs = Vec::with_capacity(wanted.len());
        for &i in &wanted {
            let name = self.schema.field(i).name();
            outputs.push(match Self::json_column(name) {
                Some(kind) => Out::Json(
                    kind,
                    JSON_COLUMNS[kind]
                        .1
                        .iter()
                        .map(|c| at(c))
                        .collect::<Result<_>>()?,
                ),
                None => Out::Stored(at(name)?),
            });
        }
        let plain = outputs
            .iter()
            .enumerate()
            .all(|(k, o)| matches!(o, Out::Stored(p) if *p == k))
            && read.len() == outputs.len();
        let input = self.inner.scan(state, Some(&read), filters, limit).await?;
        if plain {
            return Ok(input);
        }
        let input_schema = input.schema();
        let column = |p: usize| -> Arc<dyn PhysicalExpr> {
            Arc::new(Column::new(input_schema.field(p).name(), p))
        };
        let config = Arc::new(state.config_options().clone());
        let exprs: Vec<ProjectionExpr> = outputs
            .iter()
            .zip(&wanted)
            .map(|(o, &i)| {
                let name = self.schema.field(i).name().clone();
                let expr: Arc<dyn PhysicalExpr> = match o {
                    Out::Stored(p) => column(*p),
                    Out::Json(kind, args) => Arc::new(ScalarFunctionExpr::new(
                        &name,
                        self.builders[*kind].clone(),
                        args.iter().map(|&p| column(p)).collect(),
                        Arc::new(self.schema.field(i).clone()),
                        config.clone(),
                    )),
                };
                ProjectionExpr { expr, alias: name }
            })
            .collect();
        Ok(Arc::new(ProjectionExec::try_new(exprs, input)?))
    }
}

/// Builds one JSON column from its stored columns (the arguments, in the order of
/// [`JSON_COLUMNS`]).
#[derive(Debug, PartialEq, Eq, Hash)]
struct BuildJson {
    kind: usize,
    name: String,
    signature: Signature,
}

impl BuildJson {
    fn new(kind: usize) -> Self {
        BuildJson {
            kind,
            name: format!("rtap_json_{}", JSON_COLUMNS[kind].0),
            signature: Signature::any(JSON_COLUMNS[kind].1.len(), Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for BuildJson {
    fn name(&self) -> &str {
        &self.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let stored = order_schema();
        let inputs = JSON_COLUMNS[self.kind].1;
        if arrays.len() != inputs.len() {
            return exec_err!("{} takes {} columns", self.name, inputs.len());
        }
        // Each argument as the stored type (a reader may hand strings as views).
        let arrays = arrays
            .iter()
            .zip(inputs)
            .map(|(a, name)| {
                let want = stored.field_with_name(name)?.data_type();
                Ok(if a.data_type() == want {
                    a.clone()
                } else {
                    cast(a, want)?
                })
            })
            .collect::<Result<Vec<ArrayRef>>>()?;
        let rows = args.number_rows;
        let out = match JSON_COLUMNS[self.kind].0 {
            "customer" => objects(&arrays, &CUSTOMER_KEYS, rows)?,
            "billing_address" | "shipping_address" => objects(&arrays, &ADDRESS_KEYS, rows)?,
            "coupon_codes" => coupon_codes(&arrays, rows)?,
            "status_history" => status_history(&arrays, rows)?,
            "line_items" => line_items(&arrays, rows)?,
            "shipments" => shipments(&arrays, rows)?,
            other => return exec_err!("no JSON column {other}"),
        };
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

/// Keys of `customer`, in the order of its stored columns in [`JSON_COLUMNS`].
const CUSTOMER_KEYS: [&str; 8] = [
    "address",
    "city",
    "customer_id",
    "email",
    "name",
    "phone",
    "state",
    "zipcode",
];
const ADDRESS_KEYS: [&str; 4] = ["city", "state", "street", "zipcode"];

/// JSON text written into one buffer, row after row.
struct Json {
    buf: Vec<u8>,
}

impl Json {
    fn raw(&mut self, s: &str) {
        self.buf.extend_from_slice(s.as_bytes());
    }
    fn value<T: Serialize + ?Sized>(&mut self, v: Option<&T>) {
        match v {
            // Writing into a Vec cannot fail, and a str, f64, i32 or bool always serialises.
            Some(v) => {
                let _ = serde_json::to_writer(&mut self.buf, v);
            }
            None => self.raw("null"),
        }
    }
    fn key(&mut self, first: bool, key: &str) {
        if !first {
            self.raw(",");
        }
        self.value(Some(key));
        self.raw(":");
    }
    fn take(&mut self) -> &str {
        // Only whole UTF-8 strings and ASCII were written.
        std::str::from_utf8(&self.buf).unwrap_or_default()
    }
}

fn strings(a: &ArrayRef) -> Result<&StringArray> {
    a.as_string_opt::<i32>()
        .ok_or_else(|| datafusion::error::DataFusionError::Execution("expected text".into()))
}

fn lists(a: &ArrayRef) -> Result<&GenericListArray<i32>> {
    a.as_list_opt::<i32>()
        .ok_or_else(|| datafusion::error::DataFusionError::Execution("expected a list".into()))
}

fn opt_str(a: &StringArray, i: usize) -> Option<&str> {
    (!a.is_null(i)).then(|| a.value(i))
}

/// One object per row from text columns; NULL when every field is.
fn objects(arrays: &[ArrayRef], keys: &[&str], rows: usize) -> Result<StringArray> {
    let columns = arrays.iter().map(strings).collect::<Result<Vec<_>>>()?;
    let mut out = StringBuilder::with_capacity(rows, rows * 64 * keys.len() / 4);
    let mut json = Json { buf: Vec::new() };
    for row in 0..rows {
        if columns.iter().all(|c| c.is_null(row)) {
            out.append_null();
            continue;
        }
        json.buf.clear();
        json.raw("{");
        for (k, (key, c)) in keys.iter().zip(&columns).enumerate() {
            json.key(k == 0, key);
            json.value(opt_str(c, row));
        }
        json.raw("}");
        out.append_value(json.take());
    }
    Ok(out.finish())
}

/// The row's slice of a list column's values: `(start, end)`, or None for a NULL list.
fn span(list: &GenericListArray<i32>, row: usize) -> Option<(usize, usize)> {
    if list.is_null(row) {
        return None;
    }
    let offsets = list.value_offsets();
    let start = usize::try_from(offsets[row]).ok()?;
    let end = usize::try_from(offsets[row + 1]).ok()?;
    Some((start, end))
}

fn coupon_codes(arrays: &[ArrayRef], rows: usize) -> Result<StringArray> {
    let list = lists(&arrays[0])?;
    let names = strings(list.values())?;
    let mut out = StringBuilder::new();
    let mut json = Json { buf: Vec::new() };
    for row in 0..rows {
        let Some((start, end)) = span(list, row) else {
            out.append_null();
            continue;
        };
        json.buf.clear();
        json.raw("[");
        for i in start..end {
            if i > start {
                json.raw(",");
            }
            json.raw("{");
            json.key(true, "name");
            json.value(opt_str(names, i));
            json.raw("}");
        }
        json.raw("]");
        out.append_value(json.take());
    }
    Ok(out.finish())
}

fn status_history(arrays: &[ArrayRef], rows: usize) -> Result<StringArray> {
    let status = lists(&arrays[0])?;
    let ids = lists(&arrays[1])?;
    let times = lists(&arrays[2])?;
    let (sv, iv, tv) = (
        strings(status.values())?,
        strings(ids.values())?,
        strings(times.values())?,
    );
    let mut out = StringBuilder::new();
    let mut json = Json { buf: Vec::new() };
    for row in 0..rows {
        let (Some((s0, s1)), Some((i0, _)), Some((t0, _))) =
            (span(status, row), span(ids, row), span(times, row))
        else {
            out.append_null();
            continue;
        };
        json.buf.clear();
        json.raw("[");
        for k in 0..s1 - s0 {
            if k > 0 {
                json.raw(",");
            }
            json.raw("{");
            json.key(true, "status");
            json.value(opt_str(sv, s0 + k));
            json.key(false, "status_id");
            json.value(get_str(iv, i0 + k));
            json.key(false, "timestamp");
            json.value(get_str(tv, t0 + k));
            json.raw("}");
        }
        json.raw("]");
        out.append_value(json.take());
    }
    Ok(out.finish())
}

/// A value of a list's values by index, NULL past its end (lists of one order written
/// together have equal lengths; this keeps a damaged row from panicking).
fn get_str(a: &StringArray, i: usize) -> Option<&str> {
    (i < a.len()).then(|| opt_str(a, i)).flatten()
}

/// The eight line-item list columns of one batch (order of
/// [`ingest::schema::LINE_ITEM_COLUMNS`]).
struct Items<'a> {
    lists: Vec<&'a GenericListArray<i32>>,
    free_qty: &'a Int32Array,
    category: &'a StringArray,
    name: &'a StringArray,
    out_of_stock: &'a BooleanArray,
    price: &'a Float64Array,
    product_id: &'a StringArray,
    stock: &'a Int32Array,
    quantity: &'a Int32Array,
}

impl<'a> Items<'a> {
    fn new(arrays: &'a [ArrayRef]) -> Result<Self> {
        let lists = arrays[..8].iter().map(lists).collect::<Result<Vec<_>>>()?;
        let ints = |k: usize| {
            lists[k]
                .values()
                .as_primitive_opt::<datafusion::arrow::datatypes::Int32Type>()
                .ok_or_else(|| {
                    datafusion::error::DataFusionError::Execution("expected INT values".into())
                })
        };
        let free_qty = ints(0)?;
        let stock = ints(6)?;
        let quantity = ints(7)?;
        let category = strings(lists[1].values())?;
        let name = strings(lists[2].values())?;
        let out_of_stock = lists[3].values().as_boolean_opt().ok_or_else(|| {
            datafusion::error::DataFusionError::Execution("expected BOOLEAN values".into())
        })?;
        let price = lists[4]
            .values()
            .as_primitive_opt::<datafusion::arrow::datatypes::Float64Type>()
            .ok_or_else(|| {
                datafusion::error::DataFusionError::Execution("expected DOUBLE values".into())
            })?;
        let product_id = strings(lists[5].values())?;
        Ok(Items {
            lists,
            free_qty,
            category,
            name,
            out_of_stock,
            price,
            product_id,
            stock,
            quantity,
        })
    }

    /// The start of the row's items in each of the eight lists (None: no line items list).
    fn starts(&self, row: usize) -> Option<([usize; 8], usize)> {
        let mut starts = [0; 8];
        let mut count = 0;
        for (k, l) in self.lists.iter().enumerate() {
            match span(l, row) {
                Some((s, e)) => {
                    starts[k] = s;
                    if k == 2 {
                        count = e - s;
                    }
                }
                // `out_of_stock` is missing from segments written before it was stored.
                None if k == 3 => starts[k] = usize::MAX,
                None => return None,
            }
        }
        Some((starts, count))
    }

    /// Writes item `k` of the row whose lists start at `starts`.
    fn write(&self, json: &mut Json, starts: &[usize; 8], k: usize) {
        fn int(a: &Int32Array, i: usize) -> Option<i32> {
            (i < a.len() && !a.is_null(i)).then(|| a.value(i))
        }
        json.raw("{");
        json.key(true, "free_qty");
        json.value(int(self.free_qty, starts[0] + k).as_ref());
        json.key(false, "product");
        json.raw("{");
        json.key(true, "category");
        json.value(get_str(self.category, starts[1] + k));
        json.key(false, "name");
        json.value(get_str(self.name, starts[2] + k));
        json.key(false, "out_of_stock");
        let oos = starts[3]
            .checked_add(k)
            .filter(|&i| i < self.out_of_stock.len() && !self.out_of_stock.is_null(i));
        json.value(oos.map(|i| self.out_of_stock.value(i)).as_ref());
        json.key(false, "price");
        let price = starts[4] + k;
        json.value(
            (price < self.price.len() && !self.price.is_null(price))
                .then(|| self.price.value(price))
                .as_ref(),
        );
        json.key(false, "product_id");
        json.value(get_str(self.product_id, starts[5] + k));
        json.key(false, "stock");
        json.value(int(self.stock, starts[6] + k).as_ref());
        json.raw("}");
        json.key(false, "quantity");
        json.value(int(self.quantity, starts[7] + k).as_ref());
        json.raw("}");
    }

    /// Writes items `from..to` of a row as a JSON array.
    fn write_run(&self, json: &mut Json, starts: &[usize; 8], from: usize, to: usize) {
        json.raw("[");
        for k in from..to {
            if k > from {
                json.raw(",");
            }
            self.write(json, starts, k);
        }
        json.raw("]");
    }
}

fn line_items(arrays: &[ArrayRef], rows: usize) -> Result<StringArray> {
    let items = Items::new(arrays)?;
    let mut out = StringBuilder::new();
    let mut json = Json { buf: Vec::new() };
    for row in 0..rows {
        let Some((starts, count)) = items.starts(row) else {
            out.append_null();
            continue;
        };
        json.buf.clear();
        items.write_run(&mut json, &starts, 0, count);
        out.append_value(json.take());
    }
    Ok(out.finish())
}

fn shipments(arrays: &[ArrayRef], rows: usize) -> Result<StringArray> {
    let items = Items::new(&arrays[..8])?;
    let counts = lists(&arrays[8])?;
    let count_values = counts
        .values()
        .as_primitive_opt::<datafusion::arrow::datatypes::Int32Type>()
        .ok_or_else(|| datafusion::error::DataFusionError::Execution("expected INT".into()))?;
    let keys = arrays[9..13]
        .iter()
        .map(lists)
        .collect::<Result<Vec<_>>>()?;
    let key_values = keys
        .iter()
        .map(|l| strings(l.values()))
        .collect::<Result<Vec<_>>>()?;
    let text = strings(&arrays[13])?;
    let mut out = StringBuilder::new();
    let mut json = Json { buf: Vec::new() };
    for row in 0..rows {
        if let Some(t) = opt_str(text, row) {
            out.append_value(t);
            continue;
        }
        let (Some((c0, c1)), Some((starts, count))) = (span(counts, row), items.starts(row)) else {
            out.append_null();
            continue;
        };
        let key_starts: Vec<usize> = keys
            .iter()
            .map(|l| span(l, row).map_or(usize::MAX, |(s, _)| s))
            .collect();
        json.buf.clear();
        json.raw("[");
        let mut at = 0usize;
        for k in 0..c1 - c0 {
            if k > 0 {
                json.raw(",");
            }
            let n = if count_values.is_null(c0 + k) {
                0
            } else {
                usize::try_from(count_values.value(c0 + k)).unwrap_or(0)
            };
            let end = (at + n).min(count);
            json.raw("{");
            json.key(true, "items");
            items.write_run(&mut json, &starts, at, end);
            at = end;
            for (j, key) in [
                "shipment_id",
                "shipment_status",
                "shipment_timestamp",
                "tracking_number",
            ]
            .iter()
            .enumerate()
            {
                json.key(false, key);
                let value = key_starts[j]
                    .checked_add(k)
                    .and_then(|i| get_str(key_values[j], i));
                json.value(value);
            }
            json.raw("}");
        }
        json.raw("]");
        out.append_value(json.take());
    }
    Ok(out.finish())
}
