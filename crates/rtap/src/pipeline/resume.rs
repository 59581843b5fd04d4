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
    source_kind: &str,
    clock: SharedClock,
    metrics: CheckpointMetrics,
) -> anyhow::Result<Resumed> {
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
    }
    let (manifest, windows, dedup, deadletter_bytes, source) = match restored {
        Some(Restored { checkpoint, dedup }) => (
            checkpoint.manifest,
            Windows::restore(&checkpoint.windows).context("bad window state in the checkpoint")?,
            dedup,
            checkpoint.deadletter_bytes,
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
                0,
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
    .map_err(|e| {
        anyhow::anyhow!(
            "cannot open the realtime table under {}: {e}\n{}",
            data_dir.display(),
            recovery_hint(data_dir, origin)
        )
    })?;
    let mut ingestor = Ingestor::new(config.ingest);
    ingestor.dedup_mut().restore(dedup);
    let deadletters =
        DeadLetterStore::open_at(&data_dir.join("deadletter"), Some(deadletter_bytes))
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
