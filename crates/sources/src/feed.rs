//! The generator job of the orders API: turns the deterministic generator into stored orders.
//!
//! One [`OrderFeed`] owns the generator and the next sequence number; the background job
//! ([`OrderFeed::run`]) and `POST /orders` both go through it, so sequence numbers are assigned
//! once, in store order: order n of the store is order n of the seed. A failed append (database
//! outage) does not advance the sequence; the job backs off and carries on at its rate from when
//! the store returns, rather than bursting to catch up.
//!
//! In embedded mode the feed is also the pipeline's source: every stored batch is handed, in
//! store order, to the tap (a bounded channel to ingest, see [`crate::embedded`], or to the
//! Kafka hand-off), so the table sees exactly the stored orders. A full channel makes the
//! generator wait (backpressure) rather than drop anything.
//!
//! [`OrderFeed::start_job`] runs the background job supervised: stored orders the tap has not
//! taken yet are replayed first, then the generator runs at its rate; if it panics it is
//! restarted with backoff and the restart is counted.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clock::SharedClock;
use orders::{Generator, GeneratorConfig};
use store::{NewOrder, OrderStore, StoreError};
use tokio::sync::{mpsc, watch, Mutex};
use tokio::time::Instant;

/// Largest batch appended in one store transaction.
const MAX_BATCH: u64 = 2_000;
/// How often the paced job wakes up at ordinary rates.
const TICK: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Stored orders read per page when replaying them to ingest: the size of a live batch. Pages
/// wait in the tap channel before ingest's pending-bytes budget admits them, so their size
/// multiplies: pages of 5,000 orders (16 MB of JSON) held about 160 MB at once while
/// `rtap backfill` ingested, against about 104 MB with these.
const REPLAY_PAGE: u64 = MAX_BATCH;

#[derive(Debug, Clone, Copy)]
pub struct FeedConfig {
    pub generator: GeneratorConfig,
    /// Orders per second the background job adds; 0 means as fast as the store takes them.
    pub rate_per_sec: f64,
    /// Stop the background job after this many orders (None: run until shut down).
    pub max_orders: Option<u64>,
}

struct FeedState {
    generator: Generator,
    next_seq: u64,
}

/// Stored orders handed to ingest: (sequence number, JSON document) in store order.
pub type TapBatch = Vec<(u64, String)>;

pub struct OrderFeed {
    store: Arc<dyn OrderStore>,
    tap: Option<mpsc::Sender<TapBatch>>,
    clock: SharedClock,
    config: FeedConfig,
    state: Mutex<FeedState>,
    /// Orders in the store as far as this feed knows (for status pages, without the lock).
    stored: AtomicU64,
}

impl std::fmt::Debug for OrderFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrderFeed")
            .field("store", &self.store.describe())
            .field("config", &self.config)
            .finish()
    }
}

impl OrderFeed {
    /// A feed that continues the store's sequence: the next order is number `count + 1`.
    pub async fn open(
        store: Arc<dyn OrderStore>,
        clock: SharedClock,
        config: FeedConfig,
    ) -> Result<Self, StoreError> {
        let stored = store.count().await?;
        Ok(OrderFeed {
            store,
            tap: None,
            clock,
            config,
            state: Mutex::new(FeedState {
                generator: Generator::new(config.generator),
                next_seq: stored + 1,
            }),
            stored: AtomicU64::new(stored),
        })
    }

    /// Hands every batch stored from now on to `tap`.
    pub fn with_tap(mut self, tap: mpsc::Sender<TapBatch>) -> Self {
        self.tap = Some(tap);
        self
    }

    /// Orders in the store (as of this feed's last append).
    pub fn stored(&self) -> u64 {
        self.stored.load(Ordering::Relaxed)
    }

    /// The generator's seed.
    pub fn seed(&self) -> u64 {
        self.config.generator.seed
    }

    /// The sequence number the next order will get.
    pub async fn next_seq(&self) -> u64 {
        self.state.lock().await.next_seq
    }

    pub fn store(&self) -> &Arc<dyn OrderStore> {
        &self.store
    }

    /// Generates and stores `n` orders as one append; returns their ids.
    pub async fn create(&self, n: u64) -> Result<Vec<String>, StoreError> {
        let now = self.clock.now_ms();
        self.create_at(&vec![now; n as usize]).await
    }

