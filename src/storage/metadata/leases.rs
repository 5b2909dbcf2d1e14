//! Leases: which replica runs the work only one may run at a time (the sync schedule with its
//! push-up, scheduled garbage collection). On shared metadata a lease lives as long as its
//! holder's connection to the database, so a holder that dies (even `kill -9`) loses it at once
//! and another replica takes it over at its next try; on SQLite there is one registry per data
//! directory and a lease is always granted.

use crate::storage::error::Result;

/// Work only one replica runs at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseName {
    /// The sync schedule: pull-down and push-up.
    Sync,
    /// Scheduled garbage collection passes.
    Gc,
}

impl LeaseName {
    /// Its name in logs and status.
    pub fn as_str(self) -> &'static str {
        match self {
            LeaseName::Sync => "sync",
            LeaseName::Gc => "gc",
        }
    }

    /// A stable number for the lease among the database's advisory locks (the bytes of a short
    /// tag, apart from the writer's and the migration's keys).
    pub fn key(self) -> i64 {
        match self {
            LeaseName::Sync => i64::from_be_bytes(*b"cr-lsync"),
            LeaseName::Gc => i64::from_be_bytes(*b"cr-lgc\0\0"),
        }
    }
}

/// A lease held; dropping it lets another replica take it.
pub trait Lease: Send {
    /// Whether it is still held (the connection that holds it is alive); a lost lease is
    /// dropped and taken again before more work is done.
    fn is_held(&mut self) -> bool;
}

/// Taking leases.
pub trait Leases {
    /// The lease `name` if no other replica holds it; `None` when one does.
    fn try_lease(&self, name: LeaseName) -> Result<Option<Box<dyn Lease>>>;
}

/// The lease of a registry that is alone on its metadata: always held.
#[derive(Debug)]
pub struct SoleLease;

impl Lease for SoleLease {
    fn is_held(&mut self) -> bool {
        true
    }
}
