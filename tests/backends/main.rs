//! Storage backends under the real binary: blobs kept in object storage (Azure Blob Storage on
//! Azurite, the Azure Storage emulator) while real clients push and pull.

#[path = "../common/mod.rs"]
mod common;

mod azure;
