//! Upload session rows, so a session survives a restart and abandoned ones can be found.

use rusqlite::{params, OptionalExtension, Transaction};

use super::SqliteMetadata;
use crate::registry::RepoName;
use crate::storage::error::{Result, StorageError};
use crate::storage::fsutil::now_secs;
use crate::storage::uploads::SessionCaps;

impl SqliteMetadata {
    /// Records a new upload session for `repo` started by `client`, unless a cap on open
    /// sessions is reached: counted and inserted in one write transaction, so concurrent starts
    /// cannot overshoot.
    pub(super) fn create_upload(
        &self,
        id: &str,
        repo: &RepoName,
        client: &str,
        caps: &SessionCaps,
    ) -> Result<()> {
        let now = now_secs();
        self.write(|tx| {
            check_caps(tx, repo, client, caps)?;
            tx.execute(
                "INSERT INTO uploads (id, repo, created, updated, client)
                 VALUES (?1, ?2, ?3, ?3, ?4)",
                params![id, repo.as_str(), now, client],
            )?;
            Ok(())
        })
    }

    /// The repository an upload session belongs to, if the session exists.
    pub(super) fn upload_repo(&self, id: &str) -> Result<Option<String>> {
        self.read(|c| {
            Ok(
                c.query_row("SELECT repo FROM uploads WHERE id = ?1", [id], |r| r.get(0))
                    .optional()?,
            )
        })
    }

    /// Marks activity on a session so the cleaner leaves it alone.
    pub(super) fn touch_upload(&self, id: &str) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "UPDATE uploads SET updated = ?2 WHERE id = ?1",
                params![id, now_secs()],
            )?;
            Ok(())
        })
    }

    /// Forgets a session (finished, cancelled or expired).
    pub(super) fn delete_upload(&self, id: &str) -> Result<()> {
        self.write(|tx| {
            tx.execute("DELETE FROM uploads WHERE id = ?1", [id])?;
            Ok(())
        })
    }

    /// Sessions idle since before `cutoff` (Unix seconds).
    pub(super) fn idle_uploads(&self, cutoff: i64) -> Result<Vec<String>> {
        self.read(|c| {
            let mut stmt = c.prepare("SELECT id FROM uploads WHERE updated < ?1")?;
            let rows = stmt.query_map([cutoff], |r| r.get(0))?;
            Ok(rows.collect::<rusqlite::Result<Vec<String>>>()?)
        })
    }

    /// Every session id, to tell live upload files from orphans at startup.
    pub(super) fn all_uploads(&self) -> Result<Vec<String>> {
        self.idle_uploads(i64::MAX)
    }
}

/// Refuses a new session when the registry, the repository or the client has its fill.
fn check_caps(tx: &Transaction, repo: &RepoName, client: &str, caps: &SessionCaps) -> Result<()> {
    let count = |sql: &str, arg: Option<&str>| -> Result<u64> {
        let n: i64 = match arg {
            Some(a) => tx.query_row(sql, [a], |r| r.get(0))?,
            None => tx.query_row(sql, [], |r| r.get(0))?,
        };
        Ok(n.max(0) as u64)
    };
    let full = |what: &str, cap: u64| {
        Err(StorageError::TooManySessions(format!(
            "too many open upload sessions {what} (at most {cap}); finish or cancel one, \
             or retry later"
        )))
    };
    if count("SELECT count(*) FROM uploads", None)? >= caps.total {
        return full("in this registry", caps.total);
    }
    if count(
        "SELECT count(*) FROM uploads WHERE repo = ?1",
        Some(repo.as_str()),
    )? >= caps.per_repository
    {
        return full("in this repository", caps.per_repository);
    }
    if count(
        "SELECT count(*) FROM uploads WHERE client = ?1",
        Some(client),
    )? >= caps.per_client
    {
        return full("from this client", caps.per_client);
    }
    Ok(())
}
