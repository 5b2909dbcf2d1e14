//! One sync pass (DESIGN §6): push-up then pull-down for each repository asked for, the
//! connection state and details it leaves behind, and the saved status. What it works with is
//! passed in; it knows nothing of when passes run (the scheduler) or where the policy comes
//! from (the policy hub).

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use super::audit::{self, Subject, SyncEvent};
use super::error::SyncError;
use super::local;
use super::parent::ParentClient;
use super::policy::SyncPolicy;
use super::pulldown::Puller;
use super::pushup::Pusher;
use super::status::{ConnectionState, DetailCode, DetailKind, Status};
use super::transfer::{Stop, Transfers};
use crate::config::Mode;
use crate::registry::RepoName;
use crate::storage::metadata::{StateKey, StatePrefix};
use crate::storage::{Origin, Store};

/// The parts a sync pass works with.
pub struct Engine {
    /// The local store.
    pub store: Arc<Store>,
    /// The parent.
    pub parent: ParentClient,
    /// Blob transfers.
    pub transfers: Arc<Transfers>,
    /// What the registry reports.
    pub status: Arc<Status>,
}

/// Which repositories a pass covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every repository of the policy.
    All,
    /// These (those not in the policy are skipped).
    Only(BTreeSet<String>),
}

impl Engine {
    /// Recomputes the outbox figures from the event log (blocking; cheap queries). In
    /// ReadOnly there is no outbox. `error` replaces the last push-up error when given.
    pub fn refresh_outbox(&self, policy: &SyncPolicy, error: Option<Option<String>>) {
        if policy.mode != Mode::ReadWrite {
            return;
        }
        let meta = &self.store.meta;
        let (mut count, mut bytes, mut oldest) = (0u64, 0u64, None::<i64>);
        for repo in &policy.repositories {
            let name = repo.as_str();
            let cursor = meta
                .sync_state(&StateKey::PushCursor(name))
                .ok()
                .flatten()
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or(0);
            if let Ok((n, first)) = meta.outbox_size(name, cursor) {
                count += n;
                oldest = match (oldest, first) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
            bytes += meta.outbox_bytes(name, cursor).unwrap_or(0);
        }
        let age = oldest.map(|t| (crate::storage::fsutil::now_secs() - t).max(0) as u64);
        self.status.set_outbox(count, bytes, age, error);
    }

    /// Saves the status report so `connected-registry status` can show it.
    pub fn persist(&self, policy: &SyncPolicy) {
        local(|| self.refresh_outbox(policy, None));
        let report = self.status.report();
        if let Ok(json) = serde_json::to_string(&report) {
            let meta = &self.store.meta;
            if let Err(e) = local(|| meta.set_sync_state(&StateKey::Status, Some(&json))) {
                tracing::warn!(error = %e, "could not save the sync status");
            }
        }
    }

    /// One pass over the repositories of `scope`; Err when any failed.
    pub async fn run_once(
        &self,
        policy: &Arc<SyncPolicy>,
        scope: &Scope,
        deadline: Option<chrono::DateTime<Utc>>,
    ) -> Result<(), ()> {
        // While offline after a failed pass, a cheap probe first: the state says Syncing only
        // once the parent answers. The first pass goes straight to work (a round trip less
        // before the first byte); its first request tells the same.
        let failed_before = self.status.passes() > 0;
        if failed_before && self.status.state() == ConnectionState::Offline {
            if let Err(e) = self.parent.ping().await {
                if e.is_transient() {
                    let e = SyncError::from(e);
                    self.status.detail(e.code(), e.to_string());
                    return Err(());
                }
            }
        }
        self.status.set_state(ConnectionState::Syncing);
        self.persist(policy);
        let stop = Arc::new(AtomicBool::new(false));
        if let Some(end) = deadline {
            let s = stop.clone();
            let wait = (end - Utc::now()).to_std().unwrap_or(Duration::ZERO);
            tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                s.store(true, Ordering::SeqCst);
            });
        }
        let mut first_error: Option<SyncError> = None;
        if policy.mode == Mode::ReadOnly && *scope == Scope::All {
            if let Err(e) = self.remove_dropped_repositories(policy) {
                first_error = Some(e);
            }
        }
        let repos = policy.repositories.iter().filter(|r| match scope {
            Scope::All => true,
            Scope::Only(set) => set.contains(r.as_str()),
        });
        for repo in repos {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            if let Err(e) = self.sync_repository(policy, &stop, repo).await {
                let offline = e.is_offline();
                first_error.get_or_insert(e);
                if offline {
                    break; // no point asking an unreachable parent about the other repositories
                }
            }
            self.persist(policy);
        }
        if policy.mode == Mode::ReadWrite {
            local(|| self.refresh_outbox(policy, None));
        }
        let stopped = stop.load(Ordering::SeqCst);
        stop.store(true, Ordering::SeqCst);
        self.finish(first_error, stopped)
    }

    /// Push-up (ReadWrite) then pull-down of one repository, with its progress recorded.
    async fn sync_repository(
        &self,
        policy: &Arc<SyncPolicy>,
        stop: &Stop,
        repo: &RepoName,
    ) -> Result<(), SyncError> {
        let progress = self.status.repo_started(repo.as_str());
        // ReadWrite: local changes go up first, so the pull-down that follows converges.
        let pushed = match policy.mode {
            Mode::ReadWrite => self.push_up(policy, stop, repo).await,
            Mode::ReadOnly => Ok(Default::default()),
        };
        let result = match pushed {
            Ok(skip_tags) => {
                let puller = Puller {
                    store: self.store.clone(),
                    parent: self.parent.clone(),
                    transfers: self.transfers.clone(),
                    policy: policy.clone(),
                    progress,
                    stop: stop.clone(),
                    skip_tags,
                    seen: Default::default(),
                    last_marker: self.last_marker(repo),
                };
                puller.sync_repository(repo).await
            }
            Err(e) => Err(e),
        };
        match &result {
            Ok(pulled) => {
                let key = StateKey::SyncedRepo(repo.as_str());
                let value = serde_json::json!({
                    "tags": pulled.tags,
                    "time": Utc::now().to_rfc3339(),
                    "marker": pulled.marker,
                })
                .to_string();
                if let Err(e) = local(|| self.store.meta.set_sync_state(&key, Some(&value))) {
                    tracing::warn!(error = %e, "could not record sync state");
                }
                self.status.repo_finished(repo.as_str(), Ok(pulled.tags));
            }
            Err(e) => {
                tracing::warn!(repo = %repo.as_str(), code = e.code().as_str(), error = %e, "repository sync failed");
                self.status
                    .repo_finished(repo.as_str(), Err(format!("{}: {e}", e.code())));
            }
        }
        result.map(|_| ())
    }

    /// The parent's change marker `repo` had at its last whole pass, from the sync state.
    fn last_marker(&self, repo: &RepoName) -> Option<String> {
        let key = StateKey::SyncedRepo(repo.as_str());
        let value = local(|| self.store.meta.sync_state(&key)).ok().flatten()?;
        let record: serde_json::Value = serde_json::from_str(&value).ok()?;
        record["marker"].as_str().map(str::to_owned)
    }

    /// Sets the state and details a pass leaves: Online (with a last sync unless a window
    /// closed early), or Offline / Unhealthy with the first error.
    fn finish(&self, first_error: Option<SyncError>, stopped: bool) -> Result<(), ()> {
        match first_error {
            None | Some(SyncError::Stopped(_)) => {
                self.status.set_state(ConnectionState::Online);
                self.status.clear_details(|c| {
                    matches!(c.kind(), DetailKind::Parent | DetailKind::Disk)
                        || c == DetailCode::SyncStopped
                });
                if stopped {
                    tracing::info!("sync window closed; the rest waits for the next window");
                } else {
                    self.status.synced_now();
                }
                Ok(())
            }
            Some(e) => {
                let state = if e.is_offline() {
                    ConnectionState::Offline
                } else {
                    ConnectionState::Unhealthy
                };
                self.status.set_state(state);
                self.status
                    .clear_details(|c| matches!(c.kind(), DetailKind::Parent | DetailKind::Disk));
                self.status.detail(e.code(), e.to_string());
                Err(())
            }
        }
    }

    /// In ReadOnly, repositories sync populated that the policy no longer lists are removed.
    fn remove_dropped_repositories(&self, policy: &SyncPolicy) -> Result<(), SyncError> {
        let wanted: HashSet<&str> = policy.repositories.iter().map(|r| r.as_str()).collect();
        let known = local(|| self.store.meta.sync_state_prefixed(StatePrefix::SyncedRepo))?;
        for (name, _) in known {
            if wanted.contains(name.as_str()) {
                continue;
            }
            if let Ok(repo) = RepoName::parse(&name) {
                local(|| self.store.meta.delete_repository_as(Origin::Sync, &repo))?;
                let subject = Subject {
                    repo: repo.as_str(),
                    ..Subject::default()
                };
                audit::record(policy.audit_logs, SyncEvent::RepositoryRemoved, subject);
                tracing::info!(
                    repo = name.as_str(),
                    "repository no longer in the sync policy: removed here"
                );
            }
            let key = StateKey::SyncedRepo(&name);
            local(|| self.store.meta.set_sync_state(&key, None))?;
        }
        Ok(())
    }

    /// Sends `repo`'s outbox up; returns the tags that still have changes waiting (pull-down
    /// leaves them alone so a local push is never overwritten by the parent's older state).
    async fn push_up(
        &self,
        policy: &Arc<SyncPolicy>,
        stop: &Stop,
        repo: &RepoName,
    ) -> Result<HashSet<String>, SyncError> {
        let pusher = Pusher::new(
            self.store.clone(),
            self.parent.clone(),
            policy.clone(),
            self.status.clone(),
            self.transfers.clone(),
            stop.clone(),
        );
        let result = pusher.push_repository(repo).await;
        match &result {
            Ok(n) if *n > 0 => {
                tracing::info!(repo = %repo.as_str(), changes = n, "pushed up to the parent");
                local(|| self.refresh_outbox(policy, Some(None)));
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(repo = %repo.as_str(), code = e.code().as_str(), error = %e, "push-up failed");
                let error = Some(Some(format!("{}: {e}", e.code())));
                local(|| self.refresh_outbox(policy, error));
            }
        }
        result?;
        let cursor = pusher.cursor(repo)?;
        let pending = local(|| self.store.meta.client_events(repo.as_str(), cursor, 10_000))?;
        Ok(pending.into_iter().filter_map(|e| e.tag).collect())
    }
}
