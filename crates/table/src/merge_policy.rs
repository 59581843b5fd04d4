//! Which segments to merge next: size tiers of consecutive segments.
//!
//! Segments are sorted by time and a merge takes a run of consecutive ones, so time ranges stay
//! disjoint. A segment's tier is how many times its row count can be divided by the merge
//! factor `F` (`merge_min_segments`) while staying at least [`BASE_ROWS`] x `F`: with `F` = 8,
//! tier 0 is below 32,768 rows, tier 1 below 262,144, tier 2 below 2,097,152. The next merge is
//! the oldest run of consecutive segments holding at least `F` of the lowest tier that has such
//! a run (lower tiers inside a run are taken along, but do not count), up to `merge_target_rows` rows and spanning at most a
//! quarter of the retention. So `F` segments of one tier make one of the next, every row is
//! rewritten about once per tier (log_F of target / seal size times), and at most `F - 1`
//! segments wait at each tier.
//!
//! The policy before this one merged the longest run of segments under a quarter of the
//! target: at a live rate, one segment grew by absorbing the newest seals over and over (each
//! merge rewrote all of it, up to 250,000 rows every few seals). With the default target of
//! 1 M rows, full-speed seals (40,000 rows) still end in segments of 320,000 rows, as before:
//! a larger target (4 M) gives fewer, larger segments in the policy's simulation, but a 10 M
//! order backfill with it was not yet shown to end in fewer files (see BENCHMARKS.md).

use std::ops::Range;

/// What the policy needs of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MergeInput {
    pub rows: u64,
    pub min_time_ms: i64,
    pub max_time_ms: i64,
}

/// Rows below `BASE_ROWS` x factor are all tier 0: small seals (a few seconds at a live rate)
/// merge with each other without a tier per power of the factor.
pub const BASE_ROWS: u64 = 4_096;

/// Limits of a merge.
#[derive(Debug, Clone, Copy)]
pub struct MergeLimits {
    /// Segments of one tier that make a merge (and the factor between tiers), at least 2.
    pub factor: usize,
    /// Most rows of a merged segment.
    pub target_rows: u64,
    /// Longest event-time span of a merged segment (retention drops whole segments, so a long
    /// one keeps its oldest rows past retention for up to this long).
    pub max_span_ms: i64,
}

/// The tier of a segment of `rows` rows (see the module docs).
pub fn tier(rows: u64, factor: usize) -> u32 {
    let f = (factor as u64).max(2);
    let mut t = 0;
    let mut x = rows;
    while x >= BASE_ROWS.saturating_mul(f) {
        x /= f;
        t += 1;
    }
    t
}

/// The segments (sorted by time) to merge next, as a range of `segments`, or `None`.
pub fn pick(segments: &[MergeInput], limits: MergeLimits) -> Option<Range<usize>> {
    let factor = limits.factor.max(2);
    let tiers: Vec<u32> = segments.iter().map(|s| tier(s.rows, factor)).collect();
    let top = tiers.iter().copied().max()?;
    (0..=top).find_map(|t| oldest_run(segments, &tiers, t, factor, limits))
}

