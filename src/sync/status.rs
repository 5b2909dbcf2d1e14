//! What the registry says about its sync: connection state, last sync, details, progress.
//!
//! Shared by the scheduler (which writes it) and `/acr/v1/status` (which reads it); a snapshot
//! is also kept in the database so `connected-registry status` can show it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

mod code;

pub use code::{DetailCode, DetailKind};

/// Most details kept; older ones drop off.
const MAX_DETAILS: usize = 20;

/// The registry's relation to its parent, as ACR names it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum ConnectionState {
    /// The last sync reached the parent.
    Online,
    /// The parent is unreachable; local content is still served.
    Offline,
    /// A sync is running.
    Syncing,
    /// The parent is reachable but sync fails (credentials, disk, bad content).
    Unhealthy,
}

/// One reported condition (`DiskError`, `ParentUnauthorized`, `MessageExpired`, …).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct StatusDetail {
    /// Machine-readable code (a [`DetailCode`]'s string).
    pub code: String,
    /// What happened, for people.
    pub message: String,
    /// When it was (RFC 3339).
    pub time: String,
}

/// Progress of one repository.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RepoStatus {
    /// Repository name.
    pub name: String,
    /// `Pending`, `Syncing`, `Synced` or `Failed`.
    pub state: String,
    /// Tags mirrored after the last sync of this repository.
    pub tags: usize,
    /// Bytes downloaded in the current (or last) sync.
    pub bytes_done: u64,
    /// Bytes the current (or last) sync needed to download.
    pub bytes_total: u64,
    /// Average download rate of the current (or last) sync.
    pub rate_bytes_per_second: u64,
    /// When this repository last finished syncing.
    pub last_sync_time: Option<String>,
    /// Why the last sync of this repository failed.
    pub last_error: Option<String>,
    /// Failed syncs of this repository since the process started.
    #[serde(default)]
    pub failures: u64,
}

/// The push-up outbox (ReadWrite): what clients pushed here that the parent does not have yet.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct OutboxStatus {
    /// Changes waiting to be sent.
    pub pending_count: u64,
    /// Bytes of manifests and blobs they carry.
    pub pending_bytes: u64,
    /// Age of the oldest waiting change.
    pub oldest_pending_seconds: Option<u64>,
    /// Why the last push-up failed, if it did.
    pub last_error: Option<String>,
}

/// The whole status, as served by `/acr/v1/status` and printed by `connected-registry status`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StatusReport {
    /// Online, Offline, Syncing or Unhealthy.
    pub connection_state: ConnectionState,
    /// When the last complete sync finished.
    pub last_sync_time: Option<String>,
    /// Current conditions, newest last.
    pub status_details: Vec<StatusDetail>,
    /// ReadOnly or ReadWrite.
    pub mode: String,
    /// The parent's endpoint (never its credentials).
    pub parent: String,
    /// When the next scheduled sync window opens, when a schedule is set.
    pub next_sync_time: Option<String>,
    /// When the current sync window closes, inside a scheduled window.
    pub window_end: Option<String>,
    /// Per-repository progress.
    pub repositories: Vec<RepoStatus>,
    /// Sync passes finished since the process started (successful or not).
    pub sync_passes: u64,
    /// The push-up outbox.
    pub outbox: OutboxStatus,
    /// When this report was made.
    pub updated: String,
}

/// Live byte counters of one repository's sync; cheap to update from download tasks.
#[derive(Debug, Default)]
pub struct Progress {
    /// Bytes downloaded so far.
    pub done: AtomicU64,
    /// Bytes needed in all.
    pub total: AtomicU64,
}

