//! Manifests (byte-exact): storing, looking up and deleting them.

use ::postgres::GenericClient;

use super::log::{append, NewEvent};
use super::refs::{blobs_referenced, release_refs};
use super::repos::{ensure_repo, repo_id};
use super::sql::{bytes, int, text, texts, unsigned};
use super::tags::{delete_tag_row, set_tag_row, tag_target, TagTarget};
use crate::registry::{Digest, ParsedManifest, Reference, RepoName, Tag};
use crate::storage::error::{Result, StorageError};
use crate::storage::fsutil::now_secs;
use crate::storage::metadata::{EventAction, ManifestRecord, Origin};

/// What `store` is given: the manifest, its digest and bytes, and who stores it.
pub(crate) struct NewManifest<'a> {
    /// Who makes the change.
    pub origin: Origin,
    /// The repository.
    pub repo: &'a RepoName,
    /// Digest of `body`.
    pub digest: &'a Digest,
    /// The validated manifest.
    pub manifest: &'a ParsedManifest,
    /// Its exact bytes.
    pub body: &'a [u8],
}

/// Stores a manifest and points `tags` at it, logging each change (`put_manifest_as`).
pub(crate) fn store(
    tx: &mut impl GenericClient,
    new: &NewManifest<'_>,
    tags: &[Tag],
) -> Result<()> {
    let (repo, digest, manifest) = (new.repo, new.digest, new.manifest);
    let id = ensure_repo(tx, repo)?;
    check_blobs(tx, id, manifest)?;
    let size = i64::try_from(new.body.len()).unwrap_or(i64::MAX);
    if insert_rows(tx, id, new, size)? {
        insert_refs(tx, id, digest.as_str(), manifest)?;
        let blobs: Vec<&str> = blobs_of(manifest).collect();
        blobs_referenced(tx, id, &blobs)?;
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
                origin: new.origin,
            },
        )?;
    }
    let target = TagTarget {
        digest: digest.as_str(),
        media_type: &manifest.media_type,
        size,
    };
    for tag in tags {
        let previous = tag_target(tx, id, tag.as_str())?;
        if previous.as_deref() == Some(digest.as_str()) {
            continue;
        }
        set_tag_row(
            tx,
            repo,
            id,
            tag.as_str(),
            &target,
            previous.as_deref(),
            new.origin,
        )?;
    }
    Ok(())
}

/// Digests of the blobs a manifest lists (config, then layers, whether required or not).
fn blobs_of(manifest: &ParsedManifest) -> impl Iterator<Item = &str> {
    let blobs = manifest.config.iter().chain(manifest.layers.iter());
    blobs.map(|b| b.digest.as_str())
}

/// Fails with the first blob the manifest needs that the repository does not link, in the
/// manifest's order, in one query.
fn check_blobs(tx: &mut impl GenericClient, id: i64, manifest: &ParsedManifest) -> Result<()> {
    let required: Vec<&Digest> = manifest.required_blobs().map(|b| &b.digest).collect();
    if required.is_empty() {
        return Ok(());
    }
    let digests: Vec<&str> = required.iter().map(|d| d.as_str()).collect();
    let missing = tx.query_typed_opt(
        "SELECT u.i FROM unnest($2::text[]) WITH ORDINALITY AS u(d, i)
          WHERE NOT EXISTS (SELECT 1 FROM blob_links b WHERE b.repo_id = $1 AND b.digest = u.d)
          ORDER BY u.i LIMIT 1",
        &[int(&id), texts(&digests)],
    )?;
    let Some(row) = missing else {
        return Ok(());
    };
    let i: i64 = row.try_get(0)?;
    // Ordinality counts from 1.
    let at = usize::try_from(i - 1).unwrap_or(0);
    match required.get(at).or(required.first()) {
        Some(d) => Err(StorageError::ManifestBlobUnknown((*d).clone())),
        None => Ok(()),
    }
}

/// Inserts the manifest's bytes (shared) and its row in the repository; true when the row is
/// new (a manifest pushed again changes nothing and logs nothing).
fn insert_rows(
    tx: &mut impl GenericClient,
    id: i64,
    new: &NewManifest<'_>,
    size: i64,
) -> Result<bool> {
    let manifest = new.manifest;
    let digest = new.digest.as_str();
    tx.execute_typed(
        "INSERT INTO manifest_content (digest, media_type, body) VALUES ($1, $2, $3)
         ON CONFLICT (digest) DO NOTHING",
        &[text(&digest), text(&manifest.media_type), bytes(&new.body)],
    )?;
    let annotations = match &manifest.annotations {
        Some(a) if !a.is_empty() => serde_json::to_string(a).ok(),
        _ => None,
    };
    let subject = manifest.subject.as_ref().map(|s| s.digest.as_str());
    let inserted = tx.execute_typed(
        "INSERT INTO manifests
             (repo_id, digest, media_type, size, subject, artifact_type, annotations, created,
              untagged_since)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)
         ON CONFLICT (repo_id, digest) DO NOTHING",
        &[
            int(&id),
            text(&digest),
            text(&manifest.media_type),
            int(&size),
            text(&subject),
            text(&manifest.effective_artifact_type()),
            text(&annotations),
            int(&now_secs()),
        ],
    )?;
    Ok(inserted > 0)
}

