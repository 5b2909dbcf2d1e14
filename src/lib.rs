//! connected-registry: an OCI registry for the edge that keeps a local replica of its parent's images.
//!
//! The module tree mirrors the architecture (see DESIGN.md §8): `api` is the HTTP edge, `registry`
//! holds transport-free OCI semantics, `storage` the crash-safe content store and metadata.

pub mod api;
pub mod auth;
pub mod config;
pub mod deploy;
pub mod edge;
/// Entry points for the fuzz targets in `fuzz/` and their seed tests (not an API).
#[doc(hidden)]
pub mod fuzzing;
pub mod gc;
pub mod hierarchy;
pub mod metrics;
pub mod node;
pub mod notify;
pub mod registry;
pub mod storage;
pub mod sync;
/// Real servers that tests run against (not an API).
#[doc(hidden)]
pub mod testing;
