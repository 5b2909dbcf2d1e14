//! A tree of connected registries (DESIGN §1, §6): the root defines every registry below it;
//! configuration and access records flow down, status flows up, and a change feed tells each
//! child what changed at its parent, through layers where each reaches only the one above.
//!
//! - `definition`, `family`: what a registry is and how the tree hangs together;
//! - `admin`: the management commands at the root (`connected-registry connected-registry …`);
//! - `tree`: the configuration a parent hands a child, and applying it there;
//! - `report`: status up, and how the root reads it;
//! - `control`: the parent's side of the exchange (activation, status in, changes out);
//! - `wire`: the exchange's messages; `link`: the child's side.

pub mod admin;
pub mod control;
pub mod definition;
pub mod family;
pub mod link;
pub mod report;
pub mod tree;
pub mod wire;

/// Why a hierarchy operation failed; the texts follow `az acr connected-registry`.
#[derive(Debug, thiserror::Error)]
pub enum HierarchyError {
    /// Bad input.
    #[error("{0}")]
    Invalid(String),
    /// No such registry.
    #[error("{0}")]
    NotFound(String),
    /// It exists already, or is in use.
    #[error("{0}")]
    Conflict(String),
    /// Another instance is active under this name.
    #[error("Failed to activate the connected registry as it is already activated by another instance. Only one instance is supported at any time.")]
    AlreadyActivated,
    /// Access records could not be built.
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
    /// The store failed.
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    /// Anything else.
    #[error("{0}")]
    Internal(String),
}
