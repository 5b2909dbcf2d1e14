//! A bounded pool of connections to the shared database, opened lazily.

use std::sync::{Condvar, Mutex, MutexGuard};

use ::postgres::{Client, Config, NoTls};

use crate::storage::error::Result;

/// Most connections one process opens: a call waits for a free one rather than opening more, so
/// several replicas together stay well inside the server's `max_connections` (100 by default).
pub(super) const CLIENTS: usize = 8;

/// How long the check of a connection after a failed call may wait for the server.
const VALIDATE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Connections not in use, and how many are open in all.
#[derive(Default)]
struct Clients {
    idle: Vec<Client>,
    open: usize,
}

/// The pool: where to connect, the idle connections and the count of open ones.
pub(super) struct Pool {
    config: Config,
    clients: Mutex<Clients>,
    /// Signalled when a connection goes back to the pool or is closed.
    client_free: Condvar,
}

/// One open connection's place in the count; dropping it (the connection broke, its opening
/// failed or a closure panicked while holding it) frees the place for another.
pub(super) struct Slot<'a>(&'a Pool);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.lock().open -= 1;
        self.0.client_free.notify_one();
    }
}

impl Pool {
    /// An empty pool that connects with `config`.
    pub(super) fn new(config: Config) -> Self {
        Pool {
            config,
            clients: Mutex::new(Clients::default()),
            client_free: Condvar::new(),
        }
    }

    /// The settings connections are opened with.
    pub(super) fn config(&self) -> &Config {
        &self.config
    }

    /// An idle connection, else a new one while fewer than `CLIENTS` are open, else the next one
    /// that goes back to the pool; with its place in the count.
    pub(super) fn lease(&self) -> Result<(Client, Slot<'_>)> {
        let mut c = self.lock();
        loop {
            if let Some(client) = c.idle.pop() {
                return Ok((client, Slot(self)));
            }
            if c.open < CLIENTS {
                c.open += 1;
                drop(c);
                let slot = Slot(self);
                return Ok((self.config.connect(NoTls)?, slot));
            }
            c = self
                .client_free
                .wait(c)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    /// Puts a leased connection back, keeping its place; a broken one (the server restarted or
    /// ended the session, the network dropped it) is closed instead, so the next call opens a
    /// fresh one. After a `failed` call, an empty query tells a broken connection from a refused
    /// statement: the client notices a closed socket only while it waits on it.
    pub(super) fn give_back(&self, mut client: Client, slot: Slot<'_>, failed: bool) {
        if client.is_closed() || (failed && client.is_valid(VALIDATE_TIMEOUT).is_err()) {
            drop(client);
            drop(slot);
            return;
        }
        self.lock().idle.push(client);
        std::mem::forget(slot);
        self.client_free.notify_one();
    }

    /// Takes every idle connection out of the pool (to close them).
    pub(super) fn drain(&self) -> Vec<Client> {
        let mut c = self.lock();
        let idle = std::mem::take(&mut c.idle);
        c.open -= idle.len();
        idle
    }

    /// How many connections are open and how many of them are idle.
    #[cfg(test)]
    pub(super) fn counts(&self) -> (usize, usize) {
        let c = self.lock();
        (c.open, c.idle.len())
    }

    /// The pool's state; a panic elsewhere cannot leave it inconsistent (every change is one
    /// step).
    fn lock(&self) -> MutexGuard<'_, Clients> {
        self.clients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
