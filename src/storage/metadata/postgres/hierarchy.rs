//! PostgreSQL implementation of `Hierarchy`: the connected registries' rows. Every definition
//! change bumps `hierarchy_generation` in its own transaction. Names compare case-insensitively
//! (SQLite's `COLLATE NOCASE`): every lookup is `lower(name) = lower($1)`, which the unique
//! index on `lower(name)` serves; names are ASCII, so `lower` folds exactly what NOCASE does.

use ::postgres::{Row, Transaction};

use super::access::{bump, upsert_scope_map, upsert_token};
use super::PgMetadata;
use crate::storage::error::{Result, StorageError};
use crate::storage::fsutil::now_secs;
use crate::storage::metadata::{Hierarchy, HierarchyChange, RecordSource, RegistryRow};

/// The columns every registry query reads, in `registry_row` order.
const COLS: &str = "name, definition, source, activation, status, heard, created";

/// A registry from a row of `COLS`.
fn registry_row(r: &Row) -> Result<RegistryRow> {
    Ok(RegistryRow {
        name: r.try_get(0)?,
        definition: r.try_get(1)?,
        source: RecordSource::parse(r.try_get(2)?),
        activation: r.try_get(3)?,
        status: r.try_get(4)?,
        heard: r.try_get(5)?,
        created: r.try_get(6)?,
    })
}

/// Bumps the definition change counter inside the caller's transaction.
fn bump_hierarchy(tx: &mut Transaction<'_>) -> Result<()> {
    tx.execute(
        "UPDATE hierarchy_generation SET value = value + 1 WHERE id = 1",
        &[],
    )?;
    Ok(())
}

/// Inserts or replaces a definition; a replaced one keeps its stored name (whatever the case
/// of the new one), creation time, activation and status, as SQLite's NOCASE key did.
fn upsert_registry(tx: &mut Transaction<'_>, r: &RegistryRow) -> Result<()> {
    tx.execute(
        "INSERT INTO connected_registries (name, definition, source, created, updated)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT ((lower(name))) DO UPDATE SET definition = EXCLUDED.definition,
             source = EXCLUDED.source, updated = EXCLUDED.updated",
        &[
            &r.name,
            &r.definition,
            &r.source.as_str(),
            &r.created,
            &now_secs(),
        ],
    )?;
    Ok(())
}

/// Deletes the scope map `name` unless a token still uses it (then it stays, silently).
fn delete_unused_scope_map(tx: &mut Transaction<'_>, name: &str) -> Result<()> {
    tx.execute(
        "DELETE FROM scope_maps WHERE name = $1
         AND NOT EXISTS (SELECT 1 FROM tokens WHERE scope_map = $1)",
        &[&name],
    )?;
    Ok(())
}

/// Applies `change` inside the caller's transaction, in SQLite's order: scope maps, tokens,
/// token deletions, scope map deletions, definitions, definition deletions.
fn apply(tx: &mut Transaction<'_>, change: &HierarchyChange) -> Result<()> {
    for m in &change.scope_maps {
        upsert_scope_map(tx, m)?;
    }
    for t in &change.tokens {
        upsert_token(tx, t)?;
    }
    for t in &change.delete_tokens {
        tx.execute("DELETE FROM tokens WHERE name = $1", &[t])?;
    }
    for m in &change.delete_scope_maps {
        delete_unused_scope_map(tx, m)?;
    }
    for r in &change.registries {
        upsert_registry(tx, r)?;
    }
    for n in &change.delete_registries {
        tx.execute(
            "DELETE FROM connected_registries WHERE lower(name) = lower($1)",
            &[n],
        )?;
    }
    Ok(())
}

impl Hierarchy for PgMetadata {
    fn hierarchy_generation(&self) -> Result<i64> {
        self.read(|c| {
            Ok(
                c.query_one("SELECT value FROM hierarchy_generation WHERE id = 1", &[])?
                    .try_get(0)?,
            )
        })
    }

