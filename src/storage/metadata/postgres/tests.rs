//! Tests against a real PostgreSQL server (`crate::testing::Postgres`).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use super::*;
use crate::testing;

/// The PostgreSQL server the tests running at the moment share.
fn server() -> Arc<testing::SharedPostgres> {
    testing::Postgres::shared()
}

/// A fresh, empty database named `name` on the shared server, with the server kept running.
fn database(name: &str) -> (Arc<testing::SharedPostgres>, String) {
    let s = server();
    let url = s.create_database(name);
    (s, url)
}

/// Opens `url`, panicking on failure.
fn open(url: &str) -> PgMetadata {
    PgMetadata::open(url).unwrap_or_else(|e| panic!("{e}"))
}

/// Adds a repository, returning its id.
fn add_repo(meta: &PgMetadata, name: &str) -> Result<i64> {
    meta.write(|tx| {
        let row = tx.query_one(
            "INSERT INTO repositories (name, created) VALUES ($1, 0) RETURNING id",
            &[&name],
        )?;
        Ok(row.try_get(0)?)
    })
}

/// The number of rows in `table`.
fn count(meta: &PgMetadata, table: &str) -> i64 {
    meta.read(|c| {
        Ok(c.query_one(&format!("SELECT count(*) FROM {table}"), &[])?
            .try_get(0)?)
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

/// Two replicas opening an empty database at once both succeed and it ends at version 1 with
/// the generation rows in place.
#[test]
fn replicas_opening_an_empty_database_at_once_agree() {
    let (_s, url) = database("open_at_once");
    let metas: Vec<PgMetadata> = std::thread::scope(|s| {
        let opening: Vec<_> = (0..2).map(|_| s.spawn(|| PgMetadata::open(&url))).collect();
        opening
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| panic!("open panicked"))
                    .unwrap_or_else(|e| panic!("{e}"))
            })
            .collect()
    });
    for meta in &metas {
        assert_eq!(meta.read(schema::version).ok(), Some(schema::VERSION));
        assert_eq!(schema::VERSION, 1);
    }
    assert_eq!(count(&metas[0], "schema_version"), 1);
    assert_eq!(count(&metas[0], "access_generation"), 1);
    assert_eq!(count(&metas[0], "hierarchy_generation"), 1);
    // Opening again is a no-op.
    drop(open(&url));
}

