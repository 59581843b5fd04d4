//! `rtap pinot-config`: the Apache Pinot schema and REALTIME table config that make a Pinot
//! cluster hold the same table as rtap, from the same topic.
//!
//! Everything comes from rtap's own definitions, so the two cannot drift apart: the columns and
//! their types from [`ingest::schema::query_schema`] (the JSON columns as Pinot JSON columns), the derived columns from [`source`] (one
//! Pinot ingestion transform per column that is not a top-level field of the order), the time
//! column, retention, dedup horizon and Kafka stream from the configuration, the indexes from
//! what rtap builds (time-sorted segments, bloom filters on `order_id` and `customer_id`, the
//! customer lookup index, columns written without a dictionary).
//!
//! Field names follow Pinot's `Schema`, `TableConfig`, `IngestionConfig` and `DedupConfig`
//! (apache/pinot, pinot-spi); the tests check every field and evaluate every transform on
//! generated orders against rtap's own decoder.

use datafusion::arrow::datatypes::{DataType, Field};
use serde_json::{json, Map, Value};

use crate::config::RtapConfig;

/// Name of the table, its schema, and the Kafka topic's decoder in Pinot.
pub const TABLE: &str = "orders";
const JSON_DECODER: &str = "org.apache.pinot.plugin.stream.kafka.KafkaJSONMessageDecoder";
/// The consumer factory of Pinot's Kafka 2.x plugin (the one Pinot's own examples use).
const KAFKA_FACTORY: &str = "org.apache.pinot.plugin.stream.kafka20.KafkaConsumerFactory";

/// Where a column's value comes from in the order's JSON.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// The top-level field of the same name (Pinot's JSON decoder reads it as it is).
    Field,
    /// A transform function (Pinot's scalar functions, evaluated at ingestion).
    Transform(String),
}

/// A JSONPath on a nested object: `jsonPathString(object, '$.key')`.
fn nested_string(object: &str, key: &str) -> Source {
    Source::Transform(format!("jsonPathString({object}, '$.{key}')"))
}

/// A multi-value column from a JSON array: `jsonPathArrayDefaultEmpty(array, '$[*].path')`
/// (Pinot's JSON decoder turns an empty array into null, which plain `jsonPathArray` rejects).
fn list_of(array: &str, path: &str) -> Source {
    Source::Transform(format!("jsonPathArrayDefaultEmpty({array}, '$[*].{path}')"))
}

/// Where each column of rtap's table comes from (see `crates/ingest/src/decode/columns.rs`,
/// which builds the same columns from the same JSON).
pub fn source(column: &str) -> Source {
    const ADDRESS_PARTS: [&str; 4] = ["street", "city", "state", "zipcode"];
    if column == "customer_id" {
        return nested_string("customer", column);
    }
    if let Some(key) = column.strip_prefix("customer_") {
        return nested_string("customer", key);
    }
    for object in ["billing_address", "shipping_address"] {
        if let Some(key) = column
            .strip_prefix(object)
            .and_then(|r| r.strip_prefix('_'))
            .filter(|k| ADDRESS_PARTS.contains(k))
        {
            return nested_string(object, key);
        }
    }
    match column {
        "productsOrdered" => {
            Source::Transform("arrayLength(jsonPathArrayDefaultEmpty(line_items, '$[*]'))".into())
        }
        "totalQuantity" => Source::Transform(
            "arraySumInt(jsonPathArrayDefaultEmpty(line_items, '$[*].quantity'))".into(),
        ),
        "itemNames" => list_of("line_items", "product.name"),
        "itemCategories" => list_of("line_items", "product.category"),
        "itemProductIds" => list_of("line_items", "product.product_id"),
        "itemPrices" => list_of("line_items", "product.price"),
        "itemStocks" => list_of("line_items", "product.stock"),
        "itemQtys" => list_of("line_items", "quantity"),
        "itemFreeQtys" => list_of("line_items", "free_qty"),
        "coupon" => list_of("coupon_codes", "name"),
        "status" => list_of("status_history", "status"),
        "status_id" => list_of("status_history", "status_id"),
        "status_timestamp" => list_of("status_history", "timestamp"),
        _ => Source::Field,
    }
}

