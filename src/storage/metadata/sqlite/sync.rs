//! What sync needs from metadata: tag maps, whole-repository removal and a small state table.

use rusqlite::{params, OptionalExtension};

use super::manifests::{delete_tag_row, manifest_gone, set_tag_row, tag_target, TagTarget};
use super::repos::repo_id;
use super::SqliteMetadata;
use crate::registry::{Digest, RepoName, Tag};
use crate::storage::error::Result;
use crate::storage::fsutil::now_secs;
use crate::storage::metadata::{Origin, StateKey, StatePrefix};

impl SqliteMetadata {
    /// Every tag of `repo` with the digest it points at, sorted by tag; empty when unknown.
    pub(super) fn tag_digests(&self, repo: &RepoName) -> Result<Vec<(String, String)>> {
        self.read(|c| {
            let Some(id) = repo_id(c, repo)? else {
                return Ok(Vec::new());
            };
            let mut stmt =
                c.prepare_cached("SELECT name, digest FROM tags WHERE repo_id = ?1 ORDER BY name")?;
            let rows = stmt.query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    /// Removes a repository with its tags, manifests and blob links (blob files stay for other
    /// repositories); every tag and manifest removal is logged. False when it did not exist.
    pub(super) fn delete_repository_as(&self, origin: Origin, repo: &RepoName) -> Result<bool> {
        self.write(|tx| {
            let Some(id) = repo_id(tx, repo)? else {
                return Ok(false);
            };
            let tags: Vec<(String, String)> = {
                let mut stmt =
                    tx.prepare_cached("SELECT name, digest FROM tags WHERE repo_id = ?1")?;
                let rows = stmt.query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))?;
                rows.collect::<rusqlite::Result<_>>()?
            };
            for (tag, digest) in &tags {
                delete_tag_row(tx, repo, id, tag, digest, origin)?;
            }
            let manifests: Vec<String> = {
                let mut stmt =
                    tx.prepare_cached("SELECT digest FROM manifests WHERE repo_id = ?1")?;
                let rows = stmt.query_map([id], |r| r.get(0))?;
                rows.collect::<rusqlite::Result<_>>()?
            };
            tx.execute("DELETE FROM manifests WHERE repo_id = ?1", [id])?;
            tx.execute("DELETE FROM manifest_refs WHERE repo_id = ?1", [id])?;
            tx.execute("DELETE FROM blob_links WHERE repo_id = ?1", [id])?;
            tx.execute("DELETE FROM repositories WHERE id = ?1", [id])?;
            for digest in &manifests {
                manifest_gone(tx, repo, digest, origin)?;
            }
            Ok(true)
        })
    }

    /// Points `tag` at a manifest already stored in `repo`; false when the manifest is not
    /// there. A tag already pointing at it is left alone (no event).
    pub(super) fn set_tag_as(
        &self,
        origin: Origin,
        repo: &RepoName,
        tag: &Tag,
        digest: &Digest,
    ) -> Result<bool> {
        self.set_tag_checked(origin, repo, tag, digest, None)
    }

    /// `set_tag_as`, but only while the tag still points at `expected` (`None`: absent), so a
    /// client's move made meanwhile is never overwritten; false when it moved.
    pub(super) fn set_tag_if(
        &self,
        origin: Origin,
        repo: &RepoName,
        tag: &Tag,
        digest: &Digest,
        expected: Option<&str>,
    ) -> Result<bool> {
        self.set_tag_checked(origin, repo, tag, digest, Some(expected))
    }

    fn set_tag_checked(
        &self,
        origin: Origin,
        repo: &RepoName,
        tag: &Tag,
        digest: &Digest,
        expected: Option<Option<&str>>,
    ) -> Result<bool> {
        self.write(|tx| {
            let Some(id) = repo_id(tx, repo)? else {
                return Ok(false);
            };
            let row: Option<(String, i64)> = tx
                .query_row(
                    "SELECT media_type, size FROM manifests WHERE repo_id = ?1 AND digest = ?2",
                    params![id, digest.as_str()],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let Some((media_type, size)) = row else {
                return Ok(false);
            };
            let previous = tag_target(tx, id, tag.as_str())?;
            if previous.as_deref() == Some(digest.as_str()) {
                return Ok(true);
            }
            if expected.is_some_and(|e| e != previous.as_deref()) {
                return Ok(false);
            }
            let target = TagTarget {
                digest: digest.as_str(),
                media_type: &media_type,
                size,
            };
            set_tag_row(
                tx,
                repo,
                id,
                tag.as_str(),
                &target,
                previous.as_deref(),
                origin,
            )?;
            Ok(true)
        })
    }

    /// Repositories that link `digest` (candidates to mount it from at the parent).
    pub(super) fn repos_linking(&self, digest: &Digest) -> Result<Vec<String>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT r.name FROM blob_links b JOIN repositories r ON r.id = b.repo_id
                 WHERE b.digest = ?1 ORDER BY r.name LIMIT 8",
            )?;
            let rows = stmt.query_map([digest.as_str()], |r| r.get(0))?;
            Ok(rows.collect::<rusqlite::Result<Vec<String>>>()?)
        })
    }

    /// Bytes of blobs that client manifest pushes of `repo` after event `after` reference.
    pub(super) fn outbox_bytes(&self, repo: &str, after: i64) -> Result<u64> {
        self.read(|c| {
            Ok(c.query_row(
                "SELECT COALESCE(SUM(b.size), 0) + COALESCE((SELECT SUM(size) FROM events
                     WHERE repo = ?1 AND seq > ?2 AND origin = 'client' AND action = 'manifest_put'), 0)
                 FROM events e
                 JOIN repositories r ON r.name = e.repo
                 JOIN manifest_refs m ON m.repo_id = r.id AND m.parent = e.digest AND m.kind = 'blob'
                 JOIN blob_links b ON b.repo_id = r.id AND b.digest = m.child
                 WHERE e.repo = ?1 AND e.seq > ?2 AND e.origin = 'client' AND e.action = 'manifest_put'",
                params![repo, after],
                |r| r.get::<_, i64>(0),
            )? as u64)
        })
    }

    /// The newest event's sequence number (0 with none): a cheap check for new events.
    pub(super) fn newest_event_seq(&self) -> Result<i64> {
        self.read(
            |c| Ok(c.query_row("SELECT coalesce(max(seq), 0) FROM events", [], |r| r.get(0))?),
        )
    }

    /// A value of the sync state table (status snapshot, per-repository records, requests).
    pub(super) fn sync_state(&self, key: &StateKey<'_>) -> Result<Option<String>> {
        let key = key.as_key();
        self.read(|c| {
            Ok(
                c.query_row("SELECT value FROM sync_state WHERE key = ?1", [&key], |r| {
                    r.get(0)
                })
                .optional()?,
            )
        })
    }

    /// The keys of the sync state table in the `prefix` family, as the names after the prefix
    /// (repositories), with their values.
    pub(super) fn sync_state_prefixed(&self, prefix: StatePrefix) -> Result<Vec<(String, String)>> {
        let prefix = prefix.as_str();
        let rows: Vec<(String, String)> = self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT key, value FROM sync_state WHERE substr(key, 1, length(?1)) = ?1 ORDER BY key",
            )?;
            let rows = stmt.query_map([prefix], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })?;
        Ok(rows
            .into_iter()
            .filter_map(|(k, v)| Some((k.strip_prefix(prefix)?.to_owned(), v)))
            .collect())
    }

    /// Sets (or with `None` removes) a value of the sync state table.
    pub(super) fn set_sync_state(&self, key: &StateKey<'_>, value: Option<&str>) -> Result<()> {
        let key = key.as_key();
        self.write(|tx| {
            match value {
                Some(v) => tx.execute(
                    "INSERT INTO sync_state (key, value, updated) VALUES (?1, ?2, ?3)
                     ON CONFLICT (key) DO UPDATE SET value = ?2, updated = ?3",
                    params![key, v, now_secs()],
                )?,
                None => tx.execute("DELETE FROM sync_state WHERE key = ?1", [&key])?,
            };
            Ok(())
        })
    }

    /// Increments a counter in the sync state table and returns its new value (used by
    /// `connected-registry sync now`, which a running server notices).
    pub(super) fn bump_sync_counter(&self, key: &StateKey<'_>) -> Result<i64> {
        let key = key.as_key();
        self.write(|tx| {
            let current: Option<String> = tx
                .query_row("SELECT value FROM sync_state WHERE key = ?1", [&key], |r| {
                    r.get(0)
                })
                .optional()?;
            let next = current.and_then(|v| v.parse::<i64>().ok()).unwrap_or(0) + 1;
            tx.execute(
                "INSERT INTO sync_state (key, value, updated) VALUES (?1, ?2, ?3)
                 ON CONFLICT (key) DO UPDATE SET value = ?2, updated = ?3",
                params![key, next.to_string(), now_secs()],
            )?;
            Ok(next)
        })
    }
}