/// A database written by a newer build is refused.
#[test]
fn a_newer_schema_is_refused() {
    let (_s, url) = database("newer_schema");
    let meta = open(&url);
    meta.write(|tx| Ok(tx.batch_execute("UPDATE schema_version SET version = 99")?))
        .unwrap_or_else(|e| panic!("{e}"));
    match PgMetadata::open(&url) {
        Err(StorageError::Corrupt(m)) => assert!(m.contains("99"), "{m}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

/// What a write commits, a read sees; identity columns number rows from 1.
#[test]
fn a_write_is_read_back() {
    let (_s, url) = database("round_trip");
    let meta = open(&url);
    let id = add_repo(&meta, "app").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(id, 1);
    let name: String = meta
        .read(|c| {
            let row = c.query_one("SELECT name FROM repositories WHERE id = $1", &[&id])?;
            Ok(row.try_get(0)?)
        })
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(name, "app");
    let body = vec![0u8, 1, 255];
    meta.write(|tx| {
        tx.execute(
            "INSERT INTO manifest_content (digest, media_type, body) VALUES ('d', 't', $1)",
            &[&body],
        )?;
        Ok(())
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let (stored, total): (Vec<u8>, i64) = meta
        .read_tx(|tx| {
            let body = tx.query_one("SELECT body FROM manifest_content", &[])?;
            let total = tx.query_one("SELECT count(*) FROM repositories", &[])?;
            Ok((body.try_get(0)?, total.try_get(0)?))
        })
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((stored, total), (body, 1));
}

/// A write whose closure fails leaves nothing behind, and its connection serves the next call.
#[test]
fn a_failed_write_leaves_nothing() {
    let (_s, url) = database("failed_write");
    let meta = open(&url);
    let failed = meta.write(|tx| -> Result<()> {
        tx.execute(
            "INSERT INTO repositories (name, created) VALUES ('app', 0)",
            &[],
        )?;
        tx.execute(
            "INSERT INTO events (time, repo, action, digest) VALUES (0, 'app', 'push', 'd')",
            &[],
        )?;
        Err(StorageError::Busy("changed its mind".into()))
    });
    assert!(matches!(failed, Err(StorageError::Busy(_))), "{failed:?}");
    assert_eq!(count(&meta, "repositories"), 0);
    assert_eq!(count(&meta, "events"), 0);
    assert_eq!(
        add_repo(&meta, "app").ok(),
        Some(2),
        "the rolled back id is not reused"
    );
}

/// A read-only snapshot refuses writes.
#[test]
fn a_snapshot_read_cannot_write() {
    let (_s, url) = database("read_only");
    let meta = open(&url);
    let wrote = meta.read_tx(|tx| {
        Ok(tx.execute(
            "INSERT INTO repositories (name, created) VALUES ('x', 0)",
            &[],
        )?)
    });
    assert!(matches!(wrote, Err(StorageError::Postgres(_))), "{wrote:?}");
    assert_eq!(count(&meta, "repositories"), 0);
}

/// Unique violations are recognisable (here: registry names that differ only in case), and
/// the error's message carries the server's.
#[test]
fn unique_violations_are_recognised() {
    let (_s, url) = database("unique");
    let meta = open(&url);
    let insert = "INSERT INTO connected_registries (name, definition, created, updated)
                  VALUES ($1, '{}', 0, 0)";
    meta.write(|tx| Ok(tx.execute(insert, &[&"Edge-One"])?))
        .unwrap_or_else(|e| panic!("{e}"));
    let dup = meta.write(|tx| {
        let e = tx
            .execute(insert, &[&"edge-one"])
            .err()
            .unwrap_or_else(|| panic!("a name differing in case only was accepted"));
        assert!(is_unique_violation(&e), "{e:?}");
        Err::<(), _>(e.into())
    });
    let message = dup.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(message.contains("duplicate key"), "{message}");
    let found: i64 = meta
        .read(|c| {
            let row = c.query_one(
                "SELECT count(*) FROM connected_registries WHERE lower(name) = lower($1)",
                &[&"EDGE-ONE"],
            )?;
            Ok(row.try_get(0)?)
        })
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(found, 1);
    let other = meta.read(|c| Ok(c.execute("SELECT 1/0", &[])?)).err();
    assert!(
        !other
            .as_ref()
            .is_some_and(|e| matches!(e, StorageError::Postgres(p) if is_unique_violation(p))),
        "{other:?}"
    );
}

/// Writers on several threads (as on several replicas) are serialized: sequence numbers are
/// distinct and follow the order in which writers held the lock, i.e. commit order.
#[test]
fn concurrent_writers_number_events_in_commit_order() {
    let (_s, url) = database("event_order");
    let meta = open(&url);
    // Taken under the writer lock: the order in which writers held it.
    let turn = AtomicI64::new(0);
    std::thread::scope(|s| {
        for t in 0..4 {
            let (meta, turn) = (&meta, &turn);
            s.spawn(move || {
                for _ in 0..25 {
                    meta.write(|tx| {
                        let n = turn.fetch_add(1, Ordering::SeqCst);
                        tx.execute(
                            "INSERT INTO events (time, repo, action, digest)
                             VALUES ($1, $2, 'push', 'd')",
                            &[&n, &format!("r{t}")],
                        )?;
                        Ok(())
                    })
                    .unwrap_or_else(|e| panic!("{e}"));
                }
            });
        }
    });
    let rows: Vec<(i64, i64)> = meta
        .read(|c| {
            c.query("SELECT seq, time FROM events ORDER BY seq", &[])?
                .iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                .collect()
        })
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rows.len(), 100);
    let turns: Vec<i64> = rows.iter().map(|r| r.1).collect();
    assert_eq!(
        turns,
        (0..100).collect::<Vec<_>>(),
        "seq follows lock order"
    );
    assert!(rows.windows(2).all(|w| w[0].0 < w[1].0));
}

/// Many calls at once share at most `CLIENTS` connections, all back in the pool afterwards.
#[test]
fn concurrent_calls_share_a_bounded_pool() {
    let (_s, url) = database("bounded_pool");
    let meta = open(&url);
    let most = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..2 * pool::CLIENTS {
            s.spawn(|| {
                meta.read(|c| {
                    most.fetch_max(meta.pool.counts().0, Ordering::SeqCst);
                    Ok(c.batch_execute("SELECT pg_sleep(0.05)")?)
                })
                .unwrap_or_else(|e| panic!("{e}"))
            });
        }
    });
    assert!(most.into_inner() <= pool::CLIENTS);
    let (open, idle) = meta.pool.counts();
    assert_eq!(open, idle);
}

/// A call that panics closes its connection and frees its place; a connection the server
/// closed is dropped, not pooled; calls go on.
#[test]
fn panics_and_broken_connections_free_their_place() {
    let (_s, url) = database("broken");
    let meta = open(&url);
    for _ in 0..pool::CLIENTS + 1 {
        let write =
            std::panic::AssertUnwindSafe(|| meta.write(|_| -> Result<()> { panic!("bug") }));
        assert!(std::panic::catch_unwind(write).is_err());
    }
    assert_eq!(meta.pool.counts(), (0, 0));
    let killed =
        meta.read(|c| Ok(c.batch_execute("SELECT pg_terminate_backend(pg_backend_pid())")?));
    assert!(
        matches!(killed, Err(StorageError::Postgres(_))),
        "{killed:?}"
    );
    assert_eq!(meta.pool.counts(), (0, 0), "the broken connection went");
    assert_eq!(add_repo(&meta, "app").ok(), Some(1));
    assert_eq!(meta.pool.counts(), (1, 1));
}

/// The client blocks on a runtime of its own: it works on the blocking pool and inside
/// `block_in_place` on a multi-thread runtime, and a handle dropped on a worker thread closes
/// its connections without panicking.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn works_from_blocking_contexts_of_a_runtime() {
    let (server, url) = tokio::task::spawn_blocking(|| database("from_tokio"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let meta = Arc::new(
        tokio::task::spawn_blocking(move || PgMetadata::open(&url))
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("{e}")),
    );
    let m = meta.clone();
    let id = tokio::task::spawn_blocking(move || add_repo(&m, "blocking"))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(id, 1);
    let id = tokio::task::block_in_place(|| add_repo(&meta, "in-place"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(id, 2);
    assert_eq!(
        tokio::task::block_in_place(|| count(&meta, "repositories")),
        2
    );
    let meta = Arc::into_inner(meta).unwrap_or_else(|| panic!("still shared"));
    assert_eq!(meta.pool.counts().1, 1, "an idle connection to close");
    drop(meta);
    tokio::task::spawn_blocking(move || drop(server))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

/// Debug output names the database but never the password.
#[test]
fn debug_hides_the_password() {
    let (_s, url) = database("debug");
    // The test server trusts every connection, so any password opens it.
    let with_password = url.replacen("postgres@", "postgres:s3cr3t-pw@", 1);
    assert_ne!(with_password, url);
    let shown = format!("{:?}", open(&with_password));
    assert!(!shown.contains("s3cr3t-pw"), "{shown}");
    assert!(
        shown.contains("debug") && shown.contains("127.0.0.1"),
        "{shown}"
    );
    let bad = PgMetadata::open("postgres://postgres:s3cr3t-pw@127.0.0.1:notaport/x");
    let shown = format!("{bad:?}");
    assert!(matches!(bad, Err(StorageError::Config(_))), "{shown}");
    assert!(!shown.contains("s3cr3t-pw"), "{shown}");
}
