//! The table's background jobs: sealing the in-memory rows into a sorted Parquet file, and
//! merging runs of segments chosen by [`crate::merge_policy`]; plus retention. Each job runs
//! on a thread of its own while queries keep reading the previous snapshot; [`RealtimeTable::maintain`] installs the result
//! (manifest first, then the snapshot) or, when a job failed, puts everything back as it was.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use datafusion::arrow::array::RecordBatch;

use crate::lookup;
use crate::manifest::{Manifest, SegmentEntry};
use crate::merge_policy::{self, MergeLimits};
use crate::segment::{self, Segment, SegmentRef};
use crate::table::{segment_file, Writer};
use crate::{RealtimeTable, TableError};

/// The longest a failed seal waits before the next try: its rows are in memory and hold the
/// checkpoint (and Kafka's commits) back.
const SEAL_BACKOFF_MAX_MS: i64 = 30_000;

/// The longest a failed merge waits: a merge is an optimisation, and one that keeps failing
/// would otherwise rewrite up to `merge_target_rows` rows every 30 s for nothing.
const MERGE_BACKOFF_MAX_MS: i64 = 600_000;

/// Clears a flag when dropped.
struct ClearOnDrop<'a>(&'a AtomicBool);

impl Drop for ClearOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

pub(crate) enum JobKind {
    /// The batches being sealed and their bytes (counted once, not at every snapshot).
    Seal {
        batches: Vec<RecordBatch>,
        bytes: u64,
    },
    Merge {
        inputs: Vec<SegmentRef>,
    },
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Slot {
    Seal,
    Merge,
}

pub(crate) struct Job {
    pub(crate) kind: JobKind,
    pub(crate) id: u64,
    pub(crate) handle: JoinHandle<Result<SegmentEntry, TableError>>,
}

impl RealtimeTable {
    pub(crate) fn start_seal(&self, w: &mut Writer) {
        let batches = std::mem::take(&mut w.mutable);
        let bytes = std::mem::take(&mut w.mutable_bytes);
        w.mutable_rows = 0;
        w.mutable_since = None;
        let id = w.manifest.next_segment_id;
        w.manifest.next_segment_id += 1;
        let path = self.dir.join(segment_file(id));
        let schema = self.schema.clone();
        let time_column = self.time_column;
        let layout = self.layout.clone();
        let job_batches = batches.clone();
        let handle = std::thread::spawn(move || {
            let (written, min, max, lookups) =
                segment::write_sorted(&path, &schema, &job_batches, time_column, &layout)?;
            Ok(SegmentEntry {
                id,
                file: segment_file(id),
                rows: written.rows,
                min_time_ms: min,
                max_time_ms: max,
                bytes: written.bytes,
                checksum: Some(written.checksum),
                lookups,
            })
        });
        w.seal_job = Some(Job {
            kind: JobKind::Seal { batches, bytes },
            id,
            handle,
        });
        // The snapshot still shows the batches (now under the job) until the file is installed.
    }

