//! # server: rtap's HTTP front ends
//!
//! The outer edge of the data flow: axum routers over the stages behind them. Knows the stages
//! only through their public interfaces (the order feed, the SQL engine, the windows), never
//! their storage internals. Serves HTTP and nothing else: the generator and the sources live in
//! the `sources` crate.
//!
//! Layout:
//! - [`orders_api`]: the orders API of SPEC section 2 (the original Flask service, port 5001).
//! - [`analytics`]: the analytics API of SPEC section 5 and `/query/sql` (port 8888).
//! - [`overview`]: `/orders/overview` and its per-second series, from the rolling windows.
//! - [`recent`]: the fixed analytics endpoints answered from state kept at ingest (SQL as the
//!   cross-check and the fallback).
//! - [`dashboard`]: the live dashboard (port 8501) and its server-sent snapshot stream.
//! - [`history`]: the dashboard's time ranges and drill-downs, from the table.
//! - [`status`]: `/api/status` and `/metrics` (Prometheus), request latency per endpoint.
//! - [`error`]: the one place where errors become HTTP statuses and JSON bodies.
//! - [`access`]: host check, cross-site writes, the bearer token, CORS.
//! - [`olap`]: `--olap pinot://`: the endpoints answered by an Apache Pinot broker.
//! - [`listen`]: serving a router with bounds on every connection (count, timeouts, shutdown).

pub mod access;
pub mod analytics;
pub mod dashboard;
pub mod error;
pub mod history;
pub mod listen;
pub mod olap;
pub mod orders_api;
pub mod overview;
pub mod recent;
pub mod status;
