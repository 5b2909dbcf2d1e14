//! PostgreSQL implementation of `UploadSessions`: upload session rows every replica finds.

use ::postgres::Transaction;

use super::PgMetadata;
use crate::registry::RepoName;
use crate::storage::error::{Result, StorageError};
use crate::storage::fsutil::now_secs;
use crate::storage::metadata::UploadSessions;
use crate::storage::uploads::SessionCaps;

/// Refuses a new session when the registry, the repository or the client has its fill. Run in
/// the write transaction that inserts it: the writer lock keeps every other replica's starts
/// out until it commits, so the counts cannot go stale before the insert.
fn check_caps(
    tx: &mut Transaction<'_>,
    repo: &RepoName,
    client: &str,
    caps: &SessionCaps,
) -> Result<()> {
    let row = tx.query_one(
        "SELECT count(*),
                count(*) FILTER (WHERE repo = $1),
                count(*) FILTER (WHERE client = $2)
         FROM uploads",
        &[&repo.as_str(), &client],
    )?;
    let count =
        |i: usize| -> Result<u64> { Ok(u64::try_from(row.try_get::<_, i64>(i)?).unwrap_or(0)) };
    let full = |what: &str, cap: u64| {
        Err(StorageError::TooManySessions(format!(
            "too many open upload sessions {what} (at most {cap}); finish or cancel one, \
             or retry later"
        )))
    };
    if count(0)? >= caps.total {
        return full("in this registry", caps.total);
    }
    if count(1)? >= caps.per_repository {
        return full("in this repository", caps.per_repository);
    }
    if count(2)? >= caps.per_client {
        return full("from this client", caps.per_client);
    }
    Ok(())
}

impl UploadSessions for PgMetadata {
    fn create_upload(
        &self,
        id: &str,
        repo: &RepoName,
        client: &str,
        caps: &SessionCaps,
    ) -> Result<()> {
        let now = now_secs();
        self.write(|tx| {
            check_caps(tx, repo, client, caps)?;
            tx.execute(
                "INSERT INTO uploads (id, repo, created, updated, client)
                 VALUES ($1, $2, $3, $3, $4)",
                &[&id, &repo.as_str(), &now, &client],
            )?;
            Ok(())
        })
    }

    fn upload_repo(&self, id: &str) -> Result<Option<String>> {
        self.read(|c| {
            let row = c.query_opt("SELECT repo FROM uploads WHERE id = $1", &[&id])?;
            Ok(row.map(|r| r.try_get(0)).transpose()?)
        })
    }

    fn touch_upload(&self, id: &str) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "UPDATE uploads SET updated = $2 WHERE id = $1",
                &[&id, &now_secs()],
            )?;
            Ok(())
        })
    }

    fn delete_upload(&self, id: &str) -> Result<()> {
        self.write(|tx| {
            tx.execute("DELETE FROM uploads WHERE id = $1", &[&id])?;
            Ok(())
        })
    }

    fn idle_uploads(&self, cutoff: i64) -> Result<Vec<String>> {
        // In no particular order, as in SQLite (whose order is that of insertion).
        self.read(|c| {
            c.query("SELECT id FROM uploads WHERE updated < $1", &[&cutoff])?
                .iter()
                .map(|r| Ok(r.try_get(0)?))
                .collect()
        })
    }

    fn all_uploads(&self) -> Result<Vec<String>> {
        self.idle_uploads(i64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::super::state::test_db::database;
    use super::*;

    /// Concurrent starts from several threads (as from several replicas) never take the open
    /// sessions past a cap: exactly the cap's worth succeed, the rest are refused.
    #[test]
    fn concurrent_starts_never_overshoot_the_caps() {
        let (_s, meta) = database("uploads_caps");
        let repo = |name: &str| RepoName::parse(name).unwrap_or_else(|e| panic!("{e}"));
        let (app, other) = (repo("app"), repo("other"));
        let caps = |total, per_client, per_repository| SessionCaps {
            total,
            per_client,
            per_repository,
        };
        // (cap tested, caps, repository, one client for all or one each, sessions open after)
        let rounds = [
            ("per repository", caps(100, 100, 5), &app, None, 5),
            ("per client", caps(100, 3, 100), &other, Some("one"), 8),
            ("in all", caps(11, 100, 100), &other, None, 11),
        ];
        let next = AtomicUsize::new(0);
        for (what, caps, repo, client, open) in rounds {
            let before = meta.all_uploads().unwrap_or_else(|e| panic!("{e}")).len();
            let started = AtomicUsize::new(0);
            std::thread::scope(|s| {
                for _ in 0..4 {
                    let (meta, next, started, caps) = (&meta, &next, &started, &caps);
                    s.spawn(move || {
                        for _ in 0..5 {
                            let n = next.fetch_add(1, Ordering::SeqCst);
                            let own = format!("client-{n}");
                            let client = client.unwrap_or(&own);
                            match meta.create_upload(&format!("u{n}"), repo, client, caps) {
                                Ok(()) => {
                                    started.fetch_add(1, Ordering::SeqCst);
                                }
                                Err(StorageError::TooManySessions(_)) => {}
                                Err(e) => panic!("{e}"),
                            }
                        }
                    });
                }
            });
            let after = meta.all_uploads().unwrap_or_else(|e| panic!("{e}")).len();
            assert_eq!(after, open, "{what}");
            assert_eq!(started.into_inner(), after - before, "{what}");
        }
    }
}
