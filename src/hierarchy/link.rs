//! The child's side of the exchange with a connected-registry parent: one long-polled request
//! carries this registry's status (and its descendants') up and brings configuration and the
//! change feed down. An idle child sends one such request per interval (at most 55 s apart)
//! and nothing else.
//!
//! A parent that is not a connected registry (no control-plane header), or one that does not
//! define this registry, leaves the policy file in charge; it is asked again every few minutes.

use std::sync::Arc;
use std::time::Duration;

use super::family::Family;
use super::report::{Report, StorageReport};
use super::tree::Tree;
use super::wire::{exchange_path, ExchangeRequest, ExchangeResponse, Relayed, API_HEADER};
use crate::storage::fsutil::now_secs;
use crate::storage::metadata::StateKey;
use crate::storage::Store;
use crate::sync::policy::Overlay;
use crate::sync::status::{ConnectionState, DetailCode, DetailKind};
use crate::sync::{backoff, SyncService};

/// How long a parent may hold the exchange open at most: under the 60 s read timeout of common
/// reverse proxies.
const MAX_WAIT: Duration = Duration::from_secs(55);
/// Extra time on top of the wait before the child gives up on an answer.
const ANSWER_GRACE: Duration = Duration::from_secs(30);
/// How often a parent that defines nothing for this registry is asked again.
const PROBE_AGAIN: Duration = Duration::from_secs(300);
/// How often a refused instance asks again (it may be activated once the other is deactivated).
const REFUSED_RETRY: Duration = Duration::from_secs(5);

/// What the link works with.
pub struct Link {
    /// The registry's sync.
    pub svc: Arc<SyncService>,
    /// Its login server, reported up (so `get-settings` can name it for its children).
    pub login_server: Option<String>,
}

/// This data directory's instance id, made once.
pub fn instance_id(store: &Store) -> String {
    if let Ok(Some(id)) = store.meta.sync_state(&StateKey::HierarchyInstance) {
        return id;
    }
    let id = uuid::Uuid::new_v4().to_string();
    if let Err(e) = store
        .meta
        .set_sync_state(&StateKey::HierarchyInstance, Some(&id))
    {
        tracing::warn!(error = %e, "could not save the instance id");
    }
    id
}

/// The policy the parent defined last time, if any.
pub fn cached_overlay(store: &Store) -> Option<Overlay> {
    let text = store
        .meta
        .sync_state(&StateKey::HierarchyTree)
        .ok()
        .flatten()?;
    let tree: Tree = serde_json::from_str(&text).ok()?;
    tree.own()?.overlay().ok()
}

/// What one exchange told.
enum Outcome {
    /// The parent answered as a connected registry that defines this one.
    Answer(Box<ExchangeResponse>),
    /// The parent is a generic registry, or defines nothing for this one (why).
    NotDefined(String),
    /// Another instance is active under this name.
    Refused(String),
    /// The parent failed or could not be reached (why).
    Failed(String),
    /// A sync pass finished while waiting: its status goes up at once.
    Interrupted,
}

