//! Resource limits: the `[limits]` table of the config file. The defaults keep a 2-core, 1 GiB
//! gateway responsive when clients misbehave: a slow or greedy client meets a clear 429, 408 or
//! 413 long before the process runs out of file descriptors, memory or worker time.

use std::time::Duration;

use serde::Deserialize;

use super::{parse_duration, ConfigError};

/// Limits on connections, uploads and request timing, as the server applies them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Open client connections in all; past it a request gets 429 and the connection closes.
    pub connections: usize,
    /// Open connections from one client address.
    pub connections_per_client: usize,
    /// Requests sending blob bytes at once, in all.
    pub uploads: usize,
    /// Requests sending blob bytes at once from one client address.
    pub uploads_per_client: usize,
    /// Open (resumable) upload sessions in all.
    pub upload_sessions: u64,
    /// Open upload sessions started by one client address.
    pub upload_sessions_per_client: u64,
    /// Open upload sessions of one repository.
    pub upload_sessions_per_repository: u64,
    /// Largest blob a client may upload; `None` leaves it to the disk.
    pub blob_size: Option<u64>,
    /// Time a client has to send a request's headers (408 after it).
    pub header_timeout: Duration,
    /// Longest wait for the next bytes of a request body (408 after it).
    pub body_timeout: Duration,
    /// How long an idle keep-alive connection stays open.
    pub keep_alive: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            connections: 512,
            connections_per_client: 128,
            uploads: 32,
            uploads_per_client: 16,
            upload_sessions: 4096,
            upload_sessions_per_client: 512,
            upload_sessions_per_repository: 1024,
            blob_size: None,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(60),
            keep_alive: Duration::from_secs(15),
        }
    }
}

/// The `[limits]` table as written; absent keys keep their defaults.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LimitsSection {
    connections: Option<usize>,
    connections_per_client: Option<usize>,
    uploads: Option<usize>,
    uploads_per_client: Option<usize>,
    upload_sessions: Option<u64>,
    upload_sessions_per_client: Option<u64>,
    upload_sessions_per_repository: Option<u64>,
    /// Bytes; 0 means no limit.
    blob_size: Option<u64>,
    header_timeout: Option<String>,
    body_timeout: Option<String>,
    keep_alive: Option<String>,
}

impl LimitsSection {
    /// Applies the table over the defaults; a zero count or duration is refused by name.
    pub(super) fn resolve(&self) -> Result<Limits, ConfigError> {
        let d = Limits::default();
        Ok(Limits {
            connections: count("limits.connections", self.connections, d.connections)?,
            connections_per_client: count(
                "limits.connections_per_client",
                self.connections_per_client,
                d.connections_per_client,
            )?,
            uploads: count("limits.uploads", self.uploads, d.uploads)?,
            uploads_per_client: count(
                "limits.uploads_per_client",
                self.uploads_per_client,
                d.uploads_per_client,
            )?,
            upload_sessions: count(
                "limits.upload_sessions",
                self.upload_sessions,
                d.upload_sessions,
            )?,
            upload_sessions_per_client: count(
                "limits.upload_sessions_per_client",
                self.upload_sessions_per_client,
                d.upload_sessions_per_client,
            )?,
            upload_sessions_per_repository: count(
                "limits.upload_sessions_per_repository",
                self.upload_sessions_per_repository,
                d.upload_sessions_per_repository,
            )?,
            blob_size: self.blob_size.filter(|&b| b > 0),
            header_timeout: span(
                "limits.header_timeout",
                &self.header_timeout,
                d.header_timeout,
            )?,
            body_timeout: span("limits.body_timeout", &self.body_timeout, d.body_timeout)?,
            keep_alive: span("limits.keep_alive", &self.keep_alive, d.keep_alive)?,
        })
    }
}

/// A positive count, or the default when absent.
fn count<T: Copy + PartialEq + From<u8>>(
    key: &'static str,
    value: Option<T>,
    default: T,
) -> Result<T, ConfigError> {
    match value {
        Some(v) if v == T::from(0) => Err(ConfigError::Value {
            key,
            message: "must be at least 1".into(),
        }),
        Some(v) => Ok(v),
        None => Ok(default),
    }
}

/// A positive duration, or the default when absent.
fn span(
    key: &'static str,
    value: &Option<String>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    let Some(v) = value else {
        return Ok(default);
    };
    match parse_duration(v) {
        Ok(d) if d.is_zero() => Err(ConfigError::Value {
            key,
            message: "must be longer than zero".into(),
        }),
        Ok(d) => Ok(d),
        Err(message) => Err(ConfigError::Value { key, message }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_keys_keep_defaults_and_zeroes_are_refused() {
        let s: LimitsSection =
            toml::from_str("uploads = 4\nbody_timeout = \"5s\"\nblob_size = 0\n")
                .unwrap_or_else(|e| panic!("{e}"));
        let l = s.resolve().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(l.uploads, 4);
        assert_eq!(l.body_timeout, Duration::from_secs(5));
        assert_eq!(l.blob_size, None);
        assert_eq!(l.connections, Limits::default().connections);
        let s: LimitsSection =
            toml::from_str("connections = 0\n").unwrap_or_else(|e| panic!("{e}"));
        let e = s.resolve().unwrap_err().to_string();
        assert!(e.contains("limits.connections"), "{e}");
        let s: LimitsSection =
            toml::from_str("keep_alive = \"0s\"\n").unwrap_or_else(|e| panic!("{e}"));
        assert!(s.resolve().is_err());
        assert!(toml::from_str::<LimitsSection>("conections = 5\n").is_err());
    }
}
