//! SQLite metadata in the data directory (WAL), the embedded default: repositories, blob links, manifests, tags, referrers, uploads, events.
//!
//! One writer connection behind a mutex (SQLite allows one writer anyway) and a small, bounded
//! pool of reader connections, which WAL lets run alongside the writer. Every call is
//! synchronous: the HTTP edge runs them on the blocking pool.

mod access;
mod events;
mod gc;
mod hierarchy;
mod leases;
mod manifests;
mod refs;
mod repos;
mod schema;
mod seam;
mod secrets;
mod stats;
mod summary;
mod sync;
mod tag_list;
mod uploads;

use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};

use rusqlite::{Connection, OpenFlags};

use crate::storage::error::{Result, StorageError};

/// Most reader connections open at once; a read waits for a free one rather than opening more.
/// A pooled reader keeps its page cache warm, while a fresh one parses the schema and reads every
/// b-tree level again: with 100,000 tags, the reads that overflowed the pool into short-lived
/// connections cut manifest GETs by a fifth and left their caches' memory fragmented behind.
const READERS: usize = 4;

/// Reader connections not in use, and how many are open in all.
#[derive(Default)]
struct Readers {
    idle: Vec<Connection>,
    open: usize,
}

/// Handle on the metadata database.
pub struct SqliteMetadata {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Readers>,
    /// Signalled when a reader goes back to the pool or is closed.
    reader_free: Condvar,
}

/// One open reader's place in the count; dropping it (the reader was closed, its open failed or
/// a read panicked) frees the place for another.
struct Slot<'a>(&'a SqliteMetadata);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.lock_readers().open -= 1;
        self.0.reader_free.notify_one();
    }
}

impl std::fmt::Debug for SqliteMetadata {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteMetadata")
            .field("path", &self.path)
            .finish()
    }
}

impl SqliteMetadata {
    /// Opens or creates `registry.db`, checks its integrity when it was not closed cleanly and
    /// brings its schema up to date.
    pub fn open(data_dir: &Path) -> Result<Self> {
        let path = data_dir.join("registry.db");
        let unclean = wal_has_frames(data_dir);
        let conn = Connection::open(&path)?;
        configure(&conn)?;
        if unclean {
            quick_check(&conn, &path)?;
        }
        schema::migrate(&conn)?;
        Ok(SqliteMetadata {
            path,
            writer: Mutex::new(conn),
            readers: Mutex::new(Readers::default()),
            reader_free: Condvar::new(),
        })
    }

    /// Runs `f` inside one write transaction, committed (durably) only if `f` succeeds.
    fn write<T>(&self, f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T>) -> Result<T> {
        let mut conn = self
            .writer
            .lock()
            .map_err(|_| StorageError::Corrupt("metadata writer lock poisoned".into()))?;
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }

