//! One configuration for every command: [`RtapConfig`], made of the per-component configs.
//!
//! Where a value comes from, lowest precedence first: the defaults below, the TOML file given
//! with `--config` (or `RTAP_CONFIG`), then `RTAP_*` environment variables, then flags (clap
//! reads a flag's variable when the flag is absent). Unknown keys are refused
//! (`deny_unknown_fields`); every value is checked once at start-up by
//! [`RtapConfig::validate`], with a message naming the key and the bad value. `rtap config`
//! prints the effective configuration as TOML, every key documented ([`render`]), so a user
//! can start a file from it.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use anyhow::Context;
use ingest::IngestConfig;
use rolling::WindowConfig;
use serde::{Deserialize, Serialize};
use sql::SqlConfig;
use table::TableConfig;

/// Everything rtap can be told.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RtapConfig {
    /// Where rtap stores everything.
    pub data_dir: PathBuf,
    pub http: HttpConfig,
    pub generator: GeneratorSettings,
    pub store: StoreConfig,
    pub kafka: KafkaSettings,
    pub table: TableConfig,
    pub ingest: IngestConfig,
    pub sql: SqlConfig,
    pub windows: WindowConfig,
}

/// Where rtap listens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    pub bind: IpAddr,
    pub api_port: u16,
    pub http_port: u16,
    pub dashboard_port: u16,
}

/// The order generator behind the orders API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GeneratorSettings {
    pub rate_per_sec: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_orders: Option<u64>,
}

/// Where the orders API stores orders.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
}

/// The Kafka topic between the generator and ingest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSettings {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub brokers: Option<String>,
    pub topic: String,
    pub partitions: i32,
    pub group: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
}

impl Default for RtapConfig {
    fn default() -> Self {
        RtapConfig {
            data_dir: PathBuf::from("./data"),
            http: HttpConfig::default(),
            generator: GeneratorSettings::default(),
            store: StoreConfig::default(),
            kafka: KafkaSettings::default(),
            table: TableConfig::default(),
            ingest: IngestConfig::default(),
            sql: SqlConfig::default(),
            windows: WindowConfig::default(),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            api_port: 5001,
            http_port: 8888,
            dashboard_port: 8501,
        }
    }
}

impl Default for GeneratorSettings {
    fn default() -> Self {
        GeneratorSettings {
            rate_per_sec: 31.0,
            seed: None,
            max_orders: None,
        }
    }
}

impl Default for KafkaSettings {
    fn default() -> Self {
        KafkaSettings {
            brokers: None,
            topic: "FakeEcommOrders".into(),
            partitions: 24,
            group: "rtap".into(),
            instance_id: None,
        }
    }
}

/// Every key with what it means, in file order (what `rtap config` and the README show).
/// Optional keys (no default) have an example value, shown commented out.
pub const KEYS: &[(&str, &str, Option<&str>)] = &[
    ("data_dir", "where rtap stores everything (order store, table, checkpoints); flag --data-dir, env RTAP_DATA_DIR", None),
    ("http.bind", "address to listen on (0.0.0.0 serves other machines); --bind, RTAP_BIND", None),
    ("http.api_port", "orders API port (0 picks a free one); --api-port, RTAP_API_PORT", None),
    ("http.http_port", "analytics API and SQL port; --http-port, RTAP_HTTP_PORT", None),
    ("http.dashboard_port", "dashboard port; --dashboard-port, RTAP_DASHBOARD_PORT", None),
    ("generator.rate_per_sec", "orders generated per second, 0 = as fast as the store takes them; --rate, RTAP_RATE", None),
    ("generator.seed", "generator seed (default: random, saved with the checkpoint); --seed, RTAP_SEED", Some("42")),
    ("generator.max_orders", "stop generating after this many orders; --max-orders, RTAP_MAX_ORDERS", Some("100000")),
    ("store.database_url", "store orders in Postgres instead of the embedded store; --database-url, RTAP_DATABASE_URL", Some("\"postgres://postgres@127.0.0.1:5432/test\"")),
    ("kafka.brokers", "Kafka bootstrap servers: puts a topic between generator and ingest; --kafka, RTAP_KAFKA", Some("\"127.0.0.1:9092\"")),
    ("kafka.topic", "the orders topic; --topic, RTAP_TOPIC", None),
    ("kafka.partitions", "partitions when rtap creates the topic (1..10000); --partitions, RTAP_PARTITIONS", None),
    ("kafka.group", "consumer group of ingest; --group, RTAP_GROUP", None),
    ("kafka.instance_id", "static group member id (default: xxh3 of host name and data directory); --instance-id, RTAP_INSTANCE_ID", Some("\"rtap-a\"")),
    ("table.max_memory_rows", "seal the in-memory rows into a Parquet segment at this many rows", None),
    ("table.seal_after_secs", "... or when the oldest is this old: also the checkpoint interval; --checkpoint-interval, RTAP_CHECKPOINT_INTERVAL", None),
    ("table.retention_ms", "segments whose newest row is older than this are dropped (30 days)", None),
    ("table.merge_target_rows", "small segments are merged into segments of up to this many rows", None),
    ("table.merge_min_segments", "merge once this many small segments are in a row", None),
    ("table.row_group_rows", "rows per Parquet row group (the unit of time pruning)", None),
    ("table.zstd_level", "zstd level of the segment files (1..22)", None),
    ("ingest.max_message_bytes", "messages larger than this are dead-lettered unparsed", None),
    ("ingest.dedup_horizon_ms", "how far back in event time a re-delivered order is recognised", None),
    ("ingest.dedup_max_entries", "hard cap on remembered order ids", None),
    ("ingest.decode_threads", "threads that parse a batch in parallel (default: the cores)", None),
    ("sql.timeout_ms", "a query running longer is cancelled (Pinot error 250)", None),
    ("sql.max_rows", "results are cut at this many rows (partialResult)", None),
    ("windows.size_ms", "rolling window length", None),
    ("windows.advance_ms", "window hop (a multiple of it is the window length)", None),
    ("windows.grace_ms", "how late an order may be and still count in the windows", None),
];

