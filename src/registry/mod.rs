//! OCI semantics with no transport: names, references, digests, manifests and media types.

mod code;
pub mod digest;
mod error;
pub mod manifest;
pub mod media_types;
pub mod name;
pub mod reference;

pub use code::ErrorCode;
pub use digest::{Algorithm, Digest, DigestHasher};
pub use error::{echo, RegistryError};
pub use manifest::{Descriptor, ManifestKind, ParsedManifest};
pub use name::{RepoName, Tag};
pub use reference::Reference;
