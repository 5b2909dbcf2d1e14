//! PostgreSQL implementation of `AccessRecords`: scope maps and tokens. Every change bumps
//! `access_generation` in its own transaction, so every replica polling the counter sees it.

use ::postgres::types::ToSql;
use ::postgres::{GenericClient, Row, Transaction};

use super::PgMetadata;
use crate::storage::error::{Result, StorageError};
use crate::storage::fsutil::now_secs;
use crate::storage::metadata::{AccessRecords, AccessRows, RecordSource, ScopeMapRow, TokenRow};

/// The columns every scope map query reads, in `scope_map_row` order.
const SCOPE_MAP_COLS: &str = "name, description, actions, created, updated, gateways, source";
/// The columns every token query reads, in `token_row` order.
const TOKEN_COLS: &str = "name, scope_map, status, passwords, created, updated, source";

/// Bumps the access change counter inside the caller's transaction.
pub(super) fn bump(tx: &mut Transaction<'_>) -> Result<()> {
    tx.execute(
        "UPDATE access_generation SET value = value + 1 WHERE id = 1",
        &[],
    )?;
    Ok(())
}

/// Inserts or replaces a scope map inside the caller's transaction (a replaced one keeps its
/// creation time).
pub(super) fn upsert_scope_map(tx: &mut Transaction<'_>, row: &ScopeMapRow) -> Result<()> {
    tx.execute(
        "INSERT INTO scope_maps (name, description, actions, created, updated, gateways, source)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (name) DO UPDATE SET description = EXCLUDED.description,
             actions = EXCLUDED.actions, updated = EXCLUDED.updated,
             gateways = EXCLUDED.gateways, source = EXCLUDED.source",
        &[
            &row.name,
            &row.description,
            &row.actions,
            &row.created,
            &now_secs(),
            &row.gateways,
            &row.source.as_str(),
        ],
    )?;
    Ok(())
}

/// Inserts or replaces a token inside the caller's transaction (a replaced one keeps its
/// creation time).
pub(super) fn upsert_token(tx: &mut Transaction<'_>, row: &TokenRow) -> Result<()> {
    tx.execute(
        "INSERT INTO tokens (name, scope_map, status, passwords, created, updated, source)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (name) DO UPDATE SET scope_map = EXCLUDED.scope_map,
             status = EXCLUDED.status, passwords = EXCLUDED.passwords,
             updated = EXCLUDED.updated, source = EXCLUDED.source",
        &[
            &row.name,
            &row.scope_map,
            &row.status,
            &row.passwords,
            &row.created,
            &now_secs(),
            &row.source.as_str(),
        ],
    )?;
    Ok(())
}

/// A scope map from a row of `SCOPE_MAP_COLS`.
fn scope_map_row(r: &Row) -> Result<ScopeMapRow> {
    Ok(ScopeMapRow {
        name: r.try_get(0)?,
        description: r.try_get(1)?,
        actions: r.try_get(2)?,
        created: r.try_get(3)?,
        updated: r.try_get(4)?,
        gateways: r.try_get(5)?,
        source: RecordSource::parse(r.try_get(6)?),
    })
}

/// A token from a row of `TOKEN_COLS`.
fn token_row(r: &Row) -> Result<TokenRow> {
    Ok(TokenRow {
        name: r.try_get(0)?,
        scope_map: r.try_get(1)?,
        status: r.try_get(2)?,
        passwords: r.try_get(3)?,
        created: r.try_get(4)?,
        updated: r.try_get(5)?,
        source: RecordSource::parse(r.try_get(6)?),
    })
}

/// Whether `sql` (a lookup by one key) finds a row.
fn exists(tx: &mut Transaction<'_>, sql: &str, key: &(dyn ToSql + Sync)) -> Result<bool> {
    Ok(tx.query_opt(sql, &[key])?.is_some())
}