impl Link {
    /// Runs the exchange loop until the sync runtime stops.
    pub async fn run(self) {
        let svc = &self.svc;
        let store = svc.store.clone();
        let instance = blocking(&store, instance_id).await;
        let mut cursor: i64 = blocking(&store, |s| {
            s.meta
                .sync_state(&StateKey::HierarchyCursor)
                .ok()
                .flatten()
                .and_then(|v| v.parse().ok())
        })
        .await
        .unwrap_or(0);
        let mut generation: Option<String> = None;
        let mut failures = 0u32;
        let mut said_not_defined = false;
        let mut refused = false;
        loop {
            let policy = svc.policy();
            let wait = policy.interval.min(MAX_WAIT);
            let req = self
                .request(&instance, cursor, generation.clone(), wait)
                .await;
            let outcome = self.exchange(req, wait).await;
            match outcome {
                Outcome::Answer(resp) => {
                    failures = 0;
                    said_not_defined = false;
                    svc.signals.hold(false);
                    if std::mem::take(&mut refused) {
                        // Active now (the other instance was deactivated): the refusal's
                        // Unhealthy no longer holds, and everything held back syncs now.
                        svc.status
                            .clear_details(|c| c == DetailCode::AlreadyActivated);
                        svc.status.set_state(ConnectionState::Offline);
                        svc.signals.request_all();
                    }
                    let news = self.take(*resp, &mut generation, &mut cursor).await;
                    if !news {
                        self.idle_check_done();
                    }
                }
                Outcome::NotDefined(why) => {
                    if !said_not_defined {
                        tracing::info!(reason = %why, "the parent does not configure this registry: the local policy applies");
                        said_not_defined = true;
                    }
                    svc.hub.set_parent(None);
                    svc.signals.hold(false);
                    generation = None;
                    tokio::time::sleep(PROBE_AGAIN).await;
                }
                Outcome::Refused(why) => {
                    tracing::error!(reason = %why, "this instance is refused by the parent");
                    refused = true;
                    svc.signals.hold(true);
                    svc.status.set_state(ConnectionState::Unhealthy);
                    svc.status.detail(DetailCode::AlreadyActivated, why);
                    svc.engine.persist(&policy);
                    tokio::time::sleep(wait.min(REFUSED_RETRY)).await;
                }
                Outcome::Interrupted => {}
                Outcome::Failed(why) => {
                    failures += 1;
                    if svc.hub.from_parent() {
                        tracing::warn!(reason = %why, "exchange with the parent failed");
                        if !svc.signals.busy() {
                            svc.status.set_state(ConnectionState::Offline);
                            svc.status.detail(DetailCode::ParentUnreachable, why);
                            svc.engine.persist(&policy);
                        }
                    }
                    tokio::time::sleep(backoff::delay(failures, wait.max(Duration::from_secs(1))))
                        .await;
                }
            }
        }
    }

    /// Applies an answer; returns whether it brought anything to do.
    async fn take(
        &self,
        resp: ExchangeResponse,
        generation: &mut Option<String>,
        cursor: &mut i64,
    ) -> bool {
        let svc = &self.svc;
        let mut news = false;
        if let Some(tree) = resp.config {
            let store = svc.store.clone();
            let t = tree.clone();
            let applied = blocking(&store, move |s| -> Result<Vec<String>, String> {
                let warnings = t.apply(&*s.meta).map_err(|e| e.to_string())?;
                let text = serde_json::to_string(&t).map_err(|e| e.to_string())?;
                s.meta
                    .set_sync_state(&StateKey::HierarchyTree, Some(&text))
                    .map_err(|e| e.to_string())?;
                Ok(warnings)
            })
            .await;
            match applied.map(|w| (w, tree.own().map(|d| d.overlay()))) {
                Ok((warnings, Some(Ok(overlay)))) => {
                    for w in warnings {
                        tracing::warn!("{w}");
                    }
                    svc.status
                        .clear_details(|c| c == DetailCode::ConfigurationInvalid);
                    svc.hub.set_parent(Some(overlay));
                    *generation = Some(resp.generation.clone());
                }
                Ok((_, Some(Err(e)))) => {
                    svc.status
                        .detail(DetailCode::ConfigurationInvalid, e.to_string());
                }
                Ok((_, None)) => {
                    svc.status.detail(
                        DetailCode::ConfigurationInvalid,
                        "the parent's configuration does not include this registry",
                    );
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not apply the parent's configuration");
                    svc.status.detail(DetailCode::ConfigurationInvalid, e);
                }
            }
            news = true;
        }
        if resp.reset {
            svc.signals.request_all();
            news = true;
        }
        if !resp.changed.is_empty() {
            tracing::debug!(repositories = ?resp.changed, "the parent reports changes");
            svc.signals.request(resp.changed);
            news = true;
        }
        if resp.cursor != *cursor {
            *cursor = resp.cursor;
            let c = resp.cursor.to_string();
            let store = svc.store.clone();
            blocking(&store, move |s| {
                if let Err(e) = s.meta.set_sync_state(&StateKey::HierarchyCursor, Some(&c)) {
                    tracing::warn!(error = %e, "could not save the change feed cursor");
                }
            })
            .await;
        }
        news
    }