/// Pinot's data type for an Arrow type (the item type for a list), and whether it is
/// single-valued.
fn pinot_type(t: &DataType) -> anyhow::Result<(&'static str, bool)> {
    Ok(match t {
        DataType::Utf8 => ("STRING", true),
        DataType::Int32 => ("INT", true),
        DataType::Int64 => ("LONG", true),
        DataType::Float64 => ("DOUBLE", true),
        DataType::Boolean => ("BOOLEAN", true),
        DataType::List(item) => match pinot_type(item.data_type())? {
            (t, true) => (t, false),
            _ => anyhow::bail!("a list of lists has no Pinot type"),
        },
        other => anyhow::bail!("no Pinot type for {other}"),
    })
}

/// Metric columns: the single-valued amounts and counts a query sums (the rest are dimensions).
const METRICS: [&str; 12] = [
    "subtotal_before_promos",
    "subtotal_after_coupon",
    "shipping_cost",
    "env_fee",
    "tax_rate",
    "tax_amount",
    "order_total",
    "partial_refund_amount",
    "exchange_rate",
    "loyalty_points_used",
    "productsOrdered",
    "totalQuantity",
];

/// What `rtap pinot-config` is asked for beyond rtap's own configuration.
#[derive(Debug, Clone)]
pub struct Options {
    /// Replicas of each partition's segments in the Pinot cluster.
    pub replicas: u32,
    /// When the topic is produced by `rtap produce` (keyed by `order_id`, murmur2 like Java
    /// clients): its partition count, so Pinot can prune segments by partition.
    pub partitions: Option<i32>,
    /// Rows per consuming segment before Pinot commits it.
    pub flush_rows: u64,
    /// Dedup on `order_id` (Pinot's dedup works per partition, so only for a topic keyed by
    /// `order_id`, as `rtap produce` keys it).
    pub dedup: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            replicas: 1,
            partitions: None,
            flush_rows: 1_000_000,
            dedup: true,
        }
    }
}

fn field_spec(field: &Field) -> anyhow::Result<Value> {
    let (data_type, single) = match field.metadata().get(ingest::schema::PINOT_TYPE) {
        // Pinot's JSON columns hold the order's objects and arrays as they come.
        Some(t) if t == "JSON" => ("JSON", true),
        _ => pinot_type(field.data_type())?,
    };
    let mut spec = json!({"name": field.name(), "dataType": data_type});
    if !single {
        spec["singleValueField"] = json!(false);
    }
    if !field.is_nullable() {
        spec["notNull"] = json!(true);
    }
    Ok(spec)
}

/// The Pinot schema of table `orders`.
pub fn schema() -> anyhow::Result<Value> {
    let arrow = ingest::schema::query_schema();
    let mut dimensions = Vec::new();
    let mut metrics = Vec::new();
    let mut times = Vec::new();
    for field in arrow.fields() {
        let mut spec = field_spec(field)?;
        if field.name() == ingest::schema::TIME_MS {
            spec["format"] = json!("1:MILLISECONDS:EPOCH");
            spec["granularity"] = json!("1:MILLISECONDS");
            times.push(spec);
        } else if METRICS.contains(&field.name().as_str()) {
            metrics.push(spec);
        } else {
            dimensions.push(spec);
        }
    }
    Ok(json!({
        "schemaName": TABLE,
        "enableColumnBasedNullHandling": true,
        "primaryKeyColumns": [ingest::schema::ORDER_ID],
        "dimensionFieldSpecs": dimensions,
        "metricFieldSpecs": metrics,
        "dateTimeFieldSpecs": times,
    }))
}

/// Whole days when `ms` is a whole number of days, else hours (rounded up): Pinot's retention
/// takes a unit and a count.
fn retention(ms: i64) -> (&'static str, String) {
    const HOUR: i64 = 3_600_000;
    const DAY: i64 = 24 * HOUR;
    if ms % DAY == 0 {
        ("DAYS", (ms / DAY).to_string())
    } else {
        (
            "HOURS",
            (ms.div_euclid(HOUR) + i64::from(ms % HOUR != 0))
                .max(1)
                .to_string(),
        )
    }
}