/// The access generation and the records `filter` keeps, read on `c` (one snapshot when `c`
/// is a snapshot transaction).
fn rows_where(c: &mut impl GenericClient, filter: &str) -> Result<AccessRows> {
    let generation = c
        .query_one("SELECT value FROM access_generation WHERE id = 1", &[])?
        .try_get(0)?;
    let scope_maps = c
        .query(
            &format!(
                "SELECT {SCOPE_MAP_COLS} FROM scope_maps WHERE {filter}
                 ORDER BY name COLLATE \"C\""
            ),
            &[],
        )?
        .iter()
        .map(scope_map_row)
        .collect::<Result<_>>()?;
    let tokens = c
        .query(
            &format!("SELECT {TOKEN_COLS} FROM tokens WHERE {filter} ORDER BY name COLLATE \"C\""),
            &[],
        )?
        .iter()
        .map(token_row)
        .collect::<Result<_>>()?;
    Ok(AccessRows {
        generation,
        scope_maps,
        tokens,
    })
}

/// Refuses a create of a record that exists, or a replace of one that does not; `what` names
/// it in the error ("scope map 'x'").
fn check_create(create: bool, exists: bool, what: String) -> Result<()> {
    match (create, exists) {
        (true, true) => Err(StorageError::AlreadyExists(what)),
        (false, false) => Err(StorageError::NotFound(what)),
        _ => Ok(()),
    }
}

impl AccessRecords for PgMetadata {
    fn access_generation(&self) -> Result<i64> {
        self.read(|c| {
            Ok(
                c.query_one("SELECT value FROM access_generation WHERE id = 1", &[])?
                    .try_get(0)?,
            )
        })
    }

    fn access_rows(&self) -> Result<AccessRows> {
        self.read_tx(|tx| rows_where(tx, "source != 'relay'"))
    }

    fn all_access_rows(&self) -> Result<AccessRows> {
        self.read_tx(|tx| rows_where(tx, "TRUE"))
    }

    fn scope_map(&self, name: &str) -> Result<Option<ScopeMapRow>> {
        let sql = format!("SELECT {SCOPE_MAP_COLS} FROM scope_maps WHERE name = $1");
        self.read(|c| {
            c.query_opt(&sql, &[&name])?
                .as_ref()
                .map(scope_map_row)
                .transpose()
        })
    }

    fn put_scope_map(&self, row: &ScopeMapRow, create: bool) -> Result<()> {
        self.write(|tx| {
            let exists = exists(tx, "SELECT 1 FROM scope_maps WHERE name = $1", &row.name)?;
            check_create(create, exists, format!("scope map '{}'", row.name))?;
            upsert_scope_map(tx, row)?;
            bump(tx)
        })
    }

    fn delete_scope_map(&self, name: &str) -> Result<()> {
        self.write(|tx| {
            let users: Vec<String> = tx
                .query(
                    "SELECT name FROM tokens WHERE scope_map = $1 ORDER BY name COLLATE \"C\"",
                    &[&name],
                )?
                .iter()
                .map(|r| r.try_get(0))
                .collect::<std::result::Result<_, _>>()?;
            if !users.is_empty() {
                return Err(StorageError::InUse(format!(
                    "scope map '{name}' is used by token(s) {}; delete or update them first",
                    users.join(", ")
                )));
            }
            if tx.execute("DELETE FROM scope_maps WHERE name = $1", &[&name])? == 0 {
                return Err(StorageError::NotFound(format!("scope map '{name}'")));
            }
            bump(tx)
        })
    }

    fn token(&self, name: &str) -> Result<Option<TokenRow>> {
        let sql = format!("SELECT {TOKEN_COLS} FROM tokens WHERE name = $1");
        self.read(|c| {
            c.query_opt(&sql, &[&name])?
                .as_ref()
                .map(token_row)
                .transpose()
        })
    }

    fn put_token(&self, row: &TokenRow, create: bool) -> Result<()> {
        self.write(|tx| {
            let map = "SELECT 1 FROM scope_maps WHERE name = $1";
            if !exists(tx, map, &row.scope_map)? {
                return Err(StorageError::NotFound(format!(
                    "scope map '{}'",
                    row.scope_map
                )));
            }
            let exists = exists(tx, "SELECT 1 FROM tokens WHERE name = $1", &row.name)?;
            check_create(create, exists, format!("token '{}'", row.name))?;
            upsert_token(tx, row)?;
            bump(tx)
        })
    }

    fn delete_token(&self, name: &str) -> Result<()> {
        self.write(|tx| {
            if tx.execute("DELETE FROM tokens WHERE name = $1", &[&name])? == 0 {
                return Err(StorageError::NotFound(format!("token '{name}'")));
            }
            bump(tx)
        })
    }
}
