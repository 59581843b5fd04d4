//! The realtime table: one writer appends Arrow batches, any number of readers query immutable
//! snapshots.
//!
//! Appended batches live in memory (the mutable segment) until it holds `max_memory_rows` rows
//! or is `seal_after_secs` old; it is then sealed: a background thread writes it as one sorted
//! Parquet file while queries keep reading the same batches from memory, and when the file is
//! durable and listed in the manifest, the snapshot swaps the batches for the file. Small sealed
//! segments are merged in the background; segments wholly past retention are dropped. The
//! writer never waits for readers, and readers never see a half-written batch or file.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::thread::JoinHandle;
use std::time::Instant;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;

use crate::manifest::{Manifest, SegmentEntry};
use crate::segment::{self, FileLayout, Segment, SegmentRef, Trash};
use crate::{TableConfig, TableError};

/// What queries read: sealed segments on disk plus the batches still in memory.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Sealed segments, oldest first.
    pub segments: Vec<SegmentRef>,
    /// Batches not yet in a durable segment (sealing or mutable), oldest first.
    pub memory: Vec<RecordBatch>,
    pub memory_rows: u64,
}

impl Snapshot {
    pub fn rows(&self) -> u64 {
        self.memory_rows + self.segments.iter().map(|s| s.entry.rows).sum::<u64>()
    }
}

/// How a table is opened.
enum Opening {
    ReadOnly,
    /// As the writer, at the stored manifest or at the given one (a checkpoint's).
    Write(Option<Manifest>),
}

/// What one call of [`RealtimeTable::maintain`] did, for a checkpointer.
#[derive(Debug, Default)]
pub struct Maintenance {
    /// A seal finished and is listed in the stored manifest: the manifest as of then, and when
    /// it was read (for [`RealtimeTable::checkpoint_committed`]).
    pub sealed: Option<(Manifest, Instant)>,
    /// A seal started: every row appended so far is in it or in an earlier segment. The state
    /// that goes with those rows is the state now.
    pub seal_started: bool,
    /// A background job failed (its rows are back in memory; it is retried).
    pub error: Option<TableError>,
}

/// Checks every segment file against the checksum in its manifest entry, two files at a time.
fn verify_checksums(segments: &[SegmentRef]) -> Result<(), TableError> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    let chunk = segments.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = segments
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    for s in part {
                        let Some(expected) = s.entry.checksum else {
                            continue;
                        };
                        let actual = segment::file_checksum(&s.path)?;
                        if actual != expected {
                            return Err(TableError::Corrupt {
                                path: s.path.display().to_string(),
                                detail: format!(
                                    "checksum {actual:016x} does not match {expected:016x} in the manifest"
                                ),
                            });
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        handles.into_iter().try_for_each(|h| {
            h.join().unwrap_or_else(|_| {
                Err(TableError::Schema("checksum verification panicked".into()))
            })
        })
    })
}

enum JobKind {
    Seal { batches: Vec<RecordBatch> },
    Merge { inputs: Vec<SegmentRef> },
}

#[derive(Debug, Clone, Copy)]
enum Slot {
    Seal,
    Merge,
}

struct Job {
    kind: JobKind,
    id: u64,
    handle: JoinHandle<Result<SegmentEntry, TableError>>,
}

struct Writer {
    manifest: Manifest,
    segments: Vec<SegmentRef>,
    mutable: Vec<RecordBatch>,
    mutable_rows: u64,
    mutable_since: Option<Instant>,
    /// The background seal in flight (at most one).
    seal_job: Option<Job>,
    /// The background merge in flight (at most one; runs beside a seal).
    merge_job: Option<Job>,
    /// The last background failure, reported by `maintain` and kept for status pages.
    last_error: Option<String>,
}

pub struct RealtimeTable {
    dir: PathBuf,
    schema: SchemaRef,
    time_column: usize,
    config: TableConfig,
    layout: FileLayout,
    snapshot: RwLock<Arc<Snapshot>>,
    writer: Mutex<Writer>,
    trash: Arc<Trash>,
}

/// How long a retired segment file stays on disk after its last snapshot is gone: longer than
/// any query may run.
const RETIRED_FILE_GRACE: std::time::Duration = std::time::Duration::from_secs(120);

impl std::fmt::Debug for RealtimeTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RealtimeTable")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn segment_file(id: u64) -> String {
    format!("seg-{id:010}.parquet")
}

impl RealtimeTable {
    /// Opens the table stored in `dir` (creating it if empty). Fails if the manifest lists a
    /// segment file that is missing; removes segment files the manifest does not list
    /// (leftovers of a seal or merge interrupted by a crash).
    pub fn open(
        dir: &Path,
        schema: SchemaRef,
        time_column: &str,
        bloom_columns: &[&str],
        config: TableConfig,
    ) -> Result<Self, TableError> {
        Self::open_with(
            dir,
            schema,
            time_column,
            bloom_columns,
            config,
            Opening::Write(None),
        )
    }

