//! What garbage collection asks of the metadata. Every deletion runs in a write transaction, the
//! lock every link takes too, so what a pass decides cannot go stale before it acts.

use rusqlite::{params, Connection, OptionalExtension};

use super::manifests::manifest_gone;
use super::refs::release_refs;
use super::SqliteMetadata;
use crate::registry::{Digest, RepoName};
use crate::storage::error::{Result, StorageError};
use crate::storage::metadata::{Origin, StateKey};

/// Rows changed per write transaction, so clients' writes interleave with a long pass.
const BATCH: i64 = 256;

/// An untagged manifest the retention may delete: nothing keeps it.
const EXPIRED_UNTAGGED: &str = "
SELECT m.repo_id, r.name, m.digest FROM manifests m JOIN repositories r ON r.id = m.repo_id
 WHERE m.untagged_since IS NOT NULL AND m.untagged_since <= ?1
   AND NOT EXISTS (SELECT 1 FROM manifest_refs x
                    WHERE x.repo_id = m.repo_id AND x.child = m.digest AND x.kind = 'manifest')
   AND NOT (m.subject IS NOT NULL AND EXISTS (SELECT 1 FROM manifests s
                    WHERE s.repo_id = m.repo_id AND s.digest = m.subject))
 ORDER BY m.untagged_since LIMIT ?2";

/// One expired untagged manifest.
struct Untagged {
    repo_id: i64,
    repo: String,
    digest: String,
}

