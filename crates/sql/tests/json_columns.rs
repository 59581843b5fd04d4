//! Pinot's JSON columns (`customer`, `billing_address`, `shipping_address`, `coupon_codes`,
//! `status_history`, `line_items`, `shipments`), rebuilt at query time from the stored columns:
//! each must be exactly the order's own object or array as the orders API writes it, from
//! sealed segments and from memory alike; orders of other shapes keep what they had; segments
//! written before the hidden columns existed still answer, and merge.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::Schema;
use ingest::{schema, IngestConfig, Ingestor, Message};
use orders::{Generator, GeneratorConfig, Order};
use serde_json::Value;
use sql::{SqlConfig, SqlEngine};
use table::{RealtimeTable, TableConfig};

/// 2026-11-20 00:00:00 UTC.
const T0: i64 = 1_795_132_800_000;
const NOW: i64 = T0 + 3_600_000;
const JSON: [&str; 7] = [
    "customer",
    "billing_address",
    "shipping_address",
    "coupon_codes",
    "status_history",
    "line_items",
    "shipments",
];

fn open(dir: &std::path::Path, schema: Arc<Schema>, config: TableConfig) -> Arc<RealtimeTable> {
    Arc::new(
        RealtimeTable::open(
            dir,
            schema,
            schema::TIME_MS,
            &[schema::ORDER_ID],
            config,
            clock::ManualClock::new(NOW),
        )
        .expect("open")
        .with_plain_columns(&schema::PLAIN_COLUMNS),
    )
}

fn decode(payloads: &[Vec<u8>]) -> RecordBatch {
    let msgs = Message::numbered(payloads);
    let out = Ingestor::new(IngestConfig::default()).ingest(&msgs, NOW);
    assert!(out.rejected.is_empty(), "{:?}", out.rejected);
    out.batch.expect("rows")
}

fn generated(n: u64) -> Vec<Order> {
    let mut g = Generator::new(GeneratorConfig {
        seed: 7,
        ..GeneratorConfig::default()
    });
    (1..=n)
        .map(|k| g.generate(k, T0 + k as i64 * 100))
        .collect()
}

fn engine(table: Arc<RealtimeTable>) -> SqlEngine {
    SqlEngine::new(
        table,
        SqlConfig {
            default_limit: 0,
            ..SqlConfig::default()
        },
        clock::ManualClock::new(NOW),
    )
    .expect("engine")
}

async fn rows(engine: &SqlEngine, sql: &str) -> Vec<Value> {
    let answer = engine.query_pinot(sql).await;
    assert_eq!(
        answer["exceptions"],
        serde_json::json!([]),
        "{sql}: {answer}"
    );
    answer["resultTable"]["rows"]
        .as_array()
        .expect("rows")
        .clone()
}

/// The order's JSON objects as the orders API writes them.
fn expected(o: &Order) -> Vec<String> {
    let s = |v: &dyn erased::Json| v.text();
    vec![
        s(&o.customer),
        s(&o.billing_address),
        s(&o.shipping_address),
        s(&o.coupon_codes),
        s(&o.status_history),
        s(&o.line_items),
        s(&o.shipments),
    ]
}

