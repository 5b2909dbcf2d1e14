//! Repositories, blob links and the catalog.

use rusqlite::{params, Connection, OptionalExtension};

use super::Metadata;
use crate::registry::{Digest, RepoName};
use crate::storage::error::Result;
use crate::storage::fsutil::now_secs;

/// Id of an existing repository.
pub(super) fn repo_id(conn: &Connection, repo: &RepoName) -> Result<Option<i64>> {
    Ok(conn
        .query_row(
            "SELECT id FROM repositories WHERE name = ?1",
            [repo.as_str()],
            |r| r.get(0),
        )
        .optional()?)
}

/// Id of a repository, creating it on first use.
pub(super) fn ensure_repo(conn: &Connection, repo: &RepoName) -> Result<i64> {
    if let Some(id) = repo_id(conn, repo)? {
        return Ok(id);
    }
    conn.execute(
        "INSERT INTO repositories (name, created) VALUES (?1, ?2)",
        params![repo.as_str(), now_secs()],
    )?;
    Ok(conn.last_insert_rowid())
}

/// Size of a blob if it is linked in the repository.
pub(super) fn linked_size(conn: &Connection, repo_id: i64, digest: &Digest) -> Result<Option<u64>> {
    Ok(conn
        .query_row(
            "SELECT size FROM blob_links WHERE repo_id = ?1 AND digest = ?2",
            params![repo_id, digest.as_str()],
            |r| r.get::<_, i64>(0),
        )
        .optional()?
        .map(|s| s as u64))
}

impl Metadata {
    /// Lets `repo` serve the blob (creating the repository on first use).
    pub fn link_blob(&self, repo: &RepoName, digest: &Digest, size: u64) -> Result<()> {
        self.write(|tx| {
            let id = ensure_repo(tx, repo)?;
            tx.execute(
                "INSERT OR IGNORE INTO blob_links (repo_id, digest, size, created)
                 VALUES (?1, ?2, ?3, ?4)",
                params![id, digest.as_str(), size as i64, now_secs()],
            )?;
            Ok(())
        })
    }

    /// Size of the blob if `repo` may serve it.
    pub fn blob_link(&self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>> {
        self.read(|c| match repo_id(c, repo)? {
            Some(id) => linked_size(c, id, digest),
            None => Ok(None),
        })
    }

    /// Removes the blob from `repo`; false when it was not linked there.
    pub fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool> {
        self.write(|tx| {
            let Some(id) = repo_id(tx, repo)? else {
                return Ok(false);
            };
            let n = tx.execute(
                "DELETE FROM blob_links WHERE repo_id = ?1 AND digest = ?2",
                params![id, digest.as_str()],
            )?;
            Ok(n > 0)
        })
    }

    /// True when the repository exists (has ever held content).
    pub fn repo_exists(&self, repo: &RepoName) -> Result<bool> {
        self.read(|c| Ok(repo_id(c, repo)?.is_some()))
    }

    /// Repositories holding at least one manifest, sorted, after `last`, at most `n`.
    pub fn catalog(&self, n: Option<usize>, last: Option<&str>) -> Result<Vec<String>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT name FROM repositories r
                 WHERE name > ?1 AND EXISTS (SELECT 1 FROM manifests m WHERE m.repo_id = r.id)
                 ORDER BY name LIMIT ?2",
            )?;
            let limit = n.map(|n| n as i64).unwrap_or(-1);
            let rows = stmt.query_map(params![last.unwrap_or(""), limit], |r| r.get(0))?;
            Ok(rows.collect::<rusqlite::Result<Vec<String>>>()?)
        })
    }
}
