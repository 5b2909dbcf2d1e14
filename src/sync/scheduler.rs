//! When sync runs. With a generic parent: every `interval` (or inside each scheduled window),
//! failures backing off with jitter. With a connected-registry parent that defines this
//! registry (`feed` in the policy): only when its change feed names changed repositories, when
//! clients here changed something to push up, after a policy change, or when asked; an idle
//! child then costs its parent nothing but the feed itself. Always at once on request.
//!
//! It consumes the policy in force from a `watch` channel and the [`Signals`] others raise, and
//! runs passes through the [`Engine`]: testable without a parent or a policy file.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use super::backoff;
use super::engine::{Engine, Scope};
use super::local;
use super::policy::SyncPolicy;
use crate::config::Mode;
use crate::storage::metadata::{Lease, LeaseName, StateKey};

/// How often the loop looks at the request counter, the outbox and the clock.
const TICK: Duration = Duration::from_secs(1);
/// Longest wait between retries after failures.
const RETRY_CAP: Duration = Duration::from_secs(60);

/// What others ask of the scheduler: a full pass, passes over named repositories, or to hold
/// off (an instance the parent refused).
#[derive(Default)]
pub struct Signals {
    wake: Notify,
    manual: AtomicBool,
    all: AtomicBool,
    repos: Mutex<BTreeSet<String>>,
    held: AtomicBool,
    /// Set while a pass runs or is due, so the change feed does not call an idle check a sync.
    busy: AtomicBool,
}

impl Signals {
    /// Asks for a full pass at once, whatever the schedule, window or backoff (`sync now`).
    pub fn request_manual(&self) {
        self.manual.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }

    /// Asks for a pass over every repository when the schedule allows.
    pub fn request_all(&self) {
        self.all.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }

    /// Asks for a pass over `repos` now.
    pub fn request(&self, repos: impl IntoIterator<Item = String>) {
        if let Ok(mut r) = self.repos.lock() {
            r.extend(repos);
        }
        self.wake.notify_one();
    }

    /// Stops (`true`) or resumes passes.
    pub fn hold(&self, on: bool) {
        self.held.store(on, Ordering::SeqCst);
        self.wake.notify_one();
    }

    /// Whether a pass runs or waits to run.
    pub fn busy(&self) -> bool {
        self.busy.load(Ordering::SeqCst)
            || self.manual.load(Ordering::SeqCst)
            || self.all.load(Ordering::SeqCst)
            || self.repos.lock().is_ok_and(|r| !r.is_empty())
    }

    fn take(&self) -> Option<Scope> {
        if self.all.swap(false, Ordering::SeqCst) {
            if let Ok(mut r) = self.repos.lock() {
                r.clear();
            }
            return Some(Scope::All);
        }
        let repos = std::mem::take(&mut *self.repos.lock().ok()?);
        (!repos.is_empty()).then_some(Scope::Only(repos))
    }

    fn put_back(&self, scope: Scope) {
        match scope {
            Scope::All => self.all.store(true, Ordering::SeqCst),
            Scope::Only(set) => {
                if let Ok(mut r) = self.repos.lock() {
                    r.extend(set);
                }
            }
        }
    }
}

