//! The metadata schema and its migrations, versioned with `PRAGMA user_version`.

use rusqlite::Connection;

use crate::storage::error::{Result, StorageError};

/// Schema version this build writes.
const VERSION: i64 = 7;

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

/// Version 2: access control (scope maps, tokens) and a generation counter that every change
/// bumps, so running servers notice changes made by the management commands.
const V2: &str = "
CREATE TABLE scope_maps (
    name        TEXT PRIMARY KEY,
    description TEXT,
    actions     TEXT NOT NULL,
    created     INTEGER NOT NULL,
    updated     INTEGER NOT NULL
);
CREATE TABLE tokens (
    name      TEXT PRIMARY KEY,
    scope_map TEXT NOT NULL REFERENCES scope_maps(name),
    status    TEXT NOT NULL,
    passwords TEXT NOT NULL,
    created   INTEGER NOT NULL,
    updated   INTEGER NOT NULL
);
CREATE TABLE access_generation (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    value INTEGER NOT NULL
);
INSERT INTO access_generation (id, value) VALUES (1, 0);
";

/// Version 3: sync. Events record who made them (push-up sends only client changes), and a
/// small key/value table keeps sync state (status for `connected-registry status`, requests
/// from `connected-registry sync now`).
const V3: &str = "
ALTER TABLE events ADD COLUMN origin TEXT NOT NULL DEFAULT 'client';
CREATE INDEX events_repo_seq ON events(repo, seq);
CREATE TABLE sync_state (
    key     TEXT PRIMARY KEY,
    value   TEXT NOT NULL,
    updated INTEGER NOT NULL
);
";

/// Version 4: a tree of connected registries. Scope maps grant gateway actions besides
/// repository actions; records received from a parent are marked (`parent`: in force here,
/// `relay`: kept only to hand on to this registry's children), so local ones are never touched
/// by sync; the definitions of this registry's descendants with their activation and the status
/// they report; a counter every definition change bumps, which children long-poll on.
const V4: &str = "
ALTER TABLE scope_maps ADD COLUMN gateways TEXT NOT NULL DEFAULT '[]';
ALTER TABLE scope_maps ADD COLUMN source TEXT NOT NULL DEFAULT 'local';
ALTER TABLE tokens ADD COLUMN source TEXT NOT NULL DEFAULT 'local';
CREATE TABLE connected_registries (
    name       TEXT PRIMARY KEY COLLATE NOCASE,
    definition TEXT NOT NULL,
    source     TEXT NOT NULL DEFAULT 'local',
    activation TEXT NOT NULL DEFAULT '{}',
    status     TEXT,
    heard      INTEGER,
    created    INTEGER NOT NULL,
    updated    INTEGER NOT NULL
);
CREATE TABLE hierarchy_generation (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    value INTEGER NOT NULL
);
INSERT INTO hierarchy_generation (id, value) VALUES (1, 0);
";

/// Version 5: reference state for online garbage collection, kept in the same transactions as
/// links, manifests and tags. A link whose blob no manifest of its repository references carries
/// the time it became unreferenced (it lapses after the grace); a manifest no tag points at
/// carries the time it lost its last tag (for the untagged retention); a blob a download just
/// moved into place is held until its first link (or the hold expires). Existing unreferenced
/// links and untagged manifests start their clocks at the upgrade.
const V5: &str = "
CREATE INDEX manifest_refs_child ON manifest_refs(repo_id, child);
ALTER TABLE blob_links ADD COLUMN unref_since INTEGER;
UPDATE blob_links SET unref_since = CAST(strftime('%s', 'now') AS INTEGER)
 WHERE NOT EXISTS (SELECT 1 FROM manifest_refs r
                   WHERE r.repo_id = blob_links.repo_id AND r.child = blob_links.digest
                     AND r.kind = 'blob');
CREATE INDEX blob_links_unref ON blob_links(unref_since) WHERE unref_since IS NOT NULL;
ALTER TABLE manifests ADD COLUMN untagged_since INTEGER;
UPDATE manifests SET untagged_since = CAST(strftime('%s', 'now') AS INTEGER)
 WHERE NOT EXISTS (SELECT 1 FROM tags t
                   WHERE t.repo_id = manifests.repo_id AND t.digest = manifests.digest);
