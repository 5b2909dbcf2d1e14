//! The sync policy: which repositories, tags and platforms to sync, when, and how fast.
//!
//! It comes from the top-level `mode` key and the `[sync]` table of the `--config` TOML file
//! (DESIGN.md §2, §6); [`PolicyFile`] re-reads the file when it changes so a running server applies
//! edits without a restart.

use std::path::Path;
use std::time::Duration;

use regex::Regex;
use serde::Deserialize;

use super::schedule::Schedule;
use crate::config::{parse_duration, ConfigError, Mode};
use crate::registry::{echo, RepoName};

mod file;
mod filters;
pub mod hub;
#[cfg(test)]
mod tests;

pub use file::{FilePolicy, PolicyFile};
pub use filters::{Platform, TagFilter};
pub use hub::{Overlay, PolicyHub};

/// Pause between continuous syncs when `sync.interval` is not set.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
/// Age at which an undelivered push-up entry expires when `sync.message_ttl` is not set.
pub const DEFAULT_MESSAGE_TTL: Duration = Duration::from_secs(2 * 86_400);
/// Download chunk size when `sync.chunk_size_mb` is not set (8 MiB).
pub const DEFAULT_CHUNK_SIZE: u64 = 8 << 20;
/// Concurrent transfers when `sync.max_parallel` is not set.
pub const DEFAULT_MAX_PARALLEL: usize = 4;

const MAX_CHUNK_MB: i64 = 1024;
const MAX_PARALLEL: i64 = 64;

/// What to sync with the parent, when and how, as configured.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncPolicy {
    /// ReadOnly (mirror the parent) or ReadWrite (local changes travel up).
    pub mode: Mode,
    /// Repositories to sync, in configured order without duplicates.
    pub repositories: Vec<RepoName>,
    /// Sync only inside the windows of this schedule; `None` syncs continuously.
    pub schedule: Option<Schedule>,
    /// Pause between continuous sync passes.
    pub interval: Duration,
    /// Push-up entries older than this expire.
    pub message_ttl: Duration,
    /// Download chunk size in bytes.
    pub chunk_size: u64,
    /// Most transfers running at once.
    pub max_parallel: usize,
    /// Transfer rate cap in bytes per second; `None` is unlimited.
    pub bandwidth_limit: Option<u64>,
    /// Platforms whose manifests an index's children are synced for; empty means all.
    pub platforms: Vec<Platform>,
    /// Which tags are synced.
    pub tags: TagFilter,
    /// Whether referrers (signatures, SBOMs) are synced along with their subjects.
    pub referrers: bool,
    /// Whether every sync action is logged as an audit line (`sync.audit_logs`).
    pub audit_logs: bool,
    /// Whether the parent's change feed says when to sync (a connected-registry parent that
    /// defines this registry), rather than a pass every `interval`.
    pub feed: bool,
    /// Log level: set by the root when it defines this registry, else by the command line,
    /// the module twin or the file (`server.log_level`); `None` leaves the startup level.
    pub log_level: Option<String>,
    /// How garbage collection runs (`[gc]`).
    pub gc: crate::gc::GcPolicy,
    /// Where change notifications go (`[[notifications]]`; the root may replace the patterns).
    pub notifications: Vec<crate::notify::Endpoint>,
}

impl Default for SyncPolicy {
    fn default() -> Self {
        SyncPolicy {
            mode: Mode::ReadOnly,
            repositories: Vec::new(),
            schedule: None,
            interval: DEFAULT_INTERVAL,
            message_ttl: DEFAULT_MESSAGE_TTL,
            chunk_size: DEFAULT_CHUNK_SIZE,
            max_parallel: DEFAULT_MAX_PARALLEL,
            bandwidth_limit: None,
            platforms: Vec::new(),
            tags: TagFilter::default(),
            referrers: true,
            audit_logs: false,
            feed: false,
            log_level: None,
            gc: crate::gc::GcPolicy::default(),
            notifications: Vec::new(),
        }
    }
}

/// The parts of the file the policy reads; the rest of `[server]` and other tables belong to
/// other modules.
#[derive(Deserialize)]
struct RawRoot {
    mode: Option<String>,
    sync: Option<RawSync>,
    server: Option<RawServer>,
    /// `[gc]`, read by `gc::policy`.
    gc: Option<toml::Value>,
    /// `[[notifications]]`, read by `notify::config`.
    notifications: Option<toml::Value>,
}

/// The one key of `[server]` that is policy: it can change while the registry runs.
#[derive(Deserialize)]
struct RawServer {
    log_level: Option<String>,
}

