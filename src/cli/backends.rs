//! The `--blob-store` and `--metadata` flags every command that works on a registry takes, so
//! replicas and their management commands all name the same shared backends.

use clap::Args;

/// Where a registry's blobs and metadata are kept.
#[derive(Args, Debug, Clone, Default)]
pub struct BackendArgs {
    /// Where blobs are kept: az://<container> (Azure Blob Storage, account from AZURE_*), or
    /// data-dir [default: data-dir].
    #[arg(long, env = "CONNECTED_REGISTRY_BLOB_STORE", global = true)]
    pub blob_store: Option<String>,
    /// Where metadata is kept: postgres://user:password@host:port/db (shared by replicas), or
    /// data-dir (SQLite in the data directory) [default: data-dir].
    #[arg(long, env = "CONNECTED_REGISTRY_METADATA", global = true)]
    pub metadata: Option<String>,
}
