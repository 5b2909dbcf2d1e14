//! Operating a gateway without a shell: metrics scraped by a real Prometheus, notifications to
//! a webhook receiver.

#[path = "../common/mod.rs"]
mod common;

mod gc;
mod limits;
mod metrics;
mod notifications;
