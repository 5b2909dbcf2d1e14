//! PostgreSQL implementation of `EventLog`: reading the event log (appending is part of each
//! change's own transaction, in `content`).

use ::postgres::types::ToSql;
use ::postgres::{GenericClient, Row};

use super::PgMetadata;
use crate::storage::error::{Result, StorageError};
use crate::storage::metadata::{Event, EventAction, EventLog, Origin};

/// The columns every event query reads, in `row_event` order.
const COLUMNS: &str = "seq, time, repo, action, tag, digest, previous, media_type, size, origin";
/// The actions this version knows; rows of others (a newer version's) are passed over.
const KNOWN: &str = "action IN ('manifest_put', 'manifest_delete', 'tag_set', 'tag_delete')";
/// The newest event's sequence number, 0 with none.
const NEWEST: &str = "SELECT coalesce(max(seq), 0) FROM events";

/// An event from a row of `COLUMNS` (queries select known actions only, see `KNOWN`).
fn row_event(r: &Row) -> Result<Event> {
    let action: String = r.try_get(3)?;
    let action = EventAction::parse(&action)
        .ok_or_else(|| StorageError::Corrupt(format!("unknown event action {action:?}")))?;
    Ok(Event {
        seq: r.try_get(0)?,
        time: r.try_get(1)?,
        repo: r.try_get(2)?,
        action,
        tag: r.try_get(4)?,
        digest: r.try_get(5)?,
        previous: r.try_get(6)?,
        media_type: r.try_get(7)?,
        size: r.try_get(8)?,
        origin: Origin::parse(r.try_get(9)?),
    })
}

/// A limit as bound: beyond `i64::MAX` is no limit at all (SQLite's negative LIMIT).
fn limit_param(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// The events `sql` selects (its columns `COLUMNS`).
fn query_events(
    c: &mut impl GenericClient,
    sql: &str,
    args: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Event>> {
    c.query(sql, args)?.iter().map(row_event).collect()
}

/// The newest event's sequence number on `c` (0 with none).
fn newest(c: &mut impl GenericClient) -> Result<i64> {
    Ok(c.query_one(NEWEST, &[])?.try_get(0)?)
}

/// The repository names `sql` selects (its only column). Distinct names come from `GROUP BY`:
/// with `SELECT DISTINCT`, PostgreSQL refuses an `ORDER BY repo COLLATE "C"`.
fn names(
    c: &mut impl GenericClient,
    sql: &str,
    args: &[&(dyn ToSql + Sync)],
) -> Result<Vec<String>> {
    c.query(sql, args)?
        .iter()
        .map(|r| Ok(r.try_get(0)?))
        .collect()
}

impl EventLog for PgMetadata {
    fn events_after(&self, after: i64, limit: usize) -> Result<Vec<Event>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM events WHERE seq > $1 AND {KNOWN} ORDER BY seq LIMIT $2"
        );
        self.read(|c| query_events(c, &sql, &[&after, &limit_param(limit)]))
    }

    fn newest_event_seq(&self) -> Result<i64> {
        self.read(newest)
    }

    fn client_events(&self, repo: &str, after: i64, limit: usize) -> Result<Vec<Event>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM events
             WHERE repo = $1 AND seq > $2 AND origin = 'client' AND {KNOWN}
             ORDER BY seq LIMIT $3"
        );
        self.read(|c| query_events(c, &sql, &[&repo, &after, &limit_param(limit)]))
    }

    fn outbox_size(&self, repo: &str, after: i64) -> Result<(u64, Option<i64>)> {
        // Every action counts here, unknown ones included, as in SQLite.
        self.read(|c| {
            let r = c.query_one(
                "SELECT count(*), min(time) FROM events
                 WHERE repo = $1 AND seq > $2 AND origin = 'client'",
                &[&repo, &after],
            )?;
            let n: i64 = r.try_get(0)?;
            Ok((u64::try_from(n).unwrap_or(0), r.try_get(1)?))
        })
    }

    fn outbox_bytes(&self, repo: &str, after: i64) -> Result<u64> {
        // The blobs each pushed manifest lists (counted once per push, as in SQLite) plus the
        // manifests themselves; sums of BIGINT are NUMERIC, hence the cast.
        self.read(|c| {
            let n: i64 = c
                .query_one(
                    "SELECT (COALESCE(SUM(b.size), 0) + COALESCE((SELECT SUM(size) FROM events
                         WHERE repo = $1 AND seq > $2 AND origin = 'client'
                           AND action = 'manifest_put'), 0))::BIGINT
                     FROM events e
                     JOIN repositories r ON r.name = e.repo
                     JOIN manifest_refs m ON m.repo_id = r.id AND m.parent = e.digest
                                         AND m.kind = 'blob'
                     JOIN blob_links b ON b.repo_id = r.id AND b.digest = m.child
                     WHERE e.repo = $1 AND e.seq > $2 AND e.origin = 'client'
                       AND e.action = 'manifest_put'",
                    &[&repo, &after],
                )?
                .try_get(0)?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
    }

    fn changed_repositories(&self, after: i64, repos: &[String]) -> Result<(Vec<String>, i64)> {
        // Bounded by the newest number read first, so the answer agrees with it.
        self.read(|c| {
            let newest = newest(c)?;
            if newest <= after || repos.is_empty() {
                return Ok((Vec::new(), newest));
            }
            let changed = names(
                c,
                "SELECT repo FROM events
                 WHERE seq > $1 AND seq <= $2 AND repo = ANY($3)
                 GROUP BY repo ORDER BY repo COLLATE \"C\"",
                &[&after, &newest, &repos],
            )?;
            Ok((changed, newest))
        })
    }

    fn client_changes_after(&self, after: i64) -> Result<(Vec<String>, i64)> {
        self.read_tx(|tx| {
            let newest = newest(tx)?;
            let repos = names(
                tx,
                "SELECT repo FROM events WHERE seq > $1 AND origin = 'client'
                 GROUP BY repo ORDER BY repo COLLATE \"C\"",
                &[&after],
            )?;
            Ok((repos, newest))
        })
    }
}
