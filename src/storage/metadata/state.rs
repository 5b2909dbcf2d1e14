//! Sync state: a small key/value table (status snapshots, per-repository records, upload
//! sessions at the parent, requests such as `sync now`), keyed by `StateKey`.

use crate::storage::error::Result;

use super::{StateKey, StatePrefix};

/// Storing sync state.
pub trait SyncState {
    /// A value of the sync state table.
    fn sync_state(&self, key: &StateKey<'_>) -> Result<Option<String>>;

    /// The keys of the sync state table in the `prefix` family, as the names after the prefix
    /// (repositories), with their values.
    fn sync_state_prefixed(&self, prefix: StatePrefix) -> Result<Vec<(String, String)>>;

    /// Sets (or with `None` removes) a value of the sync state table.
    fn set_sync_state(&self, key: &StateKey<'_>, value: Option<&str>) -> Result<()>;

    /// Increments a counter in the sync state table and returns its new value (used by
    /// `connected-registry sync now`, which a running server notices).
    fn bump_sync_counter(&self, key: &StateKey<'_>) -> Result<i64>;
}