/// The `[sync]` table as written.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSync {
    #[serde(default)]
    repositories: Vec<String>,
    schedule: Option<String>,
    window: Option<String>,
    interval: Option<String>,
    message_ttl: Option<String>,
    chunk_size_mb: Option<i64>,
    max_parallel: Option<i64>,
    bandwidth_limit: Option<toml::Value>,
    platforms: Option<Vec<String>>,
    tags: Option<RawTags>,
    referrers: Option<bool>,
    audit_logs: Option<bool>,
}

/// `sync.tags` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTags {
    include: Option<String>,
    exclude: Option<String>,
}

fn bad(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Value {
        key,
        message: message.into(),
    }
}

impl SyncPolicy {
    /// Reads the policy from the text of a config file; `origin` names the file in errors.
    pub fn from_toml_str(text: &str, origin: &Path) -> Result<Self, ConfigError> {
        let root: RawRoot = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_owned(),
            message: locate(text, &e),
        })?;
        Self::from_raw(root)
    }

    /// Reads the policy from a document already parsed (the file with the module twin's
    /// desired properties laid over it); `origin` names the document in errors.
    pub fn from_table(doc: &toml::Table, origin: &str) -> Result<Self, ConfigError> {
        let root: RawRoot =
            toml::Value::Table(doc.clone())
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError::Document {
                    origin: origin.to_owned(),
                    message: e.message().to_owned(),
                })?;
        Self::from_raw(root)
    }

    fn from_raw(root: RawRoot) -> Result<Self, ConfigError> {
        let mode = match root.mode {
            Some(m) => m.parse()?,
            None => Mode::ReadOnly,
        };
        let raw = root.sync.unwrap_or_default();
        let d = SyncPolicy::default();

        let mut repositories: Vec<RepoName> = Vec::with_capacity(raw.repositories.len());
        for r in &raw.repositories {
            let name = RepoName::parse(r).map_err(|_| {
                let m = "is not a repository name (lowercase path components like team/app)";
                bad("sync.repositories", format!("'{}' {m}", echo(r)))
            })?;
            if !repositories.contains(&name) {
                repositories.push(name);
            }
        }
        let platforms = match raw.platforms {
            Some(list) if list.is_empty() => {
                let m = "an empty list would select nothing; leave platforms out to sync all";
                return Err(bad("sync.platforms", m));
            }
            Some(list) => list
                .iter()
                .map(|p| Platform::parse(p).map_err(|m| bad("sync.platforms", m)))
                .collect::<Result<Vec<_>, _>>()?,
            None => Vec::new(),
        };
        let tags = match raw.tags {
            Some(t) => TagFilter {
                include: regex("sync.tags.include", t.include)?,
                exclude: regex("sync.tags.exclude", t.exclude)?,
            },
            None => TagFilter::default(),
        };
        let max_parallel = bounded("sync.max_parallel", raw.max_parallel, MAX_PARALLEL, "")?;
        Ok(SyncPolicy {
            mode,
            repositories,
            schedule: schedule(raw.schedule, raw.window)?,
            interval: duration_or("sync.interval", raw.interval, d.interval)?,
            message_ttl: duration_or("sync.message_ttl", raw.message_ttl, d.message_ttl)?,
            chunk_size: bounded(
                "sync.chunk_size_mb",
                raw.chunk_size_mb,
                MAX_CHUNK_MB,
                " MiB",
            )?
            .map_or(d.chunk_size, |mb| mb << 20),
            max_parallel: max_parallel
                .map_or(Ok(d.max_parallel), usize::try_from)
                .map_err(|_| bad("sync.max_parallel", "is too large for this machine"))?,
            bandwidth_limit: raw.bandwidth_limit.map(bandwidth).transpose()?,
            platforms,
            tags,
            referrers: raw.referrers.unwrap_or(d.referrers),
            audit_logs: raw.audit_logs.unwrap_or(d.audit_logs),
            log_level: root
                .server
                .and_then(|s| s.log_level)
                .map(log_level)
                .transpose()?,
            gc: crate::gc::policy::parse(root.gc)?,
            notifications: crate::notify::config::parse(root.notifications)?,
            ..d
        })
    }

    /// Reads the policy from a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        SyncPolicy::from_toml_str(&text, path)
    }

    /// Whether a tag passes the tag filter.
    pub fn tag_selected(&self, tag: &str) -> bool {
        self.tags.selects(tag)
    }

    /// Whether an index child for this platform is synced (always, with no `platforms` list).
    pub fn platform_selected(&self, os: &str, arch: &str, variant: Option<&str>) -> bool {
        self.platforms.is_empty() || self.platforms.iter().any(|p| p.matches(os, arch, variant))
    }

    /// Whether a repository is one of the synced repositories.
    pub fn includes_repository(&self, repo: &str) -> bool {
        self.repositories.iter().any(|r| r.as_str() == repo)
    }
}

/// `server.log_level`, checked so a typo is refused rather than silently ignored.
fn log_level(level: String) -> Result<String, ConfigError> {
    crate::config::logging::level_directive(&level)
        .map(|_| level)
        .map_err(|m| bad("server.log_level", m))
}