    /// Generates and stores one order at each of `times` (event times, epoch ms) as one
    /// append, in that order; returns their ids. `rtap backfill` makes history with it.
    pub async fn create_at(&self, times: &[i64]) -> Result<Vec<String>, StoreError> {
        let n = times.len() as u64;
        if n == 0 {
            return Ok(Vec::new());
        }
        let mut state = self.state.lock().await;
        let first = state.next_seq;
        let batch: Vec<NewOrder> = (first..first + n)
            .zip(times)
            .map(|(seq, &time_ms)| {
                let order = state.generator.generate(seq, time_ms);
                NewOrder {
                    order_id: order.order_id.to_string(),
                    time_ms,
                    json: order.to_json_string(),
                }
            })
            .collect();
        self.store.append(&batch).await?;
        state.next_seq = first + n;
        self.stored.store(first + n - 1, Ordering::Relaxed);
        let ids = batch.iter().map(|o| o.order_id.clone()).collect();
        if let Some(tap) = &self.tap {
            let handoff: TapBatch = (first..).zip(batch.into_iter().map(|o| o.json)).collect();
            // Sent while the state lock is held, so batches reach ingest in store order. A
            // closed channel means ingest has stopped (shutdown): the orders are stored anyway.
            let _ = tap.send(handoff).await;
        }
        Ok(ids)
    }

    /// Hands the stored orders from `from_seq` to the last one to the tap, in store order (what
    /// ingest had not checkpointed when rtap last stopped). Nothing new is stored meanwhile, so
    /// the tap still sees every order once and in order; orders the store's retention removed
    /// meanwhile are skipped (logged). Store errors are retried with backoff; returns how many
    /// were handed over, or None when shut down first.
    pub async fn replay(&self, from_seq: u64, shutdown: &mut watch::Receiver<bool>) -> Option<u64> {
        let tap = self.tap.as_ref()?;
        let state = self.state.lock().await;
        let end = state.next_seq;
        let mut seq = from_seq.max(1);
        let mut skipped = 0;
        let mut backoff = Duration::from_millis(100);
        while seq < end {
            if *shutdown.borrow() {
                return None;
            }
            let n = (end - seq).min(REPLAY_PAGE);
            let slice = match self.store.slice(seq - 1, n).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, from_seq = seq, retry_in_ms = backoff.as_millis() as u64,
                        "could not read stored orders to replay; retrying");
                    if wait_or_shutdown(shutdown, backoff).await {
                        return None;
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            };
            backoff = Duration::from_millis(100);
            let first = slice.first_position(seq - 1);
            if first > seq {
                // Past the store's retention before ingest took them (rtap was stopped longer
                // than the retention): the table would not keep them either.
                tracing::warn!(
                    orders = first - seq,
                    from_seq = seq,
                    "stored orders expired before they were ingested; skipping them"
                );
                skipped += first.min(end) - seq;
                seq = first.min(end);
                if slice.orders.is_empty() {
                    continue;
                }
            }
            if slice.orders.is_empty() {
                break;
            }
            let k = slice.orders.len() as u64;
            let batch: TapBatch = (seq..).zip(slice.orders).collect();
            if tap.send(batch).await.is_err() {
                return None;
            }
            seq += k;
        }
        drop(state);
        Some(seq.saturating_sub(from_seq.max(1)) - skipped)
    }

    /// Starts the background job, supervised: first the stored orders from `resume_seq` on are
    /// handed to the tap (what ingest or the producer had not taken when rtap last stopped),
    /// then orders are generated at the configured rate until `stop` turns true. A panicking
    /// generator is restarted with backoff (1 s doubling to 30 s) and counted.
    pub fn start_job(
        self: Arc<Self>,
        resume_seq: u64,
        stop: watch::Receiver<bool>,
    ) -> GeneratorJob {
        let running = Arc::new(AtomicBool::new(true));
        let finished = Arc::new(AtomicBool::new(false));
        let restarts = Arc::new(AtomicU64::new(0));
        // Survives a generator's panic: a restarted generator goes on towards `max_orders`.
        let made = Arc::new(AtomicU64::new(0));
        let handle = {
            let running = running.clone();
            let finished = finished.clone();
            let restarts = restarts.clone();
            let mut stop = stop;
            tokio::spawn(async move {
                let _running = RunningFlag(running);
                match self.replay(resume_seq, &mut stop).await {
                    Some(0) => {}
                    Some(n) => {
                        tracing::info!(orders = n, from_seq = resume_seq, "replayed stored orders")
                    }
                    None => return 0,
                }
                let mut backoff = Duration::from_secs(1);
                loop {
                    match tokio::spawn(self.clone().run_counted(stop.clone(), made.clone())).await {
                        Ok(n) => {
                            // Ended on its own (not asked to stop): it made `max_orders`.
                            if !*stop.borrow() {
                                finished.store(true, Ordering::Relaxed);
                            }
                            return n;
                        }
                        Err(e) if e.is_panic() && !*stop.borrow() => {
                            restarts.fetch_add(1, Ordering::Relaxed);
                            tracing::error!(
                                retry_in_s = backoff.as_secs(),
                                "the generator failed; restarting it"
                            );
                            if wait_or_shutdown(&mut stop, backoff).await {
                                return made.load(Ordering::Relaxed);
                            }
                            backoff = (backoff * 2).min(Duration::from_secs(30));
                        }
                        Err(_) => return made.load(Ordering::Relaxed),
                    }
                }
            })
        };
        GeneratorJob {
            handle,
            running,
            finished,
            restarts,
        }
    }

    /// The background job: adds orders at the configured rate until `shutdown` turns true or
    /// `max_orders` have been made. Returns how many it made.
    pub async fn run(self: Arc<Self>, shutdown: watch::Receiver<bool>) -> u64 {
        self.run_counted(shutdown, Arc::new(AtomicU64::new(0)))
            .await
    }

    /// [`Self::run`], counting in `made` (which may hold what an earlier run made).
    async fn run_counted(
        self: Arc<Self>,
        mut shutdown: watch::Receiver<bool>,
        counter: Arc<AtomicU64>,
    ) -> u64 {
        let rate = self.config.rate_per_sec;
        let limit = self.config.max_orders.unwrap_or(u64::MAX);
        let mut made = counter.load(Ordering::Relaxed);
        let mut paced_from = (Instant::now(), made);
        let mut backoff = Duration::from_millis(100);
        while made < limit && !*shutdown.borrow() {
            let due = if rate > 0.0 {
                let elapsed = paced_from.0.elapsed().as_secs_f64();
                ((elapsed * rate) as u64).saturating_sub(made - paced_from.1)
            } else {
                MAX_BATCH
            };
            let n = due.min(MAX_BATCH).min(limit - made);
            if n > 0 {
                match self.create(n).await {
                    Ok(_) => {
                        made += n;
                        counter.store(made, Ordering::Relaxed);
                        backoff = Duration::from_millis(100);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64,
                            "could not store generated orders; retrying");
                        if wait_or_shutdown(&mut shutdown, backoff).await {
                            break;
                        }
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        // Resume at the configured rate from now instead of bursting.
                        paced_from = (Instant::now(), made);
                        continue;
                    }
                }
            }
            if rate > 0.0 {
                // Behind by a whole batch: go again at once; otherwise wait for the next tick.
                let pause = if n == MAX_BATCH { Duration::ZERO } else { TICK };
                if wait_or_shutdown(&mut shutdown, pause).await {
                    break;
                }
            } else {
                tokio::task::yield_now().await;
            }
        }
        made
    }
}

