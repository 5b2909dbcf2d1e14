//! Access-control records (scope maps, tokens) as stored rows; their meaning lives in `auth`.
//!
//! Every change bumps `access_generation` in the same transaction, so a running server polling
//! the counter sees changes made by another process (the management commands) within seconds.

use rusqlite::{params, Connection, OptionalExtension};

use super::SqliteMetadata;
use crate::storage::error::{Result, StorageError};
use crate::storage::fsutil::now_secs;
use crate::storage::metadata::{AccessRows, RecordSource, ScopeMapRow, TokenRow};

/// Bumps the access change counter inside the caller's transaction.
pub(super) fn bump(conn: &Connection) -> Result<()> {
    conn.execute(
        "UPDATE access_generation SET value = value + 1 WHERE id = 1",
        [],
    )?;
    Ok(())
}

/// Inserts or replaces a scope map inside the caller's transaction.
pub(super) fn upsert_scope_map(tx: &Connection, row: &ScopeMapRow) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO scope_maps (name, description, actions, created, updated, gateways, source)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (name) DO UPDATE SET description = ?2, actions = ?3, updated = ?5,
             gateways = ?6, source = ?7",
    )?
    .execute(params![
        row.name,
        row.description,
        row.actions,
        row.created,
        now_secs(),
        row.gateways,
        row.source.as_str()
    ])?;
    Ok(())
}

/// Inserts or replaces a token inside the caller's transaction.
pub(super) fn upsert_token(tx: &Connection, row: &TokenRow) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO tokens (name, scope_map, status, passwords, created, updated, source)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (name) DO UPDATE SET scope_map = ?2, status = ?3, passwords = ?4,
             updated = ?6, source = ?7",
    )?
    .execute(params![
        row.name,
        row.scope_map,
        row.status,
        row.passwords,
        row.created,
        now_secs(),
        row.source.as_str()
    ])?;
    Ok(())
}

fn scope_map_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ScopeMapRow> {
    Ok(ScopeMapRow {
        name: r.get(0)?,
        description: r.get(1)?,
        actions: r.get(2)?,
        created: r.get(3)?,
        updated: r.get(4)?,
        gateways: r.get(5)?,
        source: RecordSource::parse(&r.get::<_, String>(6)?),
    })
}

fn token_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TokenRow> {
    Ok(TokenRow {
        name: r.get(0)?,
        scope_map: r.get(1)?,
        status: r.get(2)?,
        passwords: r.get(3)?,
        created: r.get(4)?,
        updated: r.get(5)?,
        source: RecordSource::parse(&r.get::<_, String>(6)?),
    })
}

const SCOPE_MAP_COLS: &str = "name, description, actions, created, updated, gateways, source";
const TOKEN_COLS: &str = "name, scope_map, status, passwords, created, updated, source";

impl SqliteMetadata {
    /// The change counter alone (cheap enough to poll).
    pub(super) fn access_generation(&self) -> Result<i64> {
        self.read(|c| {
            Ok(c.query_row(
                "SELECT value FROM access_generation WHERE id = 1",
                [],
                |r| r.get(0),
            )?)
        })
    }

    /// The access records in force here (relayed ones excluded), in one read transaction.
    pub(super) fn access_rows(&self) -> Result<AccessRows> {
        self.access_rows_where("source != 'relay'")
    }

    /// Every access record, relayed ones included (what this registry can hand on).
    pub(super) fn all_access_rows(&self) -> Result<AccessRows> {
        self.access_rows_where("1")
    }

    fn access_rows_where(&self, filter: &'static str) -> Result<AccessRows> {
        self.read(|c| {
            c.execute_batch("BEGIN")?;
            let out = (|| -> Result<AccessRows> {
                let generation = c.query_row(
                    "SELECT value FROM access_generation WHERE id = 1",
                    [],
                    |r| r.get(0),
                )?;
                let scope_maps = c
                    .prepare_cached(&format!(
                        "SELECT {SCOPE_MAP_COLS} FROM scope_maps WHERE {filter} ORDER BY name"
                    ))?
                    .query_map([], scope_map_row)?
                    .collect::<rusqlite::Result<_>>()?;
                let tokens = c
                    .prepare_cached(&format!(
                        "SELECT {TOKEN_COLS} FROM tokens WHERE {filter} ORDER BY name"
                    ))?
                    .query_map([], token_row)?
                    .collect::<rusqlite::Result<_>>()?;
                Ok(AccessRows {
                    generation,
                    scope_maps,
                    tokens,
                })
            })();
            let _ = c.execute_batch("COMMIT");
            out
        })
    }

