//! PostgreSQL metadata, for replicas that share one database (DESIGN.md §9): the connection
//! pool, transactions and schema the metadata traits are implemented on.
//!
//! Writers are serialized across every replica by one advisory lock, like SQLite's single
//! writer: the event log's sequence numbers then follow commit order, so a reader that has seen
//! `seq` n never later finds a smaller one committed. Reads run alongside writes.
//!
//! The client is synchronous and blocks on a runtime of its own: call it only where blocking is
//! allowed (the blocking pool: actix's `web::block`, `tokio::task::spawn_blocking`, or inside
//! `tokio::task::block_in_place`), never directly on an async worker thread.

mod access;
mod collection;
mod content;
mod events;
mod hierarchy;
mod leases;
mod listings;
mod pool;
mod schema;
mod secrets;
mod state;
#[cfg(test)]
mod tests;
mod uploads;

use ::postgres::config::Host;
use ::postgres::error::SqlState;
use ::postgres::{Client, Config, IsolationLevel, Transaction};

use crate::storage::error::{Result, StorageError};
use pool::Pool;

/// Advisory lock key every write transaction takes first (the bytes of "cr-write"): one writer
/// at a time across all replicas on the database.
pub(crate) const WRITER_LOCK: i64 = i64::from_be_bytes(*b"cr-write");

/// How long opening a connection may take when the URL does not say (`connect_timeout`): an
/// unreachable server fails the call instead of hanging it.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Handle on the shared PostgreSQL metadata database.
pub struct PgMetadata {
    pool: Pool,
}

// The metadata trait implementations are to use the transactions; until they exist, only the
// tests do.
#[cfg_attr(not(test), allow(dead_code))]
impl PgMetadata {
    /// Connects to the database at `url` (`postgres://user:password@host:port/db` or key=value
    /// pairs) and brings its schema up to date.
    pub fn open(url: &str) -> Result<PgMetadata> {
        let mut config: Config = url
            .parse()
            .map_err(|e| StorageError::Config(format!("invalid PostgreSQL URL: {e}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            // Names the registry's sessions in pg_stat_activity.
            config.application_name("connected-registry");
        }
        let meta = PgMetadata {
            pool: Pool::new(config),
        };
        let (mut client, slot) = meta.pool.lease()?;
        schema::migrate(&mut client)?;
        meta.pool.give_back(client, slot, false);
        Ok(meta)
    }

    /// Runs `f` inside one write transaction that first takes the writer lock, committed only if
    /// `f` succeeds. A failed statement aborts the whole transaction (unlike SQLite): to carry
    /// on after an expected error such as a unique violation, run that statement in a savepoint
    /// (`tx.transaction()`) or use `ON CONFLICT`.
    pub(crate) fn write<T>(&self, f: impl FnOnce(&mut Transaction<'_>) -> Result<T>) -> Result<T> {
        let (mut client, slot) = self.pool.lease()?;
        let out = (|| {
            // READ COMMITTED whatever the database's default: each statement then sees every
            // write committed before the lock was granted, where a REPEATABLE READ snapshot
            // would date from before the wait.
            let mut tx = client
                .build_transaction()
                .isolation_level(IsolationLevel::ReadCommitted)
                .start()?;
            tx.batch_execute(&format!("SELECT pg_advisory_xact_lock({WRITER_LOCK})"))?;
            let out = f(&mut tx)?;
            tx.commit()?;
            Ok(out)
        })();
        self.pool.give_back(client, slot, out.is_err());
        out
    }

    /// Runs `f` on a pooled connection in autocommit mode: each statement sees what was
    /// committed when it started.
    pub(crate) fn read<T>(&self, f: impl FnOnce(&mut Client) -> Result<T>) -> Result<T> {
        let (mut client, slot) = self.pool.lease()?;
        let out = f(&mut client);
        self.pool.give_back(client, slot, out.is_err());
        out
    }

    /// Runs `f` in a read-only REPEATABLE READ transaction: all its statements see one snapshot,
    /// for reads that must agree with each other (a page of tags and its total, say).
    pub(crate) fn read_tx<T>(
        &self,
        f: impl FnOnce(&mut Transaction<'_>) -> Result<T>,
    ) -> Result<T> {
        let (mut client, slot) = self.pool.lease()?;
        let out = (|| {
            let mut tx = client
                .build_transaction()
                .isolation_level(IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()?;
            let out = f(&mut tx)?;
            tx.commit()?;
            Ok(out)
        })();
        self.pool.give_back(client, slot, out.is_err());
        out
    }
}

/// Whether `e` is the server refusing a duplicate key (SQLSTATE 23505, `unique_violation`).
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) fn is_unique_violation(e: &::postgres::Error) -> bool {
    e.code() == Some(&SqlState::UNIQUE_VIOLATION)
}

impl std::fmt::Debug for PgMetadata {
    /// Where the database is, never the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = self.pool.config();
        let hosts: Vec<String> = c
            .get_hosts()
            .iter()
            .map(|h| match h {
                Host::Tcp(name) => name.clone(),
                Host::Unix(path) => path.display().to_string(),
            })
            .collect();
        f.debug_struct("PgMetadata")
            .field("user", &c.get_user())
            .field("hosts", &hosts)
            .field("ports", &c.get_ports())
            .field("dbname", &c.get_dbname())
            .finish()
    }
}

impl Drop for PgMetadata {
    /// Closes the idle connections on a thread of their own: closing one blocks on its
    /// client's runtime, which panics on an async worker thread, and a server may well drop its
    /// metadata handle there at shutdown.
    fn drop(&mut self) {
        let idle = self.pool.drain();
        if idle.is_empty() {
            return;
        }
        let closing = std::thread::Builder::new()
            .name("pg-close".into())
            .spawn(move || drop(idle));
        if let Ok(closing) = closing {
            let _ = closing.join();
        }
    }
}

impl super::MetadataStore for PgMetadata {}
