//! Upload session rows, so a session survives a restart and abandoned ones can be found.

use rusqlite::{params, OptionalExtension};

use super::Metadata;
use crate::registry::RepoName;
use crate::storage::error::Result;
use crate::storage::fsutil::now_secs;

impl Metadata {
    /// Records a new upload session for `repo`.
    pub fn create_upload(&self, id: &str, repo: &RepoName) -> Result<()> {
        let now = now_secs();
        self.write(|tx| {
            tx.execute(
                "INSERT INTO uploads (id, repo, created, updated) VALUES (?1, ?2, ?3, ?3)",
                params![id, repo.as_str(), now],
            )?;
            Ok(())
        })
    }

    /// The repository an upload session belongs to, if the session exists.
    pub fn upload_repo(&self, id: &str) -> Result<Option<String>> {
        self.read(|c| {
            Ok(
                c.query_row("SELECT repo FROM uploads WHERE id = ?1", [id], |r| r.get(0))
                    .optional()?,
            )
        })
    }

    /// Marks activity on a session so the cleaner leaves it alone.
    pub fn touch_upload(&self, id: &str) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "UPDATE uploads SET updated = ?2 WHERE id = ?1",
                params![id, now_secs()],
            )?;
            Ok(())
        })
    }

    /// Forgets a session (finished, cancelled or expired).
    pub fn delete_upload(&self, id: &str) -> Result<()> {
        self.write(|tx| {
            tx.execute("DELETE FROM uploads WHERE id = ?1", [id])?;
            Ok(())
        })
    }

    /// Sessions idle since before `cutoff` (Unix seconds).
    pub fn idle_uploads(&self, cutoff: i64) -> Result<Vec<String>> {
        self.read(|c| {
            let mut stmt = c.prepare("SELECT id FROM uploads WHERE updated < ?1")?;
            let rows = stmt.query_map([cutoff], |r| r.get(0))?;
            Ok(rows.collect::<rusqlite::Result<Vec<String>>>()?)
        })
    }

    /// Every session id, to tell live upload files from orphans at startup.
    pub fn all_uploads(&self) -> Result<Vec<String>> {
        self.idle_uploads(i64::MAX)
    }
}
