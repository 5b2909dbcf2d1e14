//! Why a sync step failed, and the status code it is reported under.

use super::parent::ParentError;
use super::status::DetailCode;
use crate::storage::StorageError;

/// A failed sync step.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The parent could not be reached or refused.
    #[error("parent: {0}")]
    Parent(#[from] ParentError),
    /// Local storage failed (disk full, I/O).
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    /// The parent sent something unusable (bad manifest, wrong size or digest).
    #[error("{0}")]
    Invalid(String),
    /// A failure of a download shared with other waiters.
    #[error("{message}")]
    Shared {
        /// Its status code.
        code: DetailCode,
        /// What happened.
        message: String,
    },
    /// The sync window closed or the registry is shutting down.
    #[error("stopped: {0}")]
    Stopped(&'static str),
}

impl SyncError {
    /// The `statusDetails` code this failure is reported under.
    pub fn code(&self) -> DetailCode {
        match self {
            SyncError::Parent(p) => p.code(),
            SyncError::Storage(StorageError::NoSpace) => DetailCode::DiskError,
            SyncError::Storage(_) => DetailCode::StorageError,
            SyncError::Invalid(_) => DetailCode::ParentProtocolError,
            SyncError::Shared { code, .. } => *code,
            SyncError::Stopped(_) => DetailCode::SyncStopped,
        }
    }

    /// Whether retrying later may succeed without anyone changing anything.
    pub fn is_transient(&self) -> bool {
        match self {
            SyncError::Parent(p) => p.is_transient(),
            SyncError::Storage(_) => true,
            SyncError::Invalid(_) => false,
            SyncError::Shared { .. } => true,
            SyncError::Stopped(_) => true,
        }
    }

    /// True when the parent is unreachable (the registry is then `Offline`, not `Unhealthy`).
    pub fn is_offline(&self) -> bool {
        matches!(self, SyncError::Parent(ParentError::Unreachable(_)))
    }
}
