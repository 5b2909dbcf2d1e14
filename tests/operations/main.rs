//! Operating a gateway without a shell: metrics scraped by a real Prometheus.

#[path = "../common/mod.rs"]
mod common;

mod metrics;
