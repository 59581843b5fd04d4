//! The dead-letter store: messages that could not become rows, kept with the reason and their
//! source position so nothing is lost silently. One JSON line per message in
//! `<data-dir>/deadletter/deadletter.jsonl`; the payload is kept whole (as text when it is
//! UTF-8, else hex), except that an oversized payload keeps only its first 64 KiB.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::decode::Rejected;

/// How much of an oversized payload is kept.
const KEEP_OVERSIZED_BYTES: usize = 64 * 1024;

#[derive(Debug)]
pub struct DeadLetterStore {
    path: PathBuf,
    file: BufWriter<File>,
    count: u64,
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

impl DeadLetterStore {
    pub fn open(dir: &Path) -> Result<Self, DeadLetterError> {
        Self::open_at(dir, None)
    }

    /// Opens the store as of a checkpoint that recorded it at `bytes` long: lines written after
    /// that checkpoint are cut off (their messages are read again from the source and
    /// dead-lettered again).
    pub fn open_at(dir: &Path, bytes: Option<u64>) -> Result<Self, DeadLetterError> {
        let err = |source| DeadLetterError {
            path: dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(err)?;
        let path = dir.join("deadletter.jsonl");
        if let Some(keep) = bytes {
            if let Ok(f) = OpenOptions::new().write(true).open(&path) {
                let len = f.metadata().map(|m| m.len()).unwrap_or(0);
                if len > keep {
                    f.set_len(keep).map_err(err)?;
                    f.sync_all().map_err(err)?;
                }
            }
        }
        let count = match std::fs::read(&path) {
            Ok(bytes) => bytes.iter().filter(|b| **b == b'\n').count() as u64,
            Err(_) => 0,
        };
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(err)?;
        Ok(DeadLetterStore {
            path,
            file: BufWriter::new(file),
            count,
        })
    }

    /// Appends rejected messages with their payloads and flushes them to the file.
    pub fn append(
        &mut self,
        rejected: &[(Rejected, &[u8])],
        received_ms: i64,
    ) -> Result<(), DeadLetterError> {
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
            serde_json::to_writer(&mut self.file, &line)
                .map_err(|e| self.error(std::io::Error::other(e)))?;
            self.file.write_all(b"\n").map_err(|e| self.error(e))?;
            self.count += 1;
        }
        self.file.flush().map_err(|e| self.error(e))
    }

    /// Forces written lines to disk (called with checkpoints).
    pub fn sync(&mut self) -> Result<(), DeadLetterError> {
        self.file.flush().map_err(|e| self.error(e))?;
        self.file.get_ref().sync_data().map_err(|e| self.error(e))
    }

    /// Bytes written so far (what a checkpoint records).
    pub fn bytes(&mut self) -> Result<u64, DeadLetterError> {
        self.file.flush().map_err(|e| self.error(e))?;
        self.file
            .get_ref()
            .metadata()
            .map(|m| m.len())
            .map_err(|e| self.error(e))
    }

    /// Messages dead-lettered so far, including earlier runs.
    pub fn count(&self) -> u64 {
        self.count
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
