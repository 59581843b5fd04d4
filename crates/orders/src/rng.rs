//! The generator's random numbers: SplitMix64 to derive seeds, xoshiro256++ to draw.
//!
//! Written here rather than taken from `rand` on purpose: replay depends on order n of seed s
//! being the same bytes forever, and `rand`'s distributions have changed their output between
//! releases. These two algorithms are a few lines each, public-domain reference designs
//! (Vigna, Blackman), and never change.

/// SplitMix64 step: a strong 64-bit mixer, used to turn (seed, stream, index) into RNG seeds.
pub fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// xoshiro256++, seeded from one u64 through SplitMix64 as its authors recommend.
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// A generator for one (seed, stream, index) triple, independent of every other triple.
    pub fn for_key(seed: u64, stream: u64, index: u64) -> Self {
        let mut x = mix64(seed ^ mix64(stream.wrapping_add(mix64(index))));
        let mut s = [0u64; 4];
        for word in &mut s {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            *word = mix64(x);
        }
        Rng { s }
    }

    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[0]
            .wrapping_add(self.s[3])
            .rotate_left(23)
            .wrapping_add(self.s[0]);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in `0..n` (Lemire's multiply-shift; the bias is below 2^-40 for every n we use).
    pub fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        debug_assert!(lo <= hi);
        lo + self.below((hi - lo + 1) as u64) as i64
    }

    /// Uniform in `[0, 1)` with 53 bits.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// One element of a non-empty slice.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// An index drawn by weight; weights need not sum to one.
    pub fn weighted(&mut self, weights: &[f64]) -> usize {
        let total: f64 = weights.iter().sum();
        let mut x = self.unit() * total;
        for (i, w) in weights.iter().enumerate() {
            if x < *w {
                return i;
            }
            x -= w;
        }
        weights.len() - 1
    }

    /// A standard normal variate (Box-Muller); used only when building the catalog.
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.unit();
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// A random version-4 UUID.
    pub fn uuid(&mut self) -> uuid::Uuid {
        let hi = self.next_u64().to_be_bytes();
        let lo = self.next_u64().to_be_bytes();
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&hi);
        bytes[8..].copy_from_slice(&lo);
        uuid::Builder::from_random_bytes(bytes).into_uuid()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_reproducible_and_distinct() {
        let a: Vec<u64> = (0..4).map(|_| Rng::for_key(7, 1, 2).next_u64()).collect();
        assert!(a.iter().all(|x| *x == a[0]));
        assert_ne!(
            Rng::for_key(7, 1, 2).next_u64(),
            Rng::for_key(7, 1, 3).next_u64()
        );
        assert_ne!(
            Rng::for_key(7, 1, 2).next_u64(),
            Rng::for_key(8, 1, 2).next_u64()
        );
    }

    #[test]
    fn known_first_values_never_change() {
        // Pinned: if this changes, every replayed order of every seed changes with it.
        let mut r = Rng::for_key(42, 0, 0);
        let first = r.next_u64();
        let mut again = Rng::for_key(42, 0, 0);
        assert_eq!(first, again.next_u64());
        assert_eq!(mix64(0), 0xE220_A839_7B1D_CDAF);
    }

    #[test]
    fn below_and_range_stay_in_bounds() {
        let mut r = Rng::for_key(1, 2, 3);
        for _ in 0..10_000 {
            assert!(r.below(7) < 7);
            let x = r.range(3, 5);
            assert!((3..=5).contains(&x));
        }
        let v4 = r.uuid();
        assert_eq!(v4.get_version_num(), 4);
    }
}
