//! Connected-registry records as stored rows (definitions, activation, reported status); their
//! meaning lives in `hierarchy`.
//!
//! Every definition change bumps `hierarchy_generation` in the same transaction as the change,
//! so a running registry long-polling for its children notices changes made by the management
//! commands in another process.

use rusqlite::{params, Connection, OptionalExtension};

use super::access::{bump, upsert_scope_map, upsert_token};
use super::SqliteMetadata;
use crate::storage::error::{Result, StorageError};
use crate::storage::fsutil::now_secs;
use crate::storage::metadata::{HierarchyChange, RecordSource, RegistryRow};

const COLS: &str = "name, definition, source, activation, status, heard, created";

fn registry_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RegistryRow> {
    Ok(RegistryRow {
        name: r.get(0)?,
        definition: r.get(1)?,
        source: RecordSource::parse(&r.get::<_, String>(2)?),
        activation: r.get(3)?,
        status: r.get(4)?,
        heard: r.get(5)?,
        created: r.get(6)?,
    })
}

fn bump_hierarchy(conn: &Connection) -> Result<()> {
    conn.execute(
        "UPDATE hierarchy_generation SET value = value + 1 WHERE id = 1",
        [],
    )?;
    Ok(())
}

impl SqliteMetadata {
    /// The definition change counter.
    pub(super) fn hierarchy_generation(&self) -> Result<i64> {
        self.read(|c| {
            Ok(c.query_row(
                "SELECT value FROM hierarchy_generation WHERE id = 1",
                [],
                |r| r.get(0),
            )?)
        })
    }

    /// The counters a long-polling child waits on, read together: definitions, access records
    /// and the newest event.
    pub(super) fn change_counters(&self) -> Result<(i64, i64, i64)> {
        self.read(|c| {
            Ok(c.query_row(
                "SELECT (SELECT value FROM hierarchy_generation WHERE id = 1),
                        (SELECT value FROM access_generation WHERE id = 1),
                        (SELECT coalesce(max(seq), 0) FROM events)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?)
        })
    }

    /// Every connected registry, by name.
    pub(super) fn connected_registries(&self) -> Result<Vec<RegistryRow>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {COLS} FROM connected_registries ORDER BY name"
            ))?;
            let rows = stmt.query_map([], registry_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    /// One connected registry (names compare case-insensitively).
    pub(super) fn connected_registry(&self, name: &str) -> Result<Option<RegistryRow>> {
        self.read(|c| {
            Ok(c.query_row(
                &format!("SELECT {COLS} FROM connected_registries WHERE name = ?1"),
                [name],
                registry_row,
            )
            .optional()?)
        })
    }

    /// Applies definition and access changes in one transaction, bumping both counters.
    pub(super) fn apply_hierarchy(&self, change: &HierarchyChange) -> Result<()> {
        if change.is_empty() {
            return Ok(());
        }
        self.write(|tx| {
            for m in &change.scope_maps {
                upsert_scope_map(tx, m)?;
            }
            for t in &change.tokens {
                upsert_token(tx, t)?;
            }
            for t in &change.delete_tokens {
                tx.execute("DELETE FROM tokens WHERE name = ?1", [t])?;
            }
            for m in &change.delete_scope_maps {
                let used: bool = tx
                    .query_row("SELECT 1 FROM tokens WHERE scope_map = ?1", [m], |_| {
                        Ok(true)
                    })
                    .optional()?
                    .unwrap_or(false);
                if !used {
                    tx.execute("DELETE FROM scope_maps WHERE name = ?1", [m])?;
                }
            }
            for r in &change.registries {
                tx.execute(
                    "INSERT INTO connected_registries (name, definition, source, created, updated)
                     VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (name) DO UPDATE SET definition = ?2, source = ?3, updated = ?5",
                    params![
                        r.name,
                        r.definition,
                        r.source.as_str(),
                        r.created,
                        now_secs()
                    ],
                )?;
            }
            for n in &change.delete_registries {
                tx.execute("DELETE FROM connected_registries WHERE name = ?1", [n])?;
            }
            bump(tx)?;
            bump_hierarchy(tx)
        })
    }

    /// Records which instance is active (or none), bumping the definition counter when
    /// `announce` (a deactivation children must hear about).
    pub(super) fn set_activation(
        &self,
        name: &str,
        activation: &str,
        announce: bool,
    ) -> Result<()> {
        self.write(|tx| {
            let n = tx.execute(
                "UPDATE connected_registries SET activation = ?2, updated = ?3 WHERE name = ?1",
                params![name, activation, now_secs()],
            )?;
            if n == 0 {
                return Err(StorageError::NotFound(format!(
                    "connected registry '{name}'"
                )));
            }
            if announce {
                bump_hierarchy(tx)?;
            }
            Ok(())
        })
    }

    /// Stores the status a registry reported and when it was heard from (kept when older than
    /// what is stored, so a late relay never hides a fresher report).
    pub(super) fn set_registry_status(&self, name: &str, status: &str, heard: i64) -> Result<bool> {
        self.write(|tx| {
            let n = tx.execute(
                "UPDATE connected_registries SET status = ?2, heard = ?3
                 WHERE name = ?1 AND (heard IS NULL OR heard <= ?3)",
                params![name, status, heard],
            )?;
            Ok(n > 0)
        })
    }

    /// Bytes of distinct blobs linked anywhere plus manifests: what the content takes on disk.
    pub(super) fn content_bytes(&self) -> Result<u64> {
        self.read(|c| {
            let n: i64 = c.query_row(
                "SELECT coalesce((SELECT sum(size) FROM (SELECT digest, max(size) AS size
                                  FROM blob_links GROUP BY digest)), 0)
                      + coalesce((SELECT sum(length(body)) FROM manifest_content), 0)",
                [],
                |r| r.get(0),
            )?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
    }

    /// Repositories among `repos` with an event after `after`, and the newest event's number.
    pub(super) fn changed_repositories(
        &self,
        after: i64,
        repos: &[String],
    ) -> Result<(Vec<String>, i64)> {
        self.read(|c| {
            let newest: i64 =
                c.query_row("SELECT coalesce(max(seq), 0) FROM events", [], |r| r.get(0))?;
            if newest <= after {
                return Ok((Vec::new(), newest));
            }
            let mut stmt = c.prepare_cached(
                "SELECT DISTINCT repo FROM events WHERE seq > ?1 AND seq <= ?2 ORDER BY repo",
            )?;
            let changed = stmt
                .query_map(params![after, newest], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?
                .into_iter()
                .filter(|r| repos.contains(r))
                .collect();
            Ok((changed, newest))
        })
    }

    /// Repositories with client-made events after `after`, and the newest event's number (what
    /// push-up has to send, found without scanning every repository).
    pub(super) fn client_changes_after(&self, after: i64) -> Result<(Vec<String>, i64)> {
        self.read(|c| {
            let newest: i64 =
                c.query_row("SELECT coalesce(max(seq), 0) FROM events", [], |r| r.get(0))?;
            let mut stmt = c.prepare_cached(
                "SELECT DISTINCT repo FROM events WHERE seq > ?1 AND origin = 'client' ORDER BY repo",
            )?;
            let repos = stmt
                .query_map([after], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok((repos, newest))
        })
    }
}
