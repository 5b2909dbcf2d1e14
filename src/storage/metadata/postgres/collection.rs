//! PostgreSQL implementation of `Collection`, ported from SQLite's (`../sqlite/gc.rs`). Every
//! deletion runs in a write transaction, under the writer lock every link takes too, so what a
//! pass decides cannot go stale before it acts.

use ::postgres::GenericClient;

use super::content::manifests::manifest_gone;
use super::content::refs::release_refs;
use super::content::sql::{int, text, texts, unsigned};
use super::PgMetadata;
use crate::registry::{Digest, RepoName};
use crate::storage::error::{Result, StorageError};
use crate::storage::metadata::{Collection, Origin, StateKey};

/// Rows changed per write transaction, so clients' writes interleave with a long pass.
const BATCH: i64 = 256;

/// An untagged manifest the retention may delete: nothing keeps it. Ties in time are broken by
/// the primary key, the order SQLite's index on `untagged_since` gives.
const EXPIRED_UNTAGGED: &str = "
SELECT m.repo_id, r.name, m.digest FROM manifests m JOIN repositories r ON r.id = m.repo_id
 WHERE m.untagged_since IS NOT NULL AND m.untagged_since <= $1
   AND NOT EXISTS (SELECT 1 FROM manifest_refs x
                    WHERE x.repo_id = m.repo_id AND x.child = m.digest AND x.kind = 'manifest')
   AND NOT (m.subject IS NOT NULL AND EXISTS (SELECT 1 FROM manifests s
                    WHERE s.repo_id = m.repo_id AND s.digest = m.subject))
 ORDER BY m.untagged_since, m.repo_id, m.digest COLLATE \"C\" LIMIT $2";

/// Whether each blob of `$1` is linked anywhere (with `$2`, counting only the links a pass
/// lapsing links unreferenced since `$2` keeps) or held by a download at `$3`, in order.
const BLOBS_KEPT: &str = "
SELECT EXISTS (SELECT 1 FROM blob_links b WHERE b.digest = u.d
                  AND ($2::BIGINT IS NULL OR b.unref_since IS NULL OR b.unref_since > $2))
    OR EXISTS (SELECT 1 FROM blob_holds h WHERE h.digest = u.d AND h.keep_until > $3)
  FROM unnest($1::TEXT[]) WITH ORDINALITY AS u(d, i)
 ORDER BY u.i";

/// One expired untagged manifest.
struct Untagged {
    repo_id: i64,
    repo: String,
    digest: String,
}

/// Up to `limit` (`None`: all) expired untagged manifests, oldest first.
fn expired_untagged(
    c: &mut impl GenericClient,
    cutoff: i64,
    limit: Option<i64>,
) -> Result<Vec<Untagged>> {
    let rows = c.query_typed(EXPIRED_UNTAGGED, &[int(&cutoff), int(&limit)])?;
    rows.iter()
        .map(|r| {
            Ok(Untagged {
                repo_id: r.try_get(0)?,
                repo: r.try_get(1)?,
                digest: r.try_get(2)?,
            })
        })
        .collect()
}

/// Whether a client change to `digest` in `repo` still waits in the push-up outbox (after the
/// repository's push cursor; an unreadable cursor counts as 0, as in SQLite).
fn awaits_push(c: &mut impl GenericClient, repo: &str, digest: &str) -> Result<bool> {
    let key = StateKey::PushCursor(repo).as_key();
    let row = c.query_typed_opt(
        "SELECT value FROM sync_state WHERE key = $1",
        &[text(&key.as_ref())],
    )?;
    let value: Option<String> = row.map(|r| r.try_get(0)).transpose()?;
    let cursor: i64 = value.and_then(|v| v.parse().ok()).unwrap_or(0);
    let row = c.query_typed_one(
        "SELECT EXISTS (SELECT 1 FROM events
                         WHERE repo = $1 AND seq > $2 AND origin = 'client' AND digest = $3)",
        &[text(&repo), int(&cursor), text(&digest)],
    )?;
    Ok(row.try_get(0)?)
}

/// Which of `digests` are kept (see `BLOBS_KEPT`), in order, in one statement.
fn blobs_kept(
    c: &mut impl GenericClient,
    digests: &[Digest],
    now: i64,
    lapse_cutoff: Option<i64>,
) -> Result<Vec<bool>> {
    if digests.is_empty() {
        return Ok(Vec::new());
    }
    let list: Vec<&str> = digests.iter().map(Digest::as_str).collect();
    let rows = c.query_typed(BLOBS_KEPT, &[texts(&list), int(&lapse_cutoff), int(&now)])?;
    Ok(rows
        .iter()
        .map(|r| r.try_get(0))
        .collect::<std::result::Result<_, _>>()?)
}

