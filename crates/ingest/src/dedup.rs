//! Dedup on `order_id` within a bounded horizon of event time.
//!
//! Every accepted order's id is remembered, as 76 bits of its 128-bit hash (a false duplicate
//! needs an id to agree with one of the N ids inside the horizon on 76 bits: N / 2^76 per order,
//! about 1e-16 with 10 M ids in the horizon), until event time moves past it by the horizon
//! (default 24 h). A re-delivered order inside the horizon is dropped and counted.
//!
//! Memory is what limits this structure (a day at 31 orders/s is 2.7 M ids; `rtap up --rate 0`
//! puts tens of millions inside one day), so ids are kept in generations, one per eighth of the
//! horizon of event time. A generation spreads its ids over 4,096 buckets; a bucket is one
//! vector: its ids' 64-bit values sorted, then up to 32 unsorted newcomers, merged in place
//! when there are 32. That is 8 bytes per id, plus per generation 128 KiB of bucket headers
//! and up to 32 spare slots a bucket (at most 1.1 MiB), plus the allocator's rounding of each
//! bucket's size: 9.7 bytes per id measured with 10 M ids (about 10 MB per million ids in the
//! horizon, and at most about 10 MiB for the slack of ten generations); a hash set took 15-30
//! bytes per id. An id is looked up in every live generation (about 10): a search in one bucket
//! that starts where the value's size puts it (see [`find_sorted`]) and a scan of at most 32.
//!
//! The bucket is picked by the id's low 12 bits mixed with a hash of the other 64 under a key
//! drawn at start: the ids are unkeyed hashes of `order_id`s a producer chooses, and a producer
//! who could aim every id at one bucket would make each insert move the whole bucket.
//!
//! A generation is dropped whole once all its ids are past the horizon, so ids are remembered
//! for the horizon and at most an eighth more, and expiry costs nothing per id; an id already
//! past the horizon when it arrives is not stored. A hard cap on entries drops the oldest
//! generations early.
//!
//! Checkpoints store the 76 bits (the other bits zero). Ids from checkpoints of earlier versions,
//! which kept the low 96 bits, still match; an earlier version reading a checkpoint written by
//! this one would not recognise those ids (a downgrade forgets the dedup horizon).

use std::collections::{BTreeMap, HashSet};
use std::hash::BuildHasher;

/// Buckets per generation (a power of two).
const BUCKET_BITS: u32 = 12;
const BUCKETS: usize = 1 << BUCKET_BITS;
/// Newcomers a bucket keeps unsorted at its end before merging them into its sorted values.
const PENDING: usize = 32;

/// The per-process key that spreads ids over buckets.
#[derive(Debug, Clone, Copy)]
struct BucketKey {
    xor: u64,
    /// Odd.
    mul: u64,
}

impl BucketKey {
    fn random() -> Self {
        let state = std::collections::hash_map::RandomState::new();
        BucketKey {
            xor: state.hash_one(0x5eed_u64),
            mul: state.hash_one(0xfeed_u64) | 1,
        }
    }

    /// 12 bits of a keyed hash of `value`: a keyed multiply, then a xor-shift and a second
    /// multiply (splitmix64's finaliser) so that even values in arithmetic progression spread.
    fn mix(&self, value: u64) -> usize {
        let x = (value ^ self.xor).wrapping_mul(self.mul);
        let x = (x ^ (x >> 31)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (x >> (64 - BUCKET_BITS)) as usize
    }

    /// Where one id is remembered: its bucket and the 64 bits above the low 12. Only bits 0..76
    /// are read, so ids from checkpoints that kept 96 bits still match.
    fn split(&self, id: u128) -> (usize, u64) {
        let value = (id >> BUCKET_BITS) as u64;
        (((id as usize) & (BUCKETS - 1)) ^ self.mix(value), value)
    }

    /// The id [`BucketKey::split`] maps to `(bucket, value)` (the bits it does not keep are zero).
    fn join(&self, bucket: usize, value: u64) -> u128 {
        let low = bucket ^ self.mix(value);
        (u128::from(value) << BUCKET_BITS) | low as u128
    }
}

#[derive(Debug, Clone, Default)]
struct Bucket {
    /// `values[..sorted]` ascending without repeats, then fewer than [`PENDING`] newcomers.
    /// Grown [`PENDING`] slots at a time.
    values: Vec<u64>,
    sorted: u32,
}

impl Bucket {
    fn sorted_len(&self) -> usize {
        self.sorted as usize
    }