/// Orders removed per store transaction by retention.
const EXPIRE_CHUNK: u64 = 10_000;

/// Applies the store's retention every `every` until `stop` turns true: orders whose event
/// time is older than `retention_ms` are removed, oldest position first. Store errors are
/// logged and retried at the next round.
pub fn spawn_retention(
    store: Arc<dyn OrderStore>,
    clock: SharedClock,
    retention_ms: i64,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut removed = 0u64;
        loop {
            let before_ms = clock.now_ms().saturating_sub(retention_ms);
            loop {
                match store.expire(before_ms, EXPIRE_CHUNK).await {
                    Ok(n) => {
                        removed += n;
                        if n > 0 {
                            tracing::debug!(
                                orders = n,
                                "removed orders past the store's retention"
                            );
                        }
                        if n < EXPIRE_CHUNK || *stop.borrow() {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "could not apply the order store's retention; retrying later");
                        break;
                    }
                }
            }
            if wait_or_shutdown(&mut stop, every).await {
                return removed;
            }
        }
    })
}

/// Sleeps for `d` unless shutdown comes first; returns true on shutdown.
async fn wait_or_shutdown(shutdown: &mut watch::Receiver<bool>, d: Duration) -> bool {
    if d.is_zero() {
        return *shutdown.borrow();
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => *shutdown.borrow(),
        _ = shutdown.changed() => true,
    }
}

/// The supervised generator job of [`OrderFeed::start_job`].
#[derive(Debug)]
pub struct GeneratorJob {
    handle: tokio::task::JoinHandle<u64>,
    running: Arc<AtomicBool>,
    finished: Arc<AtomicBool>,
    restarts: Arc<AtomicU64>,
}

