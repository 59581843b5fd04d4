//! `rtap pinot-config` checked field by field against Pinot's documented config, and every
//! derived column's transform evaluated on generated orders against rtap's own decoder.

use std::collections::{BTreeSet, HashMap};

use datafusion::common::ScalarValue;
use serde_json::{json, Value};

use super::{schema, source, table_config, Options, Source, TABLE};
use crate::config::RtapConfig;

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Every field spec of the schema, by column name.
fn specs(schema: &Value) -> HashMap<String, (String, Value)> {
    let mut all = HashMap::new();
    for kind in [
        "dimensionFieldSpecs",
        "metricFieldSpecs",
        "dateTimeFieldSpecs",
    ] {
        for spec in schema[kind].as_array().expect("a list of field specs") {
            let name = spec["name"].as_str().expect("name").to_string();
            assert!(
                all.insert(name.clone(), (kind.to_string(), spec.clone()))
                    .is_none(),
                "{name} is specified twice"
            );
        }
    }
    all
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .expect("a list")
        .iter()
        .map(|s| s.as_str().expect("a string").to_string())
        .collect()
}

#[test]
fn the_schema_has_every_column_of_the_table_with_pinots_field_names_and_types() {
    let schema = schema().expect("schema");
    // Pinot's Schema JSON (pinot-spi Schema.java).
    assert_eq!(
        keys(&schema),
        set(&[
            "schemaName",
            "enableColumnBasedNullHandling",
            "primaryKeyColumns",
            "dimensionFieldSpecs",
            "metricFieldSpecs",
            "dateTimeFieldSpecs",
        ])
    );
    assert_eq!(schema["schemaName"], TABLE);
    assert_eq!(schema["primaryKeyColumns"], json!(["order_id"]));
    let specs = specs(&schema);
    let arrow = ingest::schema::query_schema();
    let columns: BTreeSet<String> = arrow.fields().iter().map(|f| f.name().clone()).collect();
    assert_eq!(
        specs.keys().cloned().collect::<BTreeSet<_>>(),
        columns,
        "the schema's columns are the table's"
    );
    let field_keys = set(&[
        "name",
        "dataType",
        "singleValueField",
        "notNull",
        "format",
        "granularity",
    ]);
    let types = set(&[
        "INT", "LONG", "FLOAT", "DOUBLE", "BOOLEAN", "STRING", "JSON",
    ]);
    for (name, (kind, spec)) in &specs {
        assert!(keys(spec).is_subset(&field_keys), "{name}: {spec}");
        let t = spec["dataType"].as_str().expect("dataType");
        assert!(types.contains(t), "{name}: {t}");
        if kind == "metricFieldSpecs" {
            // Pinot's metrics are single-valued numbers.
            assert!(spec.get("singleValueField").is_none(), "{name}");
            assert!(["INT", "LONG", "DOUBLE"].contains(&t), "{name}: {t}");
        }
    }
    let spec = |name: &str| specs[name].1.clone();
    let kind = |name: &str| specs[name].0.clone();
    assert_eq!(
        spec("time_ms"),
        json!({"name": "time_ms", "dataType": "LONG", "notNull": true,
               "format": "1:MILLISECONDS:EPOCH", "granularity": "1:MILLISECONDS"})
    );
    assert_eq!(kind("time_ms"), "dateTimeFieldSpecs");
    assert_eq!(
        spec("order_id"),
        json!({"name": "order_id", "dataType": "STRING", "notNull": true})
    );
    assert_eq!(
        spec("fraud_flag"),
        json!({"name": "fraud_flag", "dataType": "BOOLEAN"})
    );
    assert_eq!(
        spec("itemQtys"),
        json!({"name": "itemQtys", "dataType": "INT", "singleValueField": false})
    );
    assert_eq!(
        spec("itemPrices"),
        json!({"name": "itemPrices", "dataType": "DOUBLE", "singleValueField": false})
    );
    assert_eq!(
        spec("coupon"),
        json!({"name": "coupon", "dataType": "STRING", "singleValueField": false})
    );
    assert_eq!(
        spec("order_total"),
        json!({"name": "order_total", "dataType": "DOUBLE"})
    );
    assert_eq!(kind("order_total"), "metricFieldSpecs");
    assert_eq!(kind("totalQuantity"), "metricFieldSpecs");
    assert_eq!(
        spec("risk_score"),
        json!({"name": "risk_score", "dataType": "INT"})
    );
    assert_eq!(kind("customer_city"), "dimensionFieldSpecs");
    for (json_column, _) in ingest::schema::JSON_COLUMNS {
        assert_eq!(
            spec(json_column),
            json!({"name": json_column, "dataType": "JSON"})
        );
        assert_eq!(kind(json_column), "dimensionFieldSpecs");
    }
    assert!(
        specs
            .keys()
            .all(|c| !c.starts_with(ingest::schema::HIDDEN_PREFIX)),
        "rtap's hidden columns are not Pinot's"
    );
}

