//! Where a pipeline starts: the last checkpoint's table, windows, dedup state, dead-letter
//! length and source position, or an empty table when there is none. A corrupt data directory
//! is refused with the way out (move the named files aside; the source rebuilds the rest).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use checkpoint::{CheckpointMetrics, CheckpointProtocol, Checkpointer, Restored, SourcePosition};
use clock::SharedClock;
use ingest::{schema, DeadLetterStore, Ingestor};
use rolling::Windows;
use table::RealtimeTable;

use crate::config::RtapConfig;

/// Where the table's segments are under a data directory.
pub fn table_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("segments").join("orders")
}

/// How to get out of a corrupt data directory (the source is the source of truth).
pub fn recovery_hint(data_dir: &Path, origin: &str) -> String {
    format!(
        "rtap will not start on it rather than serve wrong numbers. To recover, move {cp}, \
         {dedup} and {seg} aside (keep them for inspection); the next `rtap up` rebuilds the \
         table, windows and dedup state from {origin}.",
        cp = data_dir.join(checkpoint::FILE_NAME).display(),
        dedup = data_dir.join("dedup").display(),
        seg = table_dir(data_dir).display(),
    )
}

/// The state a pipeline resumes from.
pub struct Resumed {
    pub table: Arc<RealtimeTable>,
    pub windows: Windows,
    pub ingestor: Ingestor,
    pub deadletters: DeadLetterStore,
    pub protocol: CheckpointProtocol,
    pub source: SourcePosition,
}

/// Opens everything under the data directory as of the last checkpoint. `origin` names the
/// source for the recovery hint; `source_kind` must match the checkpoint's.
pub fn resume(
    config: &RtapConfig,
    origin: &str,
    source: (&str, Option<&str>),
    clock: SharedClock,
    metrics: CheckpointMetrics,
) -> anyhow::Result<Resumed> {
    let (source_kind, topic) = source;
    let data_dir = config.data_dir.as_path();
    let (store, restored) = Checkpointer::open(data_dir)
        .map_err(|e| anyhow::anyhow!("{e}\n{}", recovery_hint(data_dir, origin)))?;
    if let Some(r) = &restored {
        if r.checkpoint.source.kind != source_kind {
            anyhow::bail!(
                "the data under {} was ingested from the {} source, this run reads from the {source_kind} \
                 source: mixing them would count orders twice. Use another --data-dir.",
                data_dir.display(),
                r.checkpoint.source.kind
            );
        }
        if let (Some(theirs), Some(ours)) = (r.checkpoint.source.topic.as_deref(), topic) {
            if theirs != ours {
                anyhow::bail!(
                    "the data under {} holds Kafka topic {theirs}, this run reads topic {ours}: its \
                     positions would be applied to the wrong topic. Use --topic {theirs}, or start \
                     fresh with another --data-dir (or move {}, {} and {} aside).",
                    data_dir.display(),
                    data_dir.join(checkpoint::FILE_NAME).display(),
                    data_dir.join("dedup").display(),
                    table_dir(data_dir).display()
                );
            }
        }
    }
    // Event times a checkpoint may hold beyond now + the future bound came from before ingest
    // bounded them: clamp them so one far-future order cannot stall the windows and dedup.
    let max_event_ms = clock.now_ms().saturating_add(config.ingest.max_future_ms);
    let (manifest, mut windows, dedup, deadletters, source) = match restored {
        Some(Restored { checkpoint, dedup }) => (
            checkpoint.manifest,
            Windows::restore(&checkpoint.windows).context("bad window state in the checkpoint")?,
            dedup,
            Some(checkpoint.deadletters.ok_or(checkpoint.deadletter_bytes)),
            checkpoint.source,
        ),
        None => {
            if table_dir(data_dir)
                .join(table::manifest::FILE_NAME)
                .exists()
            {
                tracing::warn!(
                    "no checkpoint under {}: starting the table empty and rebuilding it from the order store",
                    data_dir.display()
                );
            }
            (
                table::Manifest {
                    version: 1,
                    ..table::Manifest::default()
                },
                Windows::new(config.windows).context("bad window configuration")?,
                Vec::new(),
                None,
                SourcePosition {
                    kind: source_kind.into(),
                    ..SourcePosition::default()
                },
            )
        }
    };
    let table = RealtimeTable::open_at(
        &table_dir(data_dir),
        schema::order_schema(),
        schema::TIME_MS,
        &[schema::ORDER_ID, "customer_id"],
        config.table,
        manifest,
        clock,
    )
    .map(|t| t.with_plain_columns(&schema::PLAIN_COLUMNS))
    .and_then(|t| t.with_lookups(table::LookupSpec::list(&schema::LOOKUPS)))
    .map_err(|e| {
        anyhow::anyhow!(
            "cannot open the realtime table under {}: {e}\n{}",
            data_dir.display(),
            recovery_hint(data_dir, origin)
        )
    })?;
    if windows.config() != &config.windows {
        tracing::warn!(
            checkpoint = ?windows.config(),
            configured = ?config.windows,
            "the windows.* settings differ from the checkpoint's; they apply to a fresh data \
             directory only, the checkpoint's are kept"
        );
    }
    if windows.clamp_stream_time(max_event_ms) {
        tracing::warn!(
            "the checkpoint's window stream time was ahead of the wall clock; clamped to now"
        );
    }
    let mut ingest_config = config.ingest;
    ingest_config
        .max_age_ms
        .get_or_insert(config.table.retention_ms);
    let mut ingestor = Ingestor::new(ingest_config);
    ingestor.dedup_mut().restore(&dedup, max_event_ms);
    drop(dedup);
    let dir = data_dir.join("deadletter");
    let limits = config.ingest.deadletter_limits();
    let deadletters = match deadletters {
        Some(Ok(mark)) => DeadLetterStore::open_at(&dir, Some(mark), limits),
        Some(Err(bytes)) => DeadLetterStore::open_at_bytes(&dir, bytes, limits),
        None => DeadLetterStore::open_at(&dir, None, limits),
    }
    .context("cannot open the dead-letter store")?;
    Ok(Resumed {
        table: Arc::new(table),
        windows,
        ingestor,
        deadletters,
        protocol: CheckpointProtocol::new(store, metrics),
        source,
    })
}
