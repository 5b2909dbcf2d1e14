//! A connected registry as defined at the root: mode, repositories, sync properties, log level,
//! client tokens and notifications, with ACR's names and rules.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::HierarchyError;
use crate::config::{parse_duration, Mode};
use crate::registry::{echo, RepoName};
use crate::sync::policy::hub::GcOverlay;
use crate::sync::policy::Overlay;
use crate::sync::schedule::Schedule;

/// The schedule ACR gives a registry defined without one: always online, syncing every minute.
pub const DEFAULT_SCHEDULE: &str = "* * * * *";
/// ACR's default message TTL.
pub const DEFAULT_MESSAGE_TTL: &str = "P2D";
/// ACR's default log level.
pub const DEFAULT_LOG_LEVEL: &str = "Information";

/// Sync properties as ACR names them (`parent.syncProperties`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncProperties {
    /// Cron schedule; `* * * * *` without a window means always online.
    pub schedule: String,
    /// How long each scheduled occurrence's window stays open (ISO 8601).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_window: Option<String>,
    /// Age at which an undelivered push-up message expires (ISO 8601).
    pub message_ttl: String,
    /// Pause between checks with the parent when always online (ISO 8601; this project's
    /// addition, default one minute).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
}

impl Default for SyncProperties {
    fn default() -> Self {
        SyncProperties {
            schedule: DEFAULT_SCHEDULE.to_owned(),
            sync_window: None,
            message_ttl: DEFAULT_MESSAGE_TTL.to_owned(),
            interval: None,
        }
    }
}

/// One connected registry's definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Definition {
    /// Its name (ACR's rules: 5–40 letters and digits, starting with a letter).
    pub name: String,
    /// Its parent connected registry; `None` when its parent is the root itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// `ReadOnly` or `ReadWrite`.
    pub mode: String,
    /// Repositories it syncs.
    pub repositories: Vec<String>,
    /// When and how it syncs.
    pub sync: SyncProperties,
    /// Its log level (Debug, Information, Warning, Error, None).
    pub log_level: String,
    /// Client tokens that work there, by name.
    #[serde(default)]
    pub client_tokens: Vec<String>,
    /// Notification patterns (`repository[:tag][@digest]:action`): at the registry they replace
    /// the patterns of every endpoint it configures locally.
    #[serde(default)]
    pub notifications: Vec<String>,
    /// How many times it was deactivated: a parent that sees this grow forgets which instance
    /// was active, so another may activate.
    #[serde(default)]
    pub deactivations: u64,
    /// Its scheduled garbage collection.
    #[serde(default)]
    pub garbage_collection: GcProperties,
}

/// Scheduled garbage collection as ACR names it (`garbageCollection`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GcProperties {
    /// Whether scheduled passes run.
    pub enabled: bool,
    /// When they run (cron, UTC).
    pub schedule: String,
}

impl Default for GcProperties {
    fn default() -> Self {
        GcProperties {
            enabled: true,
            schedule: crate::gc::policy::DEFAULT_SCHEDULE.to_owned(),
        }
    }
}

/// The sync token ACR creates for a connected registry.
pub fn sync_token_name(registry: &str) -> String {
    format!("{registry}-sync-token")
}

/// The sync token's scope map.
pub fn sync_scope_map_name(registry: &str) -> String {
    format!("{registry}-sync-scope-map")
}

/// ACR's name rule, with its error texts.
pub fn validate_name(name: &str) -> Result<(), HierarchyError> {
    if name.len() < 5 {
        return Err(HierarchyError::Invalid(
            "argument error: Connected registry name must be at least 5 characters long.".into(),
        ));
    }
    let ok = name.len() <= 40
        && name.as_bytes()[0].is_ascii_alphabetic()
        && name.bytes().all(|b| b.is_ascii_alphanumeric());
    if !ok {
        return Err(HierarchyError::Invalid(format!(
            "argument error: Connected registry name '{}' must start with a letter and contain only \
             alphanumeric characters. It must be 5 to 40 characters long.",
            echo(name)
        )));
    }
    Ok(())
}

/// Parses `ReadOnly`/`ReadWrite` (and ACR's older `Mirror`/`Registry`).
pub fn parse_mode(s: &str) -> Result<Mode, HierarchyError> {
    s.parse::<Mode>().map_err(|_| {
        HierarchyError::Invalid(
            "usage error: --mode supports only 'ReadWrite' and 'ReadOnly' values.".into(),
        )
    })
}

/// Checks an ISO 8601 (or `30s`-style) duration given to `flag`.
pub fn check_duration(flag: &str, value: &str) -> Result<Duration, HierarchyError> {
    let d = parse_duration(value)
        .map_err(|m| HierarchyError::Invalid(format!("argument error: {flag}: {m}")))?;
    if d.is_zero() {
        return Err(HierarchyError::Invalid(format!(
            "argument error: {flag} must be longer than zero"
        )));
    }
    Ok(d)
}

impl Definition {
    /// Its mode.
    pub fn mode(&self) -> Mode {
        self.mode.parse().unwrap_or_default()
    }

    /// Whether it syncs `repo`.
    pub fn has_repository(&self, repo: &str) -> bool {
        self.repositories.iter().any(|r| r == repo)
    }

