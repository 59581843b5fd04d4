//! Which segments to merge next: size tiers of consecutive segments.
//!
//! Segments are sorted by their oldest row and a merge takes a run of consecutive ones. A
//! segment's tier is how many times its row count can be divided by the merge factor `F`
//! (`merge_min_segments`) while staying at least [`BASE_ROWS`] x `F`: with `F` = 8, tier 0 is
//! below 512 rows, tier 1 below 4,096, tier 2 below 32,768, tier 3 below 262,144 and tier 4
//! below 2,097,152. The next merge is the oldest run of consecutive segments holding at least
//! `F` of the lowest tier that has such a run (lower tiers inside a run are taken along, but do
//! not count), within the limits: at most `merge_target_rows` rows, and the inputs' oldest rows
//! and their newest rows each within a quarter of the retention of one another (see
//! [`MergeLimits::max_span_ms`]). So `F` segments of one tier make one of the next, and a row is
//! rewritten about once per tier it climbs (log_F of target / seal size): 4 times at a live rate
//! of 31 orders/s sealed every 5 s, twice for full-speed seals.
//!
//! Where a limit stops a run before it holds `F` of its tier (with the defaults, tier 4: from
//! 262,144 rows, eight would exceed 1 M), the run is merged anyway if it holds at least two of
//! the tier (above tier 0): full-speed seals of 40,000 rows end in segments of 1 M (three of
//! 320,000 and a seal). Without that, such segments never merged again and their count grew by
//! one per 262,144 rows or fewer. Each such merge adds at least the tier's least size to a
//! segment, so a row is rewritten there at most target / least size times. At a live rate
//! segments end at 634,880 rows (eight of 79,360; two do not fit 1 M), so a month at 31
//! orders/s (80 M orders) is about 130 segments.
//!
//! The policy before tiers merged the longest run of segments under a quarter of the target: at
//! a live rate, one segment grew by absorbing the newest seals over and over (each merge rewrote
//! all of it, up to 250,000 rows every few seals).

use std::ops::Range;

use crate::TableConfig;

/// What the policy needs of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MergeInput {
    pub rows: u64,
    pub min_time_ms: i64,
    pub max_time_ms: i64,
}

/// What the policy needs of each of `segments`, in their order.
pub(crate) fn inputs_of(segments: &[crate::segment::SegmentRef]) -> Vec<MergeInput> {
    segments
        .iter()
        .map(|s| MergeInput {
            rows: s.entry.rows,
            min_time_ms: s.entry.min_time_ms,
            max_time_ms: s.entry.max_time_ms,
        })
        .collect()
}

/// Rows below `BASE_ROWS` x factor are all tier 0, so tiny seals (a few seconds of a slow
/// shop) merge with each other without a tier per power of the factor. Inside tier 0 a merged
/// segment counts among the next `factor`, so one segment grows by absorbing the newest seals:
/// the base is small to keep that short. A day at 31 orders/s sealed every 5 s rewrites a row
/// 3.9 times with 64 (5.1 with 512, 17.5 with 4,096); at 1 order/s 9.8 times (60 with 512, 428
/// with 4,096); 11 segments after either day (12 and 4 with 4,096).
pub const BASE_ROWS: u64 = 64;

/// Limits of a merge.
#[derive(Debug, Clone, Copy)]
pub struct MergeLimits {
    /// Segments of one tier that make a merge (and the factor between tiers), at least 2.
    pub factor: usize,
    /// Most rows of a merged segment.
    pub target_rows: u64,
    /// The inputs' oldest rows lie within this of one another, and so do their newest rows.
    /// Retention drops a segment once its newest row is old enough, so a merge keeps no row
    /// more than this past the time its input would have been dropped (a merged segment can
    /// be merged again: about twice this in the runs measured, not a bound); and segments stay
    /// narrow in time for pruning (at most this plus one input's span). Segments that overlap
    /// in time (e.g. history ingested out of order, each seal spanning days) still merge with
    /// each other, but a late seal spanning days is not merged with the old segments it
    /// overlaps.
    pub max_span_ms: i64,
}

impl From<&TableConfig> for MergeLimits {
    /// The table's limits: a span of a quarter of the retention.
    fn from(c: &TableConfig) -> Self {
        MergeLimits {
            factor: c.merge_min_segments,
            target_rows: c.merge_target_rows,
            max_span_ms: c.retention_ms / 4,
        }
    }
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
    (0..=top).find_map(|t| {
        let least = if t == 0 { factor } else { 2 };
        if tiers.iter().filter(|&&x| x == t).count() < least {
            return None;
        }
        oldest_run(segments, &tiers, t, factor, limits)
    })
}

