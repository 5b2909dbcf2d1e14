//! `connected-registry sync now` and `connected-registry status`: talk to a running server
//! through the data directory, like the other management commands.

use std::process::ExitCode;

use clap::Subcommand;
use serde_json::{json, Value};

use connected_registry::auth::AuthError;
use connected_registry::storage::metadata::StateKey;

use super::admin::{finish, open, DataDir};

/// `sync` subcommands.
#[derive(Subcommand, Debug)]
pub enum SyncCmd {
    /// Ask the running registry to sync with its parent at once.
    Now,
}

/// Runs a `sync` subcommand.
pub fn sync(data: DataDir, cmd: SyncCmd) -> ExitCode {
    let r = match cmd {
        SyncCmd::Now => open(&data).and_then(|meta| {
            let n = meta.bump_sync_counter(&StateKey::SyncRequest)?;
            Ok(json!({"sync": "requested", "request": n}))
        }),
    };
    finish(
        r,
        "sync requested: a running registry starts it within a second",
    )
}

/// Prints the last status the registry saved (connection state, last sync, progress).
pub fn status(data: DataDir) -> ExitCode {
    let r = open(&data).and_then(|meta| {
        let saved = meta.sync_state(&StateKey::Status)?;
        match saved {
            Some(text) => serde_json::from_str::<Value>(&text)
                .map_err(|e| AuthError::Internal(format!("saved status is unreadable: {e}"))),
            None => Ok(json!({
                "connectionState": "Online",
                "parent": null,
                "statusDetails": [],
                "repositories": [],
                "note": "no sync status saved: this registry has no parent or has not synced yet",
            })),
        }
    });
    finish(r, "ok")
}
