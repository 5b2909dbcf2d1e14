//! Tags: pointing, moving and deleting them, each logged.

use ::postgres::GenericClient;

use super::log::{append, NewEvent};
use super::refs::tags_changed;
use super::repos::repo_id;
use super::sql::{int, text};
use crate::registry::{Digest, RepoName, Tag};
use crate::storage::error::{Result, StorageError};
use crate::storage::fsutil::now_secs;
use crate::storage::metadata::{EventAction, Origin};

/// Digest a tag points at.
pub(crate) fn tag_target(
    c: &mut impl GenericClient,
    repo_id: i64,
    tag: &str,
) -> Result<Option<String>> {
    let row = c.query_typed_opt(
        "SELECT digest FROM tags WHERE repo_id = $1 AND name = $2",
        &[int(&repo_id), text(&tag)],
    )?;
    Ok(row.map(|r| r.try_get(0)).transpose()?)
}

/// The manifest a tag is pointed at, as the event log records it.
pub(crate) struct TagTarget<'a> {
    /// The manifest's digest.
    pub digest: &'a str,
    /// Its media type.
    pub media_type: &'a str,
    /// Its size in bytes.
    pub size: i64,
}

/// Points a tag at a manifest and logs it (`previous`: where it pointed before).
pub(crate) fn set_tag_row(
    tx: &mut impl GenericClient,
    repo: &RepoName,
    id: i64,
    tag: &str,
    target: &TagTarget<'_>,
    previous: Option<&str>,
    origin: Origin,
) -> Result<()> {
    tx.execute_typed(
        "INSERT INTO tags (repo_id, name, digest, updated) VALUES ($1, $2, $3, $4)
         ON CONFLICT (repo_id, name) DO UPDATE SET digest = $3, updated = $4",
        &[int(&id), text(&tag), text(&target.digest), int(&now_secs())],
    )?;
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

/// Removes a tag row and logs it.
pub(crate) fn delete_tag_row(
    tx: &mut impl GenericClient,
    repo: &RepoName,
    id: i64,
    tag: &str,
    digest: &str,
    origin: Origin,
) -> Result<()> {
    tx.execute_typed(
        "DELETE FROM tags WHERE repo_id = $1 AND name = $2",
        &[int(&id), text(&tag)],
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

/// Deletes one tag (the manifest stays); `ManifestUnknown` naming the tag when the repository
/// or the tag is unknown.
pub(crate) fn delete_tag(
    tx: &mut impl GenericClient,
    origin: Origin,
    repo: &RepoName,
    tag: &Tag,
) -> Result<()> {
    let unknown = || StorageError::ManifestUnknown(tag.to_string());
    let id = repo_id(tx, repo)?.ok_or_else(unknown)?;
    let digest = tag_target(tx, id, tag.as_str())?.ok_or_else(unknown)?;
    delete_tag_row(tx, repo, id, tag.as_str(), &digest, origin)
}

/// Points `tag` at a manifest stored in `repo`, with `expected` (`Some`) only while the tag
/// still points at `expected.0` (`None`: absent). True when the tag ends up at `digest`
/// (already there: no event); false when the manifest is not there or the tag moved.
pub(crate) fn set_tag_checked(
    tx: &mut impl GenericClient,
    origin: Origin,
    repo: &RepoName,
    tag: &Tag,
    digest: &Digest,
    expected: Option<Option<&str>>,
) -> Result<bool> {
    let Some(id) = repo_id(tx, repo)? else {
        return Ok(false);
    };
    let row = tx.query_typed_opt(
        "SELECT media_type, size FROM manifests WHERE repo_id = $1 AND digest = $2",
        &[int(&id), text(&digest.as_str())],
    )?;
    let Some(row) = row else {
        return Ok(false);
    };
    let (media_type, size): (String, i64) = (row.try_get(0)?, row.try_get(1)?);
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
}
