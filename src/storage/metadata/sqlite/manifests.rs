//! Manifests (byte-exact), tags and referrers.

use rusqlite::{params, Connection, OptionalExtension};

use super::events::{append, NewEvent};
use super::refs::{blobs_referenced, release_refs, tags_changed};
use super::repos::{ensure_repo, linked_size, repo_id};
use super::SqliteMetadata;
use crate::registry::{Digest, ParsedManifest, Reference, RepoName, Tag};
use crate::storage::error::{Result, StorageError};
use crate::storage::fsutil::now_secs;
use crate::storage::metadata::{EventAction, ManifestRecord, Origin, Referrer};

/// Digest a tag points at.
pub(super) fn tag_target(conn: &Connection, repo_id: i64, tag: &str) -> Result<Option<String>> {
    // Cached: every manifest request by tag runs it, and compiling it costs more than the lookup.
    Ok(conn
        .prepare_cached("SELECT digest FROM tags WHERE repo_id = ?1 AND name = ?2")?
        .query_row(params![repo_id, tag], |r| r.get(0))
        .optional()?)
}

impl SqliteMetadata {
    /// Stores a validated manifest and points `tags` at it in one durable transaction, recording
    /// who made the change in the event log.
    pub(super) fn put_manifest_as(
        &self,
        origin: Origin,
        repo: &RepoName,
        digest: &Digest,
        manifest: &ParsedManifest,
        body: &[u8],
        tags: &[Tag],
    ) -> Result<()> {
        let annotations = match &manifest.annotations {
            Some(a) if !a.is_empty() => serde_json::to_string(a).ok(),
            _ => None,
        };
        self.write(|tx| {
            let id = ensure_repo(tx, repo)?;
            for blob in manifest.required_blobs() {
                if linked_size(tx, id, &blob.digest)?.is_none() {
                    return Err(StorageError::ManifestBlobUnknown(blob.digest.clone()));
                }
            }
            let size = body.len() as i64;
            tx.prepare_cached(
                "INSERT OR IGNORE INTO manifest_content (digest, media_type, body) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![digest.as_str(), manifest.media_type, body])?;
            let inserted = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO manifests
                     (repo_id, digest, media_type, size, subject, artifact_type, annotations, created,
                      untagged_since)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)",
                )?
                .execute(params![
                    id,
                    digest.as_str(),
                    manifest.media_type,
                    size,
                    manifest.subject.as_ref().map(|s| s.digest.as_str()),
                    manifest.effective_artifact_type(),
                    annotations,
                    now_secs()
                ])?;
            if inserted > 0 {
                let mut refs = tx.prepare_cached(
                    "INSERT OR IGNORE INTO manifest_refs (repo_id, parent, child, kind)
                     VALUES (?1, ?2, ?3, ?4)",
                )?;
                for blob in manifest.config.iter().chain(manifest.layers.iter()) {
                    refs.execute(params![id, digest.as_str(), blob.digest.as_str(), "blob"])?;
                }
                for child in manifest.child_manifests() {
                    refs.execute(params![id, digest.as_str(), child.digest.as_str(), "manifest"])?;
                }
                let blobs = manifest.config.iter().chain(manifest.layers.iter());
                blobs_referenced(tx, id, blobs.map(|b| b.digest.as_str()))?;
                append(
                    tx,
                    NewEvent {
                        repo: repo.as_str(),
                        action: EventAction::ManifestPut,
                        tag: None,
                        digest: digest.as_str(),
                        previous: None,
                        media_type: Some(&manifest.media_type),
                        size: Some(size),
                        origin,
                    },
                )?;
            }
            for tag in tags {
                let previous = tag_target(tx, id, tag.as_str())?;
                if previous.as_deref() == Some(digest.as_str()) {
                    continue;
                }
                let target = TagTarget {
                digest: digest.as_str(),
                media_type: &manifest.media_type,
                size,
            };
                set_tag_row(tx, repo, id, tag.as_str(), &target, previous.as_deref(), origin)?;
            }
            Ok(())
        })
    }

    /// Looks a manifest up by tag or digest; with `with_body` the bytes are read too.
    pub(super) fn manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        with_body: bool,
    ) -> Result<Option<ManifestRecord>> {
        self.read(|c| {
            let Some(id) = repo_id(c, repo)? else {
                return Ok(None);
            };
            let digest = match reference {
                Reference::Digest(d) => d.as_str().to_owned(),
                Reference::Tag(t) => match tag_target(c, id, t.as_str())? {
                    Some(d) => d,
                    None => return Ok(None),
                },
            };
            let sql = if with_body {
                "SELECT m.media_type, m.size, c.body FROM manifests m
                 JOIN manifest_content c ON c.digest = m.digest
                 WHERE m.repo_id = ?1 AND m.digest = ?2"
            } else {
                "SELECT media_type, size, NULL FROM manifests WHERE repo_id = ?1 AND digest = ?2"
            };
            Ok(c.prepare_cached(sql)?
                .query_row(params![id, digest], |r| {
                    Ok(ManifestRecord {
                        digest: digest.clone(),
                        media_type: r.get(0)?,
                        size: r.get::<_, i64>(1)? as u64,
                        body: r.get(2)?,
                    })
                })
                .optional()?)
        })
    }

    /// Deletes a manifest and every tag pointing at it, recording who did in the event log.
    pub(super) fn delete_manifest_as(
        &self,
        origin: Origin,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<()> {
        self.write(|tx| {
            let unknown = || StorageError::ManifestUnknown(digest.to_string());
            let id = repo_id(tx, repo)?.ok_or_else(unknown)?;
            let tags: Vec<String> = {
                let mut stmt =
                    tx.prepare_cached("SELECT name FROM tags WHERE repo_id = ?1 AND digest = ?2")?;
                let rows = stmt.query_map(params![id, digest.as_str()], |r| r.get(0))?;
                rows.collect::<rusqlite::Result<_>>()?
            };
            for tag in &tags {
                delete_tag_row(tx, repo, id, tag, digest.as_str(), origin)?;
            }
            let n = tx.execute(
                "DELETE FROM manifests WHERE repo_id = ?1 AND digest = ?2",
                params![id, digest.as_str()],
            )?;
            if n == 0 {
                return Err(unknown());
            }
            release_refs(tx, id, digest.as_str())?;
            manifest_gone(tx, repo, digest.as_str(), origin)
        })
    }

    /// Deletes one tag (the manifest stays), recording who did in the event log.
    pub(super) fn delete_tag_as(&self, origin: Origin, repo: &RepoName, tag: &Tag) -> Result<()> {
        self.write(|tx| {
            let unknown = || StorageError::ManifestUnknown(tag.to_string());
            let id = repo_id(tx, repo)?.ok_or_else(unknown)?;
            let digest = tag_target(tx, id, tag.as_str())?.ok_or_else(unknown)?;
            delete_tag_row(tx, repo, id, tag.as_str(), &digest, origin)
        })
    }

    /// Tags of a repository in lexical order, after `last`, at most `n`.
    pub(super) fn tags(
        &self,
        repo: &RepoName,
        n: Option<usize>,
        last: Option<&str>,
    ) -> Result<Vec<String>> {
        self.read(|c| {
            let id = repo_id(c, repo)?.ok_or(StorageError::NameUnknown)?;
            let mut stmt = c.prepare_cached(
                "SELECT name FROM tags WHERE repo_id = ?1 AND name > ?2 ORDER BY name LIMIT ?3",
            )?;
            let limit = n.map(|n| n as i64).unwrap_or(-1);
            let rows = stmt.query_map(params![id, last.unwrap_or(""), limit], |r| r.get(0))?;
            Ok(rows.collect::<rusqlite::Result<Vec<String>>>()?)
        })
    }

    /// Manifests in `repo` whose subject is `subject`, optionally of one artifact type.
    pub(super) fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Referrer>> {
        self.read(|c| {
            let Some(id) = repo_id(c, repo)? else {
                return Ok(Vec::new());
            };
            let mut stmt = c.prepare_cached(
                "SELECT digest, media_type, size, artifact_type, annotations FROM manifests
                 WHERE repo_id = ?1 AND subject = ?2 AND (?3 IS NULL OR artifact_type = ?3)
                 ORDER BY created, digest",
            )?;
            let rows = stmt.query_map(params![id, subject.as_str(), artifact_type], |r| {
                Ok(Referrer {
                    digest: r.get(0)?,
                    media_type: r.get(1)?,
                    size: r.get::<_, i64>(2)? as u64,
                    artifact_type: r.get(3)?,
                    annotations: r.get(4)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }
}

/// Removes a tag row and logs it.
pub(super) fn delete_tag_row(
    tx: &Connection,
    repo: &RepoName,
    id: i64,
    tag: &str,
    digest: &str,
    origin: Origin,
) -> Result<()> {
    tx.execute(
        "DELETE FROM tags WHERE repo_id = ?1 AND name = ?2",
        params![id, tag],
    )?;
    tags_changed(tx, id, digest)?;
    append(
        tx,
        NewEvent {
            repo: repo.as_str(),
            action: EventAction::TagDelete,
            tag: Some(tag),
            digest,
            previous: None,
            media_type: None,
            size: None,
            origin,
        },
    )
}

/// The manifest a tag is pointed at, as the event log records it.
pub(super) struct TagTarget<'a> {
    /// The manifest's digest.
    pub digest: &'a str,
    /// Its media type.
    pub media_type: &'a str,
    /// Its size in bytes.
    pub size: i64,
}

/// Points a tag at a manifest and logs it (`previous`: where it pointed before).
pub(super) fn set_tag_row(
    tx: &Connection,
    repo: &RepoName,
    id: i64,
    tag: &str,
    target: &TagTarget<'_>,
    previous: Option<&str>,
    origin: Origin,
) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO tags (repo_id, name, digest, updated) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (repo_id, name) DO UPDATE SET digest = ?3, updated = ?4",
    )?
    .execute(params![id, tag, target.digest, now_secs()])?;
    tags_changed(tx, id, target.digest)?;
    if let Some(previous) = previous.filter(|p| *p != target.digest) {
        tags_changed(tx, id, previous)?;
    }
    append(
        tx,
        NewEvent {
            repo: repo.as_str(),
            action: EventAction::TagSet,
            tag: Some(tag),
            digest: target.digest,
            previous,
            media_type: Some(target.media_type),
            size: Some(target.size),
            origin,
        },
    )
}

/// After a manifest row of `repo` is deleted: drops its bytes unless another repository still
/// has it (the last reference takes them along) and logs the deletion.
pub(super) fn manifest_gone(
    tx: &Connection,
    repo: &RepoName,
    digest: &str,
    origin: Origin,
) -> Result<()> {
    tx.execute(
        "DELETE FROM manifest_content WHERE digest = ?1
         AND NOT EXISTS (SELECT 1 FROM manifests WHERE digest = ?1)",
        [digest],
    )?;
    append(
        tx,
        NewEvent {
            repo: repo.as_str(),
            action: EventAction::ManifestDelete,
            tag: None,
            digest,
            previous: None,
            media_type: None,
            size: None,
            origin,
        },
    )
}