#[test]
fn the_table_config_reads_rtaps_topic_with_its_retention_indexes_and_dedup() {
    let mut config = RtapConfig::default();
    config.kafka.brokers = Some("kafka-1:9092,kafka-2:9092".into());
    config.kafka.topic = "ShopOrders".into();
    let options = Options {
        replicas: 2,
        partitions: Some(12),
        flush_rows: 500_000,
        dedup: true,
    };
    let table = table_config(&config, &options).expect("table config");
    let schema = schema().expect("schema");
    let columns: BTreeSet<String> = specs(&schema).keys().cloned().collect();
    // Pinot's TableConfig JSON (pinot-spi TableConfig.java): no key it does not know.
    assert!(
        keys(&table).is_subset(&set(&[
            "tableName",
            "tableType",
            "segmentsConfig",
            "tenants",
            "tableIndexConfig",
            "ingestionConfig",
            "dedupConfig",
            "upsertConfig",
            "routing",
            "metadata",
            "quota",
            "fieldConfigList",
            "task",
            "query",
        ])),
        "{:?}",
        keys(&table)
    );
    assert_eq!(table["tableName"], "orders");
    assert_eq!(table["tableType"], "REALTIME");
    let segments = &table["segmentsConfig"];
    assert_eq!(
        segments,
        &json!({
            "schemaName": "orders",
            "timeColumnName": "time_ms",
            "timeType": "MILLISECONDS",
            "retentionTimeUnit": "DAYS",
            "retentionTimeValue": "30",
            "replication": "2",
            "replicasPerPartition": "2",
        })
    );
    assert_eq!(segments["schemaName"], schema["schemaName"]);
    assert_eq!(
        schema["dateTimeFieldSpecs"][0]["name"],
        segments["timeColumnName"]
    );
    let index = &table["tableIndexConfig"];
    assert_eq!(index["sortedColumn"], json!(["time_ms"]));
    assert_eq!(
        index["bloomFilterColumns"],
        json!(["order_id", "customer_id"])
    );
    assert_eq!(index["invertedIndexColumns"], json!(["customer_id"]));
    assert_eq!(
        index["jsonIndexColumns"],
        json!([
            "customer",
            "billing_address",
            "shipping_address",
            "coupon_codes",
            "status_history",
            "line_items",
            "shipments"
        ])
    );
    let raw = strings(&index["noDictionaryColumns"]);
    assert!(raw.contains(&"order_id".to_string()));
    assert!(
        !raw.contains(&"customer_id".to_string()),
        "an inverted index needs a dictionary"
    );
    for list in [
        "sortedColumn",
        "bloomFilterColumns",
        "invertedIndexColumns",
        "noDictionaryColumns",
        "jsonIndexColumns",
    ] {
        for c in strings(&index[list]) {
            assert!(columns.contains(&c), "{list} names {c}, not a column");
        }
    }
    assert_eq!(
        index["segmentPartitionConfig"],
        json!({"columnPartitionMap": {"order_id": {"functionName": "Murmur", "numPartitions": 12}}})
    );
    let ingestion = &table["ingestionConfig"];
    let streams = ingestion["streamIngestionConfig"]["streamConfigMaps"]
        .as_array()
        .expect("streamConfigMaps");
    assert_eq!(streams.len(), 1);
    let stream = &streams[0];
    assert_eq!(stream["streamType"], "kafka");
    assert_eq!(stream["stream.kafka.topic.name"], "ShopOrders");
    assert_eq!(
        stream["stream.kafka.broker.list"],
        "kafka-1:9092,kafka-2:9092"
    );
    assert_eq!(stream["stream.kafka.consumer.type"], "lowlevel");
    assert_eq!(
        stream["stream.kafka.decoder.class.name"],
        "org.apache.pinot.plugin.stream.kafka.KafkaJSONMessageDecoder"
    );
    assert_eq!(
        stream["stream.kafka.consumer.factory.class.name"],
        "org.apache.pinot.plugin.stream.kafka20.KafkaConsumerFactory"
    );
    assert_eq!(stream["realtime.segment.flush.threshold.rows"], "500000");
    for (k, v) in stream.as_object().expect("stream") {
        assert!(v.is_string(), "stream config values are strings: {k}");
        assert!(
            k == "streamType" || k.starts_with("stream.kafka.") || k.starts_with("realtime."),
            "{k}"
        );
    }
    // One transform per derived column, each naming a column of the schema; the top-level
    // fields are read by the JSON decoder as they are.
    let transforms = ingestion["transformConfigs"]
        .as_array()
        .expect("transformConfigs");
    let derived: BTreeSet<String> = transforms
        .iter()
        .map(|t| {
            assert_eq!(keys(t), set(&["columnName", "transformFunction"]));
            t["columnName"].as_str().expect("columnName").to_string()
        })
        .collect();
    assert_eq!(derived.len(), transforms.len(), "one transform per column");
    // Pinot refuses a transform whose arguments name its own destination column.
    for t in transforms {
        let column = t["columnName"].as_str().expect("columnName");
        let (expr, _) = parse_expr(t["transformFunction"].as_str().expect("function"));
        let mut names = Vec::new();
        columns_of(&expr, &mut names);
        assert!(!names.is_empty(), "{t}");
        assert!(!names.contains(&column.to_string()), "{t}");
    }
    assert!(derived.is_subset(&columns));
    assert_eq!(derived.len(), 29, "{derived:?}");
    for c in [
        "customer_id",
        "shipping_address_city",
        "totalQuantity",
        "coupon",
    ] {
        assert!(derived.contains(c), "{c}");
    }
    for c in [
        "order_id",
        "time_ms",
        "order_total",
        "fraud_flag",
        "shipping_status",
    ] {
        assert!(!derived.contains(c), "{c} is a top-level field");
    }
    assert_eq!(
        table["dedupConfig"],
        json!({"dedupEnabled": true, "hashFunction": "NONE", "dedupTimeColumn": "time_ms",
               "metadataTTL": 86_400_000})
    );
    assert_eq!(
        table["routing"],
        json!({"instanceSelectorType": "strictReplicaGroup",
               "segmentPrunerTypes": ["partition", "time"]})
    );
}

