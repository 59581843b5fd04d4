//! The realtime table: one writer appends Arrow batches, any number of readers query immutable
//! snapshots.
//!
//! Appended batches live in memory (the mutable segment) until it holds `max_memory_rows` rows
//! or is `seal_after_secs` old; it is then sealed: a background thread writes it as one sorted
//! Parquet file while queries keep reading the same batches from memory, and when the file is
//! durable and listed in the manifest, the snapshot swaps the batches for the file. Small sealed
//! segments are merged in the background (see [`crate::jobs`]); segments wholly past retention
//! are dropped. The writer never waits for readers, and readers never see a half-written batch
//! or file.
//!
//! Time comes from the clock the table is opened with: a segment's age (for sealing) and
//! retention are measured on it, so tests seal and expire segments by moving a manual clock.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Instant;

use clock::SharedClock;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;

use crate::jobs::{Job, JobKind, Slot};
use crate::lookup::LookupSpec;
use crate::manifest::Manifest;
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
    /// Bytes of Arrow buffers of [`Snapshot::memory`].
    pub memory_bytes: u64,
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
    /// A seal failed: its rows are back in memory and it is retried; what was captured for
    /// its checkpoint no longer matches a manifest.
    pub error: Option<TableError>,
    /// A merge or retention failed: the segments stay as they were (nothing to undo; a merge is
    /// retried after its backoff, retention at the next call).
    pub housekeeping_error: Option<TableError>,
}

