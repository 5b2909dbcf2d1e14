//! When sync runs: continuously (every `interval`), or inside each scheduled window, or at once
//! on request; failures back off with jitter. Also applies policy file changes.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::time::Instant;

use super::backoff;
use super::error::SyncError;
use super::local;
use super::policy::{PolicyFile, SyncPolicy};
use super::pulldown::Puller;
use super::pushup::Pusher;
use super::service::SyncService;
use super::status::ConnectionState;
use super::transfer::Stop;
use crate::config::Mode;
use crate::registry::RepoName;
use crate::storage::Origin;

/// How often the loop looks at the policy file, the request counter and the clock.
const TICK: Duration = Duration::from_secs(1);
/// Longest wait between retries after failures.
const RETRY_CAP: Duration = Duration::from_secs(60);
/// Sync state key `connected-registry sync now` increments.
pub const REQUEST_KEY: &str = "sync_request";
/// Sync state key holding the last status report (JSON).
pub const STATUS_KEY: &str = "status";
/// Prefix of the sync state keys recording which repositories sync has populated.
pub const REPO_PREFIX: &str = "repo:";

/// The scheduler loop; runs until the sync runtime stops.
pub async fn run(svc: Arc<SyncService>, mut file: PolicyFile, mode_override: Option<Mode>) {
    let mut next_due = Instant::now();
    let mut failures = 0u32;
    let mut seen_request = read_counter(&svc);
    // End of the last scheduled window seen open.
    let mut opened_window: Option<chrono::DateTime<Utc>> = None;
    loop {
        if let Some(changed) = file.poll() {
            match changed {
                Ok(mut p) => {
                    if let Some(m) = mode_override {
                        p.mode = m;
                    }
                    // A valid file clears an earlier PolicyInvalid even when it was fixed back
                    // to exactly the policy still in force.
                    svc.status.clear_details(|c| c == "PolicyInvalid");
                    if p != *svc.policy() {
                        tracing::info!(
                            repositories = p.repositories.len(),
                            "sync policy changed: applied"
                        );
                        svc.apply(p);
                        next_due = Instant::now();
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "sync policy file invalid: keeping the previous policy");
                    svc.status.detail("PolicyInvalid", e.to_string());
                }
            }
        }
        let counter = read_counter(&svc);
        let asked = svc.requested.swap(false, Ordering::SeqCst) || counter != seen_request;
        seen_request = counter;
        let policy = svc.policy();
        let now = Utc::now();
        let window_end = policy.schedule.as_ref().and_then(|s| s.current_window(now));
        let next_start = policy.schedule.as_ref().and_then(|s| s.next_start(now));
        svc.status.set_schedule(next_start, window_end);
        // Every occurrence opens a window for sync: `interval` paces passes inside a window,
        // it must not make a newly opened window wait (only a failure backoff may). Windows
        // that overlap count as one.
        if let Some(end) = window_end {
            if failures == 0 && opened_window.is_none_or(|prev| now >= prev) {
                next_due = Instant::now();
            }
            opened_window = Some(end);
        }
        let in_window = policy.schedule.is_none() || window_end.is_some();
        if asked || (in_window && Instant::now() >= next_due) {
            // A manual sync runs to the end; a scheduled one stops when its window closes.
            let deadline = if asked { None } else { window_end };
            let outcome = run_once(&svc, &policy, deadline).await;
            svc.status.pass_finished();
            match outcome {
                Ok(()) => {
                    failures = 0;
                    next_due = Instant::now() + policy.interval;
                }
                Err(()) => {
                    failures += 1;
                    next_due = Instant::now()
                        + backoff::delay(failures, RETRY_CAP.min(policy.interval.max(TICK)));
                }
            }
            persist(&svc);
        }
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = svc.trigger.notified() => {}
        }
    }
}

fn read_counter(svc: &SyncService) -> Option<String> {
    local(|| svc.store.meta.sync_state(REQUEST_KEY))
        .ok()
        .flatten()
}

/// Saves the status report so `connected-registry status` can show it.
pub fn persist(svc: &SyncService) {
    local(|| svc.refresh_outbox(None));
    let report = svc.status.report();
    if let Ok(json) = serde_json::to_string(&report) {
        if let Err(e) = local(|| svc.store.meta.set_sync_state(STATUS_KEY, Some(&json))) {
            tracing::warn!(error = %e, "could not save the sync status");
        }
    }
}