impl Progress {
    /// Adds to the bytes needed.
    pub fn need(&self, n: u64) {
        self.total.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds to the bytes downloaded.
    pub fn advance(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
    }
}

struct RepoEntry {
    status: RepoStatus,
    progress: Arc<Progress>,
    started: Option<Instant>,
}

struct Inner {
    state: ConnectionState,
    last_sync: Option<String>,
    /// Each detail with its typed code, which clearing matches on.
    details: Vec<(DetailCode, StatusDetail)>,
    mode: String,
    parent: String,
    next_sync: Option<String>,
    window_end: Option<String>,
    repos: BTreeMap<String, RepoEntry>,
    passes: u64,
    outbox: OutboxStatus,
}

/// Shared, updatable sync status.
pub struct Status {
    inner: Mutex<Inner>,
}

/// RFC 3339 time, as every time in the report is written.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

impl Status {
    /// A fresh status for a child of `parent` in `mode`: Offline until the first sync.
    pub fn new(mode: &str, parent: &str) -> Self {
        Status {
            inner: Mutex::new(Inner {
                state: ConnectionState::Offline,
                last_sync: None,
                details: Vec::new(),
                mode: mode.to_owned(),
                parent: parent.to_owned(),
                next_sync: None,
                window_end: None,
                repos: BTreeMap::new(),
                passes: 0,
                outbox: OutboxStatus::default(),
            }),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        let mut g = match self.inner.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut g)
    }

    /// Sets the connection state.
    pub fn set_state(&self, state: ConnectionState) {
        self.with(|i| i.state = state);
    }

    /// The connection state.
    pub fn state(&self) -> ConnectionState {
        self.with(|i| i.state)
    }

    /// Sets the parent shown (a new connection string).
    pub fn set_parent(&self, parent: &str) {
        self.with(|i| i.parent = parent.to_owned());
    }

    /// Sets the mode shown (after a policy change).
    pub fn set_mode(&self, mode: &str) {
        self.with(|i| i.mode = mode.to_owned());
    }

    /// Records a condition; an earlier detail with the same code is replaced.
    pub fn detail(&self, code: DetailCode, message: impl Into<String>) {
        let d = new_detail(code, message.into());
        self.with(|i| {
            i.details.retain(|x| x.0 != code);
            i.details.push((code, d));
            let excess = i.details.len().saturating_sub(MAX_DETAILS);
            i.details.drain(..excess);
        });
    }

    /// Adds a condition without replacing earlier ones of the same code (expired messages).
    pub fn append_detail(&self, code: DetailCode, message: impl Into<String>) {
        let d = new_detail(code, message.into());
        self.with(|i| {
            i.details.push((code, d));
            let excess = i.details.len().saturating_sub(MAX_DETAILS);
            i.details.drain(..excess);
        });
    }

    /// Drops the conditions whose code satisfies `pred` (they no longer hold).
    pub fn clear_details(&self, pred: impl Fn(DetailCode) -> bool) {
        self.with(|i| i.details.retain(|d| !pred(d.0)));
    }

    /// Sets the outbox figures (the last error is kept unless `error` says otherwise).
    pub fn set_outbox(
        &self,
        count: u64,
        bytes: u64,
        oldest: Option<u64>,
        error: Option<Option<String>>,
    ) {
        self.with(|i| {
            i.outbox.pending_count = count;
            i.outbox.pending_bytes = bytes;
            i.outbox.oldest_pending_seconds = oldest;
            if let Some(e) = error {
                i.outbox.last_error = e;
            }
        });
    }

    /// Sync passes finished so far (cheap: no report is built).
    pub fn passes(&self) -> u64 {
        self.with(|i| i.passes)
    }

    /// Counts a finished sync pass (successful or not).
    pub fn pass_finished(&self) {
        self.with(|i| i.passes += 1);
    }

    /// Records that a complete sync finished now.
    pub fn synced_now(&self) {
        self.with(|i| i.last_sync = Some(rfc3339(Utc::now())));
    }

    /// Sets the schedule fields (`None` when continuous or unknown).
    pub fn set_schedule(&self, next: Option<DateTime<Utc>>, window_end: Option<DateTime<Utc>>) {
        self.with(|i| {
            i.next_sync = next.map(rfc3339);
            i.window_end = window_end.map(rfc3339);
        });
    }

    /// Marks a repository as syncing and returns fresh counters for its downloads.
    pub fn repo_started(&self, name: &str) -> Arc<Progress> {
        let progress = Arc::new(Progress::default());
        self.with(|i| {
            let e = i.repos.entry(name.to_owned()).or_insert_with(|| RepoEntry {
                status: RepoStatus {
                    name: name.to_owned(),
                    ..RepoStatus::default()
                },
                progress: progress.clone(),
                started: None,
            });
            e.status.state = "Syncing".into();
            e.progress = progress.clone();
            e.started = Some(Instant::now());
        });
        progress
    }