mod erased {
    pub trait Json {
        fn text(&self) -> String;
    }
    impl<T: serde::Serialize> Json for T {
        fn text(&self) -> String {
            serde_json::to_string(self).expect("serialises")
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_columns_are_each_orders_own_objects_from_disk_and_memory() {
    let dir = tempfile::tempdir().expect("dir");
    let table = open(dir.path(), schema::order_schema(), TableConfig::default());
    let orders = generated(400);
    let payloads: Vec<Vec<u8>> = orders.iter().map(|o| o.to_json()).collect();
    // Half sealed into a Parquet segment, half in memory.
    table.append(decode(&payloads[..200])).expect("append");
    table.flush().expect("seal");
    table.append(decode(&payloads[200..])).expect("append");
    assert_eq!(table.manifest().segments.len(), 1);
    let engine = engine(table);

    let sql = format!("SELECT order_id, {} FROM orders", JSON.join(", "));
    let answer = engine.query_pinot(&sql).await;
    assert_eq!(
        answer["resultTable"]["dataSchema"]["columnDataTypes"],
        serde_json::json!(["STRING", "JSON", "JSON", "JSON", "JSON", "JSON", "JSON", "JSON"])
    );
    let got = answer["resultTable"]["rows"].as_array().expect("rows");
    assert_eq!(got.len(), orders.len());
    let by_id: std::collections::HashMap<String, &Order> =
        orders.iter().map(|o| (o.order_id.to_string(), o)).collect();
    let mut split = 0;
    for row in got {
        let order = by_id[row[0].as_str().expect("id")];
        for (k, want) in expected(order).iter().enumerate() {
            assert_eq!(
                row[k + 1].as_str(),
                Some(want.as_str()),
                "order {}, column {}",
                order.order_id,
                JSON[k]
            );
        }
        split += usize::from(order.shipments.len() == 2);
    }
    assert!(
        split > 50,
        "orders shipped in two parts were checked: {split}"
    );

    // JSON_MATCH and JSON_EXTRACT_SCALAR agree with the flat columns on every order.
    for (sql, flat) in [
        (
            "SELECT COUNT(*) FROM orders WHERE JSON_MATCH(customer, '\"$.state\" = ''CA''')",
            "SELECT COUNT(*) FROM orders WHERE customer_state = 'CA'",
        ),
        (
            "SELECT COUNT(*) FROM orders WHERE JSON_MATCH(line_items, '\"$[*].product.category\" = ''Dry Dog Food''')",
            "SELECT COUNT(*) FROM orders WHERE itemCategories = 'Dry Dog Food'",
        ),
        (
            "SELECT COUNT(*) FROM orders WHERE JSON_MATCH(shipments, '\"$[*].shipment_status\" = ''Delivered''')",
            "SELECT COUNT(*) FROM orders WHERE shipping_status = 'Delivered'",
        ),
        (
            "SELECT COUNT(*) FROM orders WHERE JSON_MATCH(status_history, '\"$[*].status\" = ''Refunded''')",
            "SELECT COUNT(*) FROM orders WHERE refunded = 'yes'",
        ),
        (
            "SELECT COUNT(*) FROM orders WHERE JSON_EXTRACT_SCALAR(customer, '$.customer_id', 'STRING') = customer_id AND JSON_EXTRACT_SCALAR(billing_address, '$.zipcode', 'STRING') = billing_address_zipcode",
            "SELECT COUNT(*) FROM orders",
        ),
    ] {
        let a = rows(&engine, sql).await;
        let b = rows(&engine, flat).await;
        assert_eq!(a, b, "{sql}\n{flat}");
        assert!(a[0][0].as_i64().expect("count") > 0, "{sql} matched nothing");
    }
    // The same-element rule, checked against the orders themselves.
    let same_item = orders
        .iter()
        .filter(|o| {
            o.line_items
                .iter()
                .any(|i| i.quantity == 3 && i.product.price > 100.0)
        })
        .count();
    let a = rows(
        &engine,
        "SELECT COUNT(*) FROM orders WHERE JSON_MATCH(line_items, '\"$[*].quantity\" = 3 AND \"$[*].product.price\" > 100')",
    )
    .await;
    assert_eq!(a[0][0].as_u64(), Some(same_item as u64));
    assert!(same_item > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_of_other_shapes_keep_what_they_had() {
    let dir = tempfile::tempdir().expect("dir");
    let table = open(dir.path(), schema::order_schema(), TableConfig::default());
    let mut o = generated(1).remove(0);
    o.line_items.truncate(1);
    // One shipment holding the one item: rebuilt from the columns, not kept as text.
    o.shipments.truncate(1);
    o.shipments[0].items = o.line_items.clone();
    let base: Value = serde_json::from_slice(&o.to_json()).expect("json");
    let with = |key: &str, value: Value, id: &str| {
        let mut v = base.clone();
        v["order_id"] = Value::from(id);
        match value {
            Value::Null if key == "-" => {}
            Value::Null => {
                v.as_object_mut().expect("object").remove(key);
            }
            value => v[key] = value,
        }
        serde_json::to_vec(&v).expect("json")
    };
    let other_items = serde_json::json!([{"items": [{"quantity": 9}], "shipment_id": "s1"}]);
    let payloads = vec![
        with("-", Value::Null, "same"),
        with("shipments", other_items.clone(), "other-items"),
        with("shipments", Value::from("not a list"), "text"),
        with("shipments", Value::Null, "no-shipments"),
        with("customer", Value::Null, "no-customer"),
        with("coupon_codes", serde_json::json!([]), "no-coupons"),
    ];
    table.append(decode(&payloads)).expect("append");
    let engine = engine(table);
    let got = rows(
        &engine,
        "SELECT order_id, shipments, customer, coupon_codes FROM orders ORDER BY order_id",
    )
    .await;
    let cell = |id: &str, k: usize| -> Value {
        got.iter()
            .find(|r| r[0] == id)
            .unwrap_or_else(|| panic!("{id} missing"))[k]
            .clone()
    };
    let text = |v: &Value| serde_json::to_string(v).expect("json");
    assert_eq!(cell("same", 1), Value::from(text(&base["shipments"])));
    assert_eq!(cell("same", 2), Value::from(text(&base["customer"])));
    assert_eq!(cell("other-items", 1), Value::from(text(&other_items)));
    assert_eq!(cell("text", 1), Value::from("\"not a list\""));
    assert_eq!(cell("no-shipments", 1), Value::Null);
    assert_eq!(cell("no-customer", 2), Value::Null);
    assert_eq!(cell("no-coupons", 3), Value::from("[]"));
    // A filter on a JSON column, and one on a stored column beside it.
    let n = rows(
        &engine,
        "SELECT COUNT(*) FROM orders WHERE shipments IS NULL OR customer IS NULL",
    )
    .await;
    assert_eq!(n[0][0].as_i64(), Some(2));
    let n = rows(
        &engine,
        "SELECT COUNT(*) FROM orders WHERE JSON_MATCH(shipments, '\"$[*].items[*].quantity\" = 9') AND order_id <> 'x'",
    )
    .await;
    assert_eq!(n[0][0].as_i64(), Some(1));
    // Hidden columns are not columns of SQL's table.
    let answer = engine.query_pinot("SELECT __shipment_id FROM orders").await;
    assert_eq!(answer["exceptions"][0]["errorCode"], 710, "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_written_before_the_hidden_columns_answer_and_merge() {
    let dir = tempfile::tempdir().expect("dir");
    let stored = schema::order_schema();
    let old: Arc<Schema> = Arc::new(Schema::new(
        stored
            .fields()
            .iter()
            .filter(|f| !f.name().starts_with(schema::HIDDEN_PREFIX))
            .cloned()
            .collect::<Vec<_>>(),
    ));
    let orders = generated(30);
    let payloads: Vec<Vec<u8>> = orders.iter().map(|o| o.to_json()).collect();
    {
        let table = open(dir.path(), old.clone(), TableConfig::default());
        for part in payloads[..20].chunks(10) {
            let batch = decode(part);
            let batch = batch
                .project(&(0..old.fields().len()).collect::<Vec<_>>())
                .expect("old columns are the first");
            assert_eq!(batch.schema().fields(), old.fields());
            table.append(batch).expect("append");
            table.flush().expect("seal");
        }
    }
    let config = TableConfig {
        merge_min_segments: 2,
        ..TableConfig::default()
    };
    let table = open(dir.path(), stored, config);
    table.append(decode(&payloads[20..])).expect("append");
    table.flush().expect("seal");
    let engine = engine(table.clone());
    let check = |got: Vec<Value>| {
        assert_eq!(got.len(), 30);
        for row in &got {
            let o = orders
                .iter()
                .find(|o| o.order_id.to_string() == row[0].as_str().unwrap_or_default())
                .expect("known order");
            let old_row = orders[..20].iter().any(|x| x.order_id == o.order_id);
            let want = expected(o);
            assert_eq!(row[1].as_str(), Some(want[0].as_str()), "customer");
            if old_row {
                assert_eq!(row[2], Value::Null, "no shipments were kept then");
                let items: Value =
                    serde_json::from_str(row[3].as_str().expect("items")).expect("json");
                assert!(items
                    .as_array()
                    .expect("list")
                    .iter()
                    .all(|i| i["product"]["out_of_stock"].is_null()));
            } else {
                assert_eq!(row[2].as_str(), Some(want[6].as_str()));
                assert_eq!(row[3].as_str(), Some(want[5].as_str()));
            }
        }
    };
    let sql = "SELECT order_id, customer, shipments, line_items FROM orders";
    check(rows(&engine, sql).await);
    // Merging the old segments with the new one rewrites them with the new columns (NULL).
    assert_eq!(table.manifest().segments.len(), 3);
    table.maintain();
    table.flush().expect("merge");
    assert_eq!(table.manifest().segments.len(), 1, "merged");
    drop(engine);
    let engine = self::engine(table);
    check(rows(&engine, sql).await);
}

/// What the JSON columns cost: only the hidden columns are stored, and they are small beside
/// the rest (the JSON text itself would be about 2.4 KB an order before compression).
#[test]
fn the_json_columns_cost_only_their_hidden_columns() {
    const ORDERS: u64 = 20_000;
    let orders = generated(ORDERS);
    let payloads: Vec<Vec<u8>> = orders.iter().map(|o| o.to_json()).collect();
    let batch = decode(&payloads);
    let stored = schema::order_schema();
    let visible: Vec<usize> = (0..stored.fields().len())
        .filter(|&i| !stored.field(i).name().starts_with(schema::HIDDEN_PREFIX))
        .collect();
    let without = batch.project(&visible).expect("project");
    let json_text: usize = orders
        .iter()
        .map(|o| expected(o).iter().map(String::len).sum::<usize>())
        .sum();

    let disk = |batch: RecordBatch| -> u64 {
        let dir = tempfile::tempdir().expect("dir");
        let table = open(dir.path(), batch.schema(), TableConfig::default());
        table.append(batch).expect("append");
        table.flush().expect("seal");
        table.manifest().segments.iter().map(|s| s.bytes).sum()
    };
    let memory = |b: &RecordBatch| b.get_array_memory_size() as u64;
    let (disk_all, disk_without) = (disk(batch.clone()), disk(without.clone()));
    let (mem_all, mem_without) = (memory(&batch), memory(&without));
    let per = |bytes: u64| bytes as f64 / ORDERS as f64;
    println!(
        "json columns: hidden columns {:.1} B/order on disk ({:.1} with them, {:.1} without), \
         {:.1} B/order in memory ({:.1} with, {:.1} without); the JSON text they give back is \
         {:.0} B/order",
        per(disk_all - disk_without),
        per(disk_all),
        per(disk_without),
        per(mem_all - mem_without),
        per(mem_all),
        per(mem_without),
        per(json_text as u64),
    );
    assert!(disk_all > disk_without);
    assert!(
        per(disk_all - disk_without) < 60.0,
        "the hidden columns cost {:.1} B/order on disk",
        per(disk_all - disk_without)
    );
    assert!(per(json_text as u64) > 1_500.0, "the JSON text is large");
}