/// The oldest run of consecutive segments of tier <= `t` within the limits holding at least
/// `factor` segments of tier `t` (or, above tier 0, at least two when a limit stops the run),
/// extended as far as the limits allow.
fn oldest_run(
    segments: &[MergeInput],
    tiers: &[u32],
    t: u32,
    factor: usize,
    limits: MergeLimits,
) -> Option<Range<usize>> {
    let span = limits.max_span_ms.max(0);
    let mut start = 0;
    while start < segments.len() {
        let mut rows = 0u64;
        // The least and greatest oldest row, and the least and greatest newest row.
        let (mut min_lo, mut max_lo) = (i64::MAX, i64::MIN);
        let (mut min_hi, mut max_hi) = (i64::MAX, i64::MIN);
        let (mut end, mut count, mut limited) = (start, 0, false);
        while end < segments.len() && tiers[end] <= t {
            let s = &segments[end];
            let r = rows.saturating_add(s.rows);
            let (lo0, lo1) = (min_lo.min(s.min_time_ms), max_lo.max(s.min_time_ms));
            let (hi0, hi1) = (min_hi.min(s.max_time_ms), max_hi.max(s.max_time_ms));
            if r > limits.target_rows
                || lo1.saturating_sub(lo0) > span
                || hi1.saturating_sub(hi0) > span
            {
                limited = true;
                break;
            }
            (rows, min_lo, max_lo, min_hi, max_hi) = (r, lo0, lo1, hi0, hi1);
            // Only segments of tier `t` count: a run of lower ones is that tier's to merge (else
            // one segment would grow by absorbing the newest seals, rewritten at every merge).
            count += usize::from(tiers[end] == t);
            end += 1;
        }
        // Where a limit stops a run short of `factor` (the top tier), two of the tier are
        // enough: each merge then adds at least a tier's least size to a segment, so a row is
        // rewritten at most target / that size times.
        if count >= factor || (t > 0 && limited && count >= 2) {
            return Some(start..end);
        }
        if !limited {
            // The run ended at the last segment or at a higher tier: a later start inside it
            // ends there too, with fewer of the tier.
            start = end + 1;
        } else {
            start += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000;

    const DAY: i64 = 24 * HOUR;

    /// The limits of the default configuration.
    fn limits() -> MergeLimits {
        MergeLimits::from(&TableConfig::default())
    }

    /// Seals of `seal_rows` rows, `seal_ms` of event time each, merged by `pick` as they come
    /// (a merge finishes before the next seal). Returns the segments and the rows all merges
    /// wrote.
    fn simulate(
        seals: usize,
        seal_rows: u64,
        seal_ms: i64,
        limits: MergeLimits,
    ) -> (Vec<MergeInput>, u64) {
        simulate_with(seals, seal_rows, seal_ms, |s| pick(s, limits))
    }

    fn simulate_with(
        seals: usize,
        seal_rows: u64,
        seal_ms: i64,
        pick: impl Fn(&[MergeInput]) -> Option<Range<usize>>,
    ) -> (Vec<MergeInput>, u64) {
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
                    max_time_ms: segments[run.clone()]
                        .iter()
                        .map(|s| s.max_time_ms)
                        .max()
                        .unwrap_or(0),
                };
                rewritten += merged.rows;
                segments.splice(run, [merged]);
            }
        }
        (segments, rewritten)
    }

    fn rows(segments: &[MergeInput]) -> Vec<u64> {
        segments.iter().map(|s| s.rows).collect()
    }

    #[test]
    fn tiers_are_powers_of_the_factor_above_the_base() {
        assert_eq!(tier(0, 8), 0);
        assert_eq!(tier(511, 8), 0);
        assert_eq!(tier(512, 8), 1);
        assert_eq!(tier(4_095, 8), 1);
        assert_eq!(tier(4_096, 8), 2);
        assert_eq!(tier(262_143, 8), 3);
        assert_eq!(tier(262_144, 8), 4);
        assert_eq!(tier(2_097_152, 8), 5);
        assert_eq!(tier(u64::MAX, 8), 19);
        // A factor below 2 is taken as 2 (no endless loop).
        assert_eq!(tier(16_384, 1), 8);
    }

    #[test]
    fn full_speed_seals_end_in_segments_of_the_target() {
        // `rtap backfill` / `rtap up --rate 0`: seals of ~40,000 rows (48 MiB of Arrow), 10 M
        // orders over 29 days (about 2.8 hours of event time per seal).
        let (segments, rewritten) = simulate(250, 40_000, 29 * 24 * HOUR / 250, limits());
        let sizes = rows(&segments);
        assert_eq!(sizes.iter().sum::<u64>(), 10_000_000);
        // Eight seals make 320,000 rows (tier 4); three of those and a seal fill the target.
        assert_eq!(
            sizes,
            [[1_000_000; 9].as_slice(), &[320_000; 3], &[40_000]].concat()
        );
        // Every row is rewritten about twice (40k -> 320k -> 1M).
        assert_eq!(rewritten, 30 * 320_000 + 9 * 1_000_000);
        // The old policy: 31 segments of 320,000 rows and 2 seals.
        let (old, _) = simulate_with(250, 40_000, 29 * 24 * HOUR / 250, old_policy);
        assert_eq!(old.len(), 33, "{:?}", rows(&old));
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
    fn live_seals_are_rewritten_about_once_per_tier() {
        // 31 orders/s sealed every 5 s for a day: 17,280 seals of 155 rows.
        let (segments, rewritten) = simulate(17_280, 155, 5_000, limits());
        let total = 17_280 * 155;
        assert_eq!(rows(&segments).iter().sum::<u64>(), total);
        let (old, old_rewritten) = simulate_with(17_280, 155, 5_000, old_policy);
        eprintln!(
            "a day at 31 orders/s: {:.2} rewrites a row, {} segments (old policy: {:.1}, {})",
            rewritten as f64 / total as f64,
            segments.len(),
            old_rewritten as f64 / total as f64,
            old.len()
        );
        // The old policy grew one segment by the newest seals up to 250,000 rows.
        assert!(old_rewritten > 100 * total, "{old_rewritten} for {total}");
        // 155 -> 1,240 -> 9,920 -> 79,360 -> 634,880: four tiers, four rewrites.
        assert_eq!(rewritten, 10_515_200, "{:?}", rows(&segments));
        assert!(rewritten < 4 * total, "{rewritten} for {total}");
        assert_eq!(segments.len(), 11, "{:?}", rows(&segments));
        // A slow shop (1 order/s): tier 0 (below 512 rows) still grows a segment from 5-row
        // seals, so about ten rewrites a row (4,096 rows as the base gave over 400).
        let (segments, rewritten) = simulate(17_280, 5, 5_000, limits());
        assert!(rewritten < 10 * 17_280 * 5, "{rewritten}");
        assert!(segments.len() <= 12, "{:?}", rows(&segments));
    }

    #[test]
    fn a_slow_shop_keeps_few_segments_over_its_retention() {
        // 1 order/s for 60 days, sealed every 5 s, retention 30 days: the top tier's segments
        // (262,144 rows and more, 3 days of orders) merge two at a time where the span limit
        // (7.5 days) stops a run, so they do not pile up (without that: 22 after 30 days, and
        // growing).
        let limits = limits();
        let retention = 4 * limits.max_span_ms;
        let mut segments: Vec<MergeInput> = Vec::new();
        let mut most = 0;
        for i in 0..60 * 17_280i64 {
            segments.push(MergeInput {
                rows: 5,
                min_time_ms: i * 5_000,
                max_time_ms: (i + 1) * 5_000 - 1,
            });
            let now = (i + 1) * 5_000;
            segments.retain(|s| s.max_time_ms >= now - retention);
            while let Some(run) = pick(&segments, limits) {
                let merged = MergeInput {
                    rows: segments[run.clone()].iter().map(|s| s.rows).sum(),
                    min_time_ms: segments[run.start].min_time_ms,
                    max_time_ms: segments[run.end - 1].max_time_ms,
                };
                segments.splice(run, [merged]);
            }
            most = most.max(segments.len());
        }
        // Retention has dropped the segments whose newest row is before day 30 (what it keeps
        // of older rows is in segments spanning at most 7.5 days).
        assert!(segments[0].max_time_ms >= 30 * DAY, "{:?}", segments[0]);
        assert!(segments[0].min_time_ms >= 22 * DAY, "{:?}", segments[0]);
        assert_eq!(segments.len(), 20, "{:?}", rows(&segments));
        assert!(most <= 33, "{most}");
        // A merged segment spans at most the limit and one input (here 5 s).
        assert!(segments
            .iter()
            .all(|s| s.max_time_ms - s.min_time_ms < limits.max_span_ms + 5_000));
    }

    #[test]
    fn a_run_spans_at_most_the_span_limit_and_holds_at_most_the_target() {
        let limits = MergeLimits {
            max_span_ms: 10 * HOUR,
            ..limits()
        };
        // Seals of 2 hours each: eight would reach 14 hours past the first one's end, so the
        // span limit stops runs at six (their newest rows within 10 hours), merged as two or
        // more of their tier; the last four wait for more.
        let (segments, rewritten) = simulate(40, 40_000, 2 * HOUR, limits);
        assert_eq!(
            rows(&segments),
            [[240_000; 6].as_slice(), &[40_000; 4]].concat()
        );
        assert_eq!(rewritten, 6 * 240_000);
        // Seals of an hour: eight (8 hours) merge, and two of those (ends 8 hours apart); a
        // third would be 16 hours past the first one's end. The first seal's rows now stay 15
        // hours past its end: each merge keeps rows at most the limit longer, and a merged
        // segment was merged again.
        let (segments, rewritten) = simulate(40, 40_000, HOUR, limits);
        assert_eq!(rows(&segments), [640_000, 640_000, 320_000]);
        assert_eq!(rewritten, 5 * 320_000 + 2 * 640_000);
        // A merged segment spans at most the limit and one input's span.
        assert!(segments
            .iter()
            .all(|s| s.max_time_ms - s.min_time_ms <= 10 * HOUR + 8 * HOUR));
        // A target below eight seals: runs stop at the target and merge what fits (five).
        let limits = MergeLimits {
            target_rows: 200_000,
            ..self::limits()
        };
        let (segments, rewritten) = simulate(40, 40_000, 1_000, limits);
        assert_eq!(
            rows(&segments),
            [[200_000; 7].as_slice(), &[40_000; 5]].concat()
        );
        assert_eq!(rewritten, 1_400_000);
    }

    #[test]
    fn segments_that_overlap_in_time_merge_when_their_ends_are_close() {
        let limits = MergeLimits {
            max_span_ms: 10 * HOUR,
            ..limits()
        };
        // History ingested out of order: every seal spans 20 days.
        let wide = |i: i64| MergeInput {
            rows: 100,
            min_time_ms: i,
            max_time_ms: i + 20 * DAY,
        };
        let segments: Vec<MergeInput> = (0..8).map(wide).collect();
        assert_eq!(pick(&segments, limits), Some(0..8));
        // A wide segment (of the same tier) is not merged with the narrow ones after it (their
        // oldest rows are 21 days from its oldest), but they still merge with each other.
        let mut segments = vec![wide(0)];
        segments.extend((0..8).map(|i| MergeInput {
            rows: 100,
            min_time_ms: 21 * DAY + i,
            max_time_ms: 21 * DAY + i,
        }));
        assert_eq!(pick(&segments, limits), Some(1..9));
    }

    #[test]
    fn a_late_wide_seal_is_not_merged_with_the_old_segments_it_overlaps() {
        // Eight daily segments from day 5 merge (their newest rows 7 days apart, within the
        // default 7.5 days) ...
        let day = |d: i64| MergeInput {
            rows: 100_000,
            min_time_ms: d * DAY,
            max_time_ms: (d + 1) * DAY - 1,
        };
        let mut segments: Vec<MergeInput> = (5..13).map(day).collect();
        assert_eq!(pick(&segments, limits()), Some(0..8));
        // ... but not with a seal of late orders from day 5 to day 25 among them: merged, the
        // day-5 rows would outlive their retention by 19 days. The rest are too few to merge.
        segments.insert(
            1,
            MergeInput {
                rows: 155,
                min_time_ms: 5 * DAY + 1,
                max_time_ms: 25 * DAY,
            },
        );
        assert_eq!(pick(&segments, limits()), None);
    }

    #[test]
    fn lower_tiers_inside_a_run_are_taken_along() {
        let seg = |rows, i: i64| MergeInput {
            rows,
            min_time_ms: i,
            max_time_ms: i,
        };
        // A lone small segment between tier-3 ones does not stay forever.
        let mut segments: Vec<MergeInput> = (0..4).map(|i| seg(40_000, i)).collect();
        segments.push(seg(10, 4));
        segments.extend((5..9).map(|i| seg(40_000, i)));
        assert_eq!(pick(&segments, limits()), Some(0..9));
        // Six of the tier and a small one are not enough; a run of twenty small ones is merged whole.
        assert_eq!(pick(&segments[..7], limits()), None);
        let small: Vec<MergeInput> = (0..20).map(|i| seg(100, i)).collect();
        assert_eq!(pick(&small, limits()), Some(0..20));
        assert_eq!(pick(&[], limits()), None);
    }

    #[test]
    fn a_large_factor_keeps_small_segments_apart_even_past_the_target() {
        // Tests turn merges off with merge_min_segments = 1,000: tier 0 then reaches 64,000
        // rows and needs 1,000 segments; a limit stopping a run does not lower that (above tier
        // 0 it does: two segments of 64,000 rows or more merge where a limit stops the run).
        let limits = MergeLimits {
            factor: 1_000,
            target_rows: 40_000,
            ..limits()
        };
        let segments: Vec<MergeInput> = (0..1_500)
            .map(|i| MergeInput {
                rows: 1_000,
                min_time_ms: i,
                max_time_ms: i,
            })
            .collect();
        assert_eq!(pick(&segments, limits), None);
    }
}