impl RtapConfig {
    /// The defaults overlaid with the TOML file at `path`.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Self> {
        match path {
            None => Ok(RtapConfig::default()),
            Some(p) => {
                let text = std::fs::read_to_string(p).with_context(|| {
                    format!("cannot read the configuration file {}", p.display())
                })?;
                Self::parse(&text)
                    .with_context(|| format!("bad configuration file {}", p.display()))
            }
        }
    }

    /// Parses a configuration file's text (missing keys keep their defaults).
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        toml::from_str(text).map_err(|e| anyhow::anyhow!("{}", e.to_string().trim_end()))
    }

    /// Checks every value once, at start-up; the error names the key and the bad value.
    pub fn validate(&self) -> anyhow::Result<()> {
        let g = &self.generator;
        if !g.rate_per_sec.is_finite() || g.rate_per_sec < 0.0 {
            anyhow::bail!(
                "generator.rate_per_sec must be 0 (unlimited) or a positive number, got {}",
                g.rate_per_sec
            );
        }
        let k = &self.kafka;
        if !(1..=10_000).contains(&k.partitions) {
            anyhow::bail!(
                "kafka.partitions must be from 1 to 10000, got {}",
                k.partitions
            );
        }
        if k.topic.trim().is_empty() {
            anyhow::bail!("kafka.topic must not be empty");
        }
        if k.group.trim().is_empty() {
            anyhow::bail!("kafka.group must not be empty");
        }
        if k.brokers.as_deref().is_some_and(|b| b.trim().is_empty()) {
            anyhow::bail!("kafka.brokers must not be empty (leave it out to run without Kafka)");
        }
        let s = self.table.seal_after_secs;
        if !(s.is_finite() && (0.1..=3600.0).contains(&s)) {
            anyhow::bail!("table.seal_after_secs (the checkpoint interval) must be from 0.1 to 3600 seconds, got {s}");
        }
        self.table.validate().map_err(|e| {
            anyhow::anyhow!(
                "table.{}",
                e.to_string()
                    .trim_start_matches("bad table configuration: ")
            )
        })?;
        self.ingest
            .validate()
            .map_err(|e| anyhow::anyhow!("ingest.{e}"))?;
        self.sql
            .validate()
            .map_err(|e| anyhow::anyhow!("sql.{e}"))?;
        self.windows
            .validate()
            .map_err(|e| anyhow::anyhow!("windows: {e}"))?;
        Ok(())
    }

    /// The Kafka configuration, when Kafka is on.
    pub fn kafka(&self) -> Option<sources::kafka::KafkaConfig> {
        let k = &self.kafka;
        k.brokers
            .as_ref()
            .map(|brokers| sources::kafka::KafkaConfig {
                brokers: brokers.clone(),
                topic: k.topic.clone(),
                partitions: k.partitions,
                replication: 1,
                group: k.group.clone(),
                instance_id: Some(k.instance_id.clone().unwrap_or_else(|| {
                    sources::kafka::instance_id(&self.data_dir, &sources::kafka::host_name())
                })),
            })
    }
}

