//! The policy sources as one seam (DESIGN §10): the file, the module twin, the command line and
//! the parent's control plane each give a part of the policy; this one place merges them and
//! publishes the policy in force on a `watch` channel that the scheduler and the rest of sync
//! consume.
//!
//! Precedence, highest first:
//! 1. what the root of the tree defines for this registry (through the parent's control plane:
//!    mode, repositories, schedule and window, interval, message TTL, log level, notification
//!    patterns) — the root also shapes the sync token's rights from that definition, so no
//!    other source could widen it;
//! 2. the command line and environment (`--mode`, `--log-level`), fixed for the process's life;
//! 3. the module twin's desired properties, key by key over the file;
//! 4. the policy file;
//! 5. the defaults.
//!
//! Keys the root does not define (chunk size, parallelism, bandwidth, platforms, tag filters,
//! referrers) always come from the twin or the file.
//!
//! Notifications: the endpoints (URL, headers, timeout, content type) are site-local, from the
//! twin or the file only. When the root defines notification patterns for this registry
//! (`--notifications`), they replace the patterns of every local endpoint; without any, the
//! local patterns stay.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use super::{FilePolicy, SyncPolicy};
use crate::config::{ConfigError, Mode};
use crate::registry::RepoName;
use crate::sync::schedule::Schedule;

/// What the errors of a desired-properties document call it.
const TWIN_ORIGIN: &str = "module twin desired properties";

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
    /// Its notification patterns (`--notifications`); empty: the root defines none.
    pub notifications: Vec<crate::notify::Pattern>,
    /// Its scheduled garbage collection; the grace and retention stay the registry's own.
    pub gc: GcOverlay,
}

/// What the root defines of a registry's garbage collection.
#[derive(Debug, Clone, PartialEq)]
pub struct GcOverlay {
    /// Whether scheduled passes run (`--gc-enabled`).
    pub enabled: bool,
    /// When they run (`--gc-schedule`).
    pub schedule: Schedule,
}

/// The sources fixed when the process starts (command line and environment).
#[derive(Debug, Clone, Default)]
pub struct Flags {
    /// `--mode`.
    pub mode: Option<Mode>,
    /// `--log-level`.
    pub log_level: Option<String>,
}

#[derive(Debug, Clone)]
struct Sources {
    file: FilePolicy,
    twin: Option<toml::Table>,
    /// The file with the twin laid over it, parsed.
    layered: SyncPolicy,
    flags: Flags,
    parent: Option<Overlay>,
}

/// Merges the sources and publishes the policy in force.
pub struct PolicyHub {
    sources: Mutex<Sources>,
    tx: watch::Sender<Arc<SyncPolicy>>,
}

fn merge(s: &Sources) -> SyncPolicy {
    let mut p = s.layered.clone();
    if let Some(m) = s.flags.mode {
        p.mode = m;
    }
    if let Some(l) = &s.flags.log_level {
        p.log_level = Some(l.clone());
    }
    if let Some(o) = &s.parent {
        p.mode = o.mode;
        p.repositories = o.repositories.clone();
        p.schedule = o.schedule.clone();
        p.interval = o.interval;
        p.message_ttl = o.message_ttl;
        p.log_level = Some(o.log_level.clone());
        p.feed = true;
        p.gc.enabled = o.gc.enabled;
        p.gc.schedule = o.gc.schedule.clone();
        if !o.notifications.is_empty() {
            for e in &mut p.notifications {
                e.patterns = o.notifications.clone();
            }
        }
    }
    p
}