/// Records what a new manifest references: its blobs (config, layers) and child manifests,
/// in one statement; a child listed twice is recorded once, as its first mention.
fn insert_refs(
    tx: &mut impl GenericClient,
    id: i64,
    digest: &str,
    manifest: &ParsedManifest,
) -> Result<()> {
    let children = manifest.child_manifests().map(|c| c.digest.as_str());
    let kinds = blobs_of(manifest)
        .map(|_| "blob")
        .chain(manifest.child_manifests().map(|_| "manifest"));
    let childs: Vec<&str> = blobs_of(manifest).chain(children).collect();
    let kinds: Vec<&str> = kinds.collect();
    if childs.is_empty() {
        return Ok(());
    }
    tx.execute_typed(
        "INSERT INTO manifest_refs (repo_id, parent, child, kind)
         SELECT $1, $2, u.child, u.kind
           FROM unnest($3::text[], $4::text[]) WITH ORDINALITY AS u(child, kind, i)
          ORDER BY u.i
         ON CONFLICT DO NOTHING",
        &[int(&id), text(&digest), texts(&childs), texts(&kinds)],
    )?;
    Ok(())
}

/// The lookups of `find`, by tag or digest, with the bytes or without: each one statement
/// (one round trip), through the primary keys.
const BY_TAG_WITH_BODY: &str = "
SELECT m.digest, m.media_type, m.size, c.body
  FROM repositories r
  JOIN tags t ON t.repo_id = r.id AND t.name = $2
  JOIN manifests m ON m.repo_id = r.id AND m.digest = t.digest
  JOIN manifest_content c ON c.digest = m.digest
 WHERE r.name = $1";
/// See `BY_TAG_WITH_BODY`.
const BY_TAG: &str = "
SELECT m.digest, m.media_type, m.size, NULL::BYTEA
  FROM repositories r
  JOIN tags t ON t.repo_id = r.id AND t.name = $2
  JOIN manifests m ON m.repo_id = r.id AND m.digest = t.digest
 WHERE r.name = $1";
/// See `BY_TAG_WITH_BODY`.
const BY_DIGEST_WITH_BODY: &str = "
SELECT m.digest, m.media_type, m.size, c.body
  FROM repositories r
  JOIN manifests m ON m.repo_id = r.id AND m.digest = $2
  JOIN manifest_content c ON c.digest = m.digest
 WHERE r.name = $1";
/// See `BY_TAG_WITH_BODY`.
const BY_DIGEST: &str = "
SELECT m.digest, m.media_type, m.size, NULL::BYTEA
  FROM repositories r
  JOIN manifests m ON m.repo_id = r.id AND m.digest = $2
 WHERE r.name = $1";

/// Looks a manifest up by tag or digest; with `with_body` the bytes are read too (and a
/// manifest whose bytes are missing is not found, as SQLite's inner join has it).
pub(crate) fn find(
    c: &mut impl GenericClient,
    repo: &RepoName,
    reference: &Reference,
    with_body: bool,
) -> Result<Option<ManifestRecord>> {
    let (sql, key) = match (reference, with_body) {
        (Reference::Tag(t), true) => (BY_TAG_WITH_BODY, t.as_str()),
        (Reference::Tag(t), false) => (BY_TAG, t.as_str()),
        (Reference::Digest(d), true) => (BY_DIGEST_WITH_BODY, d.as_str()),
        (Reference::Digest(d), false) => (BY_DIGEST, d.as_str()),
    };
    let row = c.query_typed_opt(sql, &[text(&repo.as_str()), text(&key)])?;
    let Some(row) = row else {
        return Ok(None);
    };
    Ok(Some(ManifestRecord {
        digest: row.try_get(0)?,
        media_type: row.try_get(1)?,
        size: unsigned(row.try_get(2)?),
        body: row.try_get(3)?,
    }))
}

/// Deletes a manifest and every tag pointing at it (tags in name order, as SQLite walks its
/// index), logging each; `ManifestUnknown` when it is not in the repository.
pub(crate) fn delete(
    tx: &mut impl GenericClient,
    origin: Origin,
    repo: &RepoName,
    digest: &Digest,
) -> Result<()> {
    let unknown = || StorageError::ManifestUnknown(digest.to_string());
    let id = repo_id(tx, repo)?.ok_or_else(unknown)?;
    let rows = tx.query_typed(
        "SELECT name FROM tags WHERE repo_id = $1 AND digest = $2 ORDER BY name COLLATE \"C\"",
        &[int(&id), text(&digest.as_str())],
    )?;
    for row in rows {
        let tag: String = row.try_get(0)?;
        delete_tag_row(tx, repo, id, &tag, digest.as_str(), origin)?;
    }
    let n = tx.execute_typed(
        "DELETE FROM manifests WHERE repo_id = $1 AND digest = $2",
        &[int(&id), text(&digest.as_str())],
    )?;
    if n == 0 {
        // The tag deletions above roll back with the transaction.
        return Err(unknown());
    }
    release_refs(tx, id, digest.as_str())?;
    manifest_gone(tx, repo, digest.as_str(), origin)
}

/// After a manifest row of `repo` is deleted: drops its bytes unless another repository still
/// has it (the last reference takes them along) and logs the deletion.
pub(crate) fn manifest_gone(
    tx: &mut impl GenericClient,
    repo: &RepoName,
    digest: &str,
    origin: Origin,
) -> Result<()> {
    tx.execute_typed(
        "DELETE FROM manifest_content WHERE digest = $1
            AND NOT EXISTS (SELECT 1 FROM manifests WHERE digest = $1)",
        &[text(&digest)],
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
