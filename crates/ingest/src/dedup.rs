//! Dedup on `order_id` within a bounded horizon of event time.
//!
//! Every accepted order's id is remembered, as its 128-bit hash (collisions are out of reach at
//! any realistic volume), with its event time in seconds, until event time moves past it by the
//! horizon (default 24 h). A re-delivered order inside the horizon is dropped and counted.
//!
//! Memory is what limits this structure (a day at 31 orders/s is 2.7 M ids), so an entry is 20
//! bytes (`[u8; 16]` key, `u32` seconds: no alignment padding) in one hash map keyed by the id's
//! own bits (it is already a hash), and expiry is a sweep each time event time advances by an
//! eighth of the horizon rather than a second index in arrival order. A hard cap on entries
//! sweeps harder when exceeded.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// The key is already a uniformly distributed hash: use 8 of its bytes as the hash.
#[derive(Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8).take(1) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.0 ^= u64::from_le_bytes(b);
        }
    }
    fn write_usize(&mut self, _: usize) {}
}

#[derive(Debug, Clone)]
pub struct Dedup {
    horizon_s: u32,
    max_entries: usize,
    seen: HashMap<[u8; 16], u32, BuildHasherDefault<IdHasher>>,
    /// Latest event time seen (seconds): the horizon is measured back from it.
    watermark_s: u32,
    /// Watermark at the last sweep.
    swept_at_s: u32,
    /// Ids added since the last [`Dedup::take_journal`], when journaling (checkpoints append
    /// them to a log instead of rewriting every id each time).
    journal: Option<Vec<DedupRecord>>,
}

/// One remembered id: the 128-bit hash of the `order_id` and the order's event time in seconds.
/// What checkpoints store (20 bytes each) and restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DedupRecord {
    pub id: [u8; 16],
    pub time_s: u32,
}

impl DedupRecord {
    pub fn new(id: u128, time_ms: i64) -> Self {
        DedupRecord {
            id: id.to_le_bytes(),
            time_s: seconds(time_ms),
        }
    }

    pub fn id(&self) -> u128 {
        u128::from_le_bytes(self.id)
    }
}

/// One remembered id as a checkpoint log stores it: 16 bytes of id hash, 4 bytes of seconds.
pub const JOURNAL_RECORD_BYTES: usize = 20;

/// Encodes records as fixed-size little-endian records.
pub fn encode_journal(entries: &[DedupRecord], out: &mut Vec<u8>) {
    out.reserve(entries.len() * JOURNAL_RECORD_BYTES);
    for r in entries {
        out.extend_from_slice(&r.id);
        out.extend_from_slice(&r.time_s.to_le_bytes());
    }
}

/// Decodes records written by [`encode_journal`]; a trailing partial record is ignored.
pub fn decode_journal(bytes: &[u8]) -> impl Iterator<Item = DedupRecord> + '_ {
    bytes.chunks_exact(JOURNAL_RECORD_BYTES).map(|r| {
        let mut id = [0u8; 16];
        id.copy_from_slice(&r[..16]);
        let mut t = [0u8; 4];
        t.copy_from_slice(&r[16..]);
        DedupRecord {
            id,
            time_s: u32::from_le_bytes(t),
        }
    })
}

fn seconds(time_ms: i64) -> u32 {
    (time_ms.max(0) / 1000).min(i64::from(u32::MAX)) as u32
}

impl Dedup {
    pub fn new(horizon_ms: i64, max_entries: usize) -> Self {
        Dedup {
            horizon_s: seconds(horizon_ms).max(1),
            max_entries: max_entries.max(1),
            seen: HashMap::default(),
            watermark_s: 0,
            swept_at_s: 0,
            journal: None,
        }
    }

    /// Records `id` at `time_ms`; false if it was already seen (a duplicate).
    pub fn insert(&mut self, id: u128, time_ms: i64) -> bool {
        let t = seconds(time_ms);
        match self.seen.entry(id.to_le_bytes()) {
            std::collections::hash_map::Entry::Occupied(_) => return false,
            std::collections::hash_map::Entry::Vacant(v) => {
                if let Some(j) = &mut self.journal {
                    j.push(DedupRecord {
                        id: *v.key(),
                        time_s: t,
                    });
                }
                v.insert(t);
            }
        }
        self.watermark_s = self.watermark_s.max(t);
        if self.watermark_s.saturating_sub(self.swept_at_s) > self.horizon_s / 8 {
            self.sweep(self.watermark_s.saturating_sub(self.horizon_s));
        }
        let mut cutoff = self.watermark_s.saturating_sub(self.horizon_s);
        while self.seen.len() > self.max_entries {
            cutoff = cutoff.saturating_add(self.horizon_s / 8 + 1);
            self.sweep(cutoff);
        }
        true
    }

