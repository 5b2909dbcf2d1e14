//! Storage backends under the real binary: blobs kept in object storage (Azure Blob Storage on
//! Azurite, the Azure Storage emulator) while real clients push and pull, and replicas sharing
//! PostgreSQL metadata and those blobs.

#[path = "../common/mod.rs"]
mod common;

mod azure;
mod replicas;
