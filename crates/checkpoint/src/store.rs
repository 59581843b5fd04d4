//! How a checkpoint is written and read back.
//!
//! On disk, in the data directory:
//! - `checkpoint.json`: `{"format", "checksum", "checkpoint": {...}}`, replaced as a whole by
//!   one atomic rename (write a temporary file, fsync, rename, fsync the directory). The
//!   checksum (xxh3-64, hex) covers the exact bytes of the `checkpoint` value.
//! - `dedup/dedup-NNNNNN.log`: the dedup ids as 20-byte records, appended by each checkpoint
//!   (only the ids added since the previous one, so a checkpoint costs what changed, not the
//!   whole dedup state) and rewritten whole when mostly expired. The checkpoint records the
//!   log's length and the checksum of that prefix; a longer file (a crash between append and
//!   rename) is cut back to it.
//!
//! A checkpoint that fails its checksum, or a log shorter than or different from what the
//! checkpoint says, is reported as [`CheckpointError::Corrupt`]: rtap refuses to start on it
//! rather than serve wrong numbers.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use table::Manifest;
use xxhash_rust::xxh3::Xxh3;

use crate::{Capture, Checkpoint, CheckpointError, DedupDelta, DedupLog, Restored};

pub const FILE_NAME: &str = "checkpoint.json";
const FORMAT: &str = "rtap-checkpoint/1";
/// Rewrite the dedup log once it holds this many times the live ids (plus a floor).
const COMPACT_FACTOR: u64 = 2;
const COMPACT_FLOOR: u64 = 1_000_000;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn corrupt(path: &Path, detail: impl Into<String>) -> CheckpointError {
    CheckpointError::Corrupt {
        path: path.display().to_string(),
        detail: detail.into(),
    }
}

#[derive(Deserialize)]
struct Envelope<'a> {
    format: String,
    checksum: String,
    #[serde(borrow)]
    checkpoint: &'a serde_json::value::RawValue,
}

fn log_name(generation: u64) -> String {
    format!("dedup-{generation:06}.log")
}

fn sync_dir(dir: &Path) -> Result<(), CheckpointError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

/// Writes checkpoints into one directory; the ingest loop owns it.
pub struct Checkpointer {
    dir: PathBuf,
    /// Where the dedup logs are (`dir/dedup`).
    logs: PathBuf,
    generation: u64,
    log: File,
    log_bytes: u64,
    log_hasher: Xxh3,
    written: u64,
}

impl std::fmt::Debug for Checkpointer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpointer")
            .field("dir", &self.dir)
            .field("log", &log_name(self.generation))
            .field("log_bytes", &self.log_bytes)
            .finish()
    }
}

