//! Typed storage errors; the HTTP edge maps them to spec-shaped responses.

use crate::registry::{Digest, RegistryError};

/// Everything that can go wrong below the HTTP edge.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The disk (or the database on it) is full; nothing partial was made visible.
    #[error("no space left on the registry's storage")]
    NoSpace,
    /// Any other I/O failure, with what was being done.
    #[error("storage I/O error while {context}: {source}")]
    Io {
        /// What the store was doing.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The metadata database failed.
    #[error("metadata database error: {0}")]
    Sqlite(rusqlite::Error),
    /// The PostgreSQL metadata database failed (or could not be reached).
    #[error("metadata database error: {}", postgres_detail(.0))]
    Postgres(postgres::Error),
    /// The database exists but is not one we can use.
    #[error("metadata database is corrupt or not ours: {0}")]
    Corrupt(String),
    /// Uploaded content did not hash to the digest the client promised.
    #[error("digest mismatch: the content hashes to {actual}, not {expected}")]
    DigestMismatch {
        /// Digest the client asked for.
        expected: Digest,
        /// Digest of the bytes received.
        actual: Digest,
    },
    /// A chunk did not start where the upload currently ends.
    #[error("chunk out of order: the upload is at byte {offset}")]
    RangeInvalid {
        /// Current size of the upload.
        offset: u64,
    },
    /// The upload session is unknown (never started, finished, cancelled or expired).
    #[error("upload session unknown")]
    UploadUnknown,
    /// The blob is not known in this repository.
    #[error("blob unknown to this repository: {0}")]
    BlobUnknown(Digest),
    /// The manifest or tag is not known in this repository.
    #[error("manifest unknown: {0}")]
    ManifestUnknown(String),
    /// The repository does not exist.
    #[error("repository name not known to this registry")]
    NameUnknown,
    /// A manifest references blobs this repository does not have.
    #[error("manifest references a blob unknown to this repository: {0}")]
    ManifestBlobUnknown(Digest),
    /// A named access-control record (token, scope map) already exists.
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// A named access-control record does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// Someone else is doing this already (a download, a collection pass); try again later.
    #[error("{0}")]
    Busy(String),
    /// A storage backend's settings cannot be used (a malformed URL or credential).
    #[error("{0}")]
    Config(String),
    /// A cap on open upload sessions is reached; one must finish or lapse first.
    #[error("{0}")]
    TooManySessions(String),
    /// A record cannot be deleted while others refer to it.
    #[error("{0}")]
    InUse(String),
    /// The request is well-formed but its content is not (bad digest, name, manifest).
    #[error(transparent)]
    Invalid(#[from] RegistryError),
}

/// Storage result.
pub type Result<T> = std::result::Result<T, StorageError>;

impl StorageError {
    /// Wraps an I/O error with context, recognising a full disk.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        if is_no_space(&source) {
            StorageError::NoSpace
        } else {
            StorageError::Io {
                context: context.into(),
                source,
            }
        }
    }
}

/// True when an I/O error means the filesystem (or quota) is full.
pub fn is_no_space(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    ) || e.raw_os_error() == Some(28)
}

impl From<rusqlite::Error> for StorageError {
    fn from(e: rusqlite::Error) -> Self {
        match &e {
            rusqlite::Error::SqliteFailure(f, _)
                if f.code == rusqlite::ErrorCode::DiskFull
                    || f.extended_code == rusqlite::ffi::SQLITE_IOERR_WRITE =>
            {
                StorageError::NoSpace
            }
            rusqlite::Error::SqliteFailure(f, _)
                if f.code == rusqlite::ErrorCode::NotADatabase
                    || f.code == rusqlite::ErrorCode::DatabaseCorrupt =>
            {
                StorageError::Corrupt(e.to_string())
            }
            _ => StorageError::Sqlite(e),
        }
    }
}

impl From<postgres::Error> for StorageError {
    fn from(e: postgres::Error) -> Self {
        use postgres::error::SqlState;
        match e.code() {
            Some(c) if *c == SqlState::DISK_FULL => StorageError::NoSpace,
            Some(c) if *c == SqlState::DATA_CORRUPTED || *c == SqlState::INDEX_CORRUPTED => {
                StorageError::Corrupt(postgres_detail(&e))
            }
            _ => StorageError::Postgres(e),
        }
    }
}

/// The client's error with its cause: its own message is only the kind ("db error"), while the
/// server's message (or the I/O error) that says what went wrong is the cause.
fn postgres_detail(e: &postgres::Error) -> String {
    match std::error::Error::source(e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}
