//! The event log: the single source for push-up, change feeds, notifications and audit.

use rusqlite::{params, Connection};
use serde::Serialize;

use super::Metadata;
use crate::storage::error::Result;
use crate::storage::fsutil::now_secs;

/// One tag or manifest change.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Event {
    /// Monotonic sequence number.
    pub seq: i64,
    /// Unix seconds when it happened.
    pub time: i64,
    /// Repository name.
    pub repo: String,
    /// What happened.
    pub action: EventAction,
    /// The tag, for tag events.
    pub tag: Option<String>,
    /// The manifest digest concerned.
    pub digest: String,
    /// For `tag_set`, the digest the tag pointed at before (a tag move).
    pub previous: Option<String>,
    /// Manifest media type, when known.
    pub media_type: Option<String>,
    /// Manifest size, when known.
    pub size: Option<i64>,
    /// Who made the change: a client here, or sync applying the parent's state.
    pub origin: Origin,
}

/// What an event did (stored as its `as_str` name).
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum EventAction {
    /// A manifest was stored.
    ManifestPut,
    /// A manifest (and its tags) was deleted.
    ManifestDelete,
    /// A tag was set or moved.
    TagSet,
    /// A tag was deleted.
    TagDelete,
}

impl EventAction {
    /// The value stored in the `action` column.
    pub fn as_str(self) -> &'static str {
        match self {
            EventAction::ManifestPut => "manifest_put",
            EventAction::ManifestDelete => "manifest_delete",
            EventAction::TagSet => "tag_set",
            EventAction::TagDelete => "tag_delete",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [
            EventAction::ManifestPut,
            EventAction::ManifestDelete,
            EventAction::TagSet,
            EventAction::TagDelete,
        ]
        .into_iter()
        .find(|a| a.as_str() == s)
    }
}

impl std::fmt::Display for EventAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who made a change; push-up sends only what clients did here, never what sync brought down.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// A client of this registry.
    #[default]
    Client,
    /// Sync, mirroring the parent.
    Sync,
    /// Garbage collection (the untagged retention); never pushed up.
    Gc,
}

impl Origin {
    /// The value stored in the `origin` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Client => "client",
            Origin::Sync => "sync",
            Origin::Gc => "gc",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "sync" => Origin::Sync,
            "gc" => Origin::Gc,
            _ => Origin::Client,
        }
    }
}

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

impl Metadata {
    /// Client-made events of `repo` after `after`, oldest first, at most `limit`: the push-up
    /// outbox of one repository.
    pub fn client_events(&self, repo: &str, after: i64, limit: usize) -> Result<Vec<Event>> {
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
    pub fn outbox_size(&self, repo: &str, after: i64) -> Result<(u64, Option<i64>)> {
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
    pub fn events_after(&self, after: i64, limit: usize) -> Result<Vec<Event>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM events WHERE seq > ?1 AND {KNOWN} ORDER BY seq LIMIT ?2"
            ))?;
            let rows = stmt.query_map(params![after, limit as i64], row_event)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }
}