    pub(crate) fn start_merge_if_due(&self, w: &mut Writer) {
        let inputs = merge_policy::inputs_of(&w.segments);
        let Some(run) = merge_policy::pick(&inputs, MergeLimits::from(&self.config)) else {
            // Nothing to merge, and the inputs of the merge that failed are gone (dropped by
            // retention, say): that failure no longer stands.
            let failed_inputs_left = w
                .segments
                .iter()
                .any(|s| w.merge_failed_inputs.contains(&s.entry.id));
            if !w.merge_backoff.is_clear() && !failed_inputs_left {
                w.merge_backoff.succeeded();
                self.lock_errors().merge = None;
            }
            return;
        };
        let best: Vec<SegmentRef> = w.segments[run].to_vec();
        let id = w.manifest.next_segment_id;
        w.manifest.next_segment_id += 1;
        let path = self.dir.join(segment_file(id));
        let schema = self.schema.clone();
        let layout = self.layout.clone();
        let inputs = best.clone();
        let handle = std::thread::spawn(move || {
            let started = std::time::Instant::now();
            let sources: Vec<PathBuf> = inputs.iter().map(|s| s.path.clone()).collect();
            let batches = sources
                .into_iter()
                .flat_map(|p| match segment::read_batches(&p) {
                    Ok(iter) => {
                        Box::new(iter) as Box<dyn Iterator<Item = Result<RecordBatch, TableError>>>
                    }
                    Err(e) => Box::new(std::iter::once(Err(e))),
                });
            let written = segment::write_batches(&path, &schema, batches, &layout)?;
            // Each index is merged from the inputs' (a segment without one has none to give).
            let lookups = segment::write_lookups(&path, &layout.lookups, |index_path, spec| {
                // Only readable indexes (one disabled by a failed checksum is not merged).
                let parts: Option<Vec<_>> = inputs
                    .iter()
                    .map(|s| Some((s.lookup(&spec.column)?, s.entry.rows)))
                    .collect();
                let parts = parts.ok_or_else(|| {
                    TableError::Schema(format!(
                        "an input segment has no readable lookup index on {:?}",
                        spec.column
                    ))
                })?;
                lookup::write_merged(index_path, &spec.column, &parts)
            });
            tracing::debug!(
                id,
                inputs = ?inputs.iter().map(|s| s.entry.id).collect::<Vec<_>>(),
                rows = written.rows,
                bytes = written.bytes,
                secs = started.elapsed().as_secs_f64(),
                "merged segments"
            );
            Ok(SegmentEntry {
                id,
                file: segment_file(id),
                rows: written.rows,
                min_time_ms: inputs
                    .iter()
                    .map(|s| s.entry.min_time_ms)
                    .min()
                    .unwrap_or(0),
                max_time_ms: inputs
                    .iter()
                    .map(|s| s.entry.max_time_ms)
                    .max()
                    .unwrap_or(0),
                bytes: written.bytes,
                checksum: Some(written.checksum),
                lookups,
            })
        });
        w.merge_job = Some(Job {
            kind: JobKind::Merge { inputs: best },
            id,
            handle,
        });
        self.merging.store(true, Ordering::Relaxed);
    }

    /// Installs the background job's result if it has finished (or waits for it if `wait`).
    /// Returns true when a seal was installed.
    pub(crate) fn finish_job(
        &self,
        w: &mut Writer,
        slot: Slot,
        wait: bool,
    ) -> Result<bool, TableError> {
        let job = match slot {
            Slot::Seal => &mut w.seal_job,
            Slot::Merge => &mut w.merge_job,
        };
        match job {
            Some(j) if wait || j.handle.is_finished() => {}
            _ => return Ok(false),
        }
        let Some(job) = job.take() else {
            return Ok(false);
        };
        let result = job.handle.join().unwrap_or_else(|_| {
            Err(TableError::Schema(
                "a background segment job panicked".into(),
            ))
        });
        match (job.kind, result) {
            (JobKind::Seal { batches, bytes }, Ok(entry)) => {
                let mut manifest = w.manifest.clone();
                manifest.segments.push(entry.clone());
                manifest.segments.sort_by_key(|e| (e.min_time_ms, e.id));
                if let Err(e) = manifest.store(&self.dir) {
                    self.undo_store(w, job.id);
                    return self.seal_failed(w, batches, bytes, e);
                }
                w.manifest = manifest;
                w.segments
                    .push(Arc::new(Segment::new(entry, &self.dir, self.trash.clone())));
                w.segments
                    .sort_by_key(|s| (s.entry.min_time_ms, s.entry.id));
                w.seal_backoff.succeeded();
                self.lock_errors().seal = None;
                self.publish(w);
                Ok(true)
            }
            (JobKind::Seal { batches, bytes }, Err(e)) => {
                self.remove_files(job.id);
                self.seal_failed(w, batches, bytes, e)
            }
            (JobKind::Merge { inputs }, result) => {
                // Cleared after the count (even if installing panics), so a scrape that sees no
                // merge running sees this one counted.
                let _merging = ClearOnDrop(&self.merging);
                self.install_merge(w, job.id, &inputs, result)
            }
        }
    }

    /// Puts a finished merge's segment in place of its inputs (or, if it failed, removes it).
    fn install_merge(
        &self,
        w: &mut Writer,
        id: u64,
        inputs: &[SegmentRef],
        result: Result<SegmentEntry, TableError>,
    ) -> Result<bool, TableError> {
        let entry = match result {
            Ok(entry) => entry,
            Err(e) => {
                self.remove_files(id);
                self.merge_failed(w, inputs, &e);
                return Err(e);
            }
        };
        let gone: std::collections::HashSet<u64> = inputs.iter().map(|s| s.entry.id).collect();
        let mut manifest = w.manifest.clone();
        manifest.segments.retain(|e| !gone.contains(&e.id));
        manifest.segments.push(entry.clone());
        manifest.segments.sort_by_key(|e| (e.min_time_ms, e.id));
        if let Err(e) = manifest.store(&self.dir) {
            self.undo_store(w, id);
            self.merge_failed(w, inputs, &e);
            return Err(e);
        }
        w.manifest = manifest;
        w.merge_backoff.succeeded();
        self.lock_errors().merge = None;
        w.segments.retain(|s| !gone.contains(&s.entry.id));
        w.segments
            .push(Arc::new(Segment::new(entry, &self.dir, self.trash.clone())));
        w.segments
            .sort_by_key(|s| (s.entry.min_time_ms, s.entry.id));
        for s in inputs {
            s.retire();
        }
        self.merges_done.fetch_add(1, Ordering::Relaxed);
        self.publish(w);
        Ok(false)
    }