/// `sync.schedule` and `sync.window`, which go together.
fn schedule(cron: Option<String>, window: Option<String>) -> Result<Option<Schedule>, ConfigError> {
    let key = "sync.window";
    match (cron, window) {
        (Some(cron), Some(w)) => {
            let window = positive_duration(key, &w)?;
            Schedule::new(&cron, window)
                .map(Some)
                .map_err(|m| bad("sync.schedule", m))
        }
        (Some(_), None) => Err(bad(
            key,
            "is required with sync.schedule: how long each occurrence's sync window stays open, \
             as an ISO-8601 duration like PT1H",
        )),
        (None, Some(_)) => Err(bad(
            key,
            "only applies with sync.schedule (a cron pattern like */5 * * * *); set both or neither",
        )),
        (None, None) => Ok(None),
    }
}

/// An optional integer setting that must be between 1 and `max`.
fn bounded(
    key: &'static str,
    value: Option<i64>,
    max: i64,
    unit: &str,
) -> Result<Option<u64>, ConfigError> {
    match value {
        Some(n) if (1..=max).contains(&n) => Ok(Some(n.unsigned_abs())),
        Some(n) => Err(bad(key, format!("{n} is not between 1 and {max}{unit}"))),
        None => Ok(None),
    }
}

/// `sync.bandwidth_limit`: a rate string or a plain number of bytes per second.
fn bandwidth(value: toml::Value) -> Result<u64, ConfigError> {
    let key = "sync.bandwidth_limit";
    match value {
        toml::Value::String(s) => parse_bandwidth(&s).map_err(|m| bad(key, m)),
        toml::Value::Integer(n) if n > 0 => Ok(n.unsigned_abs()),
        other => Err(bad(
            key,
            format!(
                "{other} is not a rate like \"20MB/s\" or a positive number of bytes per second"
            ),
        )),
    }
}

fn duration_or(
    key: &'static str,
    value: Option<String>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    value.map_or(Ok(default), |s| positive_duration(key, &s))
}

fn positive_duration(key: &'static str, s: &str) -> Result<Duration, ConfigError> {
    let d = parse_duration(s).map_err(|m| bad(key, m))?;
    if d.is_zero() {
        return Err(bad(key, format!("'{}' must be longer than zero", echo(s))));
    }
    Ok(d)
}

fn regex(key: &'static str, pattern: Option<String>) -> Result<Option<Regex>, ConfigError> {
    pattern
        .map(|p| {
            Regex::new(&p).map_err(|e| {
                // A syntax error is several lines (pattern, caret, reason): keep the reason, so
                // the startup error and the status detail stay one line.
                let text = e.to_string();
                let reason = text
                    .lines()
                    .map(str::trim)
                    .rfind(|l| !l.is_empty())
                    .unwrap_or_default();
                let reason = reason.strip_prefix("error: ").unwrap_or(reason);
                bad(
                    key,
                    format!(
                        "'{}' is not a regular expression (Rust regex syntax): {reason}",
                        echo(&p)
                    ),
                )
            })
        })
        .transpose()
}

/// Parses a transfer rate: a number (fractions allowed) and an optional unit `B`, `KB`, `MB`, `GB`
/// (powers of 1000) or `KiB`, `MiB`, `GiB` (powers of 1024), with an optional `/s`, any case.
pub fn parse_bandwidth(s: &str) -> Result<u64, String> {
    let lower = s.trim().to_ascii_lowercase();
    let body = lower.strip_suffix("/s").unwrap_or(&lower).trim_end();
    let split = body
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(body.len());
    let (num, unit) = body.split_at(split);
    let what = || {
        format!(
            "'{}' is not a rate like 20MB/s, 512KB/s, 1.5MiB/s or 100000 (bytes per second; \
             units B, KB, MB, GB, KiB, MiB, GiB)",
            echo(s)
        )
    };
    let scale: f64 = match unit.trim() {
        "" | "b" => 1.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        _ => return Err(what()),
    };
    let n: f64 = num.parse().map_err(|_| what())?;
    let bytes = (n * scale).round();
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(format!("'{}' is too large", echo(s)));
    }
    if bytes < 1.0 {
        return Err(format!(
            "'{}' must be at least one byte per second",
            echo(s)
        ));
    }
    Ok(bytes as u64)
}

/// One line saying where a TOML error is: `line N (`the line`): message`.
fn locate(text: &str, e: &toml::de::Error) -> String {
    let Some(span) = e.span() else {
        return e.message().to_owned();
    };
    let start = span.start.min(text.len());
    let line_no = text[..start].matches('\n').count() + 1;
    let line = text.lines().nth(line_no - 1).unwrap_or("").trim();
    format!("line {line_no} (`{line}`): {}", e.message())
}
