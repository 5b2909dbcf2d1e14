//! Shared secrets in PostgreSQL (see `metadata::Secrets`).

use super::PgMetadata;
use crate::storage::error::Result;
use crate::storage::fsutil::now_secs;
use crate::storage::metadata::Secrets;

impl Secrets for PgMetadata {
    fn secret_or_insert(&self, name: &str, fresh: &[u8]) -> Result<Vec<u8>> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO secrets (name, value, created) VALUES ($1, $2, $3)
                 ON CONFLICT (name) DO NOTHING",
                &[&name, &fresh, &now_secs()],
            )?;
            let row = tx.query_one("SELECT value FROM secrets WHERE name = $1", &[&name])?;
            Ok(row.try_get(0)?)
        })
    }
}