impl PolicyHub {
    /// A hub holding the file's policy and the command line's settings.
    pub fn new(file: FilePolicy, flags: Flags) -> Arc<Self> {
        let sources = Sources {
            layered: file.policy.clone(),
            file,
            twin: None,
            flags,
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

    /// A new policy file content; refused (nothing changes) when the twin's desired properties
    /// laid over it do not make a valid policy.
    pub fn set_file(&self, file: FilePolicy) -> Result<(), ConfigError> {
        self.try_update(|s| {
            s.layered = layer(&file, s.twin.as_ref())?;
            s.file = file;
            Ok(())
        })
    }

    /// The module twin's desired policy keys (`None`: no twin); refused (nothing changes) when
    /// they do not make a valid policy over the file.
    pub fn set_twin(&self, twin: Option<toml::Table>) -> Result<(), ConfigError> {
        self.try_update(|s| {
            s.layered = layer(&s.file, twin.as_ref())?;
            s.twin = twin;
            Ok(())
        })
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
        let _ = self.try_update(|s| {
            f(s);
            Ok(())
        });
    }

    fn try_update(
        &self,
        f: impl FnOnce(&mut Sources) -> Result<(), ConfigError>,
    ) -> Result<(), ConfigError> {
        let merged = self.with(|s| f(s).map(|()| merge(s)))?;
        self.tx.send_if_modified(|current| {
            if **current == merged {
                return false;
            }
            *current = Arc::new(merged);
            true
        });
        Ok(())
    }
}

/// The file's policy with the twin's keys laid over it (tables merge key by key, anything else
/// is replaced).
fn layer(file: &FilePolicy, twin: Option<&toml::Table>) -> Result<SyncPolicy, ConfigError> {
    let Some(twin) = twin else {
        return Ok(file.policy.clone());
    };
    let mut doc = file.doc.clone();
    overlay(&mut doc, twin);
    SyncPolicy::from_table(&doc, TWIN_ORIGIN)
}

fn overlay(base: &mut toml::Table, over: &toml::Table) {
    for (k, v) in over {
        match (base.get_mut(k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => overlay(b, o),
            _ => {
                base.insert(k.clone(), v.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_wins_over_the_flag_and_the_file_for_what_it_defines() {
        let file = FilePolicy {
            policy: SyncPolicy {
                chunk_size: 1 << 20,
                ..SyncPolicy::default()
            },
            doc: toml::Table::new(),
        };
        let flags = Flags {
            mode: Some(Mode::ReadWrite),
            log_level: None,
        };
        let hub = PolicyHub::new(file.clone(), flags);
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
            notifications: Vec::new(),
            gc: GcOverlay {
                enabled: false,
                schedule: Schedule::new("0 3 * * *", Duration::from_secs(1)).unwrap(),
            },
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
        assert!(!p.gc.enabled, "the root turns scheduled collection off");
        assert_eq!(p.gc.schedule.pattern(), "0 3 * * *");
        assert_eq!(
            p.gc.grace,
            crate::gc::policy::DEFAULT_GRACE,
            "the grace stays local"
        );
        hub.set_file(file).unwrap();
        assert!(
            !rx.has_changed().unwrap(),
            "an unchanged merge is not republished"
        );
        hub.set_parent(None);
        assert_eq!(hub.current().mode, Mode::ReadWrite);
    }

    fn file(text: &str) -> FilePolicy {
        FilePolicy::parse(text, std::path::Path::new("c.toml")).unwrap()
    }

    fn table(text: &str) -> toml::Table {
        text.parse().unwrap()
    }

    #[test]
    fn the_twin_lays_its_keys_over_the_file_and_flags_win_over_both() {
        let f = file("mode = \"ReadOnly\"\n[sync]\nrepositories = [\"a\"]\nchunk_size_mb = 2\n");
        let flags = Flags {
            mode: None,
            log_level: Some("Warning".into()),
        };
        let hub = PolicyHub::new(f, flags);
        hub.set_twin(Some(table(
            "mode = \"ReadWrite\"\n[sync]\nrepositories = [\"b\"]\n[server]\nlog_level = \"Debug\"\n",
        )))
        .unwrap();
        let p = hub.current();
        assert_eq!(p.mode, Mode::ReadWrite, "the twin beats the file");
        assert!(p.includes_repository("b") && !p.includes_repository("a"));
        assert_eq!(
            p.chunk_size,
            2 << 20,
            "the file keeps what the twin does not set"
        );
        assert_eq!(
            p.log_level.as_deref(),
            Some("Warning"),
            "the flag beats the twin"
        );

        // An invalid twin is refused and changes nothing.
        let e = hub
            .set_twin(Some(table("[sync]\ninterval = \"soon\"\n")))
            .unwrap_err();
        assert!(e.to_string().contains("sync.interval"), "{e}");
        assert!(hub.current().includes_repository("b"));
        // A file that the twin's keys make invalid is refused too.
        let e = hub
            .set_file(file(
                "[sync]\nschedule = \"* * * * *\"\nwindow = \"PT1H\"\n",
            ))
            .err();
        assert!(e.is_none(), "a valid combination is taken");
        hub.set_twin(None).unwrap();
        assert_eq!(hub.current().mode, Mode::ReadOnly);
    }

    #[test]
    fn the_roots_patterns_replace_the_local_ones_and_endpoints_stay_local() {
        let f = file(
            "[[notifications]]\nname = \"a\"\nurl = \"http://h/a\"\npatterns = [\"app:*:push\"]\n\
             [[notifications]]\nname = \"b\"\nurl = \"http://h/b\"\nheaders = { X-Key = \"k\" }\n",
        );
        let hub = PolicyHub::new(f, Flags::default());
        let patterns = |p: &SyncPolicy| -> Vec<Vec<String>> {
            p.notifications
                .iter()
                .map(|e| e.patterns.iter().map(|x| x.to_string()).collect())
                .collect()
        };
        assert_eq!(patterns(&hub.current()), [vec!["app:*:push"], vec!["*:*"]]);
        let mut overlay = Overlay {
            mode: Mode::ReadOnly,
            repositories: vec![],
            schedule: None,
            interval: Duration::from_secs(60),
            message_ttl: Duration::from_secs(60),
            log_level: "Information".into(),
            notifications: vec![crate::notify::Pattern::parse("web/*:v*:delete").unwrap()],
            gc: GcOverlay {
                enabled: true,
                schedule: crate::gc::GcPolicy::default().schedule,
            },
        };
        hub.set_parent(Some(overlay.clone()));
        let p = hub.current();
        assert_eq!(
            patterns(&p),
            [vec!["web/*:v*:delete"], vec!["web/*:v*:delete"]]
        );
        assert_eq!(
            p.notifications[1].headers["X-Key"], "k",
            "headers stay local"
        );
        assert_eq!(p.notifications[0].url.as_str(), "http://h/a");
        // The twin adds an endpoint: the root's patterns apply to it as well.
        hub.set_twin(Some(table(
            "[[notifications]]\nname = \"c\"\nurl = \"http://h/c\"\npatterns = [\"x:push\"]\n",
        )))
        .unwrap();
        assert_eq!(patterns(&hub.current()), [vec!["web/*:v*:delete"]]);
        // A root that defines no patterns leaves the local ones.
        overlay.notifications.clear();
        hub.set_parent(Some(overlay));
        assert_eq!(patterns(&hub.current()), [vec!["x:push"]]);
    }
}
