//! The manifest: which sealed segment files make up the table. Written whole to a temporary
//! file, fsynced, then renamed over the old one, so a crash leaves either the old or the new
//! manifest, never half of one. Segment files not listed are leftovers of an interrupted seal or
//! merge and are removed when the table opens.

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::TableError;

pub const FILE_NAME: &str = "manifest.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentEntry {
    pub id: u64,
    /// File name inside the segment directory.
    pub file: String,
    pub rows: u64,
    pub min_time_ms: i64,
    pub max_time_ms: i64,
    pub bytes: u64,
    /// xxh3-64 of the file (absent in manifests written before checksums).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<u64>,
    /// The segment's lookup indexes (see [`crate::lookup`]; absent before they existed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lookups: Vec<LookupEntry>,
}

/// A lookup index file of a segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LookupEntry {
    /// The key column.
    pub column: String,
    /// File name inside the segment directory.
    pub file: String,
    pub bytes: u64,
    /// xxh3-64 of the file.
    pub checksum: u64,
    /// xxh3-64 of the file's footer (with its 10-byte tail): checked each time the index is
    /// opened, so the fences and block list a lookup trusts are the ones written. An index without one
    /// (written before it existed) is not used: its segment is scanned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub footer_checksum: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    pub next_segment_id: u64,
    pub segments: Vec<SegmentEntry>,
}

impl Manifest {
    pub fn load(dir: &Path) -> Result<Option<Manifest>, TableError> {
        let path = dir.join(FILE_NAME);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(TableError::io(&path, e)),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| TableError::corrupt(&path, e.to_string()))
    }

    /// Replaces the manifest on disk atomically.
    pub fn store(&self, dir: &Path) -> Result<(), TableError> {
        let path = dir.join(FILE_NAME);
        let tmp = dir.join(format!("{FILE_NAME}.tmp"));
        let bytes = serde_json::to_vec_pretty(self)
            .map_err(|e| TableError::io(&tmp, std::io::Error::other(e)))?;
        let mut f = std::fs::File::create(&tmp).map_err(|e| TableError::io(&tmp, e))?;
        f.write_all(&bytes).map_err(|e| TableError::io(&tmp, e))?;
        f.sync_all().map_err(|e| TableError::io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| TableError::io(&path, e))?;
        sync_dir(dir)
    }
}

/// Makes a rename in `dir` durable.
pub fn sync_dir(dir: &Path) -> Result<(), TableError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| TableError::io(dir, e))
}
