//! What a registry reports to its parent (status up), in ACR's shapes, and how the root reads it.

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::sync::status::{DetailCode, DetailKind, OutboxStatus, StatusDetail, StatusReport};

/// How long a registry may go unheard before the root shows it `Offline`.
pub const DEFAULT_OFFLINE_AFTER: std::time::Duration = std::time::Duration::from_secs(120);

/// One condition, as ACR's `statusDetails` entries are written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AcrStatusDetail {
    /// The area: `Disk`, `Parent`, `Sync`, `Activation`, `Configuration`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Machine-readable code (`DiskError`, `ParentUnreachable`, `ALREADY_ACTIVATED`, …).
    pub code: String,
    /// What happened, for people.
    pub description: String,
    /// When (RFC 3339).
    pub timestamp: String,
    /// Stable identifier of this occurrence, for matching logs.
    pub correlation_id: String,
}

/// Bytes used by content and free on the registry's disk.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StorageReport {
    /// Bytes the data directory's content takes.
    pub used_bytes: u64,
    /// Bytes free for it.
    pub free_bytes: u64,
}

/// A registry's status as it travels up the tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// `Online`, `Offline`, `Syncing` or `Unhealthy`.
    pub connection_state: String,
    /// When it last completed a sync (or last found nothing new).
    pub last_sync_time: Option<String>,
    /// Current conditions.
    pub status_details: Vec<AcrStatusDetail>,
    /// The registry's version.
    pub version: String,
    /// Its mode as in force there.
    pub mode: String,
    /// Its login server, when configured (`ACR_REGISTRY_LOGIN_SERVER`).
    #[serde(default)]
    pub login_server: Option<String>,
    /// Its disk.
    #[serde(default)]
    pub storage: StorageReport,
    /// Its push-up outbox.
    #[serde(default)]
    pub outbox: OutboxStatus,
}

/// The ACR area of a detail code.
fn kind_of(code: &str) -> &'static str {
    match DetailCode::parse(code) {
        Some(c) => c.kind().as_str(),
        // A code this version does not know keeps the area its prefix has always given.
        None if code.starts_with("Disk") => DetailKind::Disk.as_str(),
        None if code.starts_with("Parent") => DetailKind::Parent.as_str(),
        None => DetailKind::Sync.as_str(),
    }
}

/// A stable UUID-shaped identifier of a detail, so the same occurrence keeps its id across reports.
fn correlation_id(d: &StatusDetail) -> String {
    let h = Sha256::digest(format!("{}\n{}\n{}", d.code, d.time, d.message));
    let x = hex::encode(&h[..16]);
    format!(
        "{}-{}-{}-{}-{}",
        &x[..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..32]
    )
}

impl AcrStatusDetail {
    /// ACR's shape of one of the sync status's details.
    pub fn from_detail(d: &StatusDetail) -> Self {
        AcrStatusDetail {
            kind: kind_of(&d.code).to_owned(),
            code: d.code.clone(),
            description: d.message.clone(),
            timestamp: d.time.clone(),
            correlation_id: correlation_id(d),
        }
    }
}

impl Report {
    /// The report of a registry whose sync status is `s`.
    pub fn from_status(
        s: &StatusReport,
        login_server: Option<String>,
        storage: StorageReport,
    ) -> Self {
        Report {
            connection_state: format!("{:?}", s.connection_state),
            last_sync_time: s.last_sync_time.clone(),
            status_details: s
                .status_details
                .iter()
                .map(AcrStatusDetail::from_detail)
                .collect(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            mode: s.mode.clone(),
            login_server,
            storage,
            outbox: s.outbox.clone(),
        }
    }
}

/// The connection state the root shows: what the registry last said, unless it has not been
/// heard from for `offline_after` (or ever), which makes it `Offline`.
pub fn effective_state(
    report: Option<&Report>,
    heard: Option<i64>,
    now: i64,
    offline_after: std::time::Duration,
) -> &'static str {
    let fresh = heard.is_some_and(|h| now.saturating_sub(h) <= offline_after.as_secs() as i64);
    match report {
        Some(r) if fresh => match r.connection_state.as_str() {
            "Online" => "Online",
            "Syncing" => "Syncing",
            "Unhealthy" => "Unhealthy",
            _ => "Offline",
        },
        _ => "Offline",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(state: &str) -> Report {
        Report {
            connection_state: state.into(),
            last_sync_time: None,
            status_details: vec![],
            version: "0".into(),
            mode: "ReadOnly".into(),
            login_server: None,
            storage: StorageReport::default(),
            outbox: OutboxStatus::default(),
        }
    }

    #[test]
    fn unheard_registries_are_offline() {
        let two_min = DEFAULT_OFFLINE_AFTER;
        let r = report("Online");
        assert_eq!(effective_state(Some(&r), Some(100), 150, two_min), "Online");
        assert_eq!(
            effective_state(Some(&r), Some(100), 221, two_min),
            "Offline"
        );
        assert_eq!(effective_state(None, Some(100), 101, two_min), "Offline");
        assert_eq!(effective_state(Some(&r), None, 101, two_min), "Offline");
        let u = report("Unhealthy");
        assert_eq!(
            effective_state(Some(&u), Some(100), 101, two_min),
            "Unhealthy"
        );
    }

    #[test]
    fn details_keep_their_correlation_id() {
        let d = StatusDetail {
            code: "DiskError".into(),
            message: "No space left on device.".into(),
            time: "2026-01-01T00:00:00Z".into(),
        };
        let a = AcrStatusDetail::from_detail(&d);
        assert_eq!(a.kind, "Disk");
        assert_eq!(a, AcrStatusDetail::from_detail(&d));
        assert_eq!(a.correlation_id.len(), 36);
    }
}