/// The Pinot REALTIME table config for table `orders`, reading the topic of `config`.
pub fn table_config(config: &RtapConfig, options: &Options) -> anyhow::Result<Value> {
    anyhow::ensure!(options.replicas >= 1, "replicas must be at least 1");
    anyhow::ensure!(options.flush_rows >= 1, "flush rows must be at least 1");
    let arrow = ingest::schema::query_schema();
    let transforms: Vec<Value> = arrow
        .fields()
        .iter()
        .filter_map(|f| match source(f.name()) {
            Source::Field => None,
            Source::Transform(t) => Some(json!({"columnName": f.name(), "transformFunction": t})),
        })
        .collect();
    // rtap writes these without a dictionary; Pinot's inverted index needs one, so the indexed
    // column keeps its dictionary (multi-value columns keep theirs too: raw multi-value columns
    // are less widely supported).
    let inverted = ["customer_id"];
    let no_dictionary: Vec<&str> = ingest::schema::PLAIN_COLUMNS
        .iter()
        .copied()
        .filter(|c| !c.contains('.') && !inverted.contains(c))
        .collect();
    let (unit, value) = retention(config.table.retention_ms);
    let brokers = config
        .kafka
        .brokers
        .clone()
        .unwrap_or_else(|| "localhost:9092".to_string());
    let stream = json!({
        "streamType": "kafka",
        "stream.kafka.topic.name": config.kafka.topic,
        "stream.kafka.broker.list": brokers,
        "stream.kafka.consumer.type": "lowlevel",
        "stream.kafka.consumer.factory.class.name": KAFKA_FACTORY,
        "stream.kafka.decoder.class.name": JSON_DECODER,
        "stream.kafka.consumer.prop.auto.offset.reset": "smallest",
        "realtime.segment.flush.threshold.rows": options.flush_rows.to_string(),
        "realtime.segment.flush.threshold.time": "6h",
    });
    let mut index = json!({
        "loadMode": "MMAP",
        "sortedColumn": [ingest::schema::TIME_MS],
        "invertedIndexColumns": inverted,
        "bloomFilterColumns": [ingest::schema::ORDER_ID, "customer_id"],
        "noDictionaryColumns": no_dictionary,
        // JSON_MATCH needs Pinot's JSON index on the column.
        "jsonIndexColumns": ingest::schema::JSON_COLUMNS.iter().map(|(c, _)| *c).collect::<Vec<_>>(),
    });
    if let Some(n) = options.partitions {
        anyhow::ensure!(n >= 1, "partitions must be at least 1");
        index["segmentPartitionConfig"] = json!({
            "columnPartitionMap": {
                ingest::schema::ORDER_ID: {"functionName": "Murmur", "numPartitions": n}
            }
        });
    }
    let mut table = Map::new();
    table.insert("tableName".into(), json!(TABLE));
    table.insert("tableType".into(), json!("REALTIME"));
    table.insert(
        "segmentsConfig".into(),
        json!({
            "schemaName": TABLE,
            "timeColumnName": ingest::schema::TIME_MS,
            "timeType": "MILLISECONDS",
            "retentionTimeUnit": unit,
            "retentionTimeValue": value,
            "replication": options.replicas.to_string(),
            "replicasPerPartition": options.replicas.to_string(),
        }),
    );
    table.insert(
        "tenants".into(),
        json!({"broker": "DefaultTenant", "server": "DefaultTenant"}),
    );
    table.insert("tableIndexConfig".into(), index);
    table.insert(
        "ingestionConfig".into(),
        json!({
            "streamIngestionConfig": {"streamConfigMaps": [stream]},
            "transformConfigs": transforms,
        }),
    );
    // rtap drops a re-delivered order_id within its dedup horizon; Pinot's dedup does the same
    // per partition (the topic is keyed by order_id, so one id is always one partition).
    let mut routing = json!({"segmentPrunerTypes": ["time"]});
    if options.partitions.is_some() {
        routing["segmentPrunerTypes"] = json!(["partition", "time"]);
    }
    if options.dedup {
        table.insert(
            "dedupConfig".into(),
            json!({
                "dedupEnabled": true,
                "hashFunction": "NONE",
                "dedupTimeColumn": ingest::schema::TIME_MS,
                "metadataTTL": config.ingest.dedup_horizon_ms.max(1),
            }),
        );
        // Dedup needs every segment of a partition on the same server.
        routing["instanceSelectorType"] = json!("strictReplicaGroup");
    }
    table.insert("routing".into(), routing);
    table.insert(
        "metadata".into(),
        json!({"customConfigs": {"generatedBy": format!("rtap {}", env!("CARGO_PKG_VERSION"))}}),
    );
    Ok(Value::Object(table))
}

#[cfg(test)]
#[path = "pinot_config_tests.rs"]
mod tests;