    /// An idle check that found nothing new is a sync: the registry is Online, synced now.
    fn idle_check_done(&self) {
        let svc = &self.svc;
        if svc.signals.busy() || svc.status.state() == ConnectionState::Unhealthy {
            return;
        }
        svc.status.set_state(ConnectionState::Online);
        svc.status.clear_details(|c| c.kind() == DetailKind::Parent);
        svc.status.synced_now();
    }

    /// The request: this registry's status and what it relays for its descendants.
    async fn request(
        &self,
        instance: &str,
        cursor: i64,
        generation: Option<String>,
        wait: Duration,
    ) -> ExchangeRequest {
        let svc = &self.svc;
        let name = svc.name.clone();
        let store = svc.store.clone();
        let (storage, descendants) = blocking(&store, move |s| {
            let storage = StorageReport {
                used_bytes: s.meta.content_bytes().unwrap_or(0),
                free_bytes: s.free_bytes().unwrap_or(0),
            };
            (storage, relayed(s, &name))
        })
        .await;
        ExchangeRequest {
            instance: instance.to_owned(),
            cursor,
            generation,
            wait_seconds: wait.as_secs(),
            status: Report::from_status(&svc.status.report(), self.login_server.clone(), storage),
            descendants,
        }
    }

    /// Sends one exchange; a finished sync pass cuts a long wait short, so its result travels
    /// up at once.
    async fn exchange(&self, req: ExchangeRequest, wait: Duration) -> Outcome {
        let svc = &self.svc;
        let body = match serde_json::to_vec(&req) {
            Ok(b) => b,
            Err(e) => return Outcome::Failed(e.to_string()),
        };
        let path = exchange_path(&svc.name);
        let passes = svc.status.passes();
        let send = svc.parent.control_post(&path, body, wait + ANSWER_GRACE);
        let pass_finished = async {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if svc.status.passes() != passes && !svc.signals.busy() {
                    return;
                }
            }
        };
        let answer = tokio::select! {
            a = send => a,
            _ = pass_finished => return Outcome::Interrupted,
        };
        let answer = match answer {
            Ok(a) => a,
            Err(e) => return Outcome::Failed(e.to_string()),
        };
        let ours = answer.headers.contains_key(API_HEADER);
        let text = || {
            String::from_utf8_lossy(&answer.body)
                .chars()
                .take(300)
                .collect::<String>()
        };
        match (answer.status, ours) {
            (200, true) => match serde_json::from_slice::<ExchangeResponse>(&answer.body) {
                Ok(r) => Outcome::Answer(Box::new(r)),
                Err(e) => Outcome::Failed(format!("bad answer from the parent: {e}")),
            },
            (_, false) if answer.status < 500 => Outcome::NotDefined(format!(
                "the parent is not a connected registry (status {})",
                answer.status
            )),
            // 401 may only mean the parent has not loaded a new password yet: retried.
            (404 | 403, true) => Outcome::NotDefined(text()),
            (409, true) => Outcome::Refused(error_message(&answer.body).unwrap_or_else(text)),
            (status, _) => Outcome::Failed(format!("the parent answered {status}: {}", text())),
        }
    }
}

/// The `message` of a spec-shaped error body.
fn error_message(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v["errors"][0]["message"].as_str().map(str::to_owned)
}

/// What this registry knows of its descendants, for its parent.
fn relayed(store: &Store, own: &str) -> Vec<Relayed> {
    let Ok(family) = Family::load(&*store.meta) else {
        return Vec::new();
    };
    let now = now_secs();
    family
        .descendants(own)
        .into_iter()
        .map(|m| Relayed {
            name: m.definition.name.clone(),
            status: m.report.clone(),
            heard_seconds_ago: m.heard.map(|h| u64::try_from(now - h).unwrap_or(0)),
            activation: m.activation.clone(),
        })
        .collect()
}

/// Runs database work in place (the link runs on the sync runtime, which allows it).
async fn blocking<T>(store: &Arc<Store>, f: impl FnOnce(&Store) -> T) -> T {
    crate::sync::local(|| f(store))
}