/// The scheduler loop; runs until the sync runtime stops.
pub async fn run(
    engine: Arc<Engine>,
    mut policies: watch::Receiver<Arc<SyncPolicy>>,
    signals: Arc<Signals>,
) {
    let mut next_due = Instant::now();
    let mut failures = 0u32;
    let mut seen_request = read_counter(&engine);
    // Newest event seen, to find what clients here changed since (feed mode's push-up trigger).
    let mut seen_event = local(|| engine.store.meta.change_counters())
        .map(|(_, _, newest)| newest)
        .unwrap_or(0);
    // End of the last scheduled window seen open.
    let mut opened_window: Option<chrono::DateTime<Utc>> = None;
    // A feed-driven registry still starts with one full pass.
    signals.request_all();
    let mut last = policies.borrow_and_update().clone();
    // This replica's turn to sync (always granted on a registry alone on its metadata).
    let mut lease: Option<Box<dyn Lease>> = None;
    loop {
        // Compared by identity, not by `has_changed`: waiting on `changed()` below marks a new
        // policy seen before this line looks at it.
        let policy = policies.borrow_and_update().clone();
        if !Arc::ptr_eq(&policy, &last) {
            // A new policy may add repositories: look at all of them now.
            signals.request_all();
            next_due = Instant::now();
            last = policy.clone();
        }
        let counter = read_counter(&engine);
        if counter != seen_request {
            signals.request_manual();
        }
        seen_request = counter;
        if policy.feed && policy.mode == Mode::ReadWrite {
            if let Ok((repos, newest)) =
                local(|| engine.store.meta.client_changes_after(seen_event))
            {
                seen_event = newest;
                signals.request(repos);
            }
        }
        let now = Utc::now();
        let window_end = policy.schedule.as_ref().and_then(|s| s.current_window(now));
        let next_start = policy.schedule.as_ref().and_then(|s| s.next_start(now));
        engine.status.set_schedule(next_start, window_end);
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
        let due = Instant::now() >= next_due;
        let held = signals.held.load(Ordering::SeqCst);
        let manual = !held && signals.manual.swap(false, Ordering::SeqCst);
        let scope = if held {
            None
        } else if manual {
            signals.take();
            Some(Scope::All)
        } else if !(in_window && due) {
            None
        } else if policy.feed {
            // Feed mode: only what the feed, the outbox or a policy change asked for.
            signals.take()
        } else {
            signals.take();
            Some(Scope::All)
        };
        let scope = match scope {
            Some(scope) if !holds_lease(&engine, &mut lease) => {
                // Another replica syncs: keep what was asked for, in case the lease comes here.
                signals.put_back(scope);
                None
            }
            scope => scope,
        };
        if let Some(scope) = scope {
            signals.busy.store(true, Ordering::SeqCst);
            // A manual sync runs to the end; a scheduled one stops when its window closes.
            let deadline = if manual { None } else { window_end };
            let outcome = engine.run_once(&policy, &scope, deadline).await;
            engine.status.pass_finished();
            match outcome {
                Ok(()) => {
                    failures = 0;
                    next_due = Instant::now()
                        + if policy.feed {
                            Duration::ZERO
                        } else {
                            policy.interval
                        };
                }
                Err(()) => {
                    failures += 1;
                    next_due = Instant::now()
                        + backoff::delay(failures, RETRY_CAP.min(policy.interval.max(TICK)));
                    if policy.feed {
                        signals.put_back(scope);
                    }
                }
            }
            engine.persist(&policy);
            signals.busy.store(false, Ordering::SeqCst);
        }
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = signals.wake.notified() => {}
            _ = policies.changed() => {}
        }
    }
}

/// Whether this replica holds the sync lease, taking it when it is free; a lost lease is let go
/// (logged) before another try.
fn holds_lease(engine: &Engine, lease: &mut Option<Box<dyn Lease>>) -> bool {
    if let Some(held) = lease.as_mut() {
        if local(|| held.is_held()) {
            return true;
        }
        tracing::warn!("lost the sync lease (the database connection holding it ended)");
        // Dropped off the async workers: ending a database session blocks.
        local(|| drop(lease.take()));
    }
    match local(|| engine.store.meta.try_lease(LeaseName::Sync)) {
        Ok(Some(l)) => {
            tracing::info!("holding the sync lease: this replica runs sync and push-up");
            *lease = Some(l);
            true
        }
        Ok(None) => false,
        Err(e) => {
            tracing::warn!(error = %e, "could not take the sync lease");
            false
        }
    }
}

fn read_counter(engine: &Engine) -> Option<String> {
    local(|| engine.store.meta.sync_state(&StateKey::SyncRequest))
        .ok()
        .flatten()
}
