//! The dead-letter store: messages that could not become rows, kept with the reason and their
//! source position so nothing is lost silently. One JSON line per message in
//! `<data-dir>/deadletter/deadletter.jsonl`; the payload is kept whole (as text when it is
//! UTF-8, else hex), except that an oversized payload keeps only its first 64 KiB.
//!
//! Bounded on disk: when the file reaches `max_file_bytes` it is renamed
//! `deadletter-NNNNNN.jsonl` (NNNNNN = its generation) at the next checkpoint and a new one is
//! started; only the newest `max_files` rotated files are kept. Each checkpoint records a
//! [`DeadLetterMark`] (generation, length, count), so a restart cuts off the lines written
//! after it (their messages are read again and dead-lettered again) and knows the count
//! without reading any file. A write that fails (a full disk) is cut back off the file and
//! reported, so the caller can keep the source position where it was.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::decode::Rejected;

/// How much of an oversized payload is kept.
const KEEP_OVERSIZED_BYTES: usize = 64 * 1024;
const CURRENT: &str = "deadletter.jsonl";

/// Where the dead letters stand, as a checkpoint records it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetterMark {
    /// Rotations so far: the current file's generation.
    pub generation: u32,
    /// Length of the current file.
    pub bytes: u64,
    /// Dead letters so far, including rotated and deleted files.
    pub count: u64,
}

/// Size bounds of the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeadLetterLimits {
    pub max_file_bytes: u64,
    pub max_files: u32,
}

impl Default for DeadLetterLimits {
    fn default() -> Self {
        DeadLetterLimits {
            max_file_bytes: 64 * 1024 * 1024,
            max_files: 8,
        }
    }
}

#[derive(Debug)]
pub struct DeadLetterStore {
    dir: PathBuf,
    path: PathBuf,
    file: File,
    mark: DeadLetterMark,
    limits: DeadLetterLimits,
}

#[derive(Debug, thiserror::Error)]
#[error("dead-letter store {path}: {source}")]
pub struct DeadLetterError {
    path: String,
    source: std::io::Error,
}

#[derive(serde::Serialize)]
struct Line<'a> {
    partition: i32,
    offset: i64,
    reason: String,
    received_ms: i64,
    bytes: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload_hex: Option<String>,
    truncated: bool,
}

fn archive_name(generation: u32) -> String {
    format!("deadletter-{generation:06}.jsonl")
}

/// Generations of the rotated files in `dir`.
fn archives(dir: &Path) -> Vec<u32> {
    let mut out: Vec<u32> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().to_string();
                    name.strip_prefix("deadletter-")
                        .and_then(|n| n.strip_suffix(".jsonl"))
                        .and_then(|n| n.parse::<u32>().ok())
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort_unstable();
    out
}

fn count_lines(path: &Path) -> u64 {
    match std::fs::read(path) {
        Ok(bytes) => bytes.iter().filter(|b| **b == b'\n').count() as u64,
        Err(_) => 0,
    }
}