    /// Opens the table as of a checkpoint: exactly the segments `manifest` lists (every file
    /// checked against its checksum), whatever the stored manifest says; later segment files
    /// are removed and the stored manifest is replaced. A table opened this way keeps retired
    /// files until [`RealtimeTable::checkpoint_committed`] says no checkpoint needs them.
    pub fn open_at(
        dir: &Path,
        schema: SchemaRef,
        time_column: &str,
        bloom_columns: &[&str],
        config: TableConfig,
        manifest: Manifest,
    ) -> Result<Self, TableError> {
        let table = Self::open_with(
            dir,
            schema,
            time_column,
            bloom_columns,
            config,
            Opening::Write(Some(manifest)),
        )?;
        table.trash.hold_until_checkpoint();
        Ok(table)
    }

    /// Opens the table to query it while another process may be writing it: nothing on disk is
    /// created or removed. Never append to or maintain a table opened this way.
    pub fn open_read_only(
        dir: &Path,
        schema: SchemaRef,
        time_column: &str,
    ) -> Result<Self, TableError> {
        Self::open_with(
            dir,
            schema,
            time_column,
            &[],
            TableConfig::default(),
            Opening::ReadOnly,
        )
    }

    fn open_with(
        dir: &Path,
        schema: SchemaRef,
        time_column: &str,
        bloom_columns: &[&str],
        config: TableConfig,
        opening: Opening,
    ) -> Result<Self, TableError> {
        config.validate()?;
        let writer = !matches!(opening, Opening::ReadOnly);
        if writer {
            std::fs::create_dir_all(dir).map_err(|e| TableError::io(dir, e))?;
        }
        // Segment paths go to DataFusion's object store, which needs them absolute (a relative
        // `./data/...` would be looked up at `/%2E/data/...`).
        let absolute = std::path::absolute(dir).map_err(|e| TableError::io(dir, e))?;
        let dir = absolute.as_path();
        let time_column = schema.index_of(time_column).map_err(|_| {
            TableError::Schema(format!("no time column {time_column:?} in the schema"))
        })?;
        let checkpointed = matches!(opening, Opening::Write(Some(_)));
        let manifest = match opening {
            Opening::Write(Some(m)) => m,
            _ => Manifest::load(dir)?.unwrap_or(Manifest {
                version: 1,
                ..Manifest::default()
            }),
        };
        let trash = Arc::new(Trash::default());
        let mut segments = Vec::with_capacity(manifest.segments.len());
        for entry in &manifest.segments {
            let path = dir.join(&entry.file);
            let meta = std::fs::metadata(&path).map_err(|_| TableError::Corrupt {
                path: path.display().to_string(),
                detail: "listed in the manifest but missing".into(),
            })?;
            if meta.len() != entry.bytes {
                return Err(TableError::Corrupt {
                    path: path.display().to_string(),
                    detail: format!(
                        "{} bytes on disk, {} in the manifest",
                        meta.len(),
                        entry.bytes
                    ),
                });
            }
            segments.push(Arc::new(Segment::new(entry.clone(), dir, trash.clone())));
        }
        if checkpointed {
            verify_checksums(&segments)?;
        }
        let listed: std::collections::HashSet<&str> =
            manifest.segments.iter().map(|e| e.file.as_str()).collect();
        let leftovers = if writer {
            std::fs::read_dir(dir).ok()
        } else {
            None
        };
        if let Some(entries) = leftovers {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                if name.ends_with(".parquet") && !listed.contains(name.as_str()) {
                    tracing::info!(file = %name, "removing a segment file the manifest does not list");
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        if checkpointed {
            manifest.store(dir)?;
        }
        let layout = FileLayout {
            row_group_rows: config.row_group_rows,
            zstd_level: config.zstd_level,
            bloom_columns: bloom_columns.iter().map(|c| c.to_string()).collect(),
        };
        let table = RealtimeTable {
            dir: dir.to_path_buf(),
            schema,
            time_column,
            config,
            layout,
            snapshot: RwLock::new(Arc::new(Snapshot::default())),
            writer: Mutex::new(Writer {
                manifest,
                segments,
                mutable: Vec::new(),
                mutable_rows: 0,
                mutable_since: None,
                seal_job: None,
                merge_job: None,
                last_error: None,
            }),
            trash,
        };
        let w = table.lock_writer();
        table.publish(&w);
        drop(w);
        Ok(table)
    }

    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    pub fn time_column(&self) -> usize {
        self.time_column
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The current snapshot; cheap (an `Arc` clone), never blocks on the writer's work.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        match self.snapshot.read() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn lock_writer(&self) -> MutexGuard<'_, Writer> {
        match self.writer.lock() {
            Ok(w) => w,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn publish(&self, w: &Writer) {
        let mut memory = Vec::new();
        let mut memory_rows = 0;
        if let Some(Job {
            kind: JobKind::Seal { batches },
            ..
        }) = &w.seal_job
        {
            memory_rows += batches.iter().map(|b| b.num_rows() as u64).sum::<u64>();
            memory.extend(batches.iter().cloned());
        }
        memory.extend(w.mutable.iter().cloned());
        memory_rows += w.mutable_rows;
        let snap = Arc::new(Snapshot {
            segments: w.segments.clone(),
            memory,
            memory_rows,
        });
        match self.snapshot.write() {
            Ok(mut s) => *s = snap,
            Err(poisoned) => *poisoned.into_inner() = snap,
        }
    }

    /// Appends rows (visible to the next snapshot at once). The batch must have the table's
    /// schema.
    pub fn append(&self, batch: RecordBatch) -> Result<(), TableError> {
        if batch.schema().fields() != self.schema.fields() {
            return Err(TableError::Schema(
                "appended batch does not have the table's schema".into(),
            ));
        }
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let mut w = self.lock_writer();
        w.mutable_rows += batch.num_rows() as u64;
        w.mutable.push(batch);
        w.mutable_since.get_or_insert_with(Instant::now);
        self.publish(&w);
        Ok(())
    }

    /// Housekeeping, called regularly by the ingest loop: installs a finished background job,
    /// drops segments past retention (relative to `now_ms`), and starts a seal or a merge when
    /// one is due. A failed background job is reported in the result (the data stays in memory
    /// and the seal is retried).
    pub fn maintain(&self, now_ms: i64) -> Maintenance {
        self.trash.purge(RETIRED_FILE_GRACE);
        let mut report = Maintenance::default();
        let mut w = self.lock_writer();
        let note = |r: Result<bool, TableError>, report: &mut Maintenance, w: &Writer| match r {
            Ok(true) => report.sealed = Some((w.manifest.clone(), Instant::now())),
            Ok(false) => {}
            Err(e) => report.error = Some(e),
        };
        let sealed = self.finish_job(&mut w, Slot::Seal, false);
        note(sealed, &mut report, &w);
        if let Err(e) = self.finish_job(&mut w, Slot::Merge, false) {
            report.error = Some(e);
        }
        if let Err(e) = self.apply_retention(&mut w, now_ms) {
            report.error = Some(e);
        }
        let due = w.mutable_rows >= self.config.max_memory_rows as u64
            || w.mutable_since
                .is_some_and(|t| t.elapsed().as_secs_f64() >= self.config.seal_after_secs);
        // Backpressure: when rows arrive faster than a seal writes them, the writer waits for
        // the seal in flight rather than letting memory grow without bound.
        if w.seal_job.is_some() && w.mutable_rows >= 2 * self.config.max_memory_rows as u64 {
            let waited = self.finish_job(&mut w, Slot::Seal, true);
            note(waited, &mut report, &w);
        }
        if w.seal_job.is_none() && due {
            self.start_seal(&mut w);
            report.seal_started = true;
        }
        if w.merge_job.is_none() {
            self.start_merge_if_due(&mut w);
        }
        report
    }

    /// A checkpoint listing the manifest read at `manifest_read_at` is durable: files retired
    /// before then are in no checkpoint any more and may be deleted (after the grace period).
    pub fn checkpoint_committed(&self, manifest_read_at: Instant) {
        self.trash.release_before(manifest_read_at);
    }

    /// Seals everything in memory and waits until it is durable, and for any merge in flight
    /// (clean shutdown, tests).
    pub fn flush(&self) -> Result<(), TableError> {
        let mut w = self.lock_writer();
        self.finish_job(&mut w, Slot::Seal, true)?;
        self.finish_job(&mut w, Slot::Merge, true)?;
        if w.mutable_rows > 0 {
            self.start_seal(&mut w);
            self.finish_job(&mut w, Slot::Seal, true)?;
        }
        Ok(())
    }

    /// The last error of a background seal or merge, if the latest one failed.
    pub fn last_error(&self) -> Option<String> {
        self.lock_writer().last_error.clone()
    }

    fn start_seal(&self, w: &mut Writer) {
        let batches = std::mem::take(&mut w.mutable);
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
            let (written, min, max) =
                segment::write_sorted(&path, &schema, &job_batches, time_column, &layout)?;
            Ok(SegmentEntry {
                id,
                file: segment_file(id),
                rows: written.rows,
                min_time_ms: min,
                max_time_ms: max,
                bytes: written.bytes,
                checksum: Some(written.checksum),
            })
        });
        w.seal_job = Some(Job {
            kind: JobKind::Seal { batches },
            id,
            handle,
        });
        // The snapshot still shows the batches (now under the job) until the file is installed.
    }

    fn start_merge_if_due(&self, w: &mut Writer) {
        let small = self.config.merge_target_rows / 4;
        // The longest run of consecutive small segments, up to the target size.
        let mut best: Vec<SegmentRef> = Vec::new();
        let mut run: Vec<SegmentRef> = Vec::new();
        let mut run_rows = 0;
        for s in &w.segments {
            if s.entry.rows < small && run_rows + s.entry.rows <= self.config.merge_target_rows {
                run_rows += s.entry.rows;
                run.push(s.clone());
            } else {
                if run.len() > best.len() {
                    best = std::mem::take(&mut run);
                }
                run.clear();
                run_rows = 0;
                if s.entry.rows < small {
                    run_rows = s.entry.rows;
                    run.push(s.clone());
                }
            }
        }
        if run.len() > best.len() {
            best = run;
        }
        if best.len() < self.config.merge_min_segments {
            return;
        }
        let id = w.manifest.next_segment_id;
        w.manifest.next_segment_id += 1;
        let path = self.dir.join(segment_file(id));
        let schema = self.schema.clone();
        let layout = self.layout.clone();
        let inputs = best.clone();
        let handle = std::thread::spawn(move || {
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
            })
        });
        w.merge_job = Some(Job {
            kind: JobKind::Merge { inputs: best },
            id,
            handle,
        });
    }

    /// Installs the background job's result if it has finished (or waits for it if `wait`).
    /// Returns true when a seal was installed.
    fn finish_job(&self, w: &mut Writer, slot: Slot, wait: bool) -> Result<bool, TableError> {
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
            (JobKind::Seal { batches }, Ok(entry)) => {
                let mut manifest = w.manifest.clone();
                manifest.segments.push(entry.clone());
                manifest.segments.sort_by_key(|e| (e.min_time_ms, e.id));
                if let Err(e) = manifest.store(&self.dir) {
                    return self.seal_failed(w, batches, e);
                }
                w.manifest = manifest;
                w.segments
                    .push(Arc::new(Segment::new(entry, &self.dir, self.trash.clone())));
                w.segments
                    .sort_by_key(|s| (s.entry.min_time_ms, s.entry.id));
                w.last_error = None;
                self.publish(w);
                Ok(true)
            }
            (JobKind::Seal { batches }, Err(e)) => {
                let _ = std::fs::remove_file(self.dir.join(segment_file(job.id)));
                self.seal_failed(w, batches, e)
            }
            (JobKind::Merge { inputs }, Ok(entry)) => {
                let gone: std::collections::HashSet<u64> =
                    inputs.iter().map(|s| s.entry.id).collect();
                let mut manifest = w.manifest.clone();
                manifest.segments.retain(|e| !gone.contains(&e.id));
                manifest.segments.push(entry.clone());
                manifest.segments.sort_by_key(|e| (e.min_time_ms, e.id));
                if let Err(e) = manifest.store(&self.dir) {
                    let _ = std::fs::remove_file(self.dir.join(&entry.file));
                    w.last_error = Some(e.to_string());
                    return Err(e);
                }
                w.manifest = manifest;
                w.segments.retain(|s| !gone.contains(&s.entry.id));
                w.segments
                    .push(Arc::new(Segment::new(entry, &self.dir, self.trash.clone())));
                w.segments
                    .sort_by_key(|s| (s.entry.min_time_ms, s.entry.id));
                for s in &inputs {
                    s.retire();
                }
                self.publish(w);
                Ok(false)
            }
            (JobKind::Merge { .. }, Err(e)) => {
                let _ = std::fs::remove_file(self.dir.join(segment_file(job.id)));
                w.last_error = Some(e.to_string());
                Err(e)
            }
        }
    }

    /// A failed seal puts its batches back in front of the mutable segment: nothing is lost,
    /// and the next `maintain` tries again.
    fn seal_failed(
        &self,
        w: &mut Writer,
        mut batches: Vec<RecordBatch>,
        e: TableError,
    ) -> Result<bool, TableError> {
        let rows: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
        batches.append(&mut w.mutable);
        w.mutable = batches;
        w.mutable_rows += rows;
        w.last_error = Some(e.to_string());
        self.publish(w);
        Err(e)
    }

    fn apply_retention(&self, w: &mut Writer, now_ms: i64) -> Result<(), TableError> {
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

    /// The manifest as last stored.
    pub fn manifest(&self) -> Manifest {
        self.lock_writer().manifest.clone()
    }
}