    /// One scope map by name.
    pub(super) fn scope_map(&self, name: &str) -> Result<Option<ScopeMapRow>> {
        self.read(|c| {
            Ok(c.query_row(
                &format!("SELECT {SCOPE_MAP_COLS} FROM scope_maps WHERE name = ?1"),
                [name],
                scope_map_row,
            )
            .optional()?)
        })
    }

    /// Creates (`create = true`, must not exist) or replaces (must exist) a scope map.
    pub(super) fn put_scope_map(&self, row: &ScopeMapRow, create: bool) -> Result<()> {
        self.write(|tx| {
            let exists: bool = tx
                .query_row(
                    "SELECT 1 FROM scope_maps WHERE name = ?1",
                    [&row.name],
                    |_| Ok(true),
                )
                .optional()?
                .unwrap_or(false);
            match (create, exists) {
                (true, true) => {
                    return Err(StorageError::AlreadyExists(format!(
                        "scope map '{}'",
                        row.name
                    )))
                }
                (false, false) => {
                    return Err(StorageError::NotFound(format!("scope map '{}'", row.name)))
                }
                _ => {}
            }
            upsert_scope_map(tx, row)?;
            bump(tx)
        })
    }

    /// Deletes a scope map no token uses.
    pub(super) fn delete_scope_map(&self, name: &str) -> Result<()> {
        self.write(|tx| {
            let users: Vec<String> = tx
                .prepare("SELECT name FROM tokens WHERE scope_map = ?1 ORDER BY name")?
                .query_map([name], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            if !users.is_empty() {
                return Err(StorageError::InUse(format!(
                    "scope map '{name}' is used by token(s) {}; delete or update them first",
                    users.join(", ")
                )));
            }
            if tx.execute("DELETE FROM scope_maps WHERE name = ?1", [name])? == 0 {
                return Err(StorageError::NotFound(format!("scope map '{name}'")));
            }
            bump(tx)
        })
    }

    /// One token by name.
    pub(super) fn token(&self, name: &str) -> Result<Option<TokenRow>> {
        self.read(|c| {
            Ok(c.query_row(
                &format!("SELECT {TOKEN_COLS} FROM tokens WHERE name = ?1"),
                [name],
                token_row,
            )
            .optional()?)
        })
    }

    /// Creates (`create = true`, must not exist) or replaces (must exist) a token; its scope map
    /// must exist.
    pub(super) fn put_token(&self, row: &TokenRow, create: bool) -> Result<()> {
        self.write(|tx| {
            let map: bool = tx
                .query_row(
                    "SELECT 1 FROM scope_maps WHERE name = ?1",
                    [&row.scope_map],
                    |_| Ok(true),
                )
                .optional()?
                .unwrap_or(false);
            if !map {
                return Err(StorageError::NotFound(format!(
                    "scope map '{}'",
                    row.scope_map
                )));
            }
            let exists: bool = tx
                .query_row("SELECT 1 FROM tokens WHERE name = ?1", [&row.name], |_| {
                    Ok(true)
                })
                .optional()?
                .unwrap_or(false);
            match (create, exists) {
                (true, true) => {
                    return Err(StorageError::AlreadyExists(format!("token '{}'", row.name)))
                }
                (false, false) => {
                    return Err(StorageError::NotFound(format!("token '{}'", row.name)))
                }
                _ => {}
            }
            upsert_token(tx, row)?;
            bump(tx)
        })
    }

    /// Deletes a token.
    pub(super) fn delete_token(&self, name: &str) -> Result<()> {
        self.write(|tx| {
            if tx.execute("DELETE FROM tokens WHERE name = ?1", [name])? == 0 {
                return Err(StorageError::NotFound(format!("token '{name}'")));
            }
            bump(tx)
        })
    }
}