fn expired_untagged(c: &Connection, cutoff: i64, limit: i64) -> Result<Vec<Untagged>> {
    let mut stmt = c.prepare_cached(EXPIRED_UNTAGGED)?;
    let rows = stmt.query_map(params![cutoff, limit], |r| {
        Ok(Untagged {
            repo_id: r.get(0)?,
            repo: r.get(1)?,
            digest: r.get(2)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Whether a client change to `digest` in `repo` still waits in the push-up outbox.
fn awaits_push(c: &Connection, repo: &str, digest: &str) -> Result<bool> {
    let key = StateKey::PushCursor(repo).as_key();
    let cursor: i64 = c
        .query_row(
            "SELECT value FROM sync_state WHERE key = ?1",
            [key.as_ref()],
            |r| r.get::<_, String>(0),
        )
        .optional()?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Ok(c.prepare_cached(
        "SELECT 1 FROM events
          WHERE repo = ?1 AND seq > ?2 AND origin = 'client' AND digest = ?3 LIMIT 1",
    )?
    .exists(params![repo, cursor, digest])?)
}

/// Whether a blob is linked anywhere (`lapse_cutoff`: counting only the links a pass with that
/// cutoff keeps) or held by a download.
fn blob_kept(c: &Connection, digest: &str, now: i64, lapse_cutoff: Option<i64>) -> Result<bool> {
    let linked = c
        .prepare_cached(
            "SELECT 1 FROM blob_links WHERE digest = ?1
              AND (?2 IS NULL OR unref_since IS NULL OR unref_since > ?2) LIMIT 1",
        )?
        .exists(params![digest, lapse_cutoff])?;
    if linked {
        return Ok(true);
    }
    Ok(
        c.prepare_cached("SELECT 1 FROM blob_holds WHERE digest = ?1 AND keep_until > ?2")?
            .exists(params![digest, now])?,
    )
}

impl SqliteMetadata {
    /// Deletes manifests untagged since `cutoff` or earlier that no index of their repository
    /// lists, whose subject is gone (signatures stay with their image) and, with
    /// `keep_outbox`, that push-up has sent; logged as garbage collection's. With `dry_run` only
    /// counts them (without the cascade to index children). Returns how many.
    pub(super) fn expire_untagged(
        &self,
        cutoff: i64,
        keep_outbox: bool,
        dry_run: bool,
    ) -> Result<u64> {
        if dry_run {
            return self.read(|c| {
                let all = expired_untagged(c, cutoff, -1)?;
                let mut n = 0;
                for m in &all {
                    if !(keep_outbox && awaits_push(c, &m.repo, &m.digest)?) {
                        n += 1;
                    }
                }
                Ok(n)
            });
        }
        let mut deleted: u64 = 0;
        // Manifests awaiting push-up stay and come back in every batch: ask for that many more
        // each round. Deleting an index makes its children candidates, so rounds go on until
        // one deletes nothing from a batch that was not full (a full batch of kept manifests
        // may hide deletable ones behind it; each round either deletes or asks for more, so
        // the loop ends).
        let mut skipped = 0;
        loop {
            let limit = skipped + BATCH;
            let (removed, kept) = self.write(|tx| {
                let batch = expired_untagged(tx, cutoff, limit)?;
                let (mut removed, mut kept) = (0u64, 0i64);
                for m in batch {
                    if keep_outbox && awaits_push(tx, &m.repo, &m.digest)? {
                        kept += 1;
                        continue;
                    }
                    delete_manifest_row(tx, &m)?;
                    removed += 1;
                }
                Ok((removed, kept))
            })?;
            deleted += removed;
            skipped = kept;
            if removed == 0 && kept < limit {
                return Ok(deleted);
            }
        }
    }

    /// Removes links no manifest of their repository has referenced since `cutoff` or earlier;
    /// with `dry_run` only counts them. Returns how many.
    pub(super) fn lapse_links(&self, cutoff: i64, dry_run: bool) -> Result<u64> {
        if dry_run {
            return self.read(|c| {
                Ok(c.query_row(
                    "SELECT count(*) FROM blob_links WHERE unref_since <= ?1",
                    [cutoff],
                    |r| r.get::<_, i64>(0),
                )? as u64)
            });
        }
        let mut lapsed = 0;
        loop {
            let n = self.write(|tx| {
                Ok(tx
                    .prepare_cached(
                        "DELETE FROM blob_links WHERE (repo_id, digest) IN
                          (SELECT repo_id, digest FROM blob_links
                            WHERE unref_since IS NOT NULL AND unref_since <= ?1 LIMIT ?2)",
                    )?
                    .execute(params![cutoff, BATCH])?)
            })?;
            lapsed += n as u64;
            if (n as i64) < BATCH {
                return Ok(lapsed);
            }
        }
    }

    /// In one write transaction, calls `remove` for each of `digests` that no link keeps and no
    /// download holds at `now`; `remove` deletes the file and says how many bytes it freed
    /// (`None`: it was gone already). Returns the blobs and bytes freed.
    pub(super) fn sweep_blobs(
        &self,
        digests: &[Digest],
        now: i64,
        mut remove: impl FnMut(&Digest) -> Result<Option<u64>>,
    ) -> Result<(u64, u64)> {
        self.write(|tx| {
            let (mut blobs, mut bytes) = (0, 0);
            for d in digests {
                if blob_kept(tx, d.as_str(), now, None)? {
                    continue;
                }
                if let Some(freed) = remove(d)? {
                    blobs += 1;
                    bytes += freed;
                }
                tx.prepare_cached("DELETE FROM blob_holds WHERE digest = ?1")?
                    .execute([d.as_str()])?;
            }
            Ok((blobs, bytes))
        })
    }

    /// Which of `digests` a pass that lapses links unreferenced since `lapse_cutoff` would
    /// free at `now` (for a dry run).
    pub(super) fn blobs_unkept(
        &self,
        digests: &[Digest],
        now: i64,
        lapse_cutoff: i64,
    ) -> Result<Vec<bool>> {
        self.read(|c| {
            digests
                .iter()
                .map(|d| Ok(!blob_kept(c, d.as_str(), now, Some(lapse_cutoff))?))
                .collect()
        })
    }

    /// Forgets download holds that ended at `now` or before.
    pub(super) fn drop_expired_holds(&self, now: i64) -> Result<()> {
        self.write(|tx| {
            tx.execute("DELETE FROM blob_holds WHERE keep_until <= ?1", [now])?;
            Ok(())
        })
    }
}

/// Deletes one manifest row with what it references and logs it as garbage collection's.
fn delete_manifest_row(tx: &Connection, m: &Untagged) -> Result<()> {
    let repo = RepoName::parse(&m.repo)
        .map_err(|_| StorageError::Corrupt(format!("stored repository name '{}'", m.repo)))?;
    tx.prepare_cached("DELETE FROM manifests WHERE repo_id = ?1 AND digest = ?2")?
        .execute(params![m.repo_id, m.digest])?;
    release_refs(tx, m.repo_id, &m.digest)?;
    manifest_gone(tx, &repo, &m.digest, Origin::Gc)
}
