//! Metadata: repositories, blob links, manifests, tags, referrers, upload sessions, the event
//! log, sync state, access records and the tree of connected registries.
//!
//! The seam is a set of traits split by concern (`Content`, `Listings`, `EventLog`,
//! `UploadSessions`, `SyncState`, `AccessRecords`, `Hierarchy`, `Collection`, `Secrets`, `Leases`), gathered in
//! `MetadataStore`; callers never see SQL. Each call is one transaction, so a multi-step change
//! cannot be left half-done. Two implementations: SQLite in the data directory (the embedded
//! default, `sqlite`) and PostgreSQL shared by several replicas (`postgres`).

mod access;
mod collection;
#[cfg(test)]
mod conformance;
mod content;
mod events;
mod hierarchy;
mod leases;
mod location;
pub mod postgres;
mod secrets;
pub mod sqlite;
mod state;
mod state_key;
mod uploads;

pub use access::{AccessRecords, AccessRows, RecordSource, ScopeMapRow, TokenRow};
pub use collection::Collection;
pub use content::{
    Content, ContentCounts, Listings, ManifestRecord, Referrer, RepoSummary, TagEntry,
};
pub use events::{Event, EventAction, EventLog, Origin};
pub use hierarchy::{Hierarchy, HierarchyChange, RegistryRow};
pub use leases::{Lease, LeaseName, Leases, SoleLease};
pub use location::MetadataLocation;
pub use secrets::Secrets;
pub use sqlite::SqliteMetadata;
pub use state::SyncState;
pub use state_key::{StateKey, StatePrefix};
pub use uploads::UploadSessions;

use super::error::Result;

/// Everything the registry keeps as metadata, whichever database holds it.
pub trait MetadataStore:
    Content
    + Listings
    + EventLog
    + UploadSessions
    + SyncState
    + AccessRecords
    + Hierarchy
    + Collection
    + Secrets
    + Leases
    + Send
    + Sync
    + std::fmt::Debug
{
    /// Tidies the database at shutdown (SQLite flushes its write-ahead log into the main file).
    fn checkpoint(&self) -> Result<()> {
        Ok(())
    }
}