/// The configuration as a TOML file, every key preceded by what it means; optional keys that
/// are not set appear commented out with an example.
pub fn render(config: &RtapConfig) -> anyhow::Result<String> {
    let plain = toml::to_string_pretty(config).context("cannot write the configuration as TOML")?;
    let doc = |path: &str| KEYS.iter().find(|(k, _, _)| *k == path);
    let mut out = String::from(
        "# rtap configuration: `rtap <command> --config FILE` (or RTAP_CONFIG=FILE).\n\
         # Precedence: defaults < this file < RTAP_* environment variables < flags.\n",
    );
    let mut section = String::new();
    let flush_optional = |section: &str, out: &mut String, present: &[String]| {
        for (key, what, example) in KEYS {
            let (sec, name) = key.rsplit_once('.').unwrap_or(("", key));
            if sec == section && !present.iter().any(|p| p == name) {
                if let Some(example) = example {
                    out.push_str(&format!("# {what}\n# {name} = {example}\n"));
                }
            }
        }
    };
    let mut present: Vec<String> = Vec::new();
    for line in plain.lines() {
        let trimmed = line.trim();
        if let Some(name) = trimmed.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            flush_optional(&section, &mut out, &present);
            present.clear();
            section = name.to_string();
            out.push_str(&format!("\n{trimmed}\n"));
            continue;
        }
        if let Some((key, _)) = trimmed.split_once(" = ") {
            let path = if section.is_empty() {
                key.to_string()
            } else {
                format!("{section}.{key}")
            };
            if let Some((_, what, _)) = doc(&path) {
                out.push_str(&format!("# {what}\n"));
            }
            present.push(key.to_string());
        }
        if !trimmed.is_empty() {
            out.push_str(line);
            out.push('\n');
        }
    }
    flush_optional(&section, &mut out, &present);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_is_the_defaults() {
        assert_eq!(
            RtapConfig::parse("").expect("parses"),
            RtapConfig::default()
        );
        RtapConfig::default()
            .validate()
            .expect("the defaults are valid");
    }

    #[test]
    fn a_file_overrides_only_what_it_names() {
        let c = RtapConfig::parse("[http]\nhttp_port = 9999\n[table]\nzstd_level = 3\n")
            .expect("parses");
        assert_eq!(c.http.http_port, 9999);
        assert_eq!(c.http.api_port, 5001);
        assert_eq!(c.table.zstd_level, 3);
        assert_eq!(c.table.seal_after_secs, 5.0);
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let err = RtapConfig::parse("[http]\nhttp_prot = 1\n").expect_err("typo");
        let msg = format!("{err:#}");
        assert!(msg.contains("unknown field `http_prot`"), "{msg}");
        let err = RtapConfig::parse("[tabel]\n").expect_err("unknown section");
        assert!(
            format!("{err:#}").contains("unknown field `tabel`"),
            "{err:#}"
        );
    }

    #[test]
    fn bad_values_name_the_key_and_the_value() {
        let err = RtapConfig::parse("[http]\nhttp_port = 70000\n").expect_err("out of range");
        assert!(format!("{err:#}").contains("http_port"), "{err:#}");
        let err = RtapConfig::parse("[generator]\nrate_per_sec = \"fast\"\n").expect_err("type");
        assert!(format!("{err:#}").contains("rate_per_sec"), "{err:#}");
        let cases = [
            ("[table]\nzstd_level = 40\n", "table.zstd_level must be 1..=22, got 40"),
            ("[table]\nseal_after_secs = 0.0\n", "table.seal_after_secs (the checkpoint interval) must be from 0.1 to 3600 seconds, got 0"),
            ("[generator]\nrate_per_sec = -1.0\n", "generator.rate_per_sec must be 0 (unlimited) or a positive number, got -1"),
            ("[kafka]\npartitions = 0\n", "kafka.partitions must be from 1 to 10000, got 0"),
            ("[sql]\ntimeout_ms = 0\n", "sql.timeout_ms must be at least 1, got 0"),
            ("[ingest]\ndecode_threads = 0\n", "ingest.decode_threads must be from 1 to 256, got 0"),
            ("[windows]\nsize_ms = 1500\n", "windows: window size 1500 ms must be a positive multiple of the advance 1000 ms"),
        ];
        for (text, expected) in cases {
            let c = RtapConfig::parse(text).expect("parses");
            let err = c.validate().expect_err(text);
            assert_eq!(err.to_string(), expected);
        }
    }

    #[test]
    fn the_rendered_file_reads_back_as_the_same_configuration() {
        let mut c = RtapConfig::default();
        c.generator.seed = Some(7);
        c.kafka.brokers = Some("127.0.0.1:9092".into());
        let text = render(&c).expect("renders");
        assert_eq!(RtapConfig::parse(&text).expect("parses back"), c);
        assert!(text.contains("# generator seed"), "{text}");
        // Optional keys that are not set appear commented out.
        assert!(text.contains("# max_orders = 100000"), "{text}");
        assert!(text.contains("# database_url = "), "{text}");
        for (key, _, _) in KEYS {
            let name = key.rsplit('.').next().unwrap_or(key);
            assert!(text.contains(name), "{key} is not documented in\n{text}");
        }
    }
}
