//! Secrets every replica must hold alike, kept with the metadata they share: the bearer token
//! signing key, so a token one replica issued is valid at all of them. Whoever can read the
//! metadata can read the password hashes already; the key adds no new exposure.

use crate::storage::error::Result;

/// Storing shared secrets.
pub trait Secrets {
    /// The secret `name`, stored as `fresh` when there is none yet: the first caller's bytes
    /// win, and every caller (every replica, however many start at once) gets the same ones.
    fn secret_or_insert(&self, name: &str, fresh: &[u8]) -> Result<Vec<u8>>;
}
