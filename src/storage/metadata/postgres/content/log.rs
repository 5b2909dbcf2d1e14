//! Appending to the event log, inside the transaction of the change it records.

use ::postgres::GenericClient;

use super::sql::{int, text};
use crate::storage::error::Result;
use crate::storage::fsutil::now_secs;
use crate::storage::metadata::{EventAction, Origin};

/// The fields of an event to append; `seq` and `time` are assigned on insert.
pub(crate) struct NewEvent<'a> {
    /// Repository name.
    pub repo: &'a str,
    /// What happened.
    pub action: EventAction,
    /// The tag, for tag events.
    pub tag: Option<&'a str>,
    /// The manifest digest concerned.
    pub digest: &'a str,
    /// For `tag_set`, where the tag pointed before.
    pub previous: Option<&'a str>,
    /// Manifest media type, when known.
    pub media_type: Option<&'a str>,
    /// Manifest size, when known.
    pub size: Option<i64>,
    /// Who made the change.
    pub origin: Origin,
}

/// Appends an event inside the caller's write transaction, so it commits with the change
/// itself; its `seq` follows commit order because the writer lock is held.
pub(crate) fn append(tx: &mut impl GenericClient, e: NewEvent<'_>) -> Result<()> {
    tx.execute_typed(
        "INSERT INTO events (time, repo, action, tag, digest, previous, media_type, size, origin)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        &[
            int(&now_secs()),
            text(&e.repo),
            text(&e.action.as_str()),
            text(&e.tag),
            text(&e.digest),
            text(&e.previous),
            text(&e.media_type),
            int(&e.size),
            text(&e.origin.as_str()),
        ],
    )?;
    Ok(())
}
