//! Pinot's broker response: `resultTable` with `dataSchema` (column names and Pinot type names)
//! and `rows`, `exceptions` as `{errorCode, message}`, and the query statistics Pinot clients
//! read (`numDocsScanned`, `totalDocs`, `timeUsedMs`, ...).

use std::time::Instant;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use serde_json::{json, Value};

use crate::{QueryOutput, SqlError};

/// Pinot's name for an Arrow type.
pub fn pinot_type(t: &DataType) -> String {
    match t {
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::UInt8 | DataType::UInt16 => {
            "INT".into()
        }
        DataType::Int64 | DataType::UInt32 | DataType::UInt64 => "LONG".into(),
        DataType::Float16 | DataType::Float32 => "FLOAT".into(),
        DataType::Float64 => "DOUBLE".into(),
        DataType::Decimal128(..) | DataType::Decimal256(..) => "BIG_DECIMAL".into(),
        DataType::Boolean => "BOOLEAN".into(),
        DataType::Timestamp(..) | DataType::Date32 | DataType::Date64 => "TIMESTAMP".into(),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "BYTES".into(),
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
            format!("{}_ARRAY", pinot_type(f.data_type()))
        }
        _ => "STRING".into(),
    }
}

fn float(v: f64) -> Value {
    if v.is_finite() {
        json!(v)
    } else if v.is_nan() {
        json!("NaN")
    } else if v > 0.0 {
        json!("Infinity")
    } else {
        json!("-Infinity")
    }
}

/// One cell as JSON.
pub fn cell(v: &ScalarValue) -> Value {
    match v {
        v if v.is_null() => Value::Null,
        ScalarValue::Boolean(Some(b)) => json!(b),
        ScalarValue::Int8(Some(x)) => json!(x),
        ScalarValue::Int16(Some(x)) => json!(x),
        ScalarValue::Int32(Some(x)) => json!(x),
        ScalarValue::Int64(Some(x)) => json!(x),
        ScalarValue::UInt8(Some(x)) => json!(x),
        ScalarValue::UInt16(Some(x)) => json!(x),
        ScalarValue::UInt32(Some(x)) => json!(x),
        ScalarValue::UInt64(Some(x)) => json!(x),
        ScalarValue::Float32(Some(x)) => float(f64::from(*x)),
        ScalarValue::Float64(Some(x)) => float(*x),
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => json!(s),
        ScalarValue::List(list) => {
            let values = list.value(0);
            Value::Array(
                (0..values.len())
                    .map(|i| {
                        ScalarValue::try_from_array(&values, i)
                            .map(|s| cell(&s))
                            .unwrap_or(Value::Null)
                    })
                    .collect(),
            )
        }
        other => json!(other.to_string()),
    }
}

/// One row of a result as JSON cells.
fn row_cells(batch: &datafusion::arrow::array::RecordBatch, r: usize) -> Value {
    Value::Array(
        batch
            .columns()
            .iter()
            .map(|c| {
                ScalarValue::try_from_array(c, r)
                    .map(|s| cell(&s))
                    .unwrap_or(Value::Null)
            })
            .collect(),
    )
}

/// The broker response as JSON text. Rows are written one at a time and the result is cut once
/// it would pass `max_bytes` of JSON (`partialResult`, naming `sql.max_response_bytes`), so
/// what is sent is bounded whatever the cells hold; `deadline` (the query's) is checked as
/// rows are written.
pub fn broker_response_json(
    out: &QueryOutput,
    deadline: Option<(Instant, u64)>,
) -> Result<String, SqlError> {
    let max_bytes = out.max_response_bytes;
    let names: Vec<&String> = out.schema.fields().iter().map(|f| f.name()).collect();
    let types: Vec<String> = out
        .schema
        .fields()
        .iter()
        .map(|f| match f.metadata().get(ingest::schema::PINOT_TYPE) {
            Some(t) if f.data_type() == &DataType::Utf8 => t.clone(),
            _ => pinot_type(f.data_type()),
        })
        .collect();
    let mut rows = String::from("[");
    let mut written = 0usize;
    let mut reason = out.truncated_reason.clone();
    'batches: for batch in &out.batches {
        for r in 0..batch.num_rows() {
            if let Some((at, timeout_ms)) = deadline {
                if written % 1024 == 0 && Instant::now() > at {
                    return Err(SqlError::Timeout(timeout_ms));
                }
            }
            let row = row_cells(batch, r).to_string();
            if rows.len() + row.len() + 2 > max_bytes {
                reason = Some(format!(
                    "the result was cut at about {max_bytes} bytes of JSON \
                     (sql.max_response_bytes)"
                ));
                break 'batches;
            }
            if written > 0 {
                rows.push(',');
            }
            rows.push_str(&row);
            written += 1;
        }
    }
    rows.push(']');
    let schema = json!({"columnNames": names, "columnDataTypes": types});
    let mut stats = json!({
        "exceptions": [],
        "numServersQueried": 1,
        "numServersResponded": 1,
        "numDocsScanned": out.docs_scanned,
        "totalDocs": out.total_docs,
        "numSegmentsQueried": out.segments.queried,
        "numSegmentsProcessed": out.segments.processed,
        // Segments with a matching row: every processed one as far as rtap counts (an upper
        // bound), none when no row matched.
        "numSegmentsMatched": if out.docs_scanned > 0 { out.segments.processed } else { 0 },
        "numConsumingSegmentsQueried": out.segments.consuming_queried,
        "numConsumingSegmentsProcessed": out.segments.consuming_processed,
        "numConsumingSegmentsMatched": if out.docs_scanned > 0 { out.segments.consuming_processed } else { 0 },
        "numEntriesScannedInFilter": 0,
        "numEntriesScannedPostFilter": out.docs_scanned * out.schema.fields().len() as u64,
        "numRowsResultSet": written,
        "partialResult": reason.is_some(),
        "partialResultReason": reason,
        "numGroupsLimitReached": false,
        "timeUsedMs": out.time_used_ms,
    });
    // Options of the query that had no effect: known to Pinot but meaningless here, or unknown.
    if !out.options.ignored.is_empty() {
        stats["ignoredQueryOptions"] = json!(out.options.ignored);
    }
    if !out.options.unknown.is_empty() {
        stats["unknownQueryOptions"] = json!(out.options.unknown);
    }
    let stats = stats.to_string();
    // The statistics object without its opening brace follows the result table.
    let stats = stats.strip_prefix('{').unwrap_or(&stats);
    Ok(format!(
        "{{\"resultTable\":{{\"dataSchema\":{schema},\"rows\":{rows}}},{stats}"
    ))
}

pub fn broker_error(e: &SqlError, time_used_ms: u64) -> Value {
    json!({
        "exceptions": [{"errorCode": e.pinot_code(), "message": e.to_string()}],
        "numServersQueried": 0,
        "numServersResponded": 0,
        "numDocsScanned": 0,
        "totalDocs": 0,
        "numSegmentsQueried": 0,
        "numSegmentsProcessed": 0,
        "numSegmentsMatched": 0,
        "numEntriesScannedInFilter": 0,
        "numEntriesScannedPostFilter": 0,
        "numRowsResultSet": 0,
        "partialResult": false,
        "numGroupsLimitReached": false,
        "timeUsedMs": time_used_ms,
    })
}