impl DeadLetterStore {
    /// Opens the store as it is on disk (no checkpoint to cut it back to); counts the current
    /// file's lines.
    pub fn open(dir: &Path) -> Result<Self, DeadLetterError> {
        let err = |source| DeadLetterError {
            path: dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(err)?;
        let path = dir.join(CURRENT);
        let generation = archives(dir).last().map_or(0, |g| g.saturating_add(1));
        let count = count_lines(&path);
        Self::finish_open(dir, generation, count, DeadLetterLimits::default())
    }

    /// Opens the store as of a checkpoint that recorded `mark`: lines written after it are cut
    /// off (and a rotation after it undone). No mark: there is no checkpoint, the table is
    /// rebuilt from the source, and so are the dead letters (everything here is removed).
    pub fn open_at(
        dir: &Path,
        mark: Option<DeadLetterMark>,
        limits: DeadLetterLimits,
    ) -> Result<Self, DeadLetterError> {
        let err = |source| DeadLetterError {
            path: dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(err)?;
        let mark = mark.unwrap_or_default();
        let path = dir.join(CURRENT);
        let on_disk = archives(dir).last().map_or(0, |g| g.saturating_add(1));
        if on_disk > mark.generation {
            // Rotated after the checkpoint: its file is the archive of that generation.
            let _ = std::fs::remove_file(&path);
            for g in archives(dir) {
                if g > mark.generation {
                    let _ = std::fs::remove_file(dir.join(archive_name(g)));
                }
            }
            let archived = dir.join(archive_name(mark.generation));
            if archived.exists() {
                std::fs::rename(&archived, &path).map_err(err)?;
            }
        }
        if let Ok(f) = OpenOptions::new().write(true).open(&path) {
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            if len > mark.bytes {
                f.set_len(mark.bytes).map_err(err)?;
                f.sync_all().map_err(err)?;
            }
        }
        Self::finish_open(dir, mark.generation, mark.count, limits)
    }

    /// Opens the store as of a checkpoint written before the store rotated: generation 0,
    /// `bytes` long; the count is read from the file this once.
    pub fn open_at_bytes(
        dir: &Path,
        bytes: u64,
        limits: DeadLetterLimits,
    ) -> Result<Self, DeadLetterError> {
        let mark = DeadLetterMark {
            generation: 0,
            bytes,
            count: 0,
        };
        let mut store = Self::open_at(dir, Some(mark), limits)?;
        store.mark.count = count_lines(&store.path);
        Ok(store)
    }

    fn finish_open(
        dir: &Path,
        generation: u32,
        count: u64,
        limits: DeadLetterLimits,
    ) -> Result<Self, DeadLetterError> {
        let path = dir.join(CURRENT);
        let err = |source| DeadLetterError {
            path: path.display().to_string(),
            source,
        };
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(err)?;
        let bytes = file.metadata().map_err(err)?.len();
        Ok(DeadLetterStore {
            dir: dir.to_path_buf(),
            path,
            file,
            mark: DeadLetterMark {
                generation,
                bytes,
                count,
            },
            limits,
        })
    }

    /// Appends rejected messages with their payloads to the file, all or none: a failed write
    /// (a full disk) is cut back off and reported.
    pub fn append(
        &mut self,
        rejected: &[(Rejected, &[u8])],
        received_ms: i64,
    ) -> Result<(), DeadLetterError> {
        let mut buf = Vec::new();
        for (r, payload) in rejected {
            let truncated = payload.len() > KEEP_OVERSIZED_BYTES
                && matches!(r.reason, crate::decode::RejectReason::Oversized { .. });
            let kept = if truncated {
                &payload[..KEEP_OVERSIZED_BYTES]
            } else {
                payload
            };
            let text = std::str::from_utf8(kept).ok();
            let line = Line {
                partition: r.position.partition,
                offset: r.position.offset,
                reason: r.reason.to_string(),
                received_ms,
                bytes: payload.len(),
                payload: text,
                payload_hex: if text.is_none() {
                    Some(kept.iter().map(|b| format!("{b:02x}")).collect())
                } else {
                    None
                },
                truncated,
            };
            serde_json::to_writer(&mut buf, &line)
                .map_err(|e| self.error(std::io::Error::other(e)))?;
            buf.push(b'\n');
        }
        if buf.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.file.write_all(&buf).and_then(|()| self.file.flush()) {
            // Cut a partial line off again: the next append must not land after it.
            let _ = self.file.set_len(self.mark.bytes);
            return Err(self.error(e));
        }
        self.mark.bytes += buf.len() as u64;
        self.mark.count += rejected.len() as u64;
        Ok(())
    }

    /// Forces written lines to disk (called with checkpoints).
    pub fn sync(&mut self) -> Result<(), DeadLetterError> {
        self.file.sync_data().map_err(|e| self.error(e))
    }

    /// Where the store stands, for a checkpoint taken now; rotates the file first when it has
    /// reached its size bound (everything in it is before this checkpoint's position).
    pub fn mark(&mut self) -> Result<DeadLetterMark, DeadLetterError> {
        if self.mark.bytes >= self.limits.max_file_bytes {
            self.rotate()?;
        }
        Ok(self.mark)
    }

    fn rotate(&mut self) -> Result<(), DeadLetterError> {
        self.file.sync_data().map_err(|e| self.error(e))?;
        let archived = self.dir.join(archive_name(self.mark.generation));
        std::fs::rename(&self.path, &archived).map_err(|e| self.error(e))?;
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| self.error(e))?;
        if let Ok(d) = File::open(&self.dir) {
            let _ = d.sync_all();
        }
        self.mark.generation = self.mark.generation.saturating_add(1);
        self.mark.bytes = 0;
        let keep_from = self.mark.generation.saturating_sub(self.limits.max_files);
        for g in archives(&self.dir) {
            if g < keep_from {
                let _ = std::fs::remove_file(self.dir.join(archive_name(g)));
            }
        }
        Ok(())
    }

    /// Messages dead-lettered so far, including earlier runs and rotated files.
    pub fn count(&self) -> u64 {
        self.mark.count
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn error(&self, source: std::io::Error) -> DeadLetterError {
        DeadLetterError {
            path: self.path.display().to_string(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{Position, RejectReason};

    fn reject(offset: i64) -> Rejected {
        Rejected {
            position: Position {
                partition: 0,
                offset,
            },
            reason: RejectReason::MissingOrderId,
        }
    }

    fn write(store: &mut DeadLetterStore, from: i64, n: i64) {
        let rejected: Vec<(Rejected, &[u8])> =
            (from..from + n).map(|o| (reject(o), &b"{}"[..])).collect();
        store.append(&rejected, 1).expect("append");
    }

    #[test]
    fn rotation_keeps_the_newest_files_and_the_count() {
        let dir = tempfile::tempdir().expect("tempdir");
        let limits = DeadLetterLimits {
            max_file_bytes: 200,
            max_files: 2,
        };
        let mut store = DeadLetterStore::open_at(dir.path(), None, limits).expect("open");
        let mut marks = Vec::new();
        for round in 0..5 {
            write(&mut store, round * 10, 3);
            marks.push(store.mark().expect("mark"));
        }
        let last = *marks.last().expect("marks");
        assert_eq!(last.count, 15);
        assert!(last.generation >= 3, "{last:?}");
        let kept = archives(dir.path());
        assert!(kept.len() <= 2, "{kept:?}");
        // A restart at the last mark keeps the count without reading anything.
        drop(store);
        let store = DeadLetterStore::open_at(dir.path(), Some(last), limits).expect("reopen");
        assert_eq!(store.count(), 15);
    }

    #[test]
    fn a_restart_cuts_off_what_came_after_the_checkpoint_and_undoes_a_rotation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let limits = DeadLetterLimits {
            max_file_bytes: 300,
            max_files: 4,
        };
        let mut store = DeadLetterStore::open_at(dir.path(), None, limits).expect("open");
        write(&mut store, 0, 2);
        let checkpoint = store.mark().expect("mark");
        assert_eq!(checkpoint.generation, 0);
        write(&mut store, 2, 3); // past 300 bytes
        let _rotated = store.mark().expect("rotates");
        write(&mut store, 5, 1);
        drop(store);
        // The crash left the rotation and a line in the new file; the checkpoint predates both.
        let store = DeadLetterStore::open_at(dir.path(), Some(checkpoint), limits).expect("reopen");
        assert_eq!(store.count(), 2);
        let text = std::fs::read_to_string(store.path()).expect("read");
        assert_eq!(text.lines().count(), 2);
        assert!(archives(dir.path()).is_empty());
    }
}