    /// Runs `f` on a pooled read-only connection.
    fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let (conn, slot) = self.lease()?;
        let out = f(&conn);
        self.lock_readers().idle.push(conn);
        // Back in the pool, the reader keeps its place.
        std::mem::forget(slot);
        self.reader_free.notify_one();
        out
    }

    /// An idle reader, else a new one while fewer than `READERS` are open, else the next one
    /// that goes back to the pool; with its place in the count.
    fn lease(&self) -> Result<(Connection, Slot<'_>)> {
        let mut r = self.lock_readers();
        loop {
            if let Some(c) = r.idle.pop() {
                return Ok((c, Slot(self)));
            }
            if r.open < READERS {
                r.open += 1;
                drop(r);
                let slot = Slot(self);
                return Ok((open_reader(&self.path)?, slot));
            }
            r = self
                .reader_free
                .wait(r)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    /// The reader pool; a panic elsewhere cannot leave it inconsistent (every change is one step).
    fn lock_readers(&self) -> MutexGuard<'_, Readers> {
        self.readers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Flushes the WAL into the main file; called at shutdown so the directory is tidy.
    pub fn checkpoint(&self) -> Result<()> {
        let conn = self
            .writer
            .lock()
            .map_err(|_| StorageError::Corrupt("metadata writer lock poisoned".into()))?;
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
        Ok(())
    }
}

/// Whether the write-ahead log holds frames, i.e. the last process that wrote did not close the
/// database cleanly (a clean close checkpoints the log and truncates or removes it). Only then is
/// the integrity check worth its cost: it reads every page, about 0.4 s per 100,000 tags with a
/// warm cache and several times that cold, and leaves the page cache full. An unreadable log
/// counts as unclean.
fn wal_has_frames(data_dir: &Path) -> bool {
    match std::fs::metadata(data_dir.join("registry.db-wal")) {
        Ok(m) => m.len() > 0,
        Err(e) => e.kind() != std::io::ErrorKind::NotFound,
    }
}

/// `PRAGMA quick_check`: every page's structure; an error naming the file when it fails. It
/// runs with a small page cache: it reads each page about once, and a full default cache would
/// stay resident in the idle server.
fn quick_check(conn: &Connection, path: &Path) -> Result<()> {
    let cache: i64 = conn.query_row("PRAGMA cache_size", [], |r| r.get(0))?;
    conn.execute_batch("PRAGMA cache_size = -256")?;
    let check: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
    conn.execute_batch(&format!("PRAGMA cache_size = {cache}"))?;
    if check != "ok" {
        return Err(StorageError::Corrupt(format!(
            "{} failed its integrity check: {check}",
            path.display()
        )));
    }
    Ok(())
}

/// A read-only connection to the database at `path`.
fn open_reader(path: &Path) -> Result<Connection> {
    let c = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    c.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(c)
}

/// Durability settings: WAL with full sync, so a commit that returned is on disk.
fn configure(conn: &Connection) -> Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = FULL;
         PRAGMA foreign_keys = ON;",
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh, empty metadata database in a temporary directory (for this module's children too).
    pub(super) fn open() -> (tempfile::TempDir, SqliteMetadata) {
        let tmp = tempfile::TempDir::new().unwrap_or_else(|e| panic!("{e}"));
        let meta = SqliteMetadata::open(tmp.path()).unwrap_or_else(|e| panic!("{e}"));
        (tmp, meta)
    }

    /// A select that proves the reader works.
    fn one(c: &Connection) -> Result<i64> {
        Ok(c.query_row("SELECT 1", [], |r| r.get(0))?)
    }

    /// Many reads at once share at most `READERS` connections, all back in the pool afterwards.
    #[test]
    fn concurrent_reads_share_a_bounded_pool() {
        let (_tmp, meta) = open();
        let most = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 * READERS {
                s.spawn(|| {
                    meta.read(|c| {
                        let open = meta.lock_readers().open;
                        most.fetch_max(open, std::sync::atomic::Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(20));
                        one(c)
                    })
                    .unwrap_or_else(|e| panic!("{e}"))
                });
            }
        });
        assert!(most.into_inner() <= READERS);
        let r = meta.lock_readers();
        assert_eq!(r.idle.len(), r.open);
    }

    /// A read that panics closes its reader and frees its place; reads go on.
    #[test]
    fn a_panicking_read_frees_its_place() {
        let (_tmp, meta) = open();
        for _ in 0..READERS + 1 {
            let read =
                std::panic::AssertUnwindSafe(|| meta.read(|_| -> Result<()> { panic!("bug") }));
            assert!(std::panic::catch_unwind(read).is_err());
        }
        assert_eq!(meta.lock_readers().open, 0);
        assert_eq!(meta.read(one).ok(), Some(1));
    }

    /// The integrity check is skipped only after a clean close: writes leave frames in the
    /// write-ahead log until the shutdown checkpoint empties it.
    #[test]
    fn the_log_holds_frames_until_the_shutdown_checkpoint() {
        let tmp = tempfile::TempDir::new().unwrap_or_else(|e| panic!("{e}"));
        assert!(!wal_has_frames(tmp.path()), "no database yet");
        let meta = SqliteMetadata::open(tmp.path()).unwrap_or_else(|e| panic!("{e}"));
        meta.write(|tx| {
            tx.execute_batch("INSERT INTO repositories (name, created) VALUES ('app', 0)")?;
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(wal_has_frames(tmp.path()), "a write not yet checkpointed");
        meta.checkpoint().unwrap_or_else(|e| panic!("{e}"));
        assert!(!wal_has_frames(tmp.path()), "after the shutdown checkpoint");
    }
}
