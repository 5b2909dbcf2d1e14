//! Reference state for garbage collection, changed inside the transactions that change links,
//! manifests and tags, so it can never disagree with them.
//!
//! - A link is *unreferenced* when no manifest of its repository lists the blob; `unref_since`
//!   holds since when (NULL while referenced). Collection lapses it after the grace.
//! - A manifest is *untagged* when no tag of its repository points at it; `untagged_since` holds
//!   since when (NULL while tagged), for the untagged retention.

use rusqlite::{params, Connection};

use crate::storage::error::Result;
use crate::storage::fsutil::now_secs;

/// After a link was inserted or re-linked: unreferenced links (re)start their grace now, so a
/// blob pushed again is kept as long as a fresh one.
pub(super) fn link_touched(tx: &Connection, repo_id: i64, digest: &str) -> Result<()> {
    tx.prepare_cached(
        "UPDATE blob_links SET unref_since = CASE
             WHEN EXISTS (SELECT 1 FROM manifest_refs r
                          WHERE r.repo_id = ?1 AND r.child = ?2 AND r.kind = 'blob') THEN NULL
             ELSE ?3 END
         WHERE repo_id = ?1 AND digest = ?2",
    )?
    .execute(params![repo_id, digest, now_secs()])?;
    Ok(())
}

/// A new manifest references these blobs: their links in its repository are referenced.
pub(super) fn blobs_referenced<'a>(
    tx: &Connection,
    repo_id: i64,
    digests: impl Iterator<Item = &'a str>,
) -> Result<()> {
    let mut stmt = tx.prepare_cached(
        "UPDATE blob_links SET unref_since = NULL
         WHERE repo_id = ?1 AND digest = ?2 AND unref_since IS NOT NULL",
    )?;
    for d in digests {
        stmt.execute(params![repo_id, d])?;
    }
    Ok(())
}

/// Removes what manifest `parent` references and starts the grace of every link it was the last
/// reference to. Call when the manifest row goes.
pub(super) fn release_refs(tx: &Connection, repo_id: i64, parent: &str) -> Result<()> {
    let blobs: Vec<String> = {
        let mut stmt = tx.prepare_cached(
            "SELECT child FROM manifest_refs WHERE repo_id = ?1 AND parent = ?2 AND kind = 'blob'",
        )?;
        let rows = stmt.query_map(params![repo_id, parent], |r| r.get(0))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    tx.prepare_cached("DELETE FROM manifest_refs WHERE repo_id = ?1 AND parent = ?2")?
        .execute(params![repo_id, parent])?;
    let mut stmt = tx.prepare_cached(
        "UPDATE blob_links SET unref_since = ?3
         WHERE repo_id = ?1 AND digest = ?2 AND unref_since IS NULL
           AND NOT EXISTS (SELECT 1 FROM manifest_refs r
                           WHERE r.repo_id = ?1 AND r.child = ?2 AND r.kind = 'blob')",
    )?;
    let now = now_secs();
    for d in &blobs {
        stmt.execute(params![repo_id, d, now])?;
    }
    Ok(())
}

/// After tags pointing at `digest` changed: it is tagged, or untagged since now (or since
/// earlier, when it already was).
pub(super) fn tags_changed(tx: &Connection, repo_id: i64, digest: &str) -> Result<()> {
    tx.prepare_cached(
        "UPDATE manifests SET untagged_since = CASE
             WHEN EXISTS (SELECT 1 FROM tags t WHERE t.repo_id = ?1 AND t.digest = ?2) THEN NULL
             ELSE coalesce(untagged_since, ?3) END
         WHERE repo_id = ?1 AND digest = ?2",
    )?
    .execute(params![repo_id, digest, now_secs()])?;
    Ok(())
}
