//! Shared secrets in SQLite (see `metadata::Secrets`).

use rusqlite::{params, OptionalExtension};

use super::SqliteMetadata;
use crate::storage::error::{Result, StorageError};
use crate::storage::fsutil::now_secs;
use crate::storage::metadata::Secrets;

impl Secrets for SqliteMetadata {
    fn secret_or_insert(&self, name: &str, fresh: &[u8]) -> Result<Vec<u8>> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO secrets (name, value, created) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name) DO NOTHING",
                params![name, fresh, now_secs()],
            )?;
            tx.query_row("SELECT value FROM secrets WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()?
            .ok_or_else(|| StorageError::Corrupt(format!("secret {name} vanished")))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first value stays; later callers get it back.
    #[test]
    fn the_first_secret_stored_wins() {
        let tmp = tempfile::TempDir::new().unwrap_or_else(|e| panic!("{e}"));
        let meta = SqliteMetadata::open(tmp.path()).unwrap_or_else(|e| panic!("{e}"));
        let first = meta
            .secret_or_insert("k", b"one")
            .unwrap_or_else(|e| panic!("{e}"));
        let again = meta
            .secret_or_insert("k", b"two")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (first.as_slice(), again.as_slice()),
            (&b"one"[..], &b"one"[..])
        );
        let other = meta
            .secret_or_insert("j", b"two")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(other, b"two");
    }
}
