//! `rtap produce`: publish orders to Kafka, from a running orders API (following its pages) or
//! straight from the generator.
//!
//! It remembers, in `<data-dir>/produce-{api,generator}.json`, the first source position the
//! broker has not confirmed yet (see [`sources::kafka::handoff`]), saves it every second and on
//! exit, and starts from it: an order is never skipped, and after a crash at most the orders in
//! flight are sent again (ingest drops those by `order_id`).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use orders::{Generator, GeneratorConfig};
use serde::Deserialize;
use sources::kafka::handoff::{load_state, save_state, ProducerState, FLUSH_WAIT, SAVE_EVERY};
use sources::kafka::producer::OrderProducer;

use crate::cli::{ProduceArgs, ProduceFrom};

const PROGRESS_EVERY: Duration = Duration::from_secs(2);
/// Orders read per page from the orders API (its maximum).
const PAGE: u64 = 1000;

/// Prints progress on a terminal (one line, rewritten) or to the log.
struct ProgressLine {
    started: Instant,
    last: Instant,
    last_confirmed: u64,
    terminal: bool,
}

impl ProgressLine {
    fn new() -> Self {
        ProgressLine {
            started: Instant::now(),
            last: Instant::now(),
            last_confirmed: 0,
            terminal: std::io::stderr().is_terminal(),
        }
    }

    fn tick(&mut self, producer: &OrderProducer, force: bool) {
        if !force && self.last.elapsed() < PROGRESS_EVERY {
            return;
        }
        let p = producer.progress();
        let rate = (p.confirmed - self.last_confirmed) as f64 / self.last.elapsed().as_secs_f64();
        self.last = Instant::now();
        self.last_confirmed = p.confirmed;
        if self.terminal {
            eprint!(
                "\rproduce: sent {}, confirmed {}, in flight {}, failed {}, {:.0} orders/s   ",
                p.sent, p.confirmed, p.in_flight, p.failed, rate
            );
        } else {
            tracing::info!(
                sent = p.sent,
                confirmed = p.confirmed,
                in_flight = p.in_flight,
                failed = p.failed,
                rate = rate.round() as u64,
                "produce progress"
            );
        }
    }

    fn done(&self, producer: &OrderProducer) {
        let p = producer.progress();
        if self.terminal {
            eprintln!();
        }
        println!(
            "produce: sent {}, confirmed {}, failed {} in {:.1} s",
            p.sent,
            p.confirmed,
            p.failed,
            self.started.elapsed().as_secs_f64()
        );
    }
}

pub async fn run(args: ProduceArgs) -> anyhow::Result<()> {
    let settings = args.config()?;
    let Some(config) = settings.kafka() else {
        anyhow::bail!("rtap produce needs the brokers: --kafka host:port");
    };
    let data_dir = settings.data_dir.clone();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    sources::kafka::admin::ensure_topic(&config, Duration::from_secs(30))
        .await
        .with_context(|| format!("cannot create topic {} on {}", config.topic, config.brokers))?;
    let from = match args.from {
        ProduceFrom::Api => "api",
        ProduceFrom::Generator => "generator",
    };
    let path: PathBuf = data_dir.join(format!("produce-{from}.json"));
    let state = load_state(&path)?.unwrap_or(ProducerState {
        next: 1,
        seed: None,
        topic: config.topic.clone(),
    });
    if !state.topic.is_empty() && state.topic != config.topic {
        anyhow::bail!(
            "{} holds the position in topic {}, not {}: use another --data-dir",
            path.display(),
            state.topic,
            config.topic
        );
    }
    let producer = Arc::new(OrderProducer::new(&config, state.next.max(1))?);
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        let signal = crate::signals::stop_signal();
        tokio::spawn(async move {
            signal.await;
            stop.store(true, Ordering::Release);
        });
    }
    println!(
        "rtap produce: {} -> topic {} on {} (from position {})",
        match args.from {
            ProduceFrom::Api => format!("orders API {}", args.api_url),
            ProduceFrom::Generator => "the generator".to_string(),
        },
        config.topic,
        config.brokers,
        state.next.max(1)
    );
    let outcome = match args.from {
        ProduceFrom::Generator => {
            let producer = producer.clone();
            let stop = stop.clone();
            let seed = settings
                .generator
                .seed
                .or(state.seed)
                .unwrap_or_else(crate::signals::random_seed);
            let path = path.clone();
            let topic = config.topic.clone();
            let rate = settings.generator.rate_per_sec;
            let max = settings.generator.max_orders;
            tokio::task::spawn_blocking(move || {
                from_generator(
                    &producer,
                    &stop,
                    &path,
                    &topic,
                    seed,
                    state.next.max(1),
                    rate,
                    max,
                )
            })
            .await
            .context("producer task failed")?
        }
        ProduceFrom::Api => {
            from_api(
                &producer,
                &stop,
                &path,
                &config.topic,
                &args.api_url,
                state.next.max(1),
                args.until_caught_up,
            )
            .await
        }
    };
    let producer2 = producer.clone();
    let flushed = tokio::task::spawn_blocking(move || producer2.flush(FLUSH_WAIT))
        .await
        .context("producer task failed")?;
    save_position(
        &path,
        &producer,
        outcome.as_ref().ok().copied().flatten(),
        &config.topic,
    )?;
    let mut line = ProgressLine::new();
    line.terminal = false;
    line.done(&producer);
    outcome?;
    flushed.context("not every order was confirmed; run again to send the rest")?;
    let failed = producer.progress().failed;
    if failed > 0 {
        anyhow::bail!(
            "{failed} orders were not taken by the broker ({}); run again to send them",
            producer.last_error().unwrap_or_default()
        );
    }
    Ok(())
}

