//! Dedup on `order_id` within a bounded horizon of event time.
//!
//! Every accepted order's id is remembered, as 76 bits of its 128-bit hash (a false duplicate
//! needs an id to agree with one of the N ids inside the horizon on 76 bits: N / 2^76 per order,
//! about 1e-16 with 10 M ids in the horizon), until event time moves past it by the horizon
//! (default 24 h). A re-delivered order inside the horizon is dropped and counted.
//!
//! Memory is what limits this structure (a day at 31 orders/s is 2.7 M ids; `rtap up --rate 0`
//! puts tens of millions inside one day), so ids are kept in generations, one per eighth of the
//! horizon of event time. A generation splits the ids by their low 12 bits into 4,096 buckets;
//! each bucket holds the next 64 bits of each id in a sorted vector (exactly sized) plus up to
//! 32 unsorted newcomers, merged in when full. That is 8 bytes per id (8 MB per million ids in
//! the horizon) plus at most about 1.2 MB per generation, against 15-30 bytes per id for a hash
//! set. An id is looked up in every live generation (about 10): one binary search in a bucket of
//! a few thousand sorted ids and a scan of at most 32. A generation is dropped whole once all its
//! ids are past the horizon, so ids are remembered for the horizon and at most an eighth more,
//! and expiry costs nothing per id. A hard cap on entries drops the oldest generations early.

use std::collections::{BTreeMap, HashSet};

/// Buckets per generation (a power of two): an id's low bits pick its bucket.
const BUCKET_BITS: u32 = 12;
const BUCKETS: usize = 1 << BUCKET_BITS;
/// Newcomers a bucket keeps unsorted before merging them into its sorted ids.
const PENDING: usize = 32;

/// Where one id is remembered: its bucket (low 12 bits of the hash) and the 64 bits above them.
/// Only the low 96 bits are read, so ids restored from checkpoints that kept 96 bits still match.
fn split(id: u128) -> (usize, u64) {
    ((id as usize) & (BUCKETS - 1), (id >> BUCKET_BITS) as u64)
}

/// The id [`split`] maps to `(bucket, value)` (the bits it does not keep are zero).
fn join(bucket: usize, value: u64) -> u128 {
    (u128::from(value) << BUCKET_BITS) | bucket as u128
}

#[derive(Debug, Clone, Default)]
struct Bucket {
    /// Sorted, no duplicates, capacity equal to length.
    sorted: Vec<u64>,
    /// At most [`PENDING`] newcomers, unsorted.
    pending: Vec<u64>,
}

impl Bucket {
    fn contains(&self, v: u64) -> bool {
        self.pending.contains(&v) || self.sorted.binary_search(&v).is_ok()
    }

    /// Adds `v` (the caller checked it is absent).
    fn insert(&mut self, v: u64) {
        if self.pending.capacity() == 0 {
            self.pending.reserve_exact(PENDING);
        }
        self.pending.push(v);
        if self.pending.len() >= PENDING {
            self.merge_pending();
        }
    }

    /// Merges the newcomers into the sorted ids, in place from the back.
    fn merge_pending(&mut self) {
        let pending = &mut self.pending;
        pending.sort_unstable();
        let old = self.sorted.len();
        self.sorted.reserve_exact(pending.len());
        self.sorted.resize(old + pending.len(), 0);
        let (mut i, mut j) = (old, pending.len());
        let mut k = self.sorted.len();
        while j > 0 {
            k -= 1;
            if i > 0 && self.sorted[i - 1] > pending[j - 1] {
                self.sorted[k] = self.sorted[i - 1];
                i -= 1;
            } else {
                self.sorted[k] = pending[j - 1];
                j -= 1;
            }
        }
        pending.clear();
    }

    fn remove(&mut self, v: u64) -> bool {
        if let Some(p) = self.pending.iter().position(|x| *x == v) {
            self.pending.swap_remove(p);
            return true;
        }
        match self.sorted.binary_search(&v) {
            Ok(p) => {
                self.sorted.remove(p);
                self.sorted.shrink_to_fit();
                true
            }
            Err(_) => false,
        }
    }

    fn values(&self) -> impl Iterator<Item = u64> + '_ {
        self.sorted.iter().chain(&self.pending).copied()
    }
}

/// The ids of one eighth of the horizon.
#[derive(Debug, Clone)]
struct Generation {
    buckets: Box<[Bucket]>,
    len: usize,
}

impl Generation {
    fn new() -> Self {
        Generation {
            buckets: vec![Bucket::default(); BUCKETS].into_boxed_slice(),
            len: 0,
        }
    }

    fn contains(&self, (b, v): (usize, u64)) -> bool {
        self.buckets[b].contains(v)
    }

    /// Adds the id (the caller checked it is absent).
    fn insert(&mut self, (b, v): (usize, u64)) {
        self.buckets[b].insert(v);
        self.len += 1;
    }

    fn remove(&mut self, (b, v): (usize, u64)) -> bool {
        let removed = self.buckets[b].remove(v);
        if removed {
            self.len -= 1;
        }
        removed
    }

