//! PostgreSQL implementation of `SyncState`: the small key/value table of sync state.

#[cfg(test)]
pub(super) mod test_db;

use super::PgMetadata;
use crate::storage::error::{Result, StorageError};
use crate::storage::fsutil::now_secs;
use crate::storage::metadata::{StateKey, StatePrefix, SyncState};

/// Increments a counter in one statement, so concurrent bumps from any replica each get their
/// own value. A stored value Rust's `i64` parse would refuse (not an optional sign and ASCII
/// digits, or out of range) counts as 0, as in SQLite; the nested `CASE` tests the text before
/// any cast of it.
const BUMP: &str = "
INSERT INTO sync_state (key, value, updated) VALUES ($1, '1', $2)
ON CONFLICT (key) DO UPDATE SET
    value = (CASE
        WHEN sync_state.value !~ '^[+-]?[0-9]+$' THEN 0
        WHEN sync_state.value::NUMERIC BETWEEN -9223372036854775808 AND 9223372036854775807
            THEN sync_state.value::BIGINT
        ELSE 0
    END + 1)::TEXT,
    updated = EXCLUDED.updated
RETURNING value";

/// The exclusive upper bound of the keys starting with `prefix`, in byte order: the prefix with
/// its last character's successor (every family's prefix ends in ASCII `:`).
fn prefix_end(prefix: &str) -> String {
    let mut chars: Vec<char> = prefix.chars().collect();
    if let Some(last) = chars.pop() {
        let next = (u32::from(last) + 1..=u32::from(char::MAX)).find_map(char::from_u32);
        chars.push(next.unwrap_or(char::MAX));
    }
    chars.into_iter().collect()
}

impl SyncState for PgMetadata {
    fn sync_state(&self, key: &StateKey<'_>) -> Result<Option<String>> {
        let key = key.as_key();
        self.read(|c| {
            let row = c.query_opt("SELECT value FROM sync_state WHERE key = $1", &[&key])?;
            Ok(row.map(|r| r.try_get(0)).transpose()?)
        })
    }

    fn sync_state_prefixed(&self, prefix: StatePrefix) -> Result<Vec<(String, String)>> {
        // A byte range, not LIKE: `_` and `%` in names are no wildcards.
        let prefix = prefix.as_str();
        let end = prefix_end(prefix);
        let rows: Vec<(String, String)> = self.read(|c| {
            c.query(
                "SELECT key, value FROM sync_state
                 WHERE key COLLATE \"C\" >= $1 AND key COLLATE \"C\" < $2
                 ORDER BY key COLLATE \"C\"",
                &[&prefix, &end],
            )?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
        })?;
        Ok(rows
            .into_iter()
            .filter_map(|(k, v)| Some((k.strip_prefix(prefix)?.to_owned(), v)))
            .collect())
    }

    fn set_sync_state(&self, key: &StateKey<'_>, value: Option<&str>) -> Result<()> {
        let key = key.as_key();
        self.write(|tx| {
            match value {
                Some(v) => tx.execute(
                    "INSERT INTO sync_state (key, value, updated) VALUES ($1, $2, $3)
                     ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value,
                         updated = EXCLUDED.updated",
                    &[&key, &v, &now_secs()],
                )?,
                None => tx.execute("DELETE FROM sync_state WHERE key = $1", &[&key])?,
            };
            Ok(())
        })
    }

    fn bump_sync_counter(&self, key: &StateKey<'_>) -> Result<i64> {
        let key = key.as_key();
        let value: String =
            self.write(|tx| Ok(tx.query_one(BUMP, &[&key, &now_secs()])?.try_get(0)?))?;
        // The statement wrote a BIGINT's text.
        value
            .parse()
            .map_err(|e| StorageError::Corrupt(format!("sync counter {value:?}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::test_db::database;
    use super::*;

    /// Every family's range holds exactly the keys that start with its prefix.
    #[test]
    fn prefix_end_bounds_the_family() {
        assert_eq!(prefix_end("pushed:"), "pushed;");
        assert_eq!(
            prefix_end("a\u{d7ff}"),
            "a\u{e000}",
            "surrogates are skipped"
        );
    }

    /// `_` and `%` in names are literal: a prefix scan returns its own family only, in byte
    /// order, with names holding the wildcard characters intact.
    #[test]
    fn prefixed_keys_treat_wildcards_literally() {
        let (_s, meta) = database("state_wildcards");
        let set = |k: StateKey<'_>, v: &str| {
            meta.set_sync_state(&k, Some(v))
                .unwrap_or_else(|e| panic!("{e}"))
        };
        set(StateKey::PushCursor("a_b"), "1");
        set(StateKey::PushCursor("a%b"), "2");
        set(StateKey::PushCursor("B"), "3");
        set(StateKey::PushCursor("a"), "4");
        // Keys a LIKE 'pushed_%' or 'pushed:a_%' would take in.
        set(StateKey::SyncedRepo("x"), "5");
        set(StateKey::NotifyCursor("pushed:a"), "6");
        meta.write(|tx| {
            tx.execute(
                "INSERT INTO sync_state (key, value, updated)
                 VALUES ('pushedXa', '7', 0), ('pushed;', '8', 0), ('pushed', '9', 0)",
                &[],
            )?;
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
        let got = meta
            .sync_state_prefixed(StatePrefix::PushCursor)
            .unwrap_or_else(|e| panic!("{e}"));
        let want = [("B", "3"), ("a", "4"), ("a%b", "2"), ("a_b", "1")];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(got, want);
        let notify = meta
            .sync_state_prefixed(StatePrefix::NotifyCursor)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(notify, vec![("pushed:a".to_string(), "6".to_string())]);
    }

    /// Bumps from several threads (as from several replicas) each get a value of their own.
    #[test]
    fn concurrent_bumps_get_distinct_values() {
        let (_s, meta) = database("state_bumps");
        let key = StateKey::SyncRequest;
        let mut got: Vec<i64> = std::thread::scope(|s| {
            let bumping: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        (0..25)
                            .map(|_| {
                                meta.bump_sync_counter(&key)
                                    .unwrap_or_else(|e| panic!("{e}"))
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            bumping
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_else(|_| panic!("bump panicked")))
                .collect()
        });
        got.sort_unstable();
        assert_eq!(got, (1..=100).collect::<Vec<_>>());
        assert_eq!(
            meta.sync_state(&key).unwrap_or_else(|e| panic!("{e}")),
            Some("100".to_string())
        );
    }

    /// A stored value Rust's parse would refuse restarts the count; one it accepts goes on.
    #[test]
    fn bumps_read_stored_values_as_rust_parses_them() {
        let (_s, meta) = database("state_bump_parse");
        let key = StateKey::SyncRequest;
        let cases = [
            ("+41", 42),
            ("-3", -2),
            ("007", 8),
            (" 5", 1),
            ("5 ", 1),
            ("1_000", 1),
            ("", 1),
            ("x", 1),
            ("9223372036854775806", i64::MAX),
            ("9223372036854775808", 1),
            ("-9223372036854775808", i64::MIN + 1),
            ("1e3", 1),
            ("١", 1),
        ];
        for (stored, next) in cases {
            let rust = stored.parse::<i64>().ok().unwrap_or(0).checked_add(1);
            assert_eq!(rust, Some(next), "the case {stored:?} itself");
            meta.set_sync_state(&key, Some(stored))
                .unwrap_or_else(|e| panic!("{e}"));
            let got = meta
                .bump_sync_counter(&key)
                .unwrap_or_else(|e| panic!("{stored:?}: {e}"));
            assert_eq!(got, next, "after {stored:?}");
        }
    }
}
