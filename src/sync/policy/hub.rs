//! The policy sources as one seam (DESIGN §10): the file, the command line and the parent's
//! control plane each give a part of the policy; this one place merges them and publishes the
//! policy in force on a `watch` channel that the scheduler and the rest of sync consume.
//!
//! Precedence, highest first: what the root of the tree defines for this registry (through the
//! parent's control plane: mode, repositories, schedule and window, interval, message TTL, log
//! level), then the command line and environment (`--mode`), then the policy file, then the
//! defaults. Keys the root does not define (chunk size, parallelism, bandwidth, platforms, tag
//! filters, referrers) always come from the file.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use super::SyncPolicy;
use crate::config::Mode;
use crate::registry::RepoName;
use crate::sync::schedule::Schedule;

/// What the root defines of this registry's policy (from the parent's control plane).
#[derive(Debug, Clone, PartialEq)]
pub struct Overlay {
    /// Its mode.
    pub mode: Mode,
    /// Its repositories.
    pub repositories: Vec<RepoName>,
    /// Its schedule; `None` is always online.
    pub schedule: Option<Schedule>,
    /// Pause between checks when always online.
    pub interval: Duration,
    /// Push-up message TTL.
    pub message_ttl: Duration,
    /// Its log level.
    pub log_level: String,
}

#[derive(Debug, Clone)]
struct Sources {
    file: SyncPolicy,
    mode_flag: Option<Mode>,
    parent: Option<Overlay>,
}

/// Merges the sources and publishes the policy in force.
pub struct PolicyHub {
    sources: Mutex<Sources>,
    tx: watch::Sender<Arc<SyncPolicy>>,
}

fn merge(s: &Sources) -> SyncPolicy {
    let mut p = s.file.clone();
    if let Some(m) = s.mode_flag {
        p.mode = m;
    }
    if let Some(o) = &s.parent {
        p.mode = o.mode;
        p.repositories = o.repositories.clone();
        p.schedule = o.schedule.clone();
        p.interval = o.interval;
        p.message_ttl = o.message_ttl;
        p.log_level = Some(o.log_level.clone());
        p.feed = true;
    }
    p
}

impl PolicyHub {
    /// A hub holding the file's policy and the command line's mode.
    pub fn new(file: SyncPolicy, mode_flag: Option<Mode>) -> Arc<Self> {
        let sources = Sources {
            file,
            mode_flag,
            parent: None,
        };
        let (tx, _) = watch::channel(Arc::new(merge(&sources)));
        Arc::new(PolicyHub {
            sources: Mutex::new(sources),
            tx,
        })
    }

    /// The policy in force.
    pub fn current(&self) -> Arc<SyncPolicy> {
        self.tx.borrow().clone()
    }

    /// A receiver that sees every new policy in force.
    pub fn subscribe(&self) -> watch::Receiver<Arc<SyncPolicy>> {
        self.tx.subscribe()
    }

    /// Whether the parent's control plane defines the policy.
    pub fn from_parent(&self) -> bool {
        self.with(|s| s.parent.is_some())
    }

    /// A new policy file content.
    pub fn set_file(&self, file: SyncPolicy) {
        self.update(|s| s.file = file);
    }

    /// What the root defines, or `None` when the parent defines nothing (a generic parent).
    pub fn set_parent(&self, overlay: Option<Overlay>) {
        self.update(|s| s.parent = overlay);
    }

    fn with<T>(&self, f: impl FnOnce(&mut Sources) -> T) -> T {
        match self.sources.lock() {
            Ok(mut g) => f(&mut g),
            Err(p) => f(&mut p.into_inner()),
        }
    }

    fn update(&self, f: impl FnOnce(&mut Sources)) {
        let merged = self.with(|s| {
            f(s);
            merge(s)
        });
        self.tx.send_if_modified(|current| {
            if **current == merged {
                return false;
            }
            *current = Arc::new(merged);
            true
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_wins_over_the_flag_and_the_file_for_what_it_defines() {
        let file = SyncPolicy {
            chunk_size: 1 << 20,
            ..SyncPolicy::default()
        };
        let hub = PolicyHub::new(file, Some(Mode::ReadWrite));
        let mut rx = hub.subscribe();
        assert_eq!(hub.current().mode, Mode::ReadWrite);
        assert!(!hub.current().feed);
        hub.set_parent(Some(Overlay {
            mode: Mode::ReadOnly,
            repositories: vec![RepoName::parse("a/b").unwrap()],
            schedule: None,
            interval: Duration::from_secs(5),
            message_ttl: Duration::from_secs(9),
            log_level: "Debug".into(),
        }));
        assert!(rx.has_changed().unwrap());
        let p = rx.borrow_and_update().clone();
        assert_eq!(p.mode, Mode::ReadOnly);
        assert_eq!(p.repositories.len(), 1);
        assert_eq!(
            p.chunk_size,
            1 << 20,
            "the file keeps what the root does not define"
        );
        assert!(p.feed);
        hub.set_file(SyncPolicy {
            chunk_size: 1 << 20,
            ..SyncPolicy::default()
        });
        assert!(
            !rx.has_changed().unwrap(),
            "an unchanged merge is not republished"
        );
        hub.set_parent(None);
        assert_eq!(hub.current().mode, Mode::ReadWrite);
    }
}
