//! Prometheus metrics: request families counted on the fly (`http`), and the registry's state
//! (storage, content, sync, outbox, connection) read when scraped, so no request pays for them.

pub mod http;

use chrono::{DateTime, Utc};
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;

use crate::storage::metadata::ContentCounts;
use crate::sync::status::StatusReport;

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What a scrape reports besides the request families.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Bytes of content stored.
    pub used_bytes: u64,
    /// Bytes free on the data directory's file system.
    pub free_bytes: u64,
    /// Blobs, manifests, upload sessions.
    pub counts: ContentCounts,
    /// The sync status of a child (`None` for a root).
    pub sync: Option<StatusReport>,
    /// What garbage collection freed, all passes added up.
    pub gc: crate::gc::GcTotals,
    /// When the last pass ran (Unix time) and how long it took, if one ran.
    pub gc_last: Option<(i64, f64)>,
}

/// Labels naming a repository.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Repo {
    repository: String,
}

/// Labels naming a connection state.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct State {
    state: &'static str,
}

/// Every metric of the registry.
#[derive(Default)]
pub struct Metrics {
    /// Request families.
    pub http: http::HttpMetrics,
}

const STATES: [&str; 4] = ["Online", "Offline", "Syncing", "Unhealthy"];

fn gauge(r: &mut Registry, name: &str, help: &str, v: u64) {
    r.register(
        name,
        help,
        ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX)),
    );
}

impl Metrics {
    /// The exposition text of everything, with the state read from `s`.
    pub fn encode(&self, s: &Snapshot) -> String {
        let mut r = Registry::default();
        self.http.register(&mut r);
        gauge(
            &mut r,
            "connected_registry_storage_used_bytes",
            "Bytes of content stored",
            s.used_bytes,
        );
        gauge(
            &mut r,
            "connected_registry_storage_free_bytes",
            "Bytes free for the data directory",
            s.free_bytes,
        );
        gauge(
            &mut r,
            "connected_registry_blobs",
            "Distinct blobs stored",
            s.counts.blobs,
        );
        gauge(
            &mut r,
            "connected_registry_manifests",
            "Distinct manifests stored",
            s.counts.manifests,
        );
        gauge(
            &mut r,
            "connected_registry_upload_sessions",
            "Upload sessions open",
            s.counts.uploads,
        );
        let state = s.sync.as_ref().map_or("Online", |r| connection_state(r));
        let states = Family::<State, Gauge>::default();
        for st in STATES {
            states
                .get_or_create(&State { state: st })
                .set(i64::from(st == state));
        }
        r.register(
            "connected_registry_connection_state",
            "1 for the connection state the registry is in (a root is always Online)",
            states,
        );
        if let Some(report) = &s.sync {
            sync_metrics(&mut r, report);
        }
        gc_metrics(&mut r, s);
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut text, &r);
        text
    }
}

fn connection_state(r: &StatusReport) -> &'static str {
    let name = format!("{:?}", r.connection_state);
    STATES.into_iter().find(|s| *s == name).unwrap_or("Offline")
}

fn sync_metrics(r: &mut Registry, report: &StatusReport) {
    let now = Utc::now();
    let bytes = Family::<Repo, Gauge>::default();
    let lag = Family::<Repo, Gauge>::default();
    let success = Family::<Repo, Gauge>::default();
    let failures = Family::<Repo, Gauge>::default();
    for repo in &report.repositories {
        let l = Repo {
            repository: repo.name.clone(),
        };
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        bytes.get_or_create(&l).set(n(repo.bytes_done));
        failures.get_or_create(&l).set(n(repo.failures));
        if let Some(t) = repo.last_sync_time.as_deref().and_then(parse_time) {
            success.get_or_create(&l).set(t.timestamp());
            lag.get_or_create(&l).set((now - t).num_seconds().max(0));
        }
    }
    r.register(
        "connected_registry_sync_repository_bytes",
        "Bytes downloaded by the current or last sync of each repository",
        bytes,
    );
    r.register(
        "connected_registry_sync_repository_lag_seconds",
        "Seconds since each repository was last known to match the parent",
        lag,
    );
    r.register(
        "connected_registry_sync_repository_last_success_timestamp_seconds",
        "When each repository last synced successfully (Unix time)",
        success,
    );
    r.register(
        "connected_registry_sync_repository_failures",
        "Failed syncs of each repository since the process started",
        failures,
    );
    r.register(
        "connected_registry_sync_passes",
        "Sync passes finished since the process started",
        ConstCounter::new(report.sync_passes),
    );
    let o = &report.outbox;
    gauge(
        r,
        "connected_registry_outbox_pending",
        "Changes waiting to be pushed to the parent",
        o.pending_count,
    );
    gauge(
        r,
        "connected_registry_outbox_pending_bytes",
        "Bytes the waiting changes carry",
        o.pending_bytes,
    );
    gauge(
        r,
        "connected_registry_outbox_oldest_pending_seconds",
        "Age of the oldest waiting change (0 when none waits)",
        o.oldest_pending_seconds.unwrap_or(0),
    );
}

fn gc_metrics(r: &mut Registry, s: &Snapshot) {
    r.register(
        "connected_registry_gc_passes",
        "Garbage collection passes run on this data directory (dry runs not counted)",
        ConstCounter::new(s.gc.passes),
    );
    r.register(
        "connected_registry_gc_freed_bytes",
        "Bytes garbage collection freed (blobs and partial downloads)",
        ConstCounter::new(s.gc.bytes),
    );
    r.register(
        "connected_registry_gc_freed_blobs",
        "Blob files garbage collection removed",
        ConstCounter::new(s.gc.blobs),
    );
    r.register(
        "connected_registry_gc_deleted_manifests",
        "Manifests the untagged retention deleted",
        ConstCounter::new(s.gc.manifests),
    );
    if let Some((when, seconds)) = s.gc_last {
        gauge(
            r,
            "connected_registry_gc_last_pass_timestamp_seconds",
            "When the last garbage collection pass started (Unix time)",
            u64::try_from(when).unwrap_or(0),
        );
        let g = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        g.set(seconds);
        r.register(
            "connected_registry_gc_last_pass_duration_seconds",
            "How long the last garbage collection pass took",
            g,
        );
    }
}

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}