#[test]
fn retention_and_defaults_follow_the_configuration() {
    let mut config = RtapConfig::default();
    config.table.retention_ms = 36 * 3_600_000;
    config.ingest.dedup_horizon_ms = 2 * 3_600_000;
    let table = table_config(&config, &Options::default()).expect("table config");
    assert_eq!(table["segmentsConfig"]["retentionTimeUnit"], "HOURS");
    assert_eq!(table["segmentsConfig"]["retentionTimeValue"], "36");
    assert_eq!(table["segmentsConfig"]["replication"], "1");
    assert_eq!(table["dedupConfig"]["metadataTTL"], 7_200_000);
    assert_eq!(table["routing"]["segmentPrunerTypes"], json!(["time"]));
    let undeduped = table_config(
        &config,
        &Options {
            dedup: false,
            ..Options::default()
        },
    )
    .expect("table config");
    assert!(undeduped.get("dedupConfig").is_none());
    assert_eq!(
        undeduped["routing"],
        json!({"segmentPrunerTypes": ["time"]})
    );
    assert!(table["tableIndexConfig"]
        .get("segmentPartitionConfig")
        .is_none());
    let stream = &table["ingestionConfig"]["streamIngestionConfig"]["streamConfigMaps"][0];
    assert_eq!(stream["stream.kafka.broker.list"], "localhost:9092");
    assert_eq!(stream["stream.kafka.topic.name"], "FakeEcommOrders");
    config.table.retention_ms = 90 * 60_000;
    let table = table_config(&config, &Options::default()).expect("table config");
    assert_eq!(
        table["segmentsConfig"]["retentionTimeValue"], "2",
        "rounded up"
    );
}

