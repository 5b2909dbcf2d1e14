//! Garbage collection as the registry runs it: the `[gc]` policy, scheduled passes, and the
//! record of what passes freed (for the status, the metrics and `gc run`). The pass itself is
//! storage's (`storage::gc`): it knows what references what.

pub mod policy;
pub mod worker;

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use policy::GcPolicy;

use crate::config::Mode;
use crate::storage::metadata::StateKey;
use crate::storage::{GcOptions, GcReport, StorageError, Store};
use crate::sync::policy::SyncPolicy;

/// What every pass freed, added up since the data directory was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct GcTotals {
    /// Passes run (dry runs not counted).
    pub passes: u64,
    /// Blob files removed.
    pub blobs: u64,
    /// Bytes freed (blobs and partial downloads).
    pub bytes: u64,
    /// Manifests removed by the untagged retention.
    pub manifests: u64,
}

/// Why a pass did not run.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    /// Another pass holds the data directory's lock.
    #[error("a garbage collection pass is already running on this data directory")]
    Busy,
    /// The store failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// The options of a pass under `policy`. `has_parent`: a parent is configured, so in ReadWrite
/// mode manifests still waiting in the push-up outbox are kept.
pub fn options(
    policy: &SyncPolicy,
    upload_max_age: Duration,
    has_parent: bool,
    dry_run: bool,
) -> GcOptions {
    GcOptions {
        grace: policy.gc.grace,
        untagged_retention: policy.gc.untagged_retention,
        upload_max_age,
        keep_outbox: has_parent && policy.mode == Mode::ReadWrite,
        dry_run,
    }
}

/// Runs one pass now (waiting for a running one to end when `wait`, else `Busy`), records it
/// unless it is a dry run, and logs what it freed.
pub fn run_pass(store: &Store, options: &GcOptions, wait: bool) -> Result<GcReport, PassError> {
    let lock = store.gc_lock(wait)?.ok_or(PassError::Busy)?;
    let report = store.collect_garbage(&lock, options)?;
    if !options.dry_run {
        record(store, &report)?;
    }
    tracing::info!(
        dry_run = report.dry_run,
        blobs = report.blobs,
        bytes = report.bytes,
        manifests = report.manifests,
        links = report.links,
        uploads = report.uploads,
        partials = report.partials,
        seconds = report.seconds,
        "garbage collection pass finished"
    );
    Ok(report)
}

/// Keeps the report as the last pass and adds it to the totals.
fn record(store: &Store, report: &GcReport) -> Result<(), StorageError> {
    let mut totals = totals(store)?;
    totals.passes += 1;
    totals.blobs += report.blobs;
    totals.bytes += report.bytes + report.partial_bytes;
    totals.manifests += report.manifests;
    // Plain structs of numbers and strings: serializing them cannot fail.
    let last = serde_json::to_string(report).unwrap_or_default();
    let sum = serde_json::to_string(&totals).unwrap_or_default();
    store
        .meta
        .set_sync_state(&StateKey::GcLastPass, Some(&last))?;
    store.meta.set_sync_state(&StateKey::GcTotals, Some(&sum))
}

/// The last recorded pass, if any.
pub fn last_pass(store: &Store) -> Result<Option<GcReport>, StorageError> {
    Ok(store
        .meta
        .sync_state(&StateKey::GcLastPass)?
        .and_then(|s| serde_json::from_str(&s).ok()))
}

/// What every recorded pass freed.
pub fn totals(store: &Store) -> Result<GcTotals, StorageError> {
    Ok(store
        .meta
        .sync_state(&StateKey::GcTotals)?
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default())
}