    fn sweep(&mut self, cutoff_s: u32) {
        self.seen.retain(|_, t| *t >= cutoff_s);
        self.swept_at_s = self.watermark_s;
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// The remembered ids with their event time (seconds), for checkpoints.
    pub fn entries(&self) -> impl Iterator<Item = DedupRecord> + '_ {
        self.seen
            .iter()
            .map(|(k, t)| DedupRecord { id: *k, time_s: *t })
    }

    /// Starts recording every newly remembered id for [`Dedup::take_journal`].
    pub fn start_journal(&mut self) {
        self.journal.get_or_insert_with(Vec::new);
    }

    /// The ids remembered since the last call (empty when not journaling).
    pub fn take_journal(&mut self) -> Vec<DedupRecord> {
        match &mut self.journal {
            Some(j) => std::mem::take(j),
            None => Vec::new(),
        }
    }

    /// Every remembered id as journal records (to start a fresh log).
    pub fn all_records(&self) -> Vec<DedupRecord> {
        self.entries().collect()
    }

    /// Restores remembered ids (from [`Dedup::entries`]). Event times after `max_ms` (a
    /// checkpoint written before ingest bounded event time) are taken as `max_ms`, so one
    /// far-future id cannot move the horizon and make every other id forgotten.
    pub fn restore(&mut self, entries: impl IntoIterator<Item = DedupRecord>, max_ms: i64) {
        for r in entries {
            self.insert(r.id(), (i64::from(r.time_s) * 1000).min(max_ms));
        }
    }

    /// Forgets ids that were inserted but whose rows never reached the table (so a re-delivery
    /// is not taken for a duplicate).
    pub fn forget(&mut self, ids: impl IntoIterator<Item = u128>) {
        let keys: std::collections::HashSet<[u8; 16]> =
            ids.into_iter().map(u128::to_le_bytes).collect();
        for key in &keys {
            self.seen.remove(key);
        }
        if let Some(j) = &mut self.journal {
            j.retain(|r| !keys.contains(&r.id));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_inside_the_horizon_are_dropped() {
        let mut d = Dedup::new(80_000, 100);
        assert!(d.insert(1, 0));
        assert!(!d.insert(1, 5_000));
        assert!(d.insert(2, 40_000));
        // Event time moves to 100 s: id 1 (t=0) falls out of the 80 s horizon, id 2 stays.
        assert!(d.insert(3, 100_000));
        assert!(!d.insert(2, 101_000));
        assert!(d.insert(1, 102_000), "forgotten past the horizon");
        assert_eq!(d.len(), 3);
    }

    #[test]
    fn the_entry_cap_bounds_memory() {
        let mut d = Dedup::new(1_000_000, 30);
        for id in 0..100u128 {
            assert!(d.insert(id, id as i64 * 1000));
        }
        assert!(d.len() <= 30, "{}", d.len());
        assert!(!d.insert(99, 99_000), "the newest are kept");
    }

    #[test]
    fn the_journal_holds_exactly_the_new_ids_and_round_trips() {
        let mut d = Dedup::new(1_000_000, 100);
        d.insert(1, 1_000);
        d.start_journal();
        d.insert(2, 2_000);
        assert!(!d.insert(2, 2_500), "a duplicate is not journaled");
        d.insert(3, 3_999);
        let j = d.take_journal();
        assert_eq!(j.len(), 2);
        assert!(d.take_journal().is_empty());
        let mut bytes = Vec::new();
        encode_journal(&j, &mut bytes);
        bytes.extend_from_slice(&[0xff; 7]); // a torn tail is ignored
        let back: Vec<_> = decode_journal(&bytes).map(|r| (r.time_s, r.id())).collect();
        assert_eq!(back, vec![(2, 2), (3, 3)]);
    }

    #[test]
    fn a_far_future_id_in_a_checkpoint_does_not_flush_the_others() {
        let mut d = Dedup::new(80_000, 100);
        let records = vec![
            DedupRecord::new(1, 100_000),
            DedupRecord::new(2, 9_000_000_000_000_000),
        ];
        d.restore(records, 110_000);
        assert!(!d.insert(1, 101_000), "id 1 is still remembered");
        assert!(!d.insert(2, 101_000), "id 2 too, at the clamped time");
    }

    #[test]
    fn entries_round_trip() {
        let mut d = Dedup::new(1_000_000, 100);
        d.insert(7, 5_000);
        d.insert(u128::MAX, 6_000);
        let mut e = Dedup::new(1_000_000, 100);
        e.restore(d.entries().collect::<Vec<_>>(), i64::MAX);
        assert!(!e.insert(7, 7_000));
        assert!(!e.insert(u128::MAX, 7_000));
        assert!(e.insert(8, 7_000));
    }
}
