//! `rtap backfill`: history in seconds. Generates orders with event times spread over the past
//! days (busier in the New York afternoon and evening than at night), stores them in the order
//! store, then ingests them through the normal path (dedup, table, windows, checkpoint) and
//! exits. A later `rtap up` on the same directory goes on from there.

use std::time::{Duration, Instant};

use anyhow::Context;

use crate::cli::BackfillArgs;
use crate::pipeline::{self, Mode};

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;
/// Orders generated and stored per append.
const BATCH: usize = 5_000;
/// The oldest order stays this far inside `ingest.max_age_ms` (storing and ingesting take a
/// while): ten minutes, and a fifth of a millisecond per order (5,000 orders/s end to end).
fn age_margin_ms(orders: u64) -> i64 {
    10 * 60_000 + (orders / 5) as i64
}
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Relative order volume in each hour of a New York day (EST: a fixed UTC-5 is close enough
/// for a curve): quiet at night, a lunchtime peak and a larger evening one.
fn hour_weight(utc_hour_start_ms: i64) -> f64 {
    let h = ((utc_hour_start_ms.div_euclid(HOUR_MS) - 5).rem_euclid(24)) as f64 + 0.5;
    let bump = |at: f64, width: f64| (-((h - at) / width).powi(2)).exp();
    0.15 + bump(12.5, 2.5) + 1.3 * bump(20.0, 2.0)
}

/// How many of `total` orders fall in each hour of `[from, to)` (hours aligned to UTC; the
/// first and last may be partial), by the daily curve, summing to `total` exactly.
fn orders_per_hour(total: u64, from: i64, to: i64) -> Vec<(i64, i64, u64)> {
    let mut hours = Vec::new();
    let mut start = from;
    while start < to {
        let end = ((start.div_euclid(HOUR_MS) + 1) * HOUR_MS).min(to);
        let weight = hour_weight(start) * (end - start) as f64 / HOUR_MS as f64;
        hours.push((start, end, weight));
        start = end;
    }
    let sum: f64 = hours.iter().map(|h| h.2).sum();
    // Largest remainders: the counts add up to `total`.
    let mut counts: Vec<(usize, u64, f64)> = hours
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let exact = total as f64 * h.2 / sum;
            (i, exact.floor() as u64, exact - exact.floor())
        })
        .collect();
    let short = total.saturating_sub(counts.iter().map(|c| c.1).sum());
    counts.sort_by(|a, b| b.2.total_cmp(&a.2));
    for c in counts.iter_mut().take(short as usize) {
        c.1 += 1;
    }
    counts.sort_by_key(|c| c.0);
    hours
        .into_iter()
        .zip(counts)
        .map(|((s, e, _), (_, n, _))| (s, e, n))
        .collect()
}

/// The event times of `n` orders spread evenly over `[start, end)`, ascending.
fn spread(start: i64, end: i64, n: u64) -> impl Iterator<Item = i64> {
    let span = (end - start) as i128;
    (0..n).map(move |k| start + ((k as i128 * span) / n as i128) as i64)
}