impl Checkpointer {
    /// Opens the checkpoint in `dir` (the data directory; creating what is missing) and reads
    /// the last checkpoint, verified. None when there is none yet.
    pub fn open(dir: &Path) -> Result<(Self, Option<Restored>), CheckpointError> {
        let logs = dir.join("dedup");
        std::fs::create_dir_all(&logs).map_err(io(&logs))?;
        let path = dir.join(FILE_NAME);
        let checkpoint = match std::fs::read(&path) {
            Ok(bytes) => Some(parse(&path, &bytes)?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io(&path)(e)),
        };
        let (generation, keep_bytes) = match &checkpoint {
            Some(c) => {
                let generation = c
                    .dedup
                    .file
                    .strip_prefix("dedup-")
                    .and_then(|s| s.strip_suffix(".log"))
                    .and_then(|s| s.parse::<u64>().ok())
                    .ok_or_else(|| {
                        corrupt(&path, format!("bad dedup log name {:?}", c.dedup.file))
                    })?;
                (generation, c.dedup.bytes)
            }
            None => (1, 0),
        };
        let log_path = logs.join(log_name(generation));
        let mut log = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&log_path)
            .map_err(io(&log_path))?;
        let mut prefix = Vec::new();
        (&mut log)
            .take(keep_bytes)
            .read_to_end(&mut prefix)
            .map_err(io(&log_path))?;
        let mut hasher = Xxh3::new();
        hasher.update(&prefix);
        let restored = match checkpoint {
            Some(c) => {
                if (prefix.len() as u64) < c.dedup.bytes {
                    return Err(corrupt(
                        &log_path,
                        format!(
                            "{} bytes, the checkpoint says {}",
                            prefix.len(),
                            c.dedup.bytes
                        ),
                    ));
                }
                if hasher.digest() != c.dedup.checksum {
                    return Err(corrupt(&log_path, "checksum does not match the checkpoint"));
                }
                let dedup = ingest::dedup::decode_journal(&prefix).collect();
                Some(Restored {
                    checkpoint: c,
                    dedup,
                })
            }
            None => None,
        };
        // Records appended after the checkpoint (a crash before its rename) are cut off.
        log.set_len(keep_bytes).map_err(io(&log_path))?;
        remove_other_logs(&logs, generation);
        let mut me = Checkpointer {
            dir: dir.to_path_buf(),
            logs,
            generation,
            log,
            log_bytes: keep_bytes,
            log_hasher: hasher,
            written: 0,
        };
        me.seek_end()?;
        Ok((me, restored))
    }

    fn seek_end(&mut self) -> Result<(), CheckpointError> {
        use std::io::Seek;
        let path = self.logs.join(log_name(self.generation));
        self.log
            .seek(std::io::SeekFrom::Start(self.log_bytes))
            .map_err(io(&path))?;
        Ok(())
    }

    /// Whether the next capture should carry every live id (the log is mostly expired ids).
    pub fn wants_whole_dedup(&self, live_ids: usize) -> bool {
        let records = self.log_bytes / ingest::dedup::JOURNAL_RECORD_BYTES as u64;
        records > COMPACT_FLOOR && records > COMPACT_FACTOR * live_ids as u64
    }

    /// Checkpoints written by this process.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Bytes of the dedup log.
    pub fn dedup_log_bytes(&self) -> u64 {
        self.log_bytes
    }

    /// Makes `capture` with `manifest` the checkpoint: appends (or rewrites) the dedup log,
    /// then replaces `checkpoint.json` atomically. Returns the size of `checkpoint.json`.
    pub fn write(&mut self, capture: &Capture, manifest: Manifest) -> Result<u64, CheckpointError> {
        let mut records = Vec::new();
        ingest::dedup::encode_journal(capture.dedup.records(), &mut records);
        let old_generation = self.generation;
        if matches!(capture.dedup, DedupDelta::Whole(_)) {
            let generation = self.generation + 1;
            let path = self.logs.join(log_name(generation));
            let mut f = File::create(&path).map_err(io(&path))?;
            f.write_all(&records).map_err(io(&path))?;
            f.sync_all().map_err(io(&path))?;
            let mut hasher = Xxh3::new();
            hasher.update(&records);
            self.generation = generation;
            self.log = f;
            self.log_bytes = records.len() as u64;
            self.log_hasher = hasher;
        } else if !records.is_empty() {
            let path = self.logs.join(log_name(self.generation));
            let appended = self
                .log
                .write_all(&records)
                .and_then(|()| self.log.sync_data());
            if let Err(e) = appended {
                // Cut a partial append off again (a full disk): otherwise the next append would
                // land after stray bytes that no checksum covers.
                let _ = self.log.set_len(self.log_bytes);
                let _ = self.seek_end();
                return Err(io(&path)(e));
            }
            self.log_hasher.update(&records);
            self.log_bytes += records.len() as u64;
        }
        let checkpoint = Checkpoint {
            created_ms: capture.created_ms,
            source: capture.source.clone(),
            manifest,
            windows: capture.windows.clone(),
            dedup: DedupLog {
                file: log_name(self.generation),
                bytes: self.log_bytes,
                checksum: self.log_hasher.digest(),
            },
            deadletter_bytes: capture.deadletters.bytes,
            deadletters: Some(capture.deadletters),
        };
        let size = self.store(&checkpoint)?;
        if self.generation != old_generation {
            sync_dir(&self.logs)?;
            let old = self.logs.join(log_name(old_generation));
            if let Err(e) = std::fs::remove_file(&old) {
                tracing::warn!(path = %old.display(), error = %e, "could not remove an old dedup log");
            }
        }
        self.written += 1;
        Ok(size)
    }

    fn store(&self, checkpoint: &Checkpoint) -> Result<u64, CheckpointError> {
        let path = self.dir.join(FILE_NAME);
        let tmp = self.dir.join(format!("{FILE_NAME}.tmp"));
        let body =
            serde_json::to_vec(checkpoint).map_err(|e| io(&tmp)(std::io::Error::other(e)))?;
        let mut out = Vec::with_capacity(body.len() + 100);
        out.extend_from_slice(
            format!(
                "{{\"format\":\"{FORMAT}\",\"checksum\":\"{:016x}\",\"checkpoint\":",
                xxhash_rust::xxh3::xxh3_64(&body)
            )
            .as_bytes(),
        );
        out.extend_from_slice(&body);
        out.extend_from_slice(b"}\n");
        let mut f = File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(&out).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        sync_dir(&self.dir)?;
        Ok(out.len() as u64)
    }
}