/// One pass over every repository of the policy; Err when any failed.
async fn run_once(
    svc: &Arc<SyncService>,
    policy: &Arc<SyncPolicy>,
    deadline: Option<chrono::DateTime<Utc>>,
) -> Result<(), ()> {
    // While offline, a cheap probe first: the state says Syncing only once the parent answers.
    if svc.status.state() == ConnectionState::Offline {
        if let Err(e) = svc.parent.ping().await {
            if e.is_transient() {
                let e = SyncError::from(e);
                svc.status.detail(e.code(), e.to_string());
                return Err(());
            }
        }
    }
    svc.status.set_state(ConnectionState::Syncing);
    persist(svc);
    let stop = Arc::new(AtomicBool::new(false));
    if let Some(end) = deadline {
        let s = stop.clone();
        let wait = (end - Utc::now()).to_std().unwrap_or(Duration::ZERO);
        svc.spawn(async move {
            tokio::time::sleep(wait).await;
            s.store(true, Ordering::SeqCst);
        });
    }
    let mut first_error: Option<SyncError> = None;
    if policy.mode == Mode::ReadOnly {
        if let Err(e) = remove_dropped_repositories(svc, policy) {
            first_error = Some(e);
        }
    }
    for repo in &policy.repositories {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let progress = svc.status.repo_started(repo.as_str());
        // ReadWrite: local changes go up first, so the pull-down that follows converges.
        let pushed = match policy.mode {
            Mode::ReadWrite => push_up(svc, policy, &stop, repo).await,
            Mode::ReadOnly => Ok(Default::default()),
        };
        let result = match pushed {
            Ok(skip_tags) => {
                let puller = Puller {
                    store: svc.store.clone(),
                    parent: svc.parent.clone(),
                    transfers: svc.transfers.clone(),
                    policy: policy.clone(),
                    progress,
                    stop: stop.clone(),
                    skip_tags,
                    seen: Default::default(),
                };
                puller.sync_repository(repo).await
            }
            Err(e) => Err(e),
        };
        match &result {
            Ok(tags) => {
                let key = format!("{REPO_PREFIX}{}", repo.as_str());
                let value =
                    serde_json::json!({"tags": tags, "time": Utc::now().to_rfc3339()}).to_string();
                if let Err(e) = local(|| svc.store.meta.set_sync_state(&key, Some(&value))) {
                    tracing::warn!(error = %e, "could not record sync state");
                }
                svc.status.repo_finished(repo.as_str(), Ok(*tags));
            }
            Err(e) => {
                tracing::warn!(repo = %repo.as_str(), code = e.code(), error = %e, "repository sync failed");
                svc.status
                    .repo_finished(repo.as_str(), Err(format!("{}: {e}", e.code())));
            }
        }
        if let Err(e) = result {
            let offline = e.is_offline();
            first_error.get_or_insert(e);
            if offline {
                break; // no point asking an unreachable parent about the other repositories
            }
        }
        persist(svc);
    }
    if policy.mode == Mode::ReadWrite {
        update_outbox(svc, policy, None);
    }
    let stopped = stop.load(Ordering::SeqCst);
    stop.store(true, Ordering::SeqCst);
    match first_error {
        None | Some(SyncError::Stopped(_)) => {
            svc.status.set_state(ConnectionState::Online);
            svc.status.clear_details(|c| {
                c.starts_with("Parent")
                    || c == "DiskError"
                    || c == "StorageError"
                    || c == "SyncStopped"
            });
            if stopped {
                tracing::info!("sync window closed; the rest waits for the next window");
            } else {
                svc.status.synced_now();
            }
            Ok(())
        }
        Some(e) => {
            let state = if e.is_offline() {
                ConnectionState::Offline
            } else {
                ConnectionState::Unhealthy
            };
            svc.status.set_state(state);
            svc.status.clear_details(|c| {
                c.starts_with("Parent") || c == "DiskError" || c == "StorageError"
            });
            svc.status.detail(e.code(), e.to_string());
            Err(())
        }
    }
}

/// In ReadOnly, repositories sync populated that the policy no longer lists are removed.
fn remove_dropped_repositories(svc: &SyncService, policy: &SyncPolicy) -> Result<(), SyncError> {
    let wanted: HashSet<&str> = policy.repositories.iter().map(|r| r.as_str()).collect();
    let known = local(|| svc.store.meta.sync_state_prefixed(REPO_PREFIX))?;
    for (key, _) in known {
        let name = &key[REPO_PREFIX.len()..];
        if wanted.contains(name) {
            continue;
        }
        if let Ok(repo) = RepoName::parse(name) {
            local(|| svc.store.meta.delete_repository_as(Origin::Sync, &repo))?;
            tracing::info!(
                repo = name,
                "repository no longer in the sync policy: removed here"
            );
        }
        local(|| svc.store.meta.set_sync_state(&key, None))?;
    }
    Ok(())
}

/// Sends `repo`'s outbox up; returns the tags that still have changes waiting (pull-down leaves
/// them alone so a local push is never overwritten by the parent's older state).
async fn push_up(
    svc: &Arc<SyncService>,
    policy: &Arc<SyncPolicy>,
    stop: &Stop,
    repo: &RepoName,
) -> Result<HashSet<String>, SyncError> {
    let pusher = Pusher {
        store: svc.store.clone(),
        parent: svc.parent.clone(),
        policy: policy.clone(),
        status: svc.status.clone(),
        transfers: svc.transfers.clone(),
        stop: stop.clone(),
    };
    let result = pusher.push_repository(repo).await;
    match &result {
        Ok(n) if *n > 0 => {
            tracing::info!(repo = %repo.as_str(), changes = n, "pushed up to the parent");
            update_outbox(svc, policy, Some(None));
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(repo = %repo.as_str(), code = e.code(), error = %e, "push-up failed");
            update_outbox(svc, policy, Some(Some(format!("{}: {e}", e.code()))));
        }
    }
    result?;
    let cursor = pusher.cursor(repo)?;
    let pending = local(|| svc.store.meta.client_events(repo.as_str(), cursor, 10_000))?;
    Ok(pending.into_iter().filter_map(|e| e.tag).collect())
}

/// Recomputes the outbox figures over every repository of the policy.
fn update_outbox(svc: &SyncService, _policy: &SyncPolicy, error: Option<Option<String>>) {
    local(|| svc.refresh_outbox(error));
}