/// Deletes one manifest row with what it references and logs it as garbage collection's.
fn delete_manifest_row(tx: &mut impl GenericClient, m: &Untagged) -> Result<()> {
    let repo = RepoName::parse(&m.repo)
        .map_err(|_| StorageError::Corrupt(format!("stored repository name '{}'", m.repo)))?;
    tx.execute_typed(
        "DELETE FROM manifests WHERE repo_id = $1 AND digest = $2",
        &[int(&m.repo_id), text(&m.digest)],
    )?;
    release_refs(tx, m.repo_id, &m.digest)?;
    manifest_gone(tx, &repo, &m.digest, Origin::Gc)
}

/// One round of the retention: deletes what a batch of `limit` candidates holds that push-up
/// does not still need (with `keep_outbox`); how many it removed and how many it kept.
fn expire_batch(
    tx: &mut impl GenericClient,
    cutoff: i64,
    keep_outbox: bool,
    limit: i64,
) -> Result<(u64, i64)> {
    let batch = expired_untagged(tx, cutoff, Some(limit))?;
    let (mut removed, mut kept) = (0, 0);
    for m in batch {
        if keep_outbox && awaits_push(tx, &m.repo, &m.digest)? {
            kept += 1;
            continue;
        }
        delete_manifest_row(tx, &m)?;
        removed += 1;
    }
    Ok((removed, kept))
}

impl Collection for PgMetadata {
    fn expire_untagged(&self, cutoff: i64, keep_outbox: bool, dry_run: bool) -> Result<u64> {
        if dry_run {
            return self.read_tx(|tx| {
                let mut n = 0;
                for m in expired_untagged(tx, cutoff, None)? {
                    if !(keep_outbox && awaits_push(tx, &m.repo, &m.digest)?) {
                        n += 1;
                    }
                }
                Ok(n)
            });
        }
        let mut deleted = 0;
        // Manifests awaiting push-up stay and come back in every batch: ask for that many more
        // each round. Deleting an index makes its children candidates, so rounds go on until
        // one deletes nothing from a batch that was not full (a full batch of kept manifests
        // may hide deletable ones behind it; each round either deletes or asks for more).
        let mut skipped: i64 = 0;
        loop {
            let limit = skipped.saturating_add(BATCH);
            let (removed, kept) = self.write(|tx| expire_batch(tx, cutoff, keep_outbox, limit))?;
            deleted += removed;
            skipped = kept;
            let full = i64::try_from(removed)
                .unwrap_or(i64::MAX)
                .saturating_add(kept)
                >= limit;
            if removed == 0 && !full {
                return Ok(deleted);
            }
        }
    }

    fn lapse_links(&self, cutoff: i64, dry_run: bool) -> Result<u64> {
        if dry_run {
            return self.read(|c| {
                let r = c.query_typed_one(
                    "SELECT count(*) FROM blob_links WHERE unref_since <= $1",
                    &[int(&cutoff)],
                )?;
                Ok(unsigned(r.try_get(0)?))
            });
        }
        let mut lapsed = 0;
        loop {
            let n = self.write(|tx| {
                Ok(tx.execute_typed(
                    "DELETE FROM blob_links WHERE (repo_id, digest) IN
                      (SELECT repo_id, digest FROM blob_links
                        WHERE unref_since IS NOT NULL AND unref_since <= $1 LIMIT $2)",
                    &[int(&cutoff), int(&BATCH)],
                )?)
            })?;
            lapsed += n;
            if n < BATCH.unsigned_abs() {
                return Ok(lapsed);
            }
        }
    }

    fn sweep_blobs(
        &self,
        digests: &[Digest],
        now: i64,
        remove: &mut dyn FnMut(&Digest) -> Result<Option<u64>>,
    ) -> Result<(u64, u64)> {
        self.write(|tx| {
            // Nothing in the database changes between the checks (`remove` deletes blobs, not
            // rows), so checking all at once decides as checking each in turn would.
            let kept = blobs_kept(tx, digests, now, None)?;
            let (mut blobs, mut bytes) = (0, 0);
            let mut swept: Vec<&str> = Vec::new();
            for (d, kept) in digests.iter().zip(kept) {
                if kept {
                    continue;
                }
                if let Some(freed) = remove(d)? {
                    blobs += 1;
                    bytes += freed;
                }
                swept.push(d.as_str());
            }
            if !swept.is_empty() {
                tx.execute_typed(
                    "DELETE FROM blob_holds WHERE digest = ANY($1)",
                    &[texts(&swept)],
                )?;
            }
            Ok((blobs, bytes))
        })
    }

    fn blobs_unkept(&self, digests: &[Digest], now: i64, lapse_cutoff: i64) -> Result<Vec<bool>> {
        let kept = self.read(|c| blobs_kept(c, digests, now, Some(lapse_cutoff)))?;
        Ok(kept.into_iter().map(|k| !k).collect())
    }

    fn drop_expired_holds(&self, now: i64) -> Result<()> {
        self.write(|tx| {
            tx.execute_typed(
                "DELETE FROM blob_holds WHERE keep_until <= $1",
                &[int(&now)],
            )?;
            Ok(())
        })
    }
}
