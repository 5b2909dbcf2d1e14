//! The metadata schema and its migrations, versioned with `PRAGMA user_version`.

use rusqlite::Connection;

use crate::storage::error::{Result, StorageError};

/// Schema version this build writes.
const VERSION: i64 = 1;

const V1: &str = "
CREATE TABLE repositories (
    id      INTEGER PRIMARY KEY,
    name    TEXT NOT NULL UNIQUE,
    created INTEGER NOT NULL
);
-- A repository may serve a blob only if it is linked here.
CREATE TABLE blob_links (
    repo_id INTEGER NOT NULL REFERENCES repositories(id),
    digest  TEXT NOT NULL,
    size    INTEGER NOT NULL,
    created INTEGER NOT NULL,
    PRIMARY KEY (repo_id, digest)
) WITHOUT ROWID;
CREATE INDEX blob_links_digest ON blob_links(digest);
-- Manifest bytes, byte-exact, shared by all repositories that have the manifest.
CREATE TABLE manifest_content (
    digest     TEXT PRIMARY KEY,
    media_type TEXT NOT NULL,
    body       BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE manifests (
    repo_id       INTEGER NOT NULL REFERENCES repositories(id),
    digest        TEXT NOT NULL,
    media_type    TEXT NOT NULL,
    size          INTEGER NOT NULL,
    subject       TEXT,
    artifact_type TEXT,
    annotations   TEXT,
    created       INTEGER NOT NULL,
    PRIMARY KEY (repo_id, digest)
) WITHOUT ROWID;
CREATE INDEX manifests_subject ON manifests(repo_id, subject) WHERE subject IS NOT NULL;
-- What each manifest references: blobs (config, layers) and child manifests (index entries).
CREATE TABLE manifest_refs (
    repo_id INTEGER NOT NULL,
    parent  TEXT NOT NULL,
    child   TEXT NOT NULL,
    kind    TEXT NOT NULL,
    PRIMARY KEY (repo_id, parent, child)
) WITHOUT ROWID;
CREATE TABLE tags (
    repo_id INTEGER NOT NULL REFERENCES repositories(id),
    name    TEXT NOT NULL,
    digest  TEXT NOT NULL,
    updated INTEGER NOT NULL,
    PRIMARY KEY (repo_id, name)
) WITHOUT ROWID;
CREATE INDEX tags_digest ON tags(repo_id, digest);
CREATE TABLE uploads (
    id      TEXT PRIMARY KEY,
    repo    TEXT NOT NULL,
    created INTEGER NOT NULL,
    updated INTEGER NOT NULL
);
-- The event log: every tag/manifest change, appended in the change's own transaction.
CREATE TABLE events (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    time       INTEGER NOT NULL,
    repo       TEXT NOT NULL,
    action     TEXT NOT NULL,
    tag        TEXT,
    digest     TEXT NOT NULL,
    previous   TEXT,
    media_type TEXT,
    size       INTEGER
);
";

/// Creates or upgrades the schema; refuses a database written by a newer build.
pub fn migrate(conn: &Connection) -> Result<()> {
    let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if current > VERSION {
        return Err(StorageError::Corrupt(format!(
            "database schema version {current} is newer than this build understands ({VERSION})"
        )));
    }
    if current < 1 {
        conn.execute_batch(&format!(
            "BEGIN IMMEDIATE; {V1} PRAGMA user_version = {VERSION}; COMMIT;"
        ))?;
    }
    Ok(())
}
