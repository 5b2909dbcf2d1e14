//! The `[gc]` table: whether and when scheduled passes run, the grace and the untagged retention.

use std::time::Duration;

use serde::Deserialize;

use crate::config::{parse_duration, ConfigError};
use crate::sync::schedule::Schedule;

/// The schedule when `gc.schedule` is not set: daily at midnight UTC, as ACR's default.
pub const DEFAULT_SCHEDULE: &str = "0 0 * * *";
/// The grace when `gc.grace` is not set: a day, so a client or a sync that stops between a blob
/// and its manifest has long enough to come back.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(86_400);

/// How garbage collection runs.
#[derive(Debug, Clone, PartialEq)]
pub struct GcPolicy {
    /// Whether scheduled passes run (`gc run` works either way).
    pub enabled: bool,
    /// When scheduled passes run.
    pub schedule: Schedule,
    /// How long a repository's link to a blob stays after no manifest references it, and how
    /// long a partial download may sit idle.
    pub grace: Duration,
    /// Untagged manifests older than this are deleted; `None` keeps them.
    pub untagged_retention: Option<Duration>,
}

impl Default for GcPolicy {
    fn default() -> Self {
        GcPolicy {
            enabled: true,
            schedule: default_schedule(),
            grace: DEFAULT_GRACE,
            untagged_retention: None,
        }
    }
}

/// The default schedule (a constant pattern, checked by a unit test).
fn default_schedule() -> Schedule {
    Schedule::new(DEFAULT_SCHEDULE, Duration::from_secs(1)).unwrap_or_else(|_| unreachable!())
}

/// `[gc]` as written.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGc {
    enabled: Option<bool>,
    schedule: Option<String>,
    grace: Option<String>,
    untagged_retention: Option<String>,
}

fn bad(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Value {
        key,
        message: message.into(),
    }
}

/// Reads `[gc]` (absent: the defaults); errors name the key.
pub fn parse(value: Option<toml::Value>) -> Result<GcPolicy, ConfigError> {
    let raw: RawGc = match value {
        Some(v) => v
            .try_into()
            .map_err(|e: toml::de::Error| bad("gc", e.message().to_owned()))?,
        None => RawGc::default(),
    };
    let d = GcPolicy::default();
    let schedule = match raw.schedule {
        Some(cron) => {
            Schedule::new(&cron, Duration::from_secs(1)).map_err(|m| bad("gc.schedule", m))?
        }
        None => d.schedule,
    };
    let duration = |key, s: Option<String>| {
        s.map(|s| parse_duration(&s).map_err(|m| bad(key, m)))
            .transpose()
    };
    Ok(GcPolicy {
        enabled: raw.enabled.unwrap_or(d.enabled),
        schedule,
        grace: duration("gc.grace", raw.grace)?.unwrap_or(d.grace),
        untagged_retention: duration("gc.untagged_retention", raw.untagged_retention)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> Option<toml::Value> {
        let doc: toml::Table = text.parse().unwrap_or_else(|e| panic!("{e}"));
        doc.get("gc").cloned()
    }

    #[test]
    fn defaults_follow_acr() {
        let p = parse(None).unwrap_or_else(|e| panic!("{e}"));
        assert!(p.enabled);
        assert_eq!(p.schedule.pattern(), "0 0 * * *");
        assert_eq!(p.grace, DEFAULT_GRACE);
        assert_eq!(p.untagged_retention, None);
    }

    #[test]
    fn reads_every_key() {
        let p = parse(table(
            "[gc]\nenabled = false\nschedule = \"30 */5 * * * *\"\ngrace = \"PT0S\"\nuntagged_retention = \"P7D\"\n",
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(!p.enabled);
        assert_eq!(p.schedule.pattern(), "30 */5 * * * *");
        assert_eq!(p.grace, Duration::ZERO);
        assert_eq!(p.untagged_retention, Some(Duration::from_secs(7 * 86_400)));
    }

    #[test]
    fn refusals_name_the_key() {
        for (text, key) in [
            ("[gc]\nschedule = \"* * *\"\n", "gc.schedule"),
            ("[gc]\ngrace = \"soon\"\n", "gc.grace"),
            (
                "[gc]\nuntagged_retention = \"P1X\"\n",
                "gc.untagged_retention",
            ),
            ("[gc]\nenable = true\n", "gc"),
            ("[gc]\nenabled = \"yes\"\n", "gc"),
        ] {
            match parse(table(text)) {
                Err(ConfigError::Value { key: k, .. }) => assert_eq!(k, key, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
    }
}
