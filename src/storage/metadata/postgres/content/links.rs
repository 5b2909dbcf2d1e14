//! Blob links: which repository may serve which blob.

use ::postgres::GenericClient;

use super::refs::link_touched;
use super::repos::{ensure_repo, repo_id};
use super::sql::{int, signed, text, unsigned};
use crate::registry::{Digest, RepoName};
use crate::storage::error::Result;
use crate::storage::fsutil::now_secs;

/// Most repositories looked at as the source of one mount (as SQLite's): a blob shared more
/// widely than this is found among the first ones by name, and the lookup stays bounded.
const LINK_SOURCES_MAX: i64 = 10_000;

/// Size of a blob if it is linked in the repository.
fn linked_size(c: &mut impl GenericClient, repo_id: i64, digest: &Digest) -> Result<Option<u64>> {
    let row = c.query_typed_opt(
        "SELECT size FROM blob_links WHERE repo_id = $1 AND digest = $2",
        &[int(&repo_id), text(&digest.as_str())],
    )?;
    Ok(row.map(|r| r.try_get(0).map(unsigned)).transpose()?)
}

/// Size of the blob if `repo` may serve it, in one statement (the hot path of blob GETs).
pub(crate) fn blob_link(
    c: &mut impl GenericClient,
    repo: &RepoName,
    digest: &Digest,
) -> Result<Option<u64>> {
    let row = c.query_typed_opt(
        "SELECT b.size FROM repositories r
           JOIN blob_links b ON b.repo_id = r.id AND b.digest = $2
          WHERE r.name = $1",
        &[text(&repo.as_str()), text(&digest.as_str())],
    )?;
    Ok(row.map(|r| r.try_get(0).map(unsigned)).transpose()?)
}

/// Links a blob into a repository (creating the repository on first use); idempotent. A link
/// no manifest references yet starts its grace now, and a download's hold on the blob ends:
/// the link keeps it from here on.
pub(crate) fn insert_link(
    tx: &mut impl GenericClient,
    repo: &RepoName,
    digest: &Digest,
    size: u64,
) -> Result<()> {
    let id = ensure_repo(tx, repo)?;
    tx.execute_typed(
        "INSERT INTO blob_links (repo_id, digest, size, created) VALUES ($1, $2, $3, $4)
         ON CONFLICT (repo_id, digest) DO NOTHING",
        &[
            int(&id),
            text(&digest.as_str()),
            int(&signed(size)),
            int(&now_secs()),
        ],
    )?;
    link_touched(tx, id, digest.as_str())?;
    tx.execute_typed(
        "DELETE FROM blob_holds WHERE digest = $1",
        &[text(&digest.as_str())],
    )?;
    Ok(())
}

/// Links `digest` into `target` when `from` links it; the size when it did.
pub(crate) fn link_from(
    tx: &mut impl GenericClient,
    target: &RepoName,
    from: &RepoName,
    digest: &Digest,
) -> Result<Option<u64>> {
    let Some(from_id) = repo_id(tx, from)? else {
        return Ok(None);
    };
    let size = linked_size(tx, from_id, digest)?;
    if let Some(size) = size {
        insert_link(tx, target, digest, size)?;
    }
    Ok(size)
}

/// Links `digest` into `target` from the first repository (by name, bytewise, among the first
/// `LINK_SOURCES_MAX`) that links it and that `accept` approves; that repository and the size
/// when it did.
pub(crate) fn link_from_first(
    tx: &mut impl GenericClient,
    target: &RepoName,
    digest: &Digest,
    accept: &mut dyn FnMut(&str) -> bool,
) -> Result<Option<(String, u64)>> {
    let rows = tx.query_typed(
        "SELECT r.name, b.size FROM blob_links b JOIN repositories r ON r.id = b.repo_id
          WHERE b.digest = $1 ORDER BY r.name COLLATE \"C\" LIMIT $2",
        &[text(&digest.as_str()), int(&LINK_SOURCES_MAX)],
    )?;
    let mut found = None;
    for row in rows {
        let name: String = row.try_get(0)?;
        if accept(&name) {
            found = Some((name, unsigned(row.try_get(1)?)));
            break;
        }
    }
    if let Some((_, size)) = &found {
        insert_link(tx, target, digest, *size)?;
    }
    Ok(found)
}

/// Removes the blob from `repo`; false when it was not linked there.
pub(crate) fn unlink(
    tx: &mut impl GenericClient,
    repo: &RepoName,
    digest: &Digest,
) -> Result<bool> {
    let n = tx.execute_typed(
        "DELETE FROM blob_links b USING repositories r
          WHERE r.id = b.repo_id AND r.name = $1 AND b.digest = $2",
        &[text(&repo.as_str()), text(&digest.as_str())],
    )?;
    Ok(n > 0)
}

/// Holds a blob until `until` or its first link (an existing hold only ever lengthens).
pub(crate) fn hold(tx: &mut impl GenericClient, digest: &Digest, until: i64) -> Result<()> {
    tx.execute_typed(
        "INSERT INTO blob_holds (digest, keep_until) VALUES ($1, $2)
         ON CONFLICT (digest) DO UPDATE SET keep_until = GREATEST(blob_holds.keep_until, $2)",
        &[text(&digest.as_str()), int(&until)],
    )?;
    Ok(())
}

/// Repositories that link `digest`, the first 8 by name (candidates to mount it from at the
/// parent).
pub(crate) fn repos_linking(c: &mut impl GenericClient, digest: &Digest) -> Result<Vec<String>> {
    let rows = c.query_typed(
        "SELECT r.name FROM blob_links b JOIN repositories r ON r.id = b.repo_id
          WHERE b.digest = $1 ORDER BY r.name COLLATE \"C\" LIMIT 8",
        &[text(&digest.as_str())],
    )?;
    Ok(rows
        .iter()
        .map(|r| r.try_get(0))
        .collect::<std::result::Result<_, _>>()?)
}
