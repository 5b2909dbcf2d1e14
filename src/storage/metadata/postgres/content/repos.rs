//! Repositories: finding, creating and removing them.

use ::postgres::GenericClient;

use super::manifests::manifest_gone;
use super::sql::{int, text};
use super::tags::delete_tag_row;
use crate::registry::RepoName;
use crate::storage::error::Result;
use crate::storage::fsutil::now_secs;
use crate::storage::metadata::Origin;

/// Id of an existing repository.
pub(crate) fn repo_id(c: &mut impl GenericClient, repo: &RepoName) -> Result<Option<i64>> {
    let row = c.query_typed_opt(
        "SELECT id FROM repositories WHERE name = $1",
        &[text(&repo.as_str())],
    )?;
    Ok(row.map(|r| r.try_get(0)).transpose()?)
}

/// Id of a repository, creating it on first use. Looked up first rather than inserted with
/// `ON CONFLICT`, which would use up an identity value on every call; the writer lock keeps
/// another insert from coming in between.
pub(crate) fn ensure_repo(tx: &mut impl GenericClient, repo: &RepoName) -> Result<i64> {
    if let Some(id) = repo_id(tx, repo)? {
        return Ok(id);
    }
    let row = tx.query_typed_one(
        "INSERT INTO repositories (name, created) VALUES ($1, $2) RETURNING id",
        &[text(&repo.as_str()), int(&now_secs())],
    )?;
    Ok(row.try_get(0)?)
}

/// Removes a repository with its tags, manifests and blob links (blobs stay for other
/// repositories), logging every tag removal (by name) and then every manifest removal (by
/// digest), the orders SQLite's primary keys give. False when it did not exist.
pub(crate) fn delete_repository(
    tx: &mut impl GenericClient,
    origin: Origin,
    repo: &RepoName,
) -> Result<bool> {
    let Some(id) = repo_id(tx, repo)? else {
        return Ok(false);
    };
    let tags = tx.query_typed(
        "SELECT name, digest FROM tags WHERE repo_id = $1 ORDER BY name COLLATE \"C\"",
        &[int(&id)],
    )?;
    for row in tags {
        let (tag, digest): (String, String) = (row.try_get(0)?, row.try_get(1)?);
        delete_tag_row(tx, repo, id, &tag, &digest, origin)?;
    }
    let manifests = tx.query_typed(
        "DELETE FROM manifests WHERE repo_id = $1 RETURNING digest",
        &[int(&id)],
    )?;
    let mut digests = manifests
        .iter()
        .map(|r| r.try_get(0))
        .collect::<std::result::Result<Vec<String>, _>>()?;
    // Bytewise, like SQLite's text order.
    digests.sort_unstable();
    for sql in [
        "DELETE FROM manifest_refs WHERE repo_id = $1",
        "DELETE FROM blob_links WHERE repo_id = $1",
        "DELETE FROM repositories WHERE id = $1",
    ] {
        tx.execute_typed(sql, &[int(&id)])?;
    }
    for digest in &digests {
        manifest_gone(tx, repo, digest, origin)?;
    }
    Ok(true)
}