pub async fn run(args: BackfillArgs) -> anyhow::Result<()> {
    let config = args.config()?;
    let clock = clock::system();
    let days = args.days;
    let span = (days * DAY_MS as f64) as i64;
    let max_age = config
        .ingest
        .max_age_ms
        .unwrap_or(config.table.retention_ms);
    let margin = age_margin_ms(args.orders);
    if span + margin > max_age {
        anyhow::bail!(
            "--days {days} reaches further back than ingest takes orders (ingest.max_age_ms = \
             {} ms, about {:.1} days): use fewer days or raise ingest.max_age_ms and \
             table.retention_ms",
            max_age,
            (max_age - margin) as f64 / DAY_MS as f64
        );
    }
    let store = pipeline::open_store(&config).await?;
    let seed = config
        .generator
        .seed
        .unwrap_or_else(crate::signals::random_seed);
    let before = store.count().await.context("cannot read the order store")?;
    let where_ = store.describe();
    let feed = pipeline::open_feed(&config, store, seed, clock.clone()).await?;
    let now = clock.now_ms();
    let from = now - span;
    println!(
        "rtap backfill: {} orders over the past {days} days (seed {seed}) into {where_}, which holds {before}",
        args.orders
    );
    let started = Instant::now();
    let mut shown = Instant::now();
    let mut made = 0u64;
    let mut times = Vec::with_capacity(BATCH);
    let stop = crate::signals::stop_signal();
    tokio::pin!(stop);
    for (start, end, n) in orders_per_hour(args.orders, from, now) {
        for t in spread(start, end, n) {
            times.push(t);
            if times.len() == BATCH {
                store_batch(&feed, &mut times, &mut made).await?;
                if shown.elapsed() >= PROGRESS_EVERY {
                    shown = Instant::now();
                    println!(
                        "  stored {made} of {} ({:.0}/s)",
                        args.orders,
                        made as f64 / started.elapsed().as_secs_f64()
                    );
                }
                tokio::select! {
                    biased;
                    _ = &mut stop => anyhow::bail!(
                        "stopped after storing {made} orders; `rtap up` ingests them"
                    ),
                    _ = std::future::ready(()) => {}
                }
            }
        }
    }
    store_batch(&feed, &mut times, &mut made).await?;
    drop(feed);
    println!(
        "rtap backfill: stored {made} orders in {:.1} s; ingesting them",
        started.elapsed().as_secs_f64()
    );

    // Ingest through the normal path: the pipeline replays what the checkpoint has not taken.
    let running = pipeline::start(&config, Mode::Up, clock, 0).await?;
    let ingest_started = Instant::now();
    // Done when ingest has taken every stored order: in process, its position is past the
    // store's last order (lag 0). Through Kafka the consumer's lag can read 0 before the
    // producer has published the orders, so the producer must also have had all of them
    // confirmed (it replays at least the `made` new ones) with none on their way.
    loop {
        if let Some(f) = running.failed() {
            let _ = running.shutdown().await;
            anyhow::bail!("ingest failed: {f}");
        }
        let published = running
            .produced()
            .is_none_or(|(confirmed, busy)| confirmed >= made && !busy);
        if published && running.lag() == Some(0) {
            break;
        }
        tokio::select! {
            _ = &mut stop => {
                running.shutdown().await?;
                anyhow::bail!("stopped while ingesting; `rtap up` goes on from the last checkpoint");
            }
            _ = tokio::time::sleep(PROGRESS_EVERY) => {}
        }
        println!(
            "  table {} rows, {} to go",
            running.rows(),
            running.lag().map_or("?".to_string(), |l| l.to_string())
        );
    }
    let rows = running.rows();
    running.shutdown().await?;
    println!(
        "rtap backfill: done: the table holds {rows} rows (ingested in {:.1} s); `rtap up --data-dir {}` goes on from here",
        ingest_started.elapsed().as_secs_f64(),
        config.data_dir.display()
    );
    Ok(())
}

async fn store_batch(
    feed: &sources::OrderFeed,
    times: &mut Vec<i64>,
    made: &mut u64,
) -> anyhow::Result<()> {
    if times.is_empty() {
        return Ok(());
    }
    feed.create_at(times)
        .await
        .context("cannot store the generated orders")?;
    *made += times.len() as u64;
    times.clear();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_get_every_order_busier_in_the_evening_than_at_night() {
        let from = 1_795_600_800_000; // an hour boundary
        let hours = orders_per_hour(100_000, from + 1_234, from + 3 * DAY_MS);
        assert_eq!(hours.iter().map(|h| h.2).sum::<u64>(), 100_000);
        assert_eq!(hours.len(), 72);
        assert_eq!(hours[0].0, from + 1_234);
        assert_eq!(hours.last().map(|h| h.1), Some(from + 3 * DAY_MS));
        // 20:00 New York (01:00 UTC) against 04:00 New York (09:00 UTC).
        let at = |utc_hour: i64| {
            hours
                .iter()
                .find(|h| h.0.div_euclid(HOUR_MS).rem_euclid(24) == utc_hour)
                .map_or(0, |h| h.2)
        };
        assert!(at(1) > 5 * at(9), "evening {} night {}", at(1), at(9));
    }

    #[test]
    fn times_spread_evenly_ascending_inside_their_hour() {
        let t: Vec<i64> = spread(1_000, 2_000, 4).collect();
        assert_eq!(t, vec![1_000, 1_250, 1_500, 1_750]);
        assert_eq!(spread(0, 10, 0).count(), 0);
    }
}
