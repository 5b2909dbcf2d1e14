//! Leases on PostgreSQL: a session-level advisory lock held on a connection of its own. The
//! server releases it when that connection ends, which a holder's death ends at once (the
//! kernel closes its socket) and a silent network loss ends within the keepalive time set
//! below, so another replica takes the lease over at its next try.

use std::time::Duration;

use ::postgres::{Client, NoTls};

use super::PgMetadata;
use crate::storage::error::Result;
use crate::storage::metadata::{Lease, LeaseName, Leases};

/// How long a lease's connection may answer nothing before the server drops it (and with it
/// the lease): idle 10 s, then 3 probes 5 s apart.
const KEEPALIVES: &str =
    "SET tcp_keepalives_idle = 10; SET tcp_keepalives_interval = 5; SET tcp_keepalives_count = 3";
/// How long a liveness check of the lease's connection may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// A lease held on its own connection.
struct PgLease {
    client: Option<Client>,
    key: i64,
}

impl Leases for PgMetadata {
    fn try_lease(&self, name: LeaseName) -> Result<Option<Box<dyn Lease>>> {
        let mut client = self.pool.config().connect(NoTls)?;
        client.batch_execute(KEEPALIVES)?;
        let key = name.key();
        let got: bool = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&key])?
            .try_get(0)?;
        let lease = PgLease {
            client: Some(client),
            key,
        };
        Ok(got.then(|| Box::new(lease) as Box<dyn Lease>))
    }
}

impl Lease for PgLease {
    fn is_held(&mut self) -> bool {
        let Some(client) = self.client.as_mut() else {
            return false;
        };
        // The lock lives exactly as long as the session: a live connection still holds it.
        client.is_valid(CHECK_TIMEOUT).is_ok()
    }
}

impl Drop for PgLease {
    /// Ends the session, releasing the lock; on a thread of its own, as closing a client
    /// blocks on its runtime (see `PgMetadata`'s `Drop`).
    fn drop(&mut self) {
        let Some(mut client) = self.client.take() else {
            return;
        };
        let key = self.key;
        let closing = std::thread::Builder::new()
            .name("pg-lease".into())
            .spawn(move || {
                let _ = client.execute("SELECT pg_advisory_unlock($1)", &[&key]);
            });
        if let Ok(closing) = closing {
            let _ = closing.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;

    fn open(url: &str) -> PgMetadata {
        PgMetadata::open(url).unwrap_or_else(|e| panic!("{e}"))
    }

    fn lease(m: &PgMetadata, name: LeaseName) -> Option<Box<dyn Lease>> {
        m.try_lease(name).unwrap_or_else(|e| panic!("{e}"))
    }

    /// One replica holds a lease at a time; it passes on when dropped, and when its holder's
    /// connection dies (as when the process is killed).
    #[test]
    fn one_holder_at_a_time_and_takeover_when_it_goes() {
        let server = testing::Postgres::shared();
        let url = server.create_database("leases");
        let (a, b) = (open(&url), open(&url));
        let mut held = lease(&a, LeaseName::Sync).unwrap_or_else(|| panic!("free lease refused"));
        assert!(held.is_held());
        assert!(lease(&b, LeaseName::Sync).is_none(), "two holders");
        assert!(lease(&b, LeaseName::Gc).is_some(), "leases are independent");
        drop(held);
        let mut held = lease(&b, LeaseName::Sync).unwrap_or_else(|| panic!("not passed on"));
        assert!(lease(&a, LeaseName::Sync).is_none());

        // The holder's session ends as a killed process's would.
        let mut admin = ::postgres::Client::connect(&url, NoTls).unwrap_or_else(|e| panic!("{e}"));
        admin
            .execute(
                "SELECT pg_terminate_backend(pid) FROM pg_locks
                  WHERE locktype = 'advisory' AND granted
                    AND (classid::bigint << 32) | objid::bigint = $1",
                &[&LeaseName::Sync.key()],
            )
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(!held.is_held(), "a dead session still counts as holding");
        assert!(lease(&a, LeaseName::Sync).is_some(), "not taken over");
        drop(held);
    }
}