impl Maintenance {
    /// The seal's error, else the housekeeping one (for callers that treat any as a failure).
    pub fn failed(&self) -> Option<&TableError> {
        self.error.as_ref().or(self.housekeeping_error.as_ref())
    }
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
                        for (l, path) in s.entry.lookups.iter().zip(s.lookup_paths()) {
                            match segment::file_checksum(&path) {
                                Ok(actual) if actual == l.checksum => {}
                                _ => {
                                    tracing::warn!(file = %path.display(), "a lookup index does not match its checksum: its segment is scanned instead");
                                    s.disable_lookup(&l.column);
                                }
                            }
                        }
                        let Some(expected) = s.entry.checksum else {
                            continue;
                        };
                        let actual = segment::file_checksum(&s.path)?;
                        if actual != expected {
                            return Err(TableError::corrupt(
                                &s.path,
                                format!(
                                    "checksum {actual:016x} does not match {expected:016x} in the manifest"
                                ),
                            ));
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

pub(crate) struct Writer {
    pub(crate) manifest: Manifest,
    pub(crate) segments: Vec<SegmentRef>,
    pub(crate) mutable: Vec<RecordBatch>,
    pub(crate) mutable_rows: u64,
    pub(crate) mutable_bytes: u64,
    /// When (monotonic clock ms) the oldest row still in memory was appended.
    pub(crate) mutable_since: Option<i64>,
    /// The background seal in flight (at most one).
    pub(crate) seal_job: Option<Job>,
    /// The background merge in flight (at most one; runs beside a seal).
    pub(crate) merge_job: Option<Job>,
    /// Seals and merges fail and back off apart: a merge that keeps failing must not hold
    /// seals (and so checkpoints) back, and a merge that succeeds must not hide a failing seal.
    pub(crate) seal_backoff: Backoff,
    pub(crate) merge_backoff: Backoff,
    /// The inputs of the merge that failed last (its error stands while any of them is here).
    pub(crate) merge_failed_inputs: Vec<u64>,
}

/// Jobs of one kind that failed in a row, and when (monotonic clock ms) the next may start.
pub(crate) struct Backoff {
    failures: u32,
    retry_at_ms: i64,
}

impl Backoff {
    pub(crate) fn new() -> Self {
        Backoff {
            failures: 0,
            retry_at_ms: i64::MIN,
        }
    }

    /// Whether the next job must still wait.
    pub(crate) fn waiting(&self, now_ms: i64) -> bool {
        now_ms < self.retry_at_ms
    }

    /// One more failure: the wait doubles from 1 s up to `max_ms`.
    pub(crate) fn failed(&mut self, now_ms: i64, max_ms: i64) {
        self.failures = self.failures.saturating_add(1);
        let wait_ms = (1_000i64 << (self.failures - 1).min(20)).min(max_ms);
        self.retry_at_ms = now_ms.saturating_add(wait_ms);
    }

    pub(crate) fn succeeded(&mut self) {
        *self = Backoff::new();
    }

    /// No failure since the last success.
    pub(crate) fn is_clear(&self) -> bool {
        self.failures == 0
    }
}

/// The latest failure of each kind of background job, cleared by the next success of that kind.
#[derive(Default)]
pub(crate) struct JobErrors {
    pub(crate) seal: Option<String>,
    pub(crate) merge: Option<String>,
}

pub struct RealtimeTable {
    pub(crate) dir: PathBuf,
    pub(crate) schema: SchemaRef,
    pub(crate) time_column: usize,
    pub(crate) config: TableConfig,
    pub(crate) layout: FileLayout,
    snapshot: RwLock<Arc<Snapshot>>,
    writer: Mutex<Writer>,
    pub(crate) trash: Arc<Trash>,
    clock: SharedClock,
    /// The latest failure of seals and of merges, for status pages: its own lock, so reading
    /// it never waits for the writer.
    job_errors: Mutex<JobErrors>,
    /// Whether a merge is running, and how many have been installed: for `/metrics`, without
    /// the writer's lock.
    pub(crate) merging: std::sync::atomic::AtomicBool,
    pub(crate) merges_done: std::sync::atomic::AtomicU64,
}

/// Memory a batch holds (its Arrow buffers).
pub(crate) fn batch_bytes(batch: &RecordBatch) -> u64 {
    batch.get_array_memory_size() as u64
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

pub(crate) fn segment_file(id: u64) -> String {
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
        clock: SharedClock,
    ) -> Result<Self, TableError> {
        Self::open_with(
            dir,
            schema,
            time_column,
            bloom_columns,
            config,
            Opening::Write(None),
            clock,
        )
    }

    /// Writes these leaf columns without a Parquet dictionary from now on (see
    /// [`FileLayout::plain_columns`]).
    pub fn with_plain_columns(mut self, columns: &[&str]) -> Self {
        self.layout.plain_columns = columns.iter().map(|c| c.to_string()).collect();
        self
    }

    /// Writes these lookup indexes beside every segment from now on (see [`crate::lookup`]).
    pub fn with_lookups(mut self, lookups: Vec<LookupSpec>) -> Result<Self, TableError> {
        for spec in &lookups {
            spec.schema(&self.schema)?;
        }
        self.layout.lookups = lookups;
        Ok(self)
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
        clock: SharedClock,
    ) -> Result<Self, TableError> {
        let table = Self::open_with(
            dir,
            schema,
            time_column,
            bloom_columns,
            config,
            Opening::Write(Some(manifest)),
            clock,
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
            clock::system(),
        )
    }

    fn open_with(
        dir: &Path,
        schema: SchemaRef,
        time_column: &str,
        bloom_columns: &[&str],
        config: TableConfig,
        opening: Opening,
        clock: SharedClock,
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
            // Names only: a manifest never points outside the directory (retiring a segment
            // deletes its files).
            let names = std::iter::once(&entry.file).chain(entry.lookups.iter().map(|l| &l.file));
            for name in names {
                let plain =
                    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\']);
                if !plain {
                    return Err(TableError::corrupt(
                        &dir.join(crate::manifest::FILE_NAME),
                        format!("{name:?} is not a file name"),
                    ));
                }
            }
            let path = dir.join(&entry.file);
            let meta = std::fs::metadata(&path)
                .map_err(|_| TableError::corrupt(&path, "listed in the manifest but missing"))?;
            if meta.len() != entry.bytes {
                return Err(TableError::corrupt(
                    &path,
                    format!(
                        "{} bytes on disk, {} in the manifest",
                        meta.len(),
                        entry.bytes
                    ),
                ));
            }
            segments.push(Arc::new(Segment::new(entry.clone(), dir, trash.clone())));
        }
        if checkpointed {
            verify_checksums(&segments)?;
        }
        let listed: std::collections::HashSet<&str> = manifest
            .segments
            .iter()
            .flat_map(|e| {
                std::iter::once(e.file.as_str()).chain(e.lookups.iter().map(|l| l.file.as_str()))
            })
            .collect();
        let leftovers = if writer {
            std::fs::read_dir(dir).ok()
        } else {
            None
        };
        if let Some(entries) = leftovers {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                let ours = name.ends_with(".parquet") || name.ends_with(".lookup");
                if ours && !listed.contains(name.as_str()) {
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
            page_bytes: config.page_bytes,
            zstd_level: config.zstd_level,
            bloom_columns: bloom_columns.iter().map(|c| c.to_string()).collect(),
            plain_columns: Vec::new(),
            lookups: Vec::new(),
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
                mutable_bytes: 0,
                mutable_since: None,
                seal_job: None,
                merge_job: None,
                seal_backoff: Backoff::new(),
                merge_backoff: Backoff::new(),
                merge_failed_inputs: Vec::new(),
            }),
            trash,
            clock,
            job_errors: Mutex::new(JobErrors::default()),
            merging: Default::default(),
            merges_done: Default::default(),
        };
        let w = table.lock_writer();
        table.publish(&w);
        drop(w);
        Ok(table)
    }

