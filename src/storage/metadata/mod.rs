//! SQLite metadata (WAL): repositories, blob links, manifests, tags, referrers, uploads, events.
//!
//! One writer connection behind a mutex (SQLite allows one writer anyway) and a small pool of
//! reader connections, which WAL lets run alongside the writer. Every call is synchronous: the
//! HTTP edge runs them on the blocking pool.

mod access;
mod events;
mod gc;
mod hierarchy;
mod manifests;
mod refs;
mod repos;
mod schema;
mod state_key;
mod stats;
mod sync;
pub mod tag_list;
mod uploads;

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{Connection, OpenFlags};

pub use access::{AccessRows, RecordSource, ScopeMapRow, TokenRow};
pub use events::{Event, EventAction, Origin};
pub use hierarchy::{HierarchyChange, RegistryRow};
pub use manifests::{ManifestRecord, Referrer};
pub use state_key::{StateKey, StatePrefix};
pub use stats::ContentCounts;

use super::error::{Result, StorageError};

/// Readers kept open for reuse; more may be opened under load and are then dropped.
const READER_POOL: usize = 4;

/// Handle on the metadata database.
pub struct Metadata {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
}

impl std::fmt::Debug for Metadata {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metadata")
            .field("path", &self.path)
            .finish()
    }
}

impl Metadata {
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
        Ok(Metadata {
            path,
            writer: Mutex::new(conn),
            readers: Mutex::new(Vec::new()),
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
        let pooled = self.readers.lock().ok().and_then(|mut p| p.pop());
        let conn = match pooled {
            Some(c) => c,
            None => {
                let c = Connection::open_with_flags(
                    &self.path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                c.busy_timeout(std::time::Duration::from_secs(5))?;
                c
            }
        };
        let out = f(&conn);
        if let Ok(mut pool) = self.readers.lock() {
            if pool.len() < READER_POOL {
                pool.push(conn);
            }
        }
        out
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

/// `PRAGMA quick_check`: every page's structure; an error naming the file when it fails.
fn quick_check(conn: &Connection, path: &Path) -> Result<()> {
    let check: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
    if check != "ok" {
        return Err(StorageError::Corrupt(format!(
            "{} failed its integrity check: {check}",
            path.display()
        )));
    }
    Ok(())
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

    /// The integrity check is skipped only after a clean close: writes leave frames in the
    /// write-ahead log until the shutdown checkpoint empties it.
    #[test]
    fn the_log_holds_frames_until_the_shutdown_checkpoint() {
        let tmp = tempfile::TempDir::new().unwrap_or_else(|e| panic!("{e}"));
        assert!(!wal_has_frames(tmp.path()), "no database yet");
        let meta = Metadata::open(tmp.path()).unwrap_or_else(|e| panic!("{e}"));
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