fn parse(path: &Path, bytes: &[u8]) -> Result<Checkpoint, CheckpointError> {
    let envelope: Envelope<'_> = serde_json::from_slice(bytes)
        .map_err(|e| corrupt(path, format!("not a whole checkpoint ({e})")))?;
    if envelope.format != FORMAT {
        return Err(corrupt(
            path,
            format!("format {:?}, this rtap reads {FORMAT:?}", envelope.format),
        ));
    }
    let body = envelope.checkpoint.get().as_bytes();
    let actual = format!("{:016x}", xxhash_rust::xxh3::xxh3_64(body));
    if actual != envelope.checksum {
        return Err(corrupt(
            path,
            format!(
                "checksum {actual} does not match the recorded {}",
                envelope.checksum
            ),
        ));
    }
    serde_json::from_slice(body).map_err(|e| corrupt(path, e.to_string()))
}

fn remove_other_logs(dir: &Path, keep: u64) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let keep = log_name(keep);
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with("dedup-") && name.ends_with(".log") && name != keep {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DedupRecord, SourcePosition};
    use rolling::{Metrics, WindowConfig, Windows};
    use std::collections::BTreeMap;

    fn capture(next: i64, ids: &[(u128, u32)], whole: bool) -> Capture {
        let mut w = Windows::new(WindowConfig::default()).expect("config");
        w.observe(1_000_000, Metrics::order(12.34, true, false, true));
        Capture {
            created_ms: 5,
            source: SourcePosition {
                kind: "generator".into(),
                seed: Some(7),
                topic: None,
                next: BTreeMap::from([(0, next)]),
            },
            windows: w.snapshot(),
            dedup: {
                let records = ids
                    .iter()
                    .map(|(i, t)| DedupRecord {
                        id: i.to_le_bytes(),
                        time_s: *t,
                    })
                    .collect();
                if whole {
                    DedupDelta::Whole(records)
                } else {
                    DedupDelta::New(records)
                }
            },
            deadletters: crate::DeadLetterMark {
                generation: 0,
                bytes: 42,
                count: 3,
            },
        }
    }

    fn ids(r: &Restored) -> Vec<u128> {
        let mut v: Vec<u128> = r.dedup.iter().map(DedupRecord::id).collect();
        v.sort();
        v
    }

    #[test]
    fn checkpoints_round_trip_and_the_log_is_incremental() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut c, restored) = Checkpointer::open(dir.path()).expect("open");
        assert!(restored.is_none());
        c.write(&capture(11, &[(1, 1), (2, 2)], false), Manifest::default())
            .expect("write");
        c.write(&capture(21, &[(3, 3)], false), Manifest::default())
            .expect("write");
        assert_eq!(c.dedup_log_bytes(), 60);
        drop(c);
        let (_, restored) = Checkpointer::open(dir.path()).expect("reopen");
        let r = restored.expect("a checkpoint");
        assert_eq!(r.checkpoint.source.next[&0], 21);
        assert_eq!(r.checkpoint.source.seed, Some(7));
        assert_eq!(r.checkpoint.deadletter_bytes, 42);
        assert_eq!(r.checkpoint.deadletters.map(|d| d.count), Some(3));
        assert_eq!(r.checkpoint.windows.panes.len(), 1);
        assert_eq!(r.checkpoint.windows.panes[0].1.revenue_cents, 1234);
        assert_eq!(ids(&r), vec![1, 2, 3]);
    }

    #[test]
    fn a_log_tail_after_the_last_checkpoint_is_cut_off() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut c, _) = Checkpointer::open(dir.path()).expect("open");
        c.write(&capture(2, &[(1, 1)], false), Manifest::default())
            .expect("write");
        drop(c);
        // A crash after appending the next ids but before the rename.
        let log = dir.path().join("dedup").join("dedup-000001.log");
        let mut f = OpenOptions::new().append(true).open(&log).expect("log");
        f.write_all(&[9u8; 20]).expect("append");
        drop(f);
        let (mut c, r) = Checkpointer::open(dir.path()).expect("reopen");
        assert_eq!(ids(&r.expect("checkpoint")), vec![1]);
        assert_eq!(std::fs::metadata(&log).expect("meta").len(), 20);
        c.write(&capture(3, &[(5, 1)], false), Manifest::default())
            .expect("write after the cut");
        drop(c);
        let (_, r) = Checkpointer::open(dir.path()).expect("reopen");
        assert_eq!(ids(&r.expect("checkpoint")), vec![1, 5]);
    }

    #[test]
    fn a_whole_dedup_starts_a_new_log_and_removes_the_old() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut c, _) = Checkpointer::open(dir.path()).expect("open");
        c.write(&capture(2, &[(1, 1), (2, 1)], false), Manifest::default())
            .expect("write");
        c.write(&capture(3, &[(2, 1), (3, 1)], true), Manifest::default())
            .expect("write");
        assert!(!dir.path().join("dedup").join("dedup-000001.log").exists());
        drop(c);
        let (_, r) = Checkpointer::open(dir.path()).expect("reopen");
        let r = r.expect("checkpoint");
        assert_eq!(r.checkpoint.dedup.file, "dedup-000002.log");
        assert_eq!(ids(&r), vec![2, 3]);
    }

    #[test]
    fn corruption_is_reported_not_ignored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut c, _) = Checkpointer::open(dir.path()).expect("open");
        c.write(&capture(2, &[(1, 1)], false), Manifest::default())
            .expect("write");
        drop(c);
        let path = dir.path().join(FILE_NAME);
        let good = std::fs::read_to_string(&path).expect("read");

        // One digit changed inside the body: the checksum catches it.
        let flipped = good.replacen("\"deadletter_bytes\":42", "\"deadletter_bytes\":43", 1);
        assert_ne!(flipped, good);
        std::fs::write(&path, &flipped).expect("write");
        let err = Checkpointer::open(dir.path()).expect_err("flipped");
        assert!(err.to_string().contains("checksum"), "{err}");

        // A torn (partial) file.
        std::fs::write(&path, &good[..good.len() / 2]).expect("write");
        let err = Checkpointer::open(dir.path()).expect_err("torn");
        assert!(err.to_string().contains("not a whole checkpoint"), "{err}");

        // The dedup log lost its tail.
        std::fs::write(&path, &good).expect("restore");
        let log = dir.path().join("dedup").join("dedup-000001.log");
        std::fs::write(&log, [0u8; 10]).expect("shorten");
        let err = Checkpointer::open(dir.path()).expect_err("short log");
        assert!(err.to_string().contains("dedup-000001.log"), "{err}");
    }
}