    /// Records the end of a repository's sync: its tag count, or why it failed.
    pub fn repo_finished(&self, name: &str, result: Result<usize, String>) {
        self.with(|i| {
            if let Some(e) = i.repos.get_mut(name) {
                fill_progress(e);
                e.started = None;
                match result {
                    Ok(tags) => {
                        e.status.state = "Synced".into();
                        e.status.tags = tags;
                        e.status.last_error = None;
                        e.status.last_sync_time = Some(rfc3339(Utc::now()));
                    }
                    Err(msg) => {
                        e.status.state = "Failed".into();
                        e.status.last_error = Some(msg);
                        e.status.failures += 1;
                    }
                }
            }
        });
    }

    /// Lists the repositories of the policy; others disappear from the report.
    pub fn set_repositories(&self, names: &[String]) {
        self.with(|i| {
            i.repos.retain(|k, _| names.contains(k));
            for n in names {
                i.repos.entry(n.clone()).or_insert_with(|| RepoEntry {
                    status: RepoStatus {
                        name: n.clone(),
                        state: "Pending".into(),
                        ..RepoStatus::default()
                    },
                    progress: Arc::new(Progress::default()),
                    started: None,
                });
            }
        });
    }

    /// A snapshot of everything.
    pub fn report(&self) -> StatusReport {
        self.with(|i| {
            let repositories = i
                .repos
                .values_mut()
                .map(|e| {
                    fill_progress(e);
                    e.status.clone()
                })
                .collect();
            StatusReport {
                connection_state: i.state,
                last_sync_time: i.last_sync.clone(),
                status_details: i.details.iter().map(|d| d.1.clone()).collect(),
                mode: i.mode.clone(),
                parent: i.parent.clone(),
                next_sync_time: i.next_sync.clone(),
                window_end: i.window_end.clone(),
                repositories,
                sync_passes: i.passes,
                outbox: i.outbox.clone(),
                updated: rfc3339(Utc::now()),
            }
        })
    }
}

/// A detail of `code` made now.
fn new_detail(code: DetailCode, message: String) -> StatusDetail {
    StatusDetail {
        code: code.as_str().to_owned(),
        message,
        time: rfc3339(Utc::now()),
    }
}

/// Copies live counters into the repository's status, with the average rate.
fn fill_progress(e: &mut RepoEntry) {
    let done = e.progress.done.load(Ordering::Relaxed);
    e.status.bytes_done = done;
    e.status.bytes_total = e.progress.total.load(Ordering::Relaxed).max(done);
    if let Some(t) = e.started {
        let secs = t.elapsed().as_secs_f64();
        if secs > 0.0 {
            e.status.rate_bytes_per_second = (done as f64 / secs) as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_replace_by_code_and_progress_is_reported() {
        let s = Status::new("ReadOnly", "parent:443");
        s.detail(DetailCode::ParentUnreachable, "first");
        s.detail(DetailCode::ParentUnreachable, "second");
        s.append_detail(DetailCode::MessageExpired, "a");
        s.append_detail(DetailCode::MessageExpired, "b");
        let r = s.report();
        assert_eq!(r.status_details.len(), 3);
        assert_eq!(r.status_details[0].message, "second");
        assert_eq!(r.status_details[0].code, "ParentUnreachable");
        s.clear_details(|c| c.kind() == DetailKind::Parent);
        assert_eq!(s.report().status_details.len(), 2);

        s.set_repositories(&["a".into(), "b".into()]);
        let p = s.repo_started("a");
        p.need(100);
        p.advance(40);
        let r = s.report();
        assert_eq!(r.repositories[0].bytes_done, 40);
        assert_eq!(r.repositories[0].bytes_total, 100);
        assert_eq!(r.repositories[1].state, "Pending");
        s.repo_finished("a", Ok(3));
        let r = s.report();
        assert_eq!(r.repositories[0].state, "Synced");
        assert_eq!(r.repositories[0].tags, 3);
        let json = serde_json::to_value(&r).unwrap_or_default();
        assert_eq!(json["connectionState"], "Offline");
        assert_eq!(json["repositories"][0]["bytesDone"], 40);
    }
}
