//! `rtap query "SQL"`: one query, asked of the running rtap's analytics API, or run on the
//! table under the data directory (read-only) when none answers or with `--local`; printed as a
//! table, or as Pinot's JSON broker response with `--json`.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use ingest::schema;
use sql::SqlEngine;
use table::RealtimeTable;

use crate::cli::QueryArgs;
use crate::config::RtapConfig;
use crate::pipeline::resume::table_dir;

pub async fn run(args: QueryArgs) -> anyhow::Result<()> {
    let config = args.config()?;
    let response = if args.local {
        query_local(&args, &config).await?
    } else {
        let url = format!(
            "http://{}/query/sql",
            SocketAddr::new(config.http.bind, config.http.http_port)
        );
        let mut request = reqwest::Client::new()
            .post(&url)
            .json(&serde_json::json!({"sql": args.sql}));
        if let Some(token) = &config.http.auth_token {
            request = request.bearer_auth(token);
        }
        match request.send().await {
            Ok(resp) => resp
                .json::<serde_json::Value>()
                .await
                .with_context(|| format!("bad answer from {url}"))?,
            Err(e) if e.is_connect() => {
                tracing::info!(
                    "no rtap answers at {url}; reading the table under the data directory"
                );
                query_local(&args, &config).await?
            }
            Err(e) => return Err(e).with_context(|| format!("cannot query {url}")),
        }
    };
    if args.json {
        super::print_out(&(serde_json::to_string_pretty(&response)? + "\n"))?;
    } else {
        super::print_out(&table_text(&response))?;
    }
    match response["exceptions"].as_array() {
        Some(errors) if !errors.is_empty() => {
            let messages: Vec<String> = errors
                .iter()
                .map(|e| e["message"].as_str().unwrap_or_default().to_string())
                .collect();
            anyhow::bail!("{}", messages.join("; "))
        }
        _ => Ok(()),
    }
}

async fn query_local(args: &QueryArgs, config: &RtapConfig) -> anyhow::Result<serde_json::Value> {
    let dir = table_dir(&config.data_dir);
    if !dir.join(table::manifest::FILE_NAME).exists() {
        anyhow::bail!(
            "no rtap answers on port {} and there is no table under {} (start one with `rtap up`)",
            config.http.http_port,
            config.data_dir.display()
        );
    }
    let table = Arc::new(
        RealtimeTable::open_read_only(&dir, schema::order_schema(), schema::TIME_MS)
            .with_context(|| format!("cannot read the table under {}", dir.display()))?,
    );
    let engine = SqlEngine::new(table, config.sql, clock::system())
        .context("cannot start the SQL engine")?;
    Ok(engine.query_pinot(&args.sql).await)
}

/// The result as a text table, then a line with the row count, time and rows scanned.
fn table_text(response: &serde_json::Value) -> String {
    let table = &response["resultTable"];
    let names: Vec<String> = table["dataSchema"]["columnNames"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|v| v.as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default();
    if names.is_empty() {
        return String::new();
    }
    let rows: Vec<Vec<String>> = table["rows"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .map(|r| {
                    r.as_array()
                        .map(|cells| {
                            cells
                                .iter()
                                .map(|c| match c {
                                    serde_json::Value::String(s) => s.clone(),
                                    other => other.to_string(),
                                })
                                .collect()
                        })
                        .unwrap_or_default()
                })
                .collect()
        })
        .unwrap_or_default();
    let widths: Vec<usize> = (0..names.len())
        .map(|i| {
            rows.iter()
                .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                .max()
                .unwrap_or(0)
                .max(names[i].chars().count())
        })
        .collect();
    let line = |cells: &[String]| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join(" | ")
    };
    let mut out = format!("{}\n", line(&names));
    out.push_str(
        &widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .join("-+-"),
    );
    out.push('\n');
    for r in &rows {
        out.push_str(&line(r));
        out.push('\n');
    }
    out.push_str(&format!(
        "({} rows, {} ms, {} of {} rows scanned)\n",
        rows.len(),
        response["timeUsedMs"],
        response["numDocsScanned"],
        response["totalDocs"]
    ));
    out
}