/// Saves the first position the broker has not confirmed.
fn save_position(
    path: &Path,
    producer: &OrderProducer,
    seed: Option<u64>,
    topic: &str,
) -> anyhow::Result<()> {
    let state = ProducerState {
        next: producer.confirmed_position(),
        seed,
        topic: topic.to_string(),
    };
    save_state(path, &state)?;
    Ok(())
}

/// Generates and produces orders; returns the seed used.
#[allow(clippy::too_many_arguments)]
fn from_generator(
    producer: &OrderProducer,
    stop: &AtomicBool,
    path: &Path,
    topic: &str,
    seed: u64,
    first: u64,
    rate: f64,
    max_orders: Option<u64>,
) -> anyhow::Result<Option<u64>> {
    let mut generator = Generator::new(GeneratorConfig {
        seed,
        ..GeneratorConfig::default()
    });
    let limit = max_orders.unwrap_or(u64::MAX);
    let started = Instant::now();
    let mut progress = ProgressLine::new();
    let mut saved = Instant::now();
    let mut made = 0u64;
    while made < limit && !stop.load(Ordering::Acquire) {
        if rate > 0.0 {
            let due = (started.elapsed().as_secs_f64() * rate) as u64;
            if made >= due {
                std::thread::sleep(Duration::from_millis(2));
                continue;
            }
        }
        let seq = first + made;
        let order = generator.generate(seq, clock::Clock::now_ms(&clock::SystemClock));
        let json = order.to_json();
        producer.send(seq, &order.order_id.to_string(), &json)?;
        made += 1;
        if made % 1024 == 0 {
            progress.tick(producer, false);
            if saved.elapsed() >= SAVE_EVERY {
                save_position(path, producer, Some(seed), topic)?;
                saved = Instant::now();
            }
        }
    }
    Ok(Some(seed))
}

#[derive(Deserialize)]
struct Page {
    data: Vec<Box<serde_json::value::RawValue>>,
    total_orders: u64,
}

/// Follows the orders API's pages and produces every order once, in order.
async fn from_api(
    producer: &Arc<OrderProducer>,
    stop: &AtomicBool,
    path: &Path,
    topic: &str,
    api_url: &str,
    first: u64,
    until_caught_up: bool,
) -> anyhow::Result<Option<u64>> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .context("cannot build an HTTP client")?;
    let base = api_url.trim_end_matches('/');
    let mut next = first;
    let mut progress = ProgressLine::new();
    let mut saved = Instant::now();
    let mut backoff = Duration::from_millis(200);
    while !stop.load(Ordering::Acquire) {
        let page = (next - 1) / PAGE + 1;
        let skip = ((next - 1) % PAGE) as usize;
        let url = format!("{base}/orders?page={page}&limit={PAGE}");
        let fetched = match client.get(&url).send().await {
            Ok(resp) if resp.status().is_success() => {
                resp.json::<Page>().await.map_err(|e| e.to_string())
            }
            Ok(resp) => Err(format!("{} from {url}", resp.status())),
            Err(e) => Err(e.to_string()),
        };
        let page_data = match fetched {
            Ok(p) => {
                backoff = Duration::from_millis(200);
                p
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "cannot read the orders API; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        let new: Vec<_> = page_data.data.into_iter().skip(skip).collect();
        let got = new.len() as u64;
        {
            let producer = producer.clone();
            let from = next;
            tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
                for (i, raw) in new.iter().enumerate() {
                    let json = raw.get().as_bytes();
                    let key = sources::kafka::order_key(json).unwrap_or_default();
                    producer.send(from + i as u64, &key, json)?;
                }
                Ok(())
            })
            .await
            .context("producer task failed")??;
        }
        next += got;
        progress.tick(producer, false);
        if saved.elapsed() >= SAVE_EVERY {
            save_position(path, producer, None, topic)?;
            saved = Instant::now();
        }
        if next > page_data.total_orders {
            // Caught up with the API: finish, or wait for new orders.
            if until_caught_up {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    Ok(None)
}