    fn ids(&self) -> impl Iterator<Item = u128> + '_ {
        self.buckets
            .iter()
            .enumerate()
            .flat_map(|(b, bucket)| bucket.values().map(move |v| join(b, v)))
    }
}

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

    fn contains(&self, k: (usize, u64)) -> bool {
        self.generations.values().any(|g| g.contains(k))
    }

    /// Records `id` at `time_ms`; false if it was already seen (a duplicate).
    pub fn insert(&mut self, id: u128, time_ms: i64) -> bool {
        let k = split(id);
        if self.contains(k) {
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
        self.generations
            .entry(generation)
            .or_insert_with(Generation::new)
            .insert(k);
        self.entries += 1;
        if t > self.watermark_s {
            self.watermark_s = t;
            self.expire();
        }
        // The cap: drop whole generations, oldest first. Should the newest alone exceed it
        // (the default 20 M ids in an eighth of the horizon), it goes too: memory stays bounded
        // and re-deliveries of those ids are not recognised.
        while self.entries > self.max_entries {
            match self.generations.pop_first() {
                Some((_, oldest)) => self.entries -= oldest.len,
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
            self.entries -= entry.remove().len;
        }
    }

    pub fn len(&self) -> usize {
        self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// The remembered ids, for checkpoints: the 76 bits of each id that are kept (the rest
    /// zero) and the start of its generation as its time, which restores it into the same
    /// generation.
    pub fn entries(&self) -> impl Iterator<Item = DedupRecord> + '_ {
        self.generations.iter().flat_map(move |(g, ids)| {
            let time_s = g.saturating_mul(self.width_s);
            ids.ids().map(move |id| DedupRecord {
                id: id.to_le_bytes(),
                time_s,
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
        let keys: HashSet<(usize, u64)> = ids.into_iter().map(split).collect();
        for g in self.generations.values_mut() {
            for k in &keys {
                if g.remove(*k) {
                    self.entries -= 1;
                }
            }
        }
        self.generations.retain(|_, g| g.len > 0);
        if let Some(j) = &mut self.journal {
            j.retain(|r| !keys.contains(&split(r.id())));
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
    fn many_ids_in_one_bucket_merge_and_stay_found() {
        // Ids that share their low 12 bits land in one bucket: 1,000 of them go through ~31
        // merges of the newcomers into the sorted ids, in a shuffled order.
        let ids: Vec<u128> = (0..1_000u128)
            .map(|i| ((i * 7_919 % 1_000 + 1) << 12) | 5)
            .collect();
        let mut d = Dedup::new(1_000_000, 10_000);
        for &id in &ids {
            assert!(d.insert(id, 1_000), "new id {id}");
        }
        for &id in &ids {
            assert!(!d.insert(id, 1_000), "known id {id}");
        }
        assert!(d.insert(5, 1_000), "a bucket neighbour is new");
        let bucket = &d
            .generations
            .values()
            .next()
            .expect("one generation")
            .buckets[5];
        assert!(
            bucket.sorted.windows(2).all(|w| w[0] < w[1]),
            "sorted, no repeats"
        );
        assert_eq!(bucket.sorted.len() + bucket.pending.len(), 1_001);
        assert!(bucket.sorted.len() >= 992, "merged as they came");
        assert_eq!(
            bucket.sorted.capacity(),
            bucket.sorted.len(),
            "exactly sized"
        );
        d.forget([ids[0], ids[999], 5]);
        assert_eq!(d.len(), 998);
        assert!(d.insert(ids[999], 1_000), "forgotten ids are new again");
        assert!(!d.insert(ids[500], 1_000));
    }

    #[test]
    fn matches_a_plain_set_on_random_ids() {
        let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut d = Dedup::new(10_000_000, 1_000_000);
        let mut model = HashSet::new();
        for _ in 0..50_000 {
            // Few distinct ids, so about half the inserts are duplicates.
            let id = (u128::from(next() % 30_000) << 64) | u128::from(next() % 30_000);
            let id = id.wrapping_mul(0x2545_f491_4f6c_dd1d_9e37_79b9_7f4a_7c15);
            assert_eq!(d.insert(id, 1_000), model.insert(id & ((1 << 76) - 1)));
        }
        assert_eq!(d.len(), model.len());
        let mut back: Vec<u128> = d.entries().map(|r| r.id()).collect();
        back.sort_unstable();
        let mut want: Vec<u128> = model.into_iter().collect();
        want.sort_unstable();
        assert_eq!(back, want, "entries are the kept 76 bits of each id");
    }

    #[test]
    fn ids_from_checkpoints_that_kept_96_bits_still_match() {
        let full: u128 = 0xdead_beef_0123_4567_89ab_cdef_f00d_cafe;
        let mut d = Dedup::new(1_000_000, 100);
        d.restore([DedupRecord::new(full & ((1 << 96) - 1), 1_000)], i64::MAX);
        assert!(!d.insert(full, 2_000));
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