    /// Storing the manifest that lists segment `id` failed. Before its rename (most failures)
    /// the job's files go at once; after it (a failed directory sync: the manifest on disk
    /// lists them) the previous manifest is stored again first, and if that fails too they
    /// stay, listed, until a later store or the next open settles it.
    fn undo_store(&self, w: &Writer, id: u64) {
        let listed = match Manifest::load(&self.dir) {
            Ok(on_disk) => on_disk.is_some_and(|m| m.segments.iter().any(|e| e.id == id)),
            Err(_) => true,
        };
        if !listed {
            return self.remove_files(id);
        }
        match w.manifest.store(&self.dir) {
            Ok(()) => self.remove_files(id),
            Err(e) => tracing::warn!(error = %e, id,
                "could not store the table's manifest again; the new segment's files stay until the next start"),
        }
    }

    /// Removes the files a job wrote for segment `id` (the segment and its lookup indexes).
    fn remove_files(&self, id: u64) {
        let file = segment_file(id);
        for spec in &self.layout.lookups {
            let _ = std::fs::remove_file(self.dir.join(lookup::file_name(&file, &spec.column)));
        }
        let _ = std::fs::remove_file(self.dir.join(file));
    }

    /// A merge failed (a full disk, an unreadable input): its inputs stay as they were and the
    /// next merge waits, doubling from 1 s to [`MERGE_BACKOFF_MAX_MS`]; seals go on.
    fn merge_failed(&self, w: &mut Writer, inputs: &[SegmentRef], e: &TableError) {
        w.merge_failed_inputs = inputs.iter().map(|s| s.entry.id).collect();
        w.merge_backoff
            .failed(self.monotonic_ms(), MERGE_BACKOFF_MAX_MS);
        self.lock_errors().merge = Some(e.to_string());
    }

    /// A failed seal puts its batches back in front of the mutable segment: nothing is lost,
    /// and the next `maintain` tries again.
    fn seal_failed(
        &self,
        w: &mut Writer,
        mut batches: Vec<RecordBatch>,
        bytes: u64,
        e: TableError,
    ) -> Result<bool, TableError> {
        let rows: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
        batches.append(&mut w.mutable);
        w.mutable = batches;
        w.mutable_rows += rows;
        w.mutable_bytes += bytes;
        // These rows are overdue: seal them as soon as the backoff allows, which doubles from
        // 1 s to 30 s instead of retrying every second.
        w.mutable_since = Some(i64::MIN);
        w.seal_backoff
            .failed(self.monotonic_ms(), SEAL_BACKOFF_MAX_MS);
        self.lock_errors().seal = Some(e.to_string());
        self.publish(w);
        Err(e)
    }

    pub(crate) fn apply_retention(&self, w: &mut Writer, now_ms: i64) -> Result<(), TableError> {
        let cutoff = now_ms.saturating_sub(self.config.retention_ms);
        let busy: Vec<u64> = match &w.merge_job {
            Some(Job {
                kind: JobKind::Merge { inputs },
                ..
            }) => inputs.iter().map(|s| s.entry.id).collect(),
            _ => Vec::new(),
        };
        let expired: Vec<SegmentRef> = w
            .segments
            .iter()
            .filter(|s| s.entry.max_time_ms < cutoff && !busy.contains(&s.entry.id))
            .cloned()
            .collect();
        if expired.is_empty() {
            return Ok(());
        }
        let ids: Vec<u64> = expired.iter().map(|s| s.entry.id).collect();
        let mut manifest = w.manifest.clone();
        manifest.segments.retain(|e| !ids.contains(&e.id));
        manifest.store(&self.dir)?;
        w.manifest = manifest;
        w.segments.retain(|s| !ids.contains(&s.entry.id));
        for s in &expired {
            tracing::info!(file = %s.entry.file, rows = s.entry.rows, "dropping a segment past retention");
            s.retire();
        }
        self.publish(w);
        Ok(())
    }
}