/// The oldest run of consecutive segments of tier <= `t` within the limits holding at least
/// `factor` segments of tier `t`, extended as far as the limits allow.
fn oldest_run(
    segments: &[MergeInput],
    tiers: &[u32],
    t: u32,
    factor: usize,
    limits: MergeLimits,
) -> Option<Range<usize>> {
    let fits = |run: &[MergeInput]| {
        let rows: u64 = run.iter().map(|s| s.rows).sum();
        let lo = run.iter().map(|s| s.min_time_ms).min().unwrap_or(0);
        let hi = run.iter().map(|s| s.max_time_ms).max().unwrap_or(0);
        rows <= limits.target_rows && hi.saturating_sub(lo) <= limits.max_span_ms
    };
    for start in 0..segments.len() {
        let mut end = start;
        while end < segments.len() && tiers[end] <= t && fits(&segments[start..=end]) {
            end += 1;
        }
        // Only segments of tier `t` count: a run of lower ones is that tier's to merge (else
        // one segment would grow by absorbing the newest seals, rewritten at every merge).
        if tiers[start..end].iter().filter(|&&x| x == t).count() >= factor {
            return Some(start..end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000;

    fn limits() -> MergeLimits {
        MergeLimits {
            factor: 8,
            target_rows: 4_000_000,
            max_span_ms: 30 * 24 * HOUR / 4,
        }
    }

    /// Seals of `seal_rows` rows, `seal_ms` of event time each, merged by `pick` as they come
    /// (a merge finishes before the next seal). Returns the segments' row counts and the rows
    /// all merges wrote.
    fn simulate(
        seals: usize,
        seal_rows: u64,
        seal_ms: i64,
        limits: MergeLimits,
    ) -> (Vec<u64>, u64) {
        simulate_with(seals, seal_rows, seal_ms, |s| pick(s, limits))
    }

    fn simulate_with(
        seals: usize,
        seal_rows: u64,
        seal_ms: i64,
        pick: impl Fn(&[MergeInput]) -> Option<Range<usize>>,
    ) -> (Vec<u64>, u64) {
        let mut segments: Vec<MergeInput> = Vec::new();
        let mut rewritten = 0;
        for i in 0..seals as i64 {
            segments.push(MergeInput {
                rows: seal_rows,
                min_time_ms: i * seal_ms,
                max_time_ms: (i + 1) * seal_ms - 1,
            });
            while let Some(run) = pick(&segments) {
                let merged = MergeInput {
                    rows: segments[run.clone()].iter().map(|s| s.rows).sum(),
                    min_time_ms: segments[run.start].min_time_ms,
                    max_time_ms: segments[run.end - 1].max_time_ms,
                };
                rewritten += merged.rows;
                segments.splice(run, [merged]);
            }
        }
        (segments.iter().map(|s| s.rows).collect(), rewritten)
    }

    #[test]
    fn tiers_are_powers_of_the_factor_above_the_base() {
        assert_eq!(tier(0, 8), 0);
        assert_eq!(tier(32_767, 8), 0);
        assert_eq!(tier(32_768, 8), 1);
        assert_eq!(tier(262_143, 8), 1);
        assert_eq!(tier(262_144, 8), 2);
        assert_eq!(tier(2_097_152, 8), 3);
        assert_eq!(tier(u64::MAX, 8), 17);
        // A factor below 2 is taken as 2 (no endless loop).
        assert_eq!(tier(16_384, 1), 2);
    }

    #[test]
    fn full_speed_seals_end_in_few_large_segments() {
        // `rtap backfill` / `rtap up --rate 0`: seals of ~40,000 rows (48 MiB of Arrow), 10 M
        // orders over 29 days (about 2.8 hours of event time per seal).
        let (rows, rewritten) = simulate(250, 40_000, 29 * 24 * HOUR / 250, limits());
        assert_eq!(rows.iter().sum::<u64>(), 10_000_000);
        // 3 segments of 2.56 M, 7 of 320,000 and 2 seals: 12 segments.
        assert_eq!(rows.len(), 12, "{rows:?}");
        assert_eq!(rows[..3], [2_560_000; 3]);
        // Every row is rewritten about twice (40k -> 320k -> 2.56M), never more.
        assert!(rewritten <= 2 * 10_000_000, "{rewritten}");
        assert_eq!(rewritten, 31 * 320_000 + 3 * 2_560_000);
        // The old policy: 31 segments of 320,000 rows and 2 seals.
        let (old_rows, _) = simulate_with(250, 40_000, 29 * 24 * HOUR / 250, old_policy);
        assert_eq!(old_rows.len(), 33, "{old_rows:?}");
    }

    /// The policy before tiers (`merge_target_rows` 1 M, `merge_min_segments` 8): the longest
    /// run of consecutive segments under a quarter of the target, up to the target.
    fn old_policy(segments: &[MergeInput]) -> Option<Range<usize>> {
        let (target, small) = (1_000_000, 250_000);
        let mut best = 0..0;
        let mut run = 0..0;
        let mut run_rows = 0;
        for (i, s) in segments.iter().enumerate() {
            if s.rows < small && run_rows + s.rows <= target {
                run_rows += s.rows;
                run.end = i + 1;
            } else {
                if run.len() > best.len() {
                    best = run.clone();
                }
                (run, run_rows) = if s.rows < small {
                    (i..i + 1, s.rows)
                } else {
                    (i + 1..i + 1, 0)
                };
            }
        }
        if run.len() > best.len() {
            best = run;
        }
        (best.len() >= 8).then_some(best)
    }

    #[test]
    fn live_seals_do_not_rewrite_a_growing_segment() {
        // 31 orders/s sealed every 5 s for a day: 17,280 seals of 155 rows.
        let (rows, rewritten) = simulate(17_280, 155, 5_000, limits());
        let total = 17_280 * 155;
        assert_eq!(rows.iter().sum::<u64>(), total);
        // Tier 0 (below 32,768 rows) still grows one segment by the newest seals, but only up
        // to 32,768 rows: each row is rewritten about 20 times, against over 100 times when a
        // segment kept absorbing seals up to 250,000 rows.
        let (old_rows, old) = simulate_with(17_280, 155, 5_000, old_policy);
        eprintln!(
            "a day at 31 orders/s: {:.1} rewrites a row, {} segments (old policy: {:.1}, {})",
            rewritten as f64 / total as f64,
            rows.len(),
            old as f64 / total as f64,
            old_rows.len()
        );
        assert!(
            old > 100 * total,
            "{old} rows rewritten for {total} by the old policy"
        );
        assert!(
            rewritten <= 25 * total,
            "{rewritten} rows rewritten for {total}"
        );
        // At most factor - 1 segments wait at each of tiers 0, 1 and 2, and one is above.
        assert!(rows.len() <= 3 * 7 + 1, "{} segments: {rows:?}", rows.len());
        assert!(rows[0] >= 2_097_152, "{rows:?}");
    }

    #[test]
    fn a_run_spans_at_most_the_span_limit_and_holds_at_most_the_target() {
        let limits = MergeLimits {
            max_span_ms: 10 * HOUR,
            ..limits()
        };
        // Seals of 2 hours each: a run of 8 would span 16 hours.
        let (rows, rewritten) = simulate(40, 40_000, 2 * HOUR, limits);
        assert_eq!(rewritten, 0, "{rows:?}");
        let limits = MergeLimits {
            target_rows: 200_000,
            ..self::limits()
        };
        let (rows, rewritten) = simulate(40, 40_000, 1_000, limits);
        assert_eq!(rewritten, 0, "{rows:?}");
    }

    #[test]
    fn lower_tiers_inside_a_run_are_taken_along() {
        let seg = |rows, i: i64| MergeInput {
            rows,
            min_time_ms: i,
            max_time_ms: i,
        };
        // A lone small segment between tier-1 ones does not stay forever.
        let mut segments: Vec<MergeInput> = (0..4).map(|i| seg(40_000, i)).collect();
        segments.push(seg(10, 4));
        segments.extend((5..9).map(|i| seg(40_000, i)));
        assert_eq!(pick(&segments, limits()), Some(0..9));
        // Seven small ones are not enough; the oldest eight are merged first.
        assert_eq!(pick(&segments[..7], limits()), None);
        let small: Vec<MergeInput> = (0..20).map(|i| seg(100, i)).collect();
        assert_eq!(pick(&small, limits()), Some(0..20));
        assert_eq!(pick(&[], limits()), None);
    }
}