impl GeneratorJob {
    /// Whether the job is still generating (false once stopped or at `max_orders`).
    pub fn running(&self) -> Arc<AtomicBool> {
        self.running.clone()
    }

    /// Whether the job ended because it made its `max_orders` (not because it was stopped).
    pub fn finished(&self) -> Arc<AtomicBool> {
        self.finished.clone()
    }

    /// Times the generator failed and was restarted.
    pub fn restarts(&self) -> Arc<AtomicU64> {
        self.restarts.clone()
    }

    /// Waits for the job to end (after its stop signal); returns how many orders it made.
    pub async fn join(self) -> u64 {
        self.handle.await.unwrap_or(0)
    }
}

/// Clears a "running" flag when dropped (the task ended, however it ended).
struct RunningFlag(Arc<AtomicBool>);

impl Drop for RunningFlag {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An embedded store in `dir` and an unpaced feed configuration.
    fn embedded(dir: &tempfile::TempDir) -> (Arc<dyn OrderStore>, FeedConfig) {
        let store = store::EmbeddedStore::open(&dir.path().join("orders.redb")).expect("store");
        let config = FeedConfig {
            generator: GeneratorConfig::default(),
            rate_per_sec: 0.0,
            max_orders: None,
        };
        (Arc::new(store), config)
    }

    /// A feed on `store` whose stored batches arrive on the returned receiver.
    async fn tapped(
        store: Arc<dyn OrderStore>,
        clock: SharedClock,
        config: FeedConfig,
    ) -> (OrderFeed, mpsc::Receiver<TapBatch>) {
        let (tx, rx) = mpsc::channel(16);
        let feed = OrderFeed::open(store, clock, config)
            .await
            .expect("feed")
            .with_tap(tx);
        (feed, rx)
    }

    /// A restart after the store's retention removed orders ingest had not taken: replay hands
    /// over the kept ones at their own positions and counts only those.
    #[tokio::test]
    async fn replay_skips_what_retention_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, config) = embedded(&dir);
        let clock = clock::ManualClock::new(1_000_000);
        let first = OrderFeed::open(store.clone(), clock.clone(), config)
            .await
            .expect("feed");
        let times: Vec<i64> = (1..=10).map(|i| i * 1_000).collect();
        first.create_at(&times).await.expect("store");
        assert_eq!(store.expire(4_500, 100).await.expect("expire"), 4);

        let (feed, mut rx) = tapped(store, clock, config).await;
        let (_stop, mut stopped) = watch::channel(false);
        assert_eq!(feed.replay(2, &mut stopped).await, Some(6));
        let batch = rx.try_recv().expect("a batch");
        let positions: Vec<u64> = batch.iter().map(|(seq, _)| *seq).collect();
        assert_eq!(positions, (5..=10).collect::<Vec<_>>());
        assert!(
            batch[0].1.contains("\"time_ms\":5000"),
            "{}",
            &batch[0].1[..80]
        );
        assert_eq!(feed.replay(11, &mut stopped).await, Some(0));
    }

    /// Replay over several pages, from inside an expired page: every kept order once, in
    /// order, in batches of at most a page.
    #[tokio::test]
    async fn replay_spans_pages_after_an_expired_prefix() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, config) = embedded(&dir);
        let clock = clock::ManualClock::new(10_000_000);
        let n = 2 * REPLAY_PAGE + 700;
        let first = OrderFeed::open(store.clone(), clock.clone(), config)
            .await
            .expect("feed");
        let times: Vec<i64> = (1..=n as i64).map(|i| i * 1_000).collect();
        first.create_at(&times).await.expect("store");
        let expired = REPLAY_PAGE / 2 + 3;
        let removed = store
            .expire(expired as i64 * 1_000 + 500, n)
            .await
            .expect("expire");
        assert_eq!(removed, expired);

        let (feed, mut rx) = tapped(store, clock, config).await;
        let (_stop, mut stopped) = watch::channel(false);
        assert_eq!(feed.replay(2, &mut stopped).await, Some(n - expired));
        let mut positions = Vec::new();
        let mut batches = 0;
        while let Ok(batch) = rx.try_recv() {
            assert!(batch.len() as u64 <= REPLAY_PAGE, "{} orders", batch.len());
            positions.extend(batch.iter().map(|(seq, _)| *seq));
            batches += 1;
        }
        assert!(batches >= 3, "{batches} batches");
        assert_eq!(positions, (expired + 1..=n).collect::<Vec<_>>());
    }
}