    /// Checks every field as `create` and `update` must (name, mode, repositories, schedule,
    /// window, TTL, interval, log level, notification patterns).
    pub fn validate(&self) -> Result<(), HierarchyError> {
        validate_name(&self.name)?;
        parse_mode(&self.mode)?;
        if self.repositories.is_empty() {
            return Err(HierarchyError::Invalid(
                "argument error: --repository must be provided: the repositories it syncs.".into(),
            ));
        }
        for r in &self.repositories {
            RepoName::parse(r).map_err(|_| {
                HierarchyError::Invalid(format!(
                    "argument error: '{}' is not a repository name (lowercase path components \
                     like team/app)",
                    echo(r)
                ))
            })?;
        }
        crate::config::logging::level_directive(&self.log_level)
            .map_err(|m| HierarchyError::Invalid(format!("argument error: --log-level: {m}")))?;
        self.overlay().map(|_| ())
    }

    /// The policy the root defines for it.
    pub fn overlay(&self) -> Result<Overlay, HierarchyError> {
        let s = &self.sync;
        let schedule = match (s.schedule.trim(), &s.sync_window) {
            (DEFAULT_SCHEDULE, None) | ("", None) => None,
            (_, None) => {
                return Err(HierarchyError::Invalid(
                    "argument error: --sync-window is required if --sync-schedule is present: \
                     how long each occurrence's sync window stays open, as an ISO 8601 duration \
                     like PT1H."
                        .into(),
                ))
            }
            (cron, Some(w)) => {
                let window = check_duration("--sync-window", w)?;
                Some(Schedule::new(cron, window).map_err(|m| {
                    HierarchyError::Invalid(format!("argument error: --sync-schedule: {m}"))
                })?)
            }
        };
        let interval = match &s.interval {
            Some(i) => check_duration("--sync-interval", i)?,
            None => crate::sync::policy::DEFAULT_INTERVAL,
        };
        let repositories = self
            .repositories
            .iter()
            .filter_map(|r| RepoName::parse(r).ok())
            .collect();
        let notifications = self
            .notifications
            .iter()
            .map(|p| crate::notify::Pattern::parse(p))
            .collect::<Result<_, _>>()
            .map_err(|e| {
                HierarchyError::Invalid(format!("argument error: --notifications: {e}"))
            })?;
        let gc_schedule = Schedule::new(&self.garbage_collection.schedule, Duration::from_secs(1))
            .map_err(|m| HierarchyError::Invalid(format!("argument error: --gc-schedule: {m}")))?;
        Ok(Overlay {
            gc: GcOverlay {
                enabled: self.garbage_collection.enabled,
                schedule: gc_schedule,
            },
            notifications,
            mode: parse_mode(&self.mode)?,
            repositories,
            schedule,
            interval,
            message_ttl: check_duration("--sync-message-ttl", &s.message_ttl)?,
            log_level: self.log_level.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(name: &str) -> Definition {
        Definition {
            name: name.into(),
            parent: None,
            mode: "ReadOnly".into(),
            repositories: vec!["hello-world".into()],
            sync: SyncProperties::default(),
            log_level: DEFAULT_LOG_LEVEL.into(),
            client_tokens: vec![],
            notifications: vec![],
            deactivations: 0,
            garbage_collection: GcProperties::default(),
        }
    }

    #[test]
    fn names_follow_acr() {
        for ok in ["plant", "line42xyz", &"a".repeat(40)] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        let short = validate_name("abc").unwrap_err().to_string();
        assert!(short.contains("at least 5 characters"), "{short}");
        for bad in ["1plant", "pla-nt", "plant_a", &"a".repeat(41), "plänt1"] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn always_online_unless_a_schedule_with_a_window() {
        let d = def("plant");
        let o = d.overlay().unwrap();
        assert!(o.schedule.is_none());
        assert_eq!(o.interval, Duration::from_secs(60));
        assert_eq!(o.message_ttl, Duration::from_secs(2 * 86_400));
        let mut s = def("plant");
        s.sync.schedule = "0 */2 * * *".into();
        assert!(s
            .validate()
            .unwrap_err()
            .to_string()
            .contains("--sync-window"));
        s.sync.sync_window = Some("PT1H".into());
        assert!(s.overlay().unwrap().schedule.is_some());
        let mut m = def("plant");
        m.mode = "Sideways".into();
        assert!(m.validate().unwrap_err().to_string().contains("--mode"));
    }

    #[test]
    fn notification_patterns_are_checked_and_carried_down() {
        let mut d = def("plant");
        d.notifications = vec!["hello-world:*:*".into(), "sample/repo/*:1.0:push".into()];
        let o = d.overlay().unwrap();
        assert_eq!(o.notifications.len(), 2);
        assert_eq!(o.notifications[1].as_str(), "sample/repo/*:1.0:push");
        d.notifications.push("hello-world:pull".into());
        let e = d.validate().unwrap_err().to_string();
        assert!(
            e.contains("--notifications") && e.contains("hello-world:pull"),
            "{e}"
        );
    }

    #[test]
    fn garbage_collection_travels_in_the_overlay() {
        let mut d = def("child1");
        let o = d.overlay().unwrap();
        assert!(o.gc.enabled);
        assert_eq!(o.gc.schedule.pattern(), "0 0 * * *");
        d.garbage_collection = GcProperties {
            enabled: false,
            schedule: "30 2 * * 0".into(),
        };
        let o = d.overlay().unwrap();
        assert_eq!(
            (o.gc.enabled, o.gc.schedule.pattern()),
            (false, "30 2 * * 0")
        );
        // Definitions written before garbage collection existed read with its defaults.
        let mut old = serde_json::to_value(def("child2")).unwrap();
        old.as_object_mut().unwrap().remove("garbageCollection");
        let read: Definition = serde_json::from_value(old).unwrap();
        assert_eq!(read.garbage_collection, GcProperties::default());
        d.garbage_collection.schedule = "every day".into();
        let e = d.validate().unwrap_err().to_string();
        assert!(e.contains("--gc-schedule"), "{e}");
    }
}
