//! Leases on SQLite: one registry per data directory, so every lease is granted.

use super::SqliteMetadata;
use crate::storage::error::Result;
use crate::storage::metadata::{Lease, LeaseName, Leases, SoleLease};

impl Leases for SqliteMetadata {
    fn try_lease(&self, _name: LeaseName) -> Result<Option<Box<dyn Lease>>> {
        Ok(Some(Box::new(SoleLease)))
    }
}