CREATE INDEX manifests_untagged ON manifests(untagged_since) WHERE untagged_since IS NOT NULL;
CREATE TABLE blob_holds (
    digest     TEXT PRIMARY KEY,
    keep_until INTEGER NOT NULL
) WITHOUT ROWID;
";

/// Version 6: upload sessions record the client that started them, and are counted by
/// repository and by client, for the caps on open sessions.
const V6: &str = "
ALTER TABLE uploads ADD COLUMN client TEXT;
CREATE INDEX uploads_repo ON uploads(repo);
CREATE INDEX uploads_client ON uploads(client) WHERE client IS NOT NULL;
";

/// Version 7: secrets every replica shares (the token signing key, until now a file in the
/// data directory: the first start after the upgrade moves it here).
const V7: &str = "
CREATE TABLE secrets (
    name    TEXT PRIMARY KEY,
    value   BLOB NOT NULL,
    created INTEGER NOT NULL
);
";

/// Migration steps, applied in order: step `i` brings the schema to version `i + 1`.
const STEPS: [&str; 7] = [V1, V2, V3, V4, V5, V6, V7];

/// Creates or upgrades the schema; refuses a database written by a newer build. Each step reads
/// the version inside its own write transaction, so two processes opening a fresh data directory
/// at once (server and a management command) cannot both apply it.
pub fn migrate(conn: &Connection) -> Result<()> {
    for (i, step) in STEPS.iter().enumerate() {
        let target = i as i64 + 1;
        conn.execute_batch("BEGIN IMMEDIATE")?;
        let applied = (|| -> Result<()> {
            let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
            if current > VERSION {
                return Err(StorageError::Corrupt(format!(
                    "database schema version {current} is newer than this build understands ({VERSION})"
                )));
            }
            if current < target {
                conn.execute_batch(step)?;
                conn.execute_batch(&format!("PRAGMA user_version = {target}"))?;
            }
            Ok(())
        })();
        match applied {
            Ok(()) => conn.execute_batch("COMMIT")?,
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                return Err(e);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A version-4 database with a tagged image, an untagged one and a blob no manifest lists
    /// gains the reference state its content implies.
    #[test]
    fn version_five_derives_reference_state_from_existing_content() {
        let conn = Connection::open_in_memory().unwrap();
        for step in &STEPS[..4] {
            conn.execute_batch(step).unwrap();
        }
        conn.execute_batch(
            "PRAGMA user_version = 4;
             INSERT INTO repositories (id, name, created) VALUES (1, 'app', 0);
             INSERT INTO blob_links VALUES (1, 'sha256:l1', 1, 0), (1, 'sha256:stray', 1, 0);
             INSERT INTO manifests (repo_id, digest, media_type, size, created)
                 VALUES (1, 'sha256:m1', 't', 1, 0), (1, 'sha256:m2', 't', 1, 0);
             INSERT INTO manifest_refs VALUES (1, 'sha256:m1', 'sha256:l1', 'blob');
             INSERT INTO tags VALUES (1, 'v1', 'sha256:m1', 0);",
        )
        .unwrap();
        migrate(&conn).unwrap();
        let one = |sql: &str| -> Option<i64> { conn.query_row(sql, [], |r| r.get(0)).unwrap() };
        let linked = "SELECT unref_since FROM blob_links WHERE digest = ";
        assert_eq!(one(&format!("{linked}'sha256:l1'")), None, "referenced");
        assert!(
            one(&format!("{linked}'sha256:stray'")).is_some(),
            "unreferenced"
        );
        let manifest = "SELECT untagged_since FROM manifests WHERE digest = ";
        assert_eq!(one(&format!("{manifest}'sha256:m1'")), None, "tagged");
        assert!(one(&format!("{manifest}'sha256:m2'")).is_some(), "untagged");
        assert_eq!(one("PRAGMA user_version"), Some(VERSION));
    }
}