    fn contains(&self, v: u64) -> bool {
        let (sorted, pending) = self.values.split_at(self.sorted_len());
        pending.contains(&v) || find_sorted(sorted, v)
    }

    /// Adds `v` (the caller checked it is absent).
    fn insert(&mut self, v: u64) {
        if self.values.len() == self.values.capacity() {
            self.values.reserve_exact(PENDING);
        }
        self.values.push(v);
        if self.values.len() - self.sorted_len() >= PENDING {
            self.merge_pending();
        }
    }

    /// Merges the newcomers into the sorted values, in place from the back.
    fn merge_pending(&mut self) {
        let mut pending = [0u64; PENDING];
        let (mut i, len) = (self.sorted_len(), self.values.len());
        let n = len - i;
        pending[..n].copy_from_slice(&self.values[i..]);
        let pending = &mut pending[..n];
        pending.sort_unstable();
        let (mut j, mut k) = (n, len);
        while j > 0 {
            k -= 1;
            if i > 0 && self.values[i - 1] > pending[j - 1] {
                self.values[k] = self.values[i - 1];
                i -= 1;
            } else {
                self.values[k] = pending[j - 1];
                j -= 1;
            }
        }
        self.sorted = len as u32;
    }

    fn remove(&mut self, v: u64) -> bool {
        let at = self.sorted_len();
        if let Some(p) = self.values[at..].iter().position(|x| *x == v) {
            // The last value is a newcomer too: the sorted part stays as it is.
            self.values.swap_remove(at + p);
            return true;
        }
        match self.values[..at].binary_search(&v) {
            Ok(p) => {
                self.values.remove(p);
                self.sorted -= 1;
                true
            }
            Err(_) => false,
        }
    }
}

/// Whether ascending `sorted` holds `v`. Values are hash bits, spread evenly over u64, so `v`'s
/// place is guessed from its size and searched for outwards from there in doubling steps: about
/// one cache line read instead of a binary search's several, and never worse than twice a
/// binary search when the values are not spread evenly.
fn find_sorted(sorted: &[u64], v: u64) -> bool {
    let n = sorted.len();
    if n == 0 {
        return false;
    }
    let guess = ((u128::from(v) * n as u128) >> 64) as usize;
    let (lo, hi) = if sorted[guess] < v {
        // Widen [lo, hi) rightwards until its last value reaches v.
        let (mut lo, mut step) = (guess + 1, 1);
        loop {
            let hi = lo.saturating_add(step).min(n);
            if hi == n || sorted[hi - 1] >= v {
                break (lo, hi);
            }
            lo = hi;
            step *= 2;
        }
    } else {
        // Widen [lo, hi) leftwards until its first value is at most v.
        let (mut hi, mut step) = (guess + 1, 1);
        loop {
            let lo = hi.saturating_sub(step);
            if lo == 0 || sorted[lo] <= v {
                break (lo, hi);
            }
            hi = lo;
            step *= 2;
        }
    };
    sorted[lo..hi].binary_search(&v).is_ok()
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

    fn ids(&self, key: BucketKey) -> impl Iterator<Item = u128> + '_ {
        self.buckets
            .iter()
            .enumerate()
            .flat_map(move |(b, bucket)| bucket.values.iter().map(move |&v| key.join(b, v)))
    }
}

