//! The event log: the single source for push-up, change feeds, notifications and audit. Every
//! tag or manifest change appends its event in the change's own transaction, with sequence
//! numbers in commit order.

use serde::Serialize;

use crate::storage::error::Result;

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

    /// Reads a stored value; `None` for an action this version does not know.
    pub fn parse(s: &str) -> Option<Self> {
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

    /// Reads a stored value (anything unknown counts as a client's, the side push-up sends).
    pub fn parse(s: &str) -> Self {
        match s {
            "sync" => Origin::Sync,
            "gc" => Origin::Gc,
            _ => Origin::Client,
        }
    }
}

/// Reading the event log.
pub trait EventLog {
    /// Events with a sequence number above `after`, oldest first, at most `limit`.
    fn events_after(&self, after: i64, limit: usize) -> Result<Vec<Event>>;

    /// The newest event's sequence number (0 with none): a cheap check for new events.
    fn newest_event_seq(&self) -> Result<i64>;

    /// Client-made events of `repo` after `after`, oldest first, at most `limit`: the push-up
    /// outbox of one repository.
    fn client_events(&self, repo: &str, after: i64, limit: usize) -> Result<Vec<Event>>;

    /// How many client-made events of `repo` after `after` wait, and the oldest one's time.
    fn outbox_size(&self, repo: &str, after: i64) -> Result<(u64, Option<i64>)>;

    /// Bytes of blobs that client manifest pushes of `repo` after event `after` reference.
    fn outbox_bytes(&self, repo: &str, after: i64) -> Result<u64>;

    /// Repositories among `repos` with an event after `after`, and the newest event's number.
    fn changed_repositories(&self, after: i64, repos: &[String]) -> Result<(Vec<String>, i64)>;

    /// Repositories with client-made events after `after`, and the newest event's number (what
    /// push-up has to send, found without scanning every repository).
    fn client_changes_after(&self, after: i64) -> Result<(Vec<String>, i64)>;
}