// ---- evaluating Pinot's ingestion transforms ----

/// A transform expression: a call, a column (a field of the message) or a string literal.
#[derive(Debug)]
enum Expr {
    Call(String, Vec<Expr>),
    Column(String),
    Text(String),
}

/// The message fields an expression reads.
fn columns_of(e: &Expr, out: &mut Vec<String>) {
    match e {
        Expr::Column(c) => out.push(c.clone()),
        Expr::Call(_, args) => args.iter().for_each(|a| columns_of(a, out)),
        Expr::Text(_) => {}
    }
}

fn parse_expr(s: &str) -> (Expr, &str) {
    let s = s.trim_start();
    if let Some(rest) = s.strip_prefix('\'') {
        let end = rest.find('\'').expect("closing quote");
        return (Expr::Text(rest[..end].to_string()), &rest[end + 1..]);
    }
    let end = s
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    let (name, rest) = s.split_at(end);
    assert!(!name.is_empty(), "expected a name at {s:?}");
    let Some(mut rest) = rest.trim_start().strip_prefix('(') else {
        return (Expr::Column(name.to_string()), rest);
    };
    let mut args = Vec::new();
    loop {
        let (arg, after) = parse_expr(rest);
        args.push(arg);
        let after = after.trim_start();
        if let Some(r) = after.strip_prefix(',') {
            rest = r;
        } else if let Some(r) = after.strip_prefix(')') {
            return (Expr::Call(name.to_string(), args), r);
        } else {
            panic!("expected , or ) at {after:?}");
        }
    }
}

/// Jayway JsonPath (what Pinot's jsonPath* functions use) for the paths the config writes:
/// `$`, `.key` and `[*]`. A definite path gives one value (null when missing); a path with
/// `[*]` gives the list of what it finds (missing leaves left out).
fn json_path(root: &Value, path: &str) -> Value {
    let mut rest = path.strip_prefix('$').expect("a path starts with $");
    let mut found = vec![root.clone()];
    let mut definite = true;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("[*]") {
            definite = false;
            found = found
                .into_iter()
                .flat_map(|v| v.as_array().cloned().unwrap_or_default())
                .collect();
            rest = r;
        } else if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            let key = &r[..end];
            found = found
                .into_iter()
                .filter_map(|v| v.get(key).cloned())
                .collect();
            rest = &r[end..];
        } else {
            panic!("unsupported path {path}");
        }
    }
    if definite {
        found.into_iter().next().unwrap_or(Value::Null)
    } else {
        Value::Array(found)
    }
}

/// Pinot's scalar functions the config uses, with Pinot's semantics (JsonFunctions,
/// ArrayFunctions in pinot-common).
fn eval(e: &Expr, message: &Value) -> Value {
    match e {
        Expr::Text(t) => json!(t),
        Expr::Column(c) => message.get(c).cloned().unwrap_or(Value::Null),
        Expr::Call(f, args) => {
            let a: Vec<Value> = args.iter().map(|x| eval(x, message)).collect();
            match (f.as_str(), a.as_slice()) {
                ("jsonPathString", [object, Value::String(path)]) => {
                    match json_path(object, path) {
                        Value::Null => Value::Null,
                        Value::String(s) => json!(s),
                        other => json!(other.to_string()),
                    }
                }
                // Pinot's JSON decoder hands an empty array over as null, which this function
                // turns into an empty list (JsonFunctions.jsonPathArrayDefaultEmpty).
                ("jsonPathArrayDefaultEmpty", [object, Value::String(path)]) => {
                    match (object, json_path(object, path)) {
                        (Value::Null, _) => Value::Array(vec![]),
                        (Value::Array(a), _) if a.is_empty() => Value::Array(vec![]),
                        (_, Value::Array(items)) => Value::Array(items),
                        (_, Value::Null) => Value::Array(vec![]),
                        (_, one) => Value::Array(vec![one]),
                    }
                }
                ("arrayLength", [Value::Array(items)]) => json!(items.len()),
                ("arraySumInt", [Value::Array(items)]) => json!(items
                    .iter()
                    .map(|v| v.as_i64().expect("an int"))
                    .sum::<i64>()),
                other => panic!("no Pinot function {other:?} in this evaluator"),
            }
        }
    }
}