    fn change_counters(&self) -> Result<(i64, i64, i64)> {
        // One statement, one snapshot.
        self.read(|c| {
            let r = c.query_one(
                "SELECT (SELECT value FROM hierarchy_generation WHERE id = 1),
                        (SELECT value FROM access_generation WHERE id = 1),
                        (SELECT coalesce(max(seq), 0) FROM events)",
                &[],
            )?;
            Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?))
        })
    }

    fn connected_registries(&self) -> Result<Vec<RegistryRow>> {
        let sql =
            format!("SELECT {COLS} FROM connected_registries ORDER BY lower(name) COLLATE \"C\"");
        self.read(|c| c.query(&sql, &[])?.iter().map(registry_row).collect())
    }

    fn connected_registry(&self, name: &str) -> Result<Option<RegistryRow>> {
        let sql = format!("SELECT {COLS} FROM connected_registries WHERE lower(name) = lower($1)");
        self.read(|c| {
            c.query_opt(&sql, &[&name])?
                .as_ref()
                .map(registry_row)
                .transpose()
        })
    }

    fn apply_hierarchy(&self, change: &HierarchyChange) -> Result<()> {
        // Nothing to change bumps nothing, so no child wakes up for it.
        if change.is_empty() {
            return Ok(());
        }
        self.write(|tx| {
            apply(tx, change)?;
            bump(tx)?;
            bump_hierarchy(tx)
        })
    }

    fn set_activation(&self, name: &str, activation: &str, announce: bool) -> Result<()> {
        self.write(|tx| {
            let n = tx.execute(
                "UPDATE connected_registries SET activation = $2, updated = $3
                 WHERE lower(name) = lower($1)",
                &[&name, &activation, &now_secs()],
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

    fn set_registry_status(&self, name: &str, status: &str, heard: i64) -> Result<bool> {
        self.write(|tx| {
            let n = tx.execute(
                "UPDATE connected_registries SET status = $2, heard = $3
                 WHERE lower(name) = lower($1) AND (heard IS NULL OR heard <= $3)",
                &[&name, &status, &heard],
            )?;
            Ok(n > 0)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::state::test_db::database;
    use super::*;

    /// A definition named `name`.
    fn registry(name: &str, definition: &str) -> RegistryRow {
        RegistryRow {
            name: name.into(),
            definition: definition.into(),
            source: RecordSource::Local,
            activation: "{}".into(),
            status: None,
            heard: None,
            created: 7,
        }
    }

    /// Names differing only in case are one registry, for every lookup, update and delete;
    /// the stored name keeps its first spelling; listing orders names regardless of case.
    #[test]
    fn registry_names_ignore_case() {
        let (_s, meta) = database("hierarchy_case");
        let apply = |change: HierarchyChange| {
            meta.apply_hierarchy(&change)
                .unwrap_or_else(|e| panic!("{e}"))
        };
        apply(HierarchyChange {
            registries: vec![
                registry("Edge", "one"),
                registry("alpha", "a"),
                registry("Zed", "z"),
            ],
            ..Default::default()
        });
        apply(HierarchyChange {
            registries: vec![registry("EDGE", "two")],
            ..Default::default()
        });
        let all = meta
            .connected_registries()
            .unwrap_or_else(|e| panic!("{e}"));
        let names: Vec<&str> = all.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["alpha", "Edge", "Zed"]);
        let edge = meta
            .connected_registry("eDgE")
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("not found by another case"));
        assert_eq!(
            (edge.name.as_str(), edge.definition.as_str()),
            ("Edge", "two")
        );
        meta.set_activation("EDGE", "{\"instance\":\"i\"}", false)
            .unwrap_or_else(|e| panic!("{e}"));
        let stored = meta
            .set_registry_status("edge", "{}", 10)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(stored);
        let edge = meta
            .connected_registry("Edge")
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("gone"));
        assert_eq!(edge.activation, "{\"instance\":\"i\"}");
        assert_eq!(edge.heard, Some(10));
        apply(HierarchyChange {
            delete_registries: vec!["eDGE".into()],
            ..Default::default()
        });
        assert_eq!(
            meta.connected_registry("Edge")
                .unwrap_or_else(|e| panic!("{e}")),
            None
        );
        match meta.set_activation("edge", "{}", true) {
            Err(StorageError::NotFound(m)) => assert_eq!(m, "connected registry 'edge'"),
            other => panic!("expected NotFound, got {other:?}"),
        }
    }
}