    pub fn config(&self) -> &TableConfig {
        &self.config
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

    /// What the table's clock says now.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// The table's monotonic clock (for ages and backoffs).
    pub(crate) fn monotonic_ms(&self) -> i64 {
        self.clock.monotonic_ms()
    }

    pub(crate) fn lock_writer(&self) -> MutexGuard<'_, Writer> {
        match self.writer.lock() {
            Ok(w) => w,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    pub(crate) fn publish(&self, w: &Writer) {
        let mut memory = Vec::new();
        let mut memory_rows = 0;
        let mut memory_bytes = 0;
        if let Some(Job {
            kind: JobKind::Seal { batches, bytes },
            ..
        }) = &w.seal_job
        {
            memory_rows += batches.iter().map(|b| b.num_rows() as u64).sum::<u64>();
            memory_bytes += bytes;
            memory.extend(batches.iter().cloned());
        }
        memory.extend(w.mutable.iter().cloned());
        memory_rows += w.mutable_rows;
        memory_bytes += w.mutable_bytes;
        let snap = Arc::new(Snapshot {
            segments: w.segments.clone(),
            memory,
            memory_rows,
            memory_bytes,
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
        w.mutable_bytes += batch_bytes(&batch);
        w.mutable.push(batch);
        let now = self.clock.monotonic_ms();
        w.mutable_since.get_or_insert(now);
        self.publish(&w);
        Ok(())
    }

    /// Housekeeping, called regularly by the ingest loop: installs a finished background job,
    /// drops segments past retention (relative to the clock), and starts a seal or a merge when
    /// one is due. A failed seal is reported in `error` (its rows stay in memory and it is
    /// retried), a failed merge or retention in `housekeeping_error`.
    pub fn maintain(&self) -> Maintenance {
        let now_ms = self.clock.now_ms();
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
            report.housekeeping_error = Some(e);
        }
        if let Err(e) = self.apply_retention(&mut w, now_ms) {
            report.housekeeping_error = Some(e);
        }
        // Ages are measured on the monotonic clock: a wall clock stepped back must not delay
        // seals (and so checkpoints and Kafka commits).
        let mono_ms = self.clock.monotonic_ms();
        let seal_after_ms = (self.config.seal_after_secs * 1000.0) as i64;
        let seal_waiting = w.seal_backoff.waiting(mono_ms);
        let due = !seal_waiting
            && (w.mutable_rows >= self.config.max_memory_rows as u64
                || w.mutable_bytes >= self.config.max_memory_bytes as u64
                || w.mutable_since
                    .is_some_and(|t| mono_ms.saturating_sub(t) >= seal_after_ms));
        // Backpressure: when rows arrive faster than a seal writes them, the writer waits for
        // the seal in flight rather than letting memory grow without bound.
        if w.seal_job.is_some()
            && (w.mutable_rows >= 2 * self.config.max_memory_rows as u64
                || w.mutable_bytes >= 2 * self.config.max_memory_bytes as u64)
        {
            let waited = self.finish_job(&mut w, Slot::Seal, true);
            let failed = waited.is_err();
            note(waited, &mut report, &w);
            if failed {
                // Its rows are back in memory and a backoff is set: no new seal at once.
                return report;
            }
        }
        if w.seal_job.is_none() && due {
            self.start_seal(&mut w);
            report.seal_started = true;
        }
        // Until a seal succeeds again (a full disk, say), no merge takes the space it needs.
        if w.merge_job.is_none() && w.seal_backoff.is_clear() && !w.merge_backoff.waiting(mono_ms) {
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
    /// (clean shutdown, tests). A merge that fails is logged and shown by [`Self::last_error`],
    /// not returned: its inputs stay as they were.
    pub fn flush(&self) -> Result<(), TableError> {
        let mut w = self.lock_writer();
        self.finish_job(&mut w, Slot::Seal, true)?;
        if let Err(e) = self.finish_job(&mut w, Slot::Merge, true) {
            // Its inputs stay as they were, so nothing is less durable: the rows in memory are
            // still sealed. The error stays on the status page until a merge succeeds.
            tracing::warn!(error = %e, "a merge failed; its segments stay as they were");
        }
        if w.mutable_rows > 0 {
            self.start_seal(&mut w);
            self.finish_job(&mut w, Slot::Seal, true)?;
        }
        Ok(())
    }

    /// Whether a background merge is running, and how many merges have been installed since
    /// the table opened (read without the writer's lock).
    pub fn merge_activity(&self) -> (bool, u64) {
        use std::sync::atomic::Ordering;
        // Acquire pairs with the Release that clears the flag after the count: seen cleared,
        // the merge is counted.
        let merging = self.merging.load(Ordering::Acquire);
        (merging, self.merges_done.load(Ordering::Relaxed))
    }

    /// Whether the merge policy would merge some of the current sealed segments (a running
    /// merge's inputs count until it is installed, unless a seal sorted among them since breaks
    /// their run): false once merges have caught up.
    pub fn merge_due(&self) -> bool {
        self.merge_due_in(&self.snapshot())
    }

    /// [`Self::merge_due`] on a snapshot already taken (one scrape reads one snapshot).
    pub fn merge_due_in(&self, snapshot: &Snapshot) -> bool {
        let inputs = crate::merge_policy::inputs_of(&snapshot.segments);
        crate::merge_policy::pick(&inputs, (&self.config).into()).is_some()
    }

    /// The error of the latest seal if it failed, else of the latest merge if that failed
    /// (a failing seal matters more: it holds checkpoints back).
    pub fn last_error(&self) -> Option<String> {
        let errors = self.lock_errors();
        match (&errors.seal, &errors.merge) {
            (Some(e), _) => Some(format!("seal: {e}")),
            (None, Some(e)) => Some(format!("merge: {e}")),
            (None, None) => None,
        }
    }

    pub(crate) fn lock_errors(&self) -> MutexGuard<'_, JobErrors> {
        match self.job_errors.lock() {
            Ok(e) => e,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// The manifest as last stored.
    pub fn manifest(&self) -> Manifest {
        self.lock_writer().manifest.clone()
    }
}