/// Equal as Pinot would store them in the column: numbers by value (an INT column holds the
/// JSON's 3 and the decoder's 3i32 alike), lists element by element.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same(p, q))
        }
        _ => a == b,
    }
}

#[test]
fn every_transform_gives_what_rtaps_decoder_gives_on_10000_generated_orders() {
    const ORDERS: u64 = 10_000;
    let table = table_config(&RtapConfig::default(), &Options::default()).expect("table config");
    let transforms: HashMap<String, Expr> = table["ingestionConfig"]["transformConfigs"]
        .as_array()
        .expect("transforms")
        .iter()
        .map(|t| {
            let text = t["transformFunction"].as_str().expect("function");
            let (expr, rest) = parse_expr(text);
            assert!(rest.trim().is_empty(), "left over: {rest:?} in {text}");
            (t["columnName"].as_str().expect("column").to_string(), expr)
        })
        .collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    let mut generator = orders::Generator::new(orders::GeneratorConfig {
        seed: 42,
        ..orders::GeneratorConfig::default()
    });
    let payloads: Vec<Vec<u8>> = (1..=ORDERS)
        .map(|seq| generator.generate(seq, now - 60_000).to_json())
        .collect();
    let messages: Vec<ingest::Message<'_>> = payloads
        .iter()
        .enumerate()
        .map(|(i, p)| ingest::Message {
            position: ingest::Position {
                partition: 0,
                offset: i as i64,
            },
            payload: p,
            record_time_ms: None,
        })
        .collect();
    let parsed: Vec<_> =
        ingest::decode::parse_all(&messages, &ingest::decode::Limits::default(), now, 2)
            .into_iter()
            .map(|p| p.expect("a generated order decodes"))
            .collect();
    let batch = ingest::decode::to_batch(&parsed, parsed.len());
    assert_eq!(batch.num_rows() as u64, ORDERS);
    let schema = batch.schema();
    let mut checked = HashMap::<&str, usize>::new();
    let mut nonempty_lists = 0usize;
    for (row, payload) in payloads.iter().enumerate() {
        let message: Value = serde_json::from_slice(payload).expect("json");
        for (i, field) in schema.fields().iter().enumerate() {
            let name = field.name().as_str();
            if name.starts_with(ingest::schema::HIDDEN_PREFIX) {
                // Not a column of SQL's table (nor of Pinot's): they rebuild the JSON columns.
                continue;
            }
            let pinot = match source(name) {
                Source::Field => message.get(name).cloned().unwrap_or(Value::Null),
                Source::Transform(_) => eval(&transforms[name], &message),
            };
            let rtap = sql::response::cell(
                &ScalarValue::try_from_array(batch.column(i), row).expect("cell"),
            );
            assert!(
                same(&pinot, &rtap),
                "order {row}, column {name}: Pinot's transform gives {pinot}, rtap's decoder {rtap}"
            );
            if pinot.as_array().is_some_and(|a| !a.is_empty()) {
                nonempty_lists += 1;
            }
            *checked.entry(name).or_default() += 1;
        }
    }
    let hidden = schema
        .fields()
        .iter()
        .filter(|f| f.name().starts_with(ingest::schema::HIDDEN_PREFIX))
        .count();
    assert_eq!(hidden, 7);
    assert_eq!(checked.len(), schema.fields().len() - hidden);
    assert!(checked.values().all(|n| *n as u64 == ORDERS));
    // The comparison saw real values, not only nulls and empty lists.
    assert!(nonempty_lists as u64 > 9 * ORDERS, "{nonempty_lists}");
}

