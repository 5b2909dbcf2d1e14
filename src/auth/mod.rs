//! Access control: ACR-style tokens and scope maps, password hashes, bearer tokens, throttling.
//!
//! Transport-free: the HTTP edge (`api::auth`) extracts credentials and asks this module.

pub mod admin;
pub mod audit;
mod authenticator;
pub mod bearer;
pub mod model;
pub mod password;
pub mod scope;
mod snapshot;
pub mod throttle;
pub mod token;

pub use authenticator::{Authenticator, Issued, Principal};
pub use model::{Action, ActionSet, GatewayAction};
pub use snapshot::scope_map_from_row;

/// Why an access-control operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Bad input to a management command or request.
    #[error("{0}")]
    Invalid(String),
    /// Wrong or unusable credentials (the detail is for logs, not clients).
    #[error("authentication failed: {0}")]
    Unauthorized(String),
    /// A bearer token that does not verify.
    #[error("invalid bearer token: {0}")]
    BadToken(String),
    /// The store failed.
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    /// Anything else (randomness, signing).
    #[error("{0}")]
    Internal(String),
}
