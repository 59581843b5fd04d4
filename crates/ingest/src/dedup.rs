//! Dedup on `order_id` within a bounded horizon of event time.
//!
//! Every accepted order's id is remembered, as 96 bits of its 128-bit hash (a false duplicate
//! needs two of the ids inside one horizon to agree on 96 bits: about 1e-15 for 10 M ids),
//! until event time moves past it by the horizon (default 24 h). A re-delivered order inside the
//! horizon is dropped and counted.
//!
//! Memory is what limits this structure (a day at 31 orders/s is 2.7 M ids), so ids are kept in
//! generations: one hash set per eighth of the horizon of event time, holding bare 12-byte keys
//! (13 bytes a slot with the set's control byte; 15-30 MB per million ids with the set's load
//! between 7/8 and 7/16). An id is looked up in every live generation (about 10); a
//! generation is dropped whole once all its ids are past the horizon, so ids are remembered
//! for the horizon and at most an eighth more, and expiry costs nothing per id. A hard cap on
//! entries drops the oldest generations early.

use std::collections::{BTreeMap, HashSet};
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

/// What one id is remembered as: 96 of its hash's 128 bits.
type Key = [u8; 12];

fn key(id: u128) -> Key {
    let mut k = [0u8; 12];
    k.copy_from_slice(&id.to_le_bytes()[..12]);
    k
}

type Generation = HashSet<Key, BuildHasherDefault<IdHasher>>;

#[derive(Debug, Clone)]
pub struct Dedup {
    horizon_s: u32,
    /// Seconds of event time per generation (an eighth of the horizon).
    width_s: u32,
    max_entries: usize,
    /// Generation number (event seconds / width) -> its ids.
    generations: BTreeMap<u32, Generation>,
    entries: usize,
    /// Latest event time seen (seconds): the horizon is measured back from it.
    watermark_s: u32,
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
        // Rounded up: an id is never remembered for less than the horizon.
        let horizon_s = seconds(horizon_ms.saturating_add(999)).max(1);
        Dedup {
            horizon_s,
            width_s: (horizon_s / 8).max(1),
            max_entries: max_entries.max(1),
            generations: BTreeMap::new(),
            entries: 0,
            watermark_s: 0,
            journal: None,
        }
    }

    fn contains(&self, k: &Key) -> bool {
        self.generations.values().any(|g| g.contains(k))
    }

    /// Records `id` at `time_ms`; false if it was already seen (a duplicate).
    pub fn insert(&mut self, id: u128, time_ms: i64) -> bool {
        let k = key(id);
        if self.contains(&k) {
            return false;
        }
        let t = seconds(time_ms);
        if let Some(j) = &mut self.journal {
            j.push(DedupRecord {
                id: id.to_le_bytes(),
                time_s: t,
            });
        }
        let generation = t / self.width_s;
        if self.generations.entry(generation).or_default().insert(k) {
            self.entries += 1;
        }
        if t > self.watermark_s {
            self.watermark_s = t;
            self.expire();
        }
        // The cap: drop whole generations, oldest first. Should the newest alone exceed it
        // (the default 20 M ids in an eighth of the horizon), it goes too: memory stays bounded
        // and re-deliveries of those ids are not recognised.
        while self.entries > self.max_entries {
            match self.generations.pop_first() {
                Some((_, oldest)) => self.entries -= oldest.len(),
                None => break,
            }
        }
        true
    }

    /// Drops the generations whose every id is past the horizon.
    fn expire(&mut self) {
        let cutoff = self.watermark_s.saturating_sub(self.horizon_s);
        while let Some(entry) = self.generations.first_entry() {
            let end = entry.key().saturating_add(1).saturating_mul(self.width_s);
            if end > cutoff {
                break;
            }
            self.entries -= entry.remove().len();
        }
    }

    pub fn len(&self) -> usize {
        self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// The remembered ids, for checkpoints: 96 bits of each id (the rest zero) and the start of
    /// its generation as its time, which restores it into the same generation.
    pub fn entries(&self) -> impl Iterator<Item = DedupRecord> + '_ {
        self.generations.iter().flat_map(move |(g, ids)| {
            let time_s = g.saturating_mul(self.width_s);
            ids.iter().map(move |k| {
                let mut id = [0u8; 16];
                id[..12].copy_from_slice(k);
                DedupRecord { id, time_s }
            })
        })
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
        let keys: HashSet<Key> = ids.into_iter().map(key).collect();
        for g in self.generations.values_mut() {
            for k in &keys {
                if g.remove(k) {
                    self.entries -= 1;
                }
            }
        }
        self.generations.retain(|_, g| !g.is_empty());
        if let Some(j) = &mut self.journal {
            j.retain(|r| !keys.contains(&key(r.id())));
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
        // Horizon 8,000 s: generations of 1,000 s, 14 or 15 ids each.
        let mut d = Dedup::new(8_000_000, 30);
        for id in 0..100u128 {
            assert!(d.insert(id, id as i64 * 70_000));
            assert!(d.len() <= 30, "{}", d.len());
        }
        assert!(d.len() >= 15, "only whole old generations go: {}", d.len());
        assert!(!d.insert(99, 6_930_000), "the newest are kept");
        assert!(d.insert(0, 6_930_000), "the oldest went first");
        // A cap smaller than one generation empties it rather than growing past the cap.
        let mut tiny = Dedup::new(8_000_000, 5);
        for id in 0..12u128 {
            tiny.insert(id, 1_000);
            assert!(tiny.len() <= 5);
        }
    }

    #[test]
    fn ids_go_a_generation_at_a_time_and_forget_removes_them() {
        // Horizon 80 s: generations of 10 s. Id 1 at 5 s is remembered until event time
        // passes 90 s (its generation ends at 10 s), never less than the horizon.
        let mut d = Dedup::new(80_000, 100);
        d.insert(1, 5_000);
        d.insert(2, 50_000);
        d.insert(3, 89_999);
        assert!(!d.insert(1, 89_999), "still inside the horizon");
        d.insert(4, 90_000);
        assert!(
            d.insert(1, 90_500),
            "forgotten once its whole generation is past"
        );
        d.forget([2, 1]);
        assert_eq!(d.len(), 2);
        assert!(d.insert(2, 91_000), "forgotten ids are new again");
        let restored = {
            let mut e = Dedup::new(80_000, 100);
            e.restore(d.entries().collect::<Vec<_>>(), i64::MAX);
            e
        };
        assert_eq!(restored.len(), d.len());
        for id in [2u128, 3, 4] {
            assert!(!restored.clone().insert(id, 91_000), "id {id} restored");
        }
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