#[test]
fn the_evaluator_follows_jayway_on_the_paths_used() {
    let v = json!({"a": {"b": 1}, "l": [{"x": 1}, {"y": 2}, {"x": 3}]});
    assert_eq!(json_path(&v, "$.a.b"), json!(1));
    assert_eq!(json_path(&v, "$.a.c"), Value::Null);
    assert_eq!(json_path(&v["l"], "$[*].x"), json!([1, 3]));
    assert_eq!(json_path(&v["l"], "$[*]").as_array().map(Vec::len), Some(3));
    let (e, _) = parse_expr("arraySumInt(jsonPathArrayDefaultEmpty(l, '$[*].x'))");
    assert_eq!(eval(&e, &v), json!(4));
    let (e, _) = parse_expr("arrayLength(jsonPathArrayDefaultEmpty(missing, '$[*]'))");
    assert_eq!(eval(&e, &v), json!(0));
    let (e, _) = parse_expr("jsonPathString(a, '$.b')");
    assert_eq!(eval(&e, &v), json!("1"));
}

/// The identifiers of `sql` outside quotes and comments, without SQL keywords, functions and
/// the aliases it defines.
fn column_names(sql: &str) -> BTreeSet<String> {
    const WORDS: [&str; 26] = [
        "SELECT",
        "FROM",
        "WHERE",
        "AND",
        "OR",
        "AS",
        "GROUP",
        "BY",
        "ORDER",
        "DESC",
        "ASC",
        "LIMIT",
        "COUNT",
        "SUM",
        "MAX",
        "MIN",
        "FILTER",
        "COALESCE",
        "TODATETIME",
        "DATETRUNC",
        "TRUE",
        "FALSE",
        "ORDERS",
        "MINUTE",
        "HOUR",
        "MILLISECONDS",
    ];
    let text: String = sql
        .lines()
        .map(|l| l.split("--").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join(" ");
    let mut words = Vec::new();
    let (mut word, mut quoted) = (String::new(), false);
    for c in text.chars().chain(std::iter::once(' ')) {
        if c == '\'' {
            quoted = !quoted;
        } else if !quoted && (c.is_alphanumeric() || c == '_' || c == '.' || c == '$') {
            word.push(c);
            continue;
        }
        if !word.is_empty() {
            words.push(std::mem::take(&mut word));
        }
    }
    let aliases: BTreeSet<String> = words
        .windows(2)
        .filter(|w| w[0].eq_ignore_ascii_case("AS"))
        .map(|w| w[1].clone())
        .collect();
    words
        .into_iter()
        .filter(|w| !w.starts_with('$') && !w.chars().all(|c| c.is_ascii_digit()))
        .filter(|w| !WORDS.contains(&w.to_ascii_uppercase().as_str()))
        .filter(|w| !aliases.contains(w))
        .collect()
}

#[test]
fn every_query_sent_to_pinot_names_only_columns_of_the_pinot_table() {
    let schema = schema().expect("schema");
    let columns: BTreeSet<String> = specs(&schema).keys().cloned().collect();
    let mut queries: Vec<(String, String)> = server::analytics::OLAP_QUERIES
        .iter()
        .map(|(n, q)| (n.to_string(), q.to_string()))
        .collect();
    queries.push(("series".into(), server::history::series_sql("MINUTE")));
    for (name, sql) in &queries {
        let named = column_names(sql);
        assert!(!named.is_empty(), "{name}");
        let unknown: Vec<&String> = named.difference(&columns).collect();
        assert!(
            unknown.is_empty(),
            "{name} names {unknown:?}, not columns of the Pinot table"
        );
    }
    // The item-grain queries stay in rtap (see analytics::Analytics::item_grain): they would not.
    let popular = column_names(include_str!("../../server/src/queries/popular_items.sql"));
    assert!(popular.contains("line_items.product.name"), "{popular:?}");
    assert!(!columns.contains("line_items.product.name"));
}
