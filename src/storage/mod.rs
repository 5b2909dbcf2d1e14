//! The crash-safe content store: blobs, upload sessions and metadata.
//!
//! Nothing here knows about HTTP. `Store` bundles the parts one data directory holds.

mod blob_io;
pub mod blobs;
mod commit;
pub mod error;
pub mod fsutil;
pub mod gc;
pub mod metadata;
mod mount;
pub mod partial;
pub mod reader;
pub mod uploads;
pub mod writer;

use std::path::{Path, PathBuf};

pub use blobs::{BlobBackend, BlobLocation, LocalBlobs, Placed};
pub use error::{Result, StorageError};
pub use gc::{GcLock, GcOptions, GcReport};
pub use metadata::{MetadataLocation, MetadataStore, Origin, SqliteMetadata};
pub use partial::Partials;
pub use reader::BlobReader;
pub use uploads::Uploads;

/// Where a registry's blobs and metadata are kept: both in the data directory by default, or
/// on backends several replicas share.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Backends {
    /// Where blobs are kept (`--blob-store`).
    pub blobs: BlobLocation,
    /// Where metadata is kept (`--metadata`).
    pub metadata: MetadataLocation,
}

/// Everything stored under one data directory.
#[derive(Debug)]
pub struct Store {
    /// The data directory itself.
    pub root: PathBuf,
    /// Blob files (callers go through `Store`'s blob operations).
    blobs: Box<dyn BlobBackend>,
    /// Metadata database.
    pub meta: Box<dyn MetadataStore>,
    /// Upload sessions.
    uploads: Uploads,
    /// Downloads from the parent in progress.
    partials: Partials,
}

impl Store {
    /// Opens (creating if needed) the store in `data_dir` and tidies what a crash left behind.
    pub fn open(data_dir: &Path) -> Result<Self> {
        Self::open_with(data_dir, &Backends::default())
    }

    /// Opens the store in `data_dir` with its blobs and metadata kept on `backends`, and tidies
    /// what a crash left behind.
    pub fn open_with(data_dir: &Path, backends: &Backends) -> Result<Self> {
        let store = Self::open_beside_with(data_dir, backends)?;
        let shared = backends.metadata.is_shared();
        let orphans = store.uploads.remove_orphans(&*store.meta, shared)?;
        if orphans > 0 {
            tracing::info!(
                orphans,
                "removed unfinished upload files left by a previous run"
            );
        }
        Ok(store)
    }

    /// Opens the store in `data_dir` without tidying, for a command that runs beside a server
    /// on the same directory (whose one-request uploads in flight look like leftovers).
    pub fn open_beside(data_dir: &Path) -> Result<Self> {
        Self::open_beside_with(data_dir, &Backends::default())
    }

    /// `open_beside` with the blobs and metadata kept on `backends`.
    pub fn open_beside_with(data_dir: &Path, backends: &Backends) -> Result<Self> {
        // Absolute from here on, so the directory stays the same whatever the process does later
        // and every log line and message names it unambiguously.
        let data_dir = &std::path::absolute(data_dir)
            .map_err(|e| StorageError::io(format!("resolving {}", data_dir.display()), e))?;
        fsutil::create_dir_durable(data_dir)?;
        check_writable(data_dir)?;
        let blobs = backends.blobs.open(data_dir)?;
        let meta = backends.metadata.open(data_dir)?;
        let uploads = Uploads::open(data_dir, backends.metadata.is_shared())?;
        let partials = Partials::open(data_dir)?;
        Ok(Store {
            root: data_dir.to_path_buf(),
            blobs,
            meta,
            uploads,
            partials,
        })
    }

    /// Bytes free on the data directory's filesystem.
    pub fn free_bytes(&self) -> Result<u64> {
        fsutil::free_bytes(&self.root)
    }
}

/// Fails early, with a clear message, when the data directory cannot be written.
fn check_writable(dir: &Path) -> Result<()> {
    let probe = dir.join(".write-probe");
    std::fs::write(&probe, b"ok")
        .and_then(|_| std::fs::remove_file(&probe))
        .map_err(|e| StorageError::io(format!("writing to data directory {}", dir.display()), e))
}