#[derive(Debug, Clone)]
pub struct Dedup {
    horizon_s: u32,
    /// Seconds of event time per generation (an eighth of the horizon).
    width_s: u32,
    max_entries: usize,
    key: BucketKey,
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
            key: BucketKey::random(),
            generations: BTreeMap::new(),
            entries: 0,
            watermark_s: 0,
            journal: None,
        }
    }

    fn contains(&self, k: (usize, u64)) -> bool {
        // Newest first: a re-delivery is most often of a recent order.
        self.generations.values().rev().any(|g| g.contains(k))
    }

    /// Records `id` at `time_ms`; false if it was already seen (a duplicate).
    pub fn insert(&mut self, id: u128, time_ms: i64) -> bool {
        let k = self.key.split(id);
        if self.contains(k) {
            return false;
        }
        let t = seconds(time_ms);
        if t > self.watermark_s {
            self.watermark_s = t;
            self.expire();
        }
        let generation = t / self.width_s;
        if generation < self.first_live_generation() {
            // Already past the horizon: its generation would be dropped at once.
            return true;
        }
        if let Some(j) = &mut self.journal {
            j.push(DedupRecord {
                id: id.to_le_bytes(),
                time_s: t,
            });
        }
        self.generations
            .entry(generation)
            .or_insert_with(Generation::new)
            .insert(k);
        self.entries += 1;
        self.enforce_cap();
        true
    }

    /// The cap: drops whole generations, oldest first. Should the newest alone exceed it (the
    /// default 20 M ids in an eighth of the horizon), it goes too: memory stays bounded and
    /// re-deliveries of those ids are not recognised.
    fn enforce_cap(&mut self) {
        while self.entries > self.max_entries {
            match self.generations.pop_first() {
                Some((_, oldest)) => self.entries -= oldest.len,
                None => break,
            }
        }
    }

    /// The oldest generation with an id inside the horizon (every id of an older one, which
    /// ends at or before the horizon's start, is past it).
    fn first_live_generation(&self) -> u32 {
        self.watermark_s.saturating_sub(self.horizon_s) / self.width_s
    }

    /// Drops the generations whose every id is past the horizon.
    fn expire(&mut self) {
        let first_live = self.first_live_generation();
        while let Some(entry) = self.generations.first_entry() {
            if *entry.key() >= first_live {
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
            ids.ids(self.key).map(move |id| DedupRecord {
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
    pub fn restore(&mut self, entries: &[DedupRecord], max_ms: i64) {
        let clamp = |r: &DedupRecord| seconds((i64::from(r.time_s) * 1000).min(max_ms));
        if !self.is_empty() {
            for r in entries {
                self.insert(r.id(), i64::from(clamp(r)) * 1000);
            }
            return;
        }
        // Into an empty set (a start): every bucket is built once at its final size, instead
        // of growing 32 slots at a time while the checkpoint's records are in memory (slower,
        // and it left the heap fragmented: 80 MB more RSS after restoring 10 M ids).
        let records = entries.iter().map(|r| (clamp(r), r));
        let Some(newest) = records.clone().map(|(t, _)| t).max() else {
            return;
        };
        self.watermark_s = self.watermark_s.max(newest);
        let (width, first_live) = (self.width_s, self.first_live_generation());
        let live = |t: u32| t / width >= first_live;
        let mut counts: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        for (t, r) in records.clone() {
            if live(t) {
                let (b, _) = self.key.split(r.id());
                counts
                    .entry(t / self.width_s)
                    .or_insert_with(|| vec![0; BUCKETS])[b] += 1;
            }
        }
        for (g, counts) in counts {
            let mut generation = Generation::new();
            for (bucket, n) in generation.buckets.iter_mut().zip(counts) {
                bucket.values.reserve_exact(n as usize);
            }
            self.generations.insert(g, generation);
        }
        for (t, r) in records {
            if live(t) {
                let (b, v) = self.key.split(r.id());
                if let Some(g) = self.generations.get_mut(&(t / self.width_s)) {
                    g.buckets[b].values.push(v);
                }
            }
        }
        for g in self.generations.values_mut() {
            for bucket in g.buckets.iter_mut() {
                // A log may hold an id twice (a write that failed and was retried).
                bucket.values.sort_unstable();
                bucket.values.dedup();
                bucket.values.shrink_to_fit();
                bucket.sorted = bucket.values.len() as u32;
            }
            g.len = g.buckets.iter().map(|b| b.values.len()).sum();
        }
        self.entries = self.generations.values().map(|g| g.len).sum();
        self.enforce_cap();
    }

    /// Forgets ids that were inserted but whose rows never reached the table (so a re-delivery
    /// is not taken for a duplicate).
    pub fn forget(&mut self, ids: impl IntoIterator<Item = u128>) {
        let key = self.key;
        let keys: HashSet<(usize, u64)> = ids.into_iter().map(|id| key.split(id)).collect();
        for g in self.generations.values_mut() {
            for k in &keys {
                if g.remove(*k) {
                    self.entries -= 1;
                }
            }
        }
        self.generations.retain(|_, g| g.len > 0);
        if let Some(j) = &mut self.journal {
            j.retain(|r| !keys.contains(&key.split(r.id())));
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
            e.restore(&d.entries().collect::<Vec<_>>(), i64::MAX);
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
        d.restore(&records, 110_000);
        assert!(!d.insert(1, 101_000), "id 1 is still remembered");
        assert!(!d.insert(2, 101_000), "id 2 too, at the clamped time");
    }

    /// xorshift64: deterministic pseudo-random numbers for the model tests.
    fn rng(mut state: u64) -> impl FnMut() -> u64 {
        move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        }
    }

    #[test]
    fn the_guessing_search_finds_exactly_what_a_binary_search_does() {
        let mut next = rng(0x1234_5678_9abc_def1);
        for n in [0usize, 1, 2, 3, 7, 64, 1_000] {
            // Spread evenly, and all crowded at the bottom (the guess is then far off).
            for crowd in [false, true] {
                let mut sorted: Vec<u64> = (0..n)
                    .map(|_| if crowd { next() % 5_000 } else { next() })
                    .collect();
                sorted.sort_unstable();
                sorted.dedup();
                let probes = sorted
                    .iter()
                    .flat_map(|&x| [x, x.wrapping_add(1), x.wrapping_sub(1)])
                    .chain([0, u64::MAX, 2_500])
                    .chain((0..200).map(|_| next()));
                for v in probes {
                    assert_eq!(
                        find_sorted(&sorted, v),
                        sorted.binary_search(&v).is_ok(),
                        "n {n}, crowded {crowd}, v {v}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_bucket_matches_a_plain_set_through_merges_and_removals() {
        let mut next = rng(0x9e37_79b9_7f4a_7c15);
        let mut bucket = Bucket::default();
        let mut model = HashSet::new();
        let mut most = 0;
        for step in 0..20_000 {
            // 3,000 distinct values: most are new early on, most are known later.
            let v = next() % 3_000;
            assert_eq!(bucket.contains(v), model.contains(&v), "step {step}");
            if step % 7 == 0 {
                assert_eq!(bucket.remove(v), model.remove(&v), "remove at {step}");
            } else if model.insert(v) {
                bucket.insert(v);
            }
            let sorted = &bucket.values[..bucket.sorted_len()];
            assert!(sorted.windows(2).all(|w| w[0] < w[1]), "sorted at {step}");
            assert!(bucket.values.len() - sorted.len() < PENDING);
            most = most.max(bucket.values.len());
            assert!(
                bucket.values.capacity() <= most + PENDING,
                "grown a little at a time"
            );
        }
        let mut values = bucket.values.clone();
        values.sort_unstable();
        let mut want: Vec<u64> = model.into_iter().collect();
        want.sort_unstable();
        assert_eq!(values, want);
    }

    #[test]
    fn dedup_matches_a_plain_set_on_random_ids() {
        let mut next = rng(0x2545_f491_4f6c_dd1d);
        let mut d = Dedup::new(10_000_000, 10_000_000);
        let mut model = HashSet::new();
        let ids: Vec<u128> = (0..400_000)
            .map(|_| (u128::from(next()) << 64) | u128::from(next()))
            .collect();
        for step in 0..600_000 {
            // 400k distinct ids, about 100 per bucket: every bucket merges a few times.
            let id = ids[(next() % 400_000) as usize];
            assert_eq!(
                d.insert(id, 1_000),
                model.insert(id & ((1 << 76) - 1)),
                "step {step}"
            );
        }
        let gone: Vec<u128> = ids[..1_000].to_vec();
        d.forget(gone.iter().copied());
        for id in &gone {
            model.remove(&(id & ((1 << 76) - 1)));
        }
        assert_eq!(d.len(), model.len());
        let mut back: Vec<u128> = d.entries().map(|r| r.id()).collect();
        back.sort_unstable();
        let mut want: Vec<u128> = model.into_iter().collect();
        want.sort_unstable();
        assert_eq!(back, want, "entries are the kept 76 bits of each id");
        assert!(d.insert(gone[0], 1_000), "forgotten ids are new again");
    }

    #[test]
    fn ids_a_producer_aims_at_one_bucket_are_spread_by_the_key() {
        // 4,096 ids that agree on the low 12 bits would share one bucket without the key.
        let d = Dedup::new(1_000_000, 100_000);
        let buckets: HashSet<usize> = (0..4_096u128)
            .map(|i| d.key.split((i << 12) | 0x5a5).0)
            .collect();
        assert!(buckets.len() > 2_000, "{} buckets", buckets.len());
        for i in 0..4_096u128 {
            let id = (i << 40) | 0x5a5;
            let (b, v) = d.key.split(id);
            assert_eq!(d.key.join(b, v), id, "split and join are inverse");
        }
    }

    #[test]
    fn an_id_already_past_the_horizon_is_not_stored() {
        let mut d = Dedup::new(80_000, 100);
        d.insert(1, 1_000_000);
        assert!(d.insert(2, 5_000), "far behind the horizon: accepted");
        assert_eq!(d.len(), 1, "but not remembered");
        assert_eq!(d.generations.len(), 1, "and no generation made for it");
        assert!(d.insert(3, 930_000), "inside the horizon");
        assert_eq!(d.len(), 2);
    }

    #[test]
    fn ids_from_checkpoints_that_kept_96_bits_still_match() {
        let full: u128 = 0xdead_beef_0123_4567_89ab_cdef_f00d_cafe;
        let mut d = Dedup::new(1_000_000, 100);
        d.restore(&[DedupRecord::new(full & ((1 << 96) - 1), 1_000)], i64::MAX);
        assert!(!d.insert(full, 2_000));
    }

    #[test]
    fn a_bulk_restore_equals_inserting_one_by_one() {
        let mut next = rng(0x0dd_ba11);
        // Horizon 80 s (generations of 10 s); times over 200 s, so some are past it.
        let records: Vec<DedupRecord> = (0..50_000)
            .map(|i| {
                let id = (u128::from(next()) << 64) | u128::from(next());
                DedupRecord::new(id, i64::from(i % 200) * 1_000)
            })
            .collect();
        let mut twice = records.clone();
        twice.extend_from_slice(&records[..1_000]);
        let mut bulk = Dedup::new(80_000, 1_000_000);
        bulk.restore(&twice, i64::MAX);
        let mut one_by_one = Dedup::new(80_000, 1_000_000);
        one_by_one.insert(0, 1); // not empty: restores id by id
        one_by_one.restore(&twice, i64::MAX);
        one_by_one.forget([0]);
        assert_eq!(bulk.len(), one_by_one.len());
        assert!(bulk.len() < 50_000, "ids past the horizon were dropped");
        let sorted = |d: &Dedup| {
            let mut v: Vec<(u32, u128)> = d.entries().map(|r| (r.time_s, r.id())).collect();
            v.sort_unstable();
            v
        };
        assert_eq!(sorted(&bulk), sorted(&one_by_one));
        for g in bulk.generations.values() {
            for b in g.buckets.iter() {
                assert_eq!(b.sorted_len(), b.values.len());
                assert_eq!(
                    b.values.capacity(),
                    b.values.len(),
                    "built at its final size"
                );
            }
        }
        assert!(
            !bulk.insert(records[49_999].id(), 200_000),
            "a recent id is known"
        );
        let mut capped = Dedup::new(80_000, 10_000);
        capped.restore(&records, i64::MAX);
        assert!(capped.len() <= 10_000, "{}", capped.len());
    }

    #[test]
    fn entries_round_trip() {
        let mut d = Dedup::new(1_000_000, 100);
        d.insert(7, 5_000);
        d.insert(u128::MAX, 6_000);
        let mut e = Dedup::new(1_000_000, 100);
        e.restore(&d.entries().collect::<Vec<_>>(), i64::MAX);
        assert!(!e.insert(7, 7_000));
        assert!(!e.insert(u128::MAX, 7_000));
        assert!(e.insert(8, 7_000));
    }
}
