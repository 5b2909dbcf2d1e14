//! The event log: the single source for push-up, change feeds, notifications and audit.

use rusqlite::{params, Connection};

use super::SqliteMetadata;
use crate::storage::error::Result;
use crate::storage::fsutil::now_secs;
use crate::storage::metadata::{Event, EventAction, Origin};

/// The fields of an event to append; `seq` and `time` are assigned on insert.
pub(super) struct NewEvent<'a> {
    pub repo: &'a str,
    pub action: EventAction,
    pub tag: Option<&'a str>,
    pub digest: &'a str,
    pub previous: Option<&'a str>,
    pub media_type: Option<&'a str>,
    pub size: Option<i64>,
    pub origin: Origin,
}

/// Appends an event inside the caller's transaction, so it commits with the change itself.
pub(super) fn append(conn: &Connection, e: NewEvent<'_>) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO events (time, repo, action, tag, digest, previous, media_type, size, origin)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        now_secs(),
        e.repo,
        e.action.as_str(),
        e.tag,
        e.digest,
        e.previous,
        e.media_type,
        e.size,
        e.origin.as_str()
    ])?;
    Ok(())
}

/// The columns every event query reads, in `row_event` order.
const COLUMNS: &str = "seq, time, repo, action, tag, digest, previous, media_type, size, origin";
/// The actions this version knows; rows of others (a newer version's) are passed over.
const KNOWN: &str = "action IN ('manifest_put', 'manifest_delete', 'tag_set', 'tag_delete')";

/// The action of a stored event (queries select known ones only, see `KNOWN`).
fn action_of(s: &str) -> rusqlite::Result<EventAction> {
    EventAction::parse(s).ok_or_else(|| {
        let e = format!("unknown event action {s:?}");
        rusqlite::Error::FromSqlConversionFailure(3, rusqlite::types::Type::Text, e.into())
    })
}

fn row_event(r: &rusqlite::Row<'_>) -> rusqlite::Result<Event> {
    Ok(Event {
        seq: r.get(0)?,
        time: r.get(1)?,
        repo: r.get(2)?,
        action: action_of(&r.get::<_, String>(3)?)?,
        tag: r.get(4)?,
        digest: r.get(5)?,
        previous: r.get(6)?,
        media_type: r.get(7)?,
        size: r.get(8)?,
        origin: Origin::parse(&r.get::<_, String>(9)?),
    })
}

impl SqliteMetadata {
    /// Client-made events of `repo` after `after`, oldest first, at most `limit`: the push-up
    /// outbox of one repository.
    pub(super) fn client_events(&self, repo: &str, after: i64, limit: usize) -> Result<Vec<Event>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM events
                 WHERE repo = ?1 AND seq > ?2 AND origin = 'client' AND {KNOWN}
                 ORDER BY seq LIMIT ?3"
            ))?;
            let rows = stmt.query_map(params![repo, after, limit as i64], row_event)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    /// How many client-made events of `repo` after `after` wait, and the oldest one's time.
    pub(super) fn outbox_size(&self, repo: &str, after: i64) -> Result<(u64, Option<i64>)> {
        self.read(|c| {
            Ok(c.query_row(
                "SELECT count(*), min(time) FROM events
                 WHERE repo = ?1 AND seq > ?2 AND origin = 'client'",
                params![repo, after],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)),
            )?)
        })
    }

    /// Events with a sequence number above `after`, oldest first, at most `limit`.
    pub(super) fn events_after(&self, after: i64, limit: usize) -> Result<Vec<Event>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM events WHERE seq > ?1 AND {KNOWN} ORDER BY seq LIMIT ?2"
            ))?;
            let rows = stmt.query_map(params![after, limit as i64], row_event)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }
}
