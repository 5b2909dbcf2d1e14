//! Keeping the local replica in step with the parent (DESIGN §6): the sync policy and when sync
//! runs, the parent client, blob transfers, pull-down, fetch-through and status.

pub mod audit;
pub mod backoff;
pub mod engine;
pub mod error;
pub mod fetch;
pub mod limiter;
pub mod pace;
pub mod parent;
pub mod policy;
pub mod pulldown;
pub mod pushup;
pub mod schedule;
pub mod scheduler;
pub mod service;
pub mod slot;
pub mod status;
pub mod transfer;
pub mod upload;

pub use error::SyncError;

/// Runs metadata and file work in place on a sync runtime worker (it may block briefly; the
/// sync runtime is multi-threaded and apart from request handling).
pub(crate) fn local<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}
pub use service::SyncService;
pub use slot::SyncSlot;
pub use status::{ConnectionState, StatusReport};
