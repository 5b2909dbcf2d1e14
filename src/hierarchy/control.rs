//! The parent's side of the exchange: activation (one instance per name), status in (the
//! child's and what it relays), and changes out, held open until something changes.
//!
//! Changes made by another process (the management commands) or by clients are seen through
//! the database's counters, polled only while some child is waiting.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::family::{Activation, Family};
use super::tree::Tree;
use super::wire::{ExchangeRequest, ExchangeResponse, MAX_WAIT_SECONDS};
use super::HierarchyError;
use crate::storage::fsutil::now_secs;
use crate::storage::Store;

/// How often the counters are read while a child waits: the part of a change's way down spent
/// here.
const POLL: Duration = Duration::from_millis(200);

/// Definitions, access records and events counters, as last read.
type Counters = (i64, i64, i64);

/// The control plane a registry offers its children.
pub struct ControlPlane {
    store: Arc<Store>,
    counters: watch::Sender<Counters>,
}

impl ControlPlane {
    /// A control plane over `store`; [`ControlPlane::watch`] must run for waits to end early.
    pub fn new(store: Arc<Store>) -> Arc<Self> {
        let (counters, _) = watch::channel((0, 0, 0));
        Arc::new(ControlPlane { store, counters })
    }

    /// Polls the counters while somebody waits on them; runs until the process stops.
    pub async fn watch(self: Arc<Self>) {
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if self.counters.receiver_count() == 0 {
                continue;
            }
            let s = self.store.clone();
            if let Ok(Ok(c)) = tokio::task::spawn_blocking(move || s.meta.change_counters()).await {
                self.counters.send_if_modified(|old| {
                    let changed = *old != c;
                    *old = c;
                    changed
                });
            }
        }
    }

    /// Handles one exchange from registry `name` (its credentials already checked for its
    /// gateway). `may_relay` says whether the caller may report for a descendant.
    pub async fn exchange(
        &self,
        name: &str,
        req: ExchangeRequest,
        may_relay: impl Fn(&str) -> bool + Send + 'static,
    ) -> Result<ExchangeResponse, HierarchyError> {
        let mut rx = self.counters.subscribe();
        let store = self.store.clone();
        let n = name.to_owned();
        let r = req.clone();
        let registered = blocking(move || receive(&store, &n, &r, may_relay)).await?;
        let wait = Duration::from_secs(req.wait_seconds.min(MAX_WAIT_SECONDS));
        let deadline = Instant::now() + wait;
        loop {
            let store = self.store.clone();
            let (n, r, repos) = (name.to_owned(), req.clone(), registered.clone());
            let answer = blocking(move || changes(&store, &n, &r, &repos)).await?;
            if answer.config.is_some() || !answer.changed.is_empty() || answer.reset {
                return Ok(answer);
            }
            tokio::select! {
                changed = rx.changed() => if changed.is_err() { return Ok(answer) },
                _ = tokio::time::sleep_until(deadline) => return Ok(answer),
            }
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, HierarchyError> + Send + 'static,
) -> Result<T, HierarchyError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| HierarchyError::Internal(e.to_string()))?
}

/// Checks activation and stores the reports; returns the registry's repositories.
fn receive(
    store: &Store,
    name: &str,
    req: &ExchangeRequest,
    may_relay: impl Fn(&str) -> bool,
) -> Result<Vec<String>, HierarchyError> {
    let meta = &*store.meta;
    let family = Family::load(meta)?;
    let me = family.get(name).ok_or_else(|| {
        HierarchyError::NotFound(format!(
            "connected registry '{}' is not defined at this parent",
            crate::registry::echo(name)
        ))
    })?;
    let canonical = me.definition.name.clone();
    match &me.activation.instance {
        Some(active) if *active != req.instance => return Err(HierarchyError::AlreadyActivated),
        Some(_) => {}
        None => {
            let a = Activation {
                instance: Some(req.instance.clone()),
                since: Some(crate::auth::admin::rfc3339(now_secs())),
            };
            let text =
                serde_json::to_string(&a).map_err(|e| HierarchyError::Internal(e.to_string()))?;
            meta.set_activation(&canonical, &text, false)?;
            tracing::info!(registry = %canonical, instance = %req.instance, "connected registry activated");
        }
    }
    let now = now_secs();
    meta.set_registry_status(&canonical, &json(&req.status), now)?;
    for d in &req.descendants {
        let below = family.get(&d.name).is_some_and(|m| {
            !m.definition.name.eq_ignore_ascii_case(&canonical)
                && family.is_within(&m.definition.name, &canonical)
        });
        if !below || !may_relay(&d.name) {
            tracing::debug!(registry = %canonical, descendant = %d.name, "relayed status ignored: not a descendant it may report for");
            continue;
        }
        let (Some(status), Some(ago)) = (&d.status, d.heard_seconds_ago) else {
            continue;
        };
        let heard = now.saturating_sub(i64::try_from(ago).unwrap_or(i64::MAX));
        meta.set_registry_status(&d.name, &json(status), heard)?;
        let stored = family.get(&d.name).map(|m| m.activation.clone());
        if stored.as_ref() != Some(&d.activation) {
            let text = serde_json::to_string(&d.activation)
                .map_err(|e| HierarchyError::Internal(e.to_string()))?;
            meta.set_activation(&d.name, &text, false)?;
        }
    }
    Ok(me.definition.repositories.clone())
}

/// A report as stored (JSON text).
fn json(r: &super::report::Report) -> String {
    serde_json::to_string(r).unwrap_or_default()
}

/// What changed for the child since its cursor and generation.
fn changes(
    store: &Store,
    name: &str,
    req: &ExchangeRequest,
    repos: &[String],
) -> Result<ExchangeResponse, HierarchyError> {
    let meta = &*store.meta;
    let (h, a, _) = meta.change_counters()?;
    let generation = format!("{h}.{a}");
    let config = if req.generation.as_deref() == Some(generation.as_str()) {
        None
    } else {
        Tree::for_child(meta, name)?
    };
    let (changed, cursor) = meta.changed_repositories(req.cursor.max(0), repos)?;
    Ok(ExchangeResponse {
        cursor,
        generation,
        config,
        changed,
        reset: cursor < req.cursor,
    })
}
