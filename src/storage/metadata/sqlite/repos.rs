//! Repositories, blob links and the catalog.

use rusqlite::{params, Connection, OptionalExtension};

use super::refs::link_touched;
use super::SqliteMetadata;
use crate::registry::{Digest, RepoName};
use crate::storage::error::Result;
use crate::storage::fsutil::now_secs;

/// Most repositories looked at as the source of one mount: a blob shared more widely than this
/// is found among the first ones by name, and the lookup stays bounded.
const LINK_SOURCES_MAX: i64 = 10_000;

/// Id of an existing repository.
pub(super) fn repo_id(conn: &Connection, repo: &RepoName) -> Result<Option<i64>> {
    // Cached: nearly every request runs it, and compiling it costs more than the lookup.
    Ok(conn
        .prepare_cached("SELECT id FROM repositories WHERE name = ?1")?
        .query_row([repo.as_str()], |r| r.get(0))
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

/// Links a blob into a repository (creating the repository on first use); idempotent. A link
/// no manifest references yet starts its grace now, and a download's hold on the blob ends:
/// the link keeps it from here on.
fn insert_link(conn: &Connection, repo: &RepoName, digest: &Digest, size: u64) -> Result<()> {
    let id = ensure_repo(conn, repo)?;
    conn.prepare_cached(
        "INSERT OR IGNORE INTO blob_links (repo_id, digest, size, created)
         VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![id, digest.as_str(), size as i64, now_secs()])?;
    link_touched(conn, id, digest.as_str())?;
    conn.prepare_cached("DELETE FROM blob_holds WHERE digest = ?1")?
        .execute([digest.as_str()])?;
    Ok(())
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

impl SqliteMetadata {
    /// Lets `repo` serve the blob if `present` (run under the write lock, which garbage
    /// collection also takes to delete a file) finds its file; the size when it did. So a link
    /// never points at a file a collection pass removed meanwhile.
    pub(super) fn link_if_present(
        &self,
        repo: &RepoName,
        digest: &Digest,
        present: impl FnOnce() -> Result<Option<u64>>,
    ) -> Result<Option<u64>> {
        self.write(|tx| {
            let size = present()?;
            if let Some(size) = size {
                insert_link(tx, repo, digest, size)?;
            }
            Ok(size)
        })
    }

    /// Lets `repo` serve a blob whose file the caller has just placed and still claims (see
    /// `BlobBackend::place`), so no collection pass can have removed it.
    pub(super) fn link_placed(&self, repo: &RepoName, digest: &Digest, size: u64) -> Result<()> {
        self.write(|tx| insert_link(tx, repo, digest, size))
    }

    /// Holds a blob a download has just placed (and still claims) until `until` (Unix
    /// seconds) or its first link, whichever comes first.
    pub(super) fn hold_blob(&self, digest: &Digest, until: i64) -> Result<()> {
        self.write(|tx| {
            tx.prepare_cached(
                "INSERT INTO blob_holds (digest, keep_until) VALUES (?1, ?2)
                 ON CONFLICT (digest) DO UPDATE SET keep_until = max(keep_until, ?2)",
            )?
            .execute(params![digest.as_str(), until])?;
            Ok(())
        })
    }

    /// Links `digest` into `target` when `from` links it, in one transaction; the size when it did.
    pub(super) fn link_from(
        &self,
        target: &RepoName,
        from: &RepoName,
        digest: &Digest,
    ) -> Result<Option<u64>> {
        self.write(|tx| {
            let Some(from_id) = repo_id(tx, from)? else {
                return Ok(None);
            };
            let size = linked_size(tx, from_id, digest)?;
            if let Some(size) = size {
                insert_link(tx, target, digest, size)?;
            }
            Ok(size)
        })
    }

    /// Links `digest` into `target` from the first repository (by name) that links it and that
    /// `accept` approves, in one transaction; that repository and the size when it did.
    pub(super) fn link_from_first(
        &self,
        target: &RepoName,
        digest: &Digest,
        mut accept: impl FnMut(&str) -> bool,
    ) -> Result<Option<(String, u64)>> {
        self.write(|tx| {
            let mut stmt = tx.prepare_cached(
                "SELECT r.name, b.size FROM blob_links b JOIN repositories r ON r.id = b.repo_id
                 WHERE b.digest = ?1 ORDER BY r.name LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![digest.as_str(), LINK_SOURCES_MAX], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
            })?;
            let mut found = None;
            for row in rows {
                let (name, size) = row?;
                if accept(&name) {
                    found = Some((name, size as u64));
                    break;
                }
            }
            if let Some((_, size)) = &found {
                insert_link(tx, target, digest, *size)?;
            }
            Ok(found)
        })
    }

    /// Size of the blob if `repo` may serve it.
    pub(super) fn blob_link(&self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>> {
        self.read(|c| match repo_id(c, repo)? {
            Some(id) => linked_size(c, id, digest),
            None => Ok(None),
        })
    }

    /// Removes the blob from `repo`; false when it was not linked there.
    pub(super) fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool> {
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
    pub(super) fn repo_exists(&self, repo: &RepoName) -> Result<bool> {
        self.read(|c| Ok(repo_id(c, repo)?.is_some()))
    }

    /// Repositories holding at least one manifest, sorted, after `last`, at most `n`.
    pub(super) fn catalog(&self, n: Option<usize>, last: Option<&str>) -> Result<Vec<String>> {
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
