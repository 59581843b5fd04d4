//! `ORDER BY time DESC LIMIT n` (the newest orders) reads the newest segments first and stops:
//! the answer is the newest rows (known by construction), and the scan decodes a few row
//! groups, not the table.

use std::sync::Arc;

use datafusion::arrow::array::{AsArray, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use datafusion::physical_plan::{collect, displayable, ExecutionPlan};
use datafusion::prelude::{SessionConfig, SessionContext};
use table::{RealtimeTable, TableConfig, TableScan};

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("time_ms", DataType::Int64, false),
        Field::new("id", DataType::Utf8, false),
    ]))
}

/// Rows `from..from + n`, row `i` at time `1_000_000 + 7 * i` (unique), in a shuffled order.
fn batch(from: i64, n: i64) -> RecordBatch {
    let mut ids: Vec<i64> = (from..from + n).collect();
    // A fixed permutation: segments are sorted by time when sealed, whatever the arrival.
    ids.sort_by_key(|i| (i * 7_919) % 10_007);
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from_iter_values(
                ids.iter().map(|i| 1_000_000 + 7 * i),
            )),
            Arc::new(StringArray::from_iter_values(
                ids.iter().map(|i| format!("o-{i}")),
            )),
        ],
    )
    .expect("batch")
}

/// Rows the plan's Parquet scans decoded.
fn parquet_rows(plan: &Arc<dyn ExecutionPlan>) -> usize {
    let own = if plan.name() == "DataSourceExec"
        && displayable(plan.as_ref())
            .one_line()
            .to_string()
            .contains("parquet")
    {
        plan.metrics().and_then(|m| m.output_rows()).unwrap_or(0)
    } else {
        0
    };
    own + plan.children().into_iter().map(parquet_rows).sum::<usize>()
}

#[tokio::test]
async fn the_newest_rows_come_from_the_newest_row_groups() {
    let dir = tempfile::tempdir().expect("tempdir");
    let table = Arc::new(
        RealtimeTable::open(
            dir.path(),
            schema(),
            "time_ms",
            &[],
            TableConfig {
                merge_min_segments: 1_000,
                row_group_rows: 1_000,
                ..TableConfig::default()
            },
            clock::ManualClock::new(0),
        )
        .expect("open"),
    );
    // Ten segments of 5,000 rows, oldest first, then rows in memory older than the newest
    // segment's (late orders): the top 10 mixes the newest segment and memory.
    for s in 0..10 {
        table.append(batch(s * 5_000, 5_000)).expect("append");
        table.flush().expect("seal");
    }
    let late = RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from_iter_values([
                1_000_000 + 7 * 49_995 + 3,
                5,
                1_000_000 + 7 * 49_990 + 1,
            ])),
            Arc::new(StringArray::from_iter_values([
                "late-1", "late-2", "late-3",
            ])),
        ],
    )
    .expect("late");
    table.append(late).expect("append");
    assert_eq!(table.snapshot().segments.len(), 10);

    // Two partitions (as on the 2-core CI machine): each decodes its newest row group before a
    // threshold exists; more partitions would decode more.
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(2));
    ctx.register_table("t", Arc::new(TableScan::new(table.clone())))
        .expect("register");
    for (sql, want) in [
        (
            "SELECT time_ms, id FROM t ORDER BY time_ms DESC LIMIT 10",
            vec![
                "o-49999", "o-49998", "o-49997", "o-49996", "late-1", "o-49995", "o-49994",
                "o-49993", "o-49992", "o-49991",
            ],
        ),
        (
            "SELECT time_ms, id FROM t WHERE id LIKE 'o-%' ORDER BY time_ms DESC LIMIT 3",
            vec!["o-49999", "o-49998", "o-49997"],
        ),
        (
            "SELECT time_ms, id FROM t ORDER BY time_ms ASC LIMIT 3",
            vec!["late-2", "o-0", "o-1"],
        ),
    ] {
        let plan = ctx
            .sql(sql)
            .await
            .expect("plan")
            .create_physical_plan()
            .await
            .expect("physical plan");
        let batches = collect(plan.clone(), ctx.task_ctx()).await.expect("run");
        let ids: Vec<String> = batches
            .iter()
            .flat_map(|b| {
                let ids = b.column(1).as_string::<i32>();
                (0..b.num_rows())
                    .map(|i| ids.value(i).to_string())
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(ids, want, "{sql}");
        let times: Vec<i64> = batches
            .iter()
            .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
            .collect();
        assert!(times.windows(2).all(|w| w[0] != w[1]), "{sql}: {times:?}");
        if sql.contains("DESC") && !sql.contains("WHERE") {
            // 50,000 rows in 50 row groups: the newest few are decoded, the rest skipped.
            // (With another filter DataFusion reads a page index, and its row selection turns
            // off the skipping of row groups by the top n's threshold: a few more are read.)
            let decoded = parquet_rows(&plan);
            assert!(decoded <= 5_000, "{sql}: decoded {decoded} rows");
        }
    }
}
