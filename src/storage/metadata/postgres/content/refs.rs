//! Reference state for garbage collection, changed inside the transactions that change links,
//! manifests and tags, so it can never disagree with them (as SQLite's `refs.rs`).
//!
//! - A link is *unreferenced* when no manifest of its repository lists the blob; `unref_since`
//!   holds since when (NULL while referenced). Collection lapses it after the grace.
//! - A manifest is *untagged* when no tag of its repository points at it; `untagged_since`
//!   holds since when (NULL while tagged), for the untagged retention.

use ::postgres::GenericClient;

use super::sql::{int, text, texts};
use crate::storage::error::Result;
use crate::storage::fsutil::now_secs;

/// After a link was inserted or re-linked: unreferenced links (re)start their grace now, so a
/// blob pushed again is kept as long as a fresh one.
pub(crate) fn link_touched(tx: &mut impl GenericClient, repo_id: i64, digest: &str) -> Result<()> {
    tx.execute_typed(
        "UPDATE blob_links SET unref_since = CASE
             WHEN EXISTS (SELECT 1 FROM manifest_refs r
                          WHERE r.repo_id = $1 AND r.child = $2 AND r.kind = 'blob') THEN NULL
             ELSE $3 END
         WHERE repo_id = $1 AND digest = $2",
        &[int(&repo_id), text(&digest), int(&now_secs())],
    )?;
    Ok(())
}

/// A new manifest references these blobs: their links in its repository are referenced.
pub(crate) fn blobs_referenced(
    tx: &mut impl GenericClient,
    repo_id: i64,
    digests: &[&str],
) -> Result<()> {
    if digests.is_empty() {
        return Ok(());
    }
    tx.execute_typed(
        "UPDATE blob_links SET unref_since = NULL
         WHERE repo_id = $1 AND digest = ANY($2) AND unref_since IS NOT NULL",
        &[int(&repo_id), texts(&digests)],
    )?;
    Ok(())
}

/// Removes what manifest `parent` references and starts the grace of every link it was the
/// last reference to. Call when the manifest row goes. One statement: the update sees the
/// references as they were before the deletion in the same statement, so "no other reference"
/// is checked as no reference from another parent.
pub(crate) fn release_refs(tx: &mut impl GenericClient, repo_id: i64, parent: &str) -> Result<()> {
    tx.execute_typed(
        "WITH gone AS (
             DELETE FROM manifest_refs WHERE repo_id = $1 AND parent = $2
             RETURNING child, kind)
         UPDATE blob_links b SET unref_since = $3
          WHERE b.repo_id = $1 AND b.unref_since IS NULL
            AND b.digest IN (SELECT child FROM gone WHERE kind = 'blob')
            AND NOT EXISTS (SELECT 1 FROM manifest_refs r
                             WHERE r.repo_id = $1 AND r.child = b.digest AND r.kind = 'blob'
                               AND r.parent <> $2)",
        &[int(&repo_id), text(&parent), int(&now_secs())],
    )?;
    Ok(())
}

/// After tags pointing at `digest` changed: it is tagged, or untagged since now (or since
/// earlier, when it already was).
pub(crate) fn tags_changed(tx: &mut impl GenericClient, repo_id: i64, digest: &str) -> Result<()> {
    tx.execute_typed(
        "UPDATE manifests SET untagged_since = CASE
             WHEN EXISTS (SELECT 1 FROM tags t WHERE t.repo_id = $1 AND t.digest = $2) THEN NULL
             ELSE coalesce(untagged_since, $3) END
         WHERE repo_id = $1 AND digest = $2",
        &[int(&repo_id), text(&digest), int(&now_secs())],
    )?;
    Ok(())
}
