//! A PostgreSQL server the unit tests of `events`, `uploads`, `state`, `access` and `hierarchy`
//! share, with a fresh database per test.

use std::sync::Arc;

use crate::storage::metadata::postgres::PgMetadata;
use crate::testing;

/// The PostgreSQL server the tests running at the moment share.
fn server() -> Arc<testing::SharedPostgres> {
    testing::Postgres::shared()
}

/// A fresh database `name` (unique among these tests) opened with its schema; keep the server
/// handle alive as long as the metadata (bind it as `(_s, meta)`: `meta` is dropped first).
pub(in crate::storage::metadata::postgres) fn database(
    name: &str,
) -> (Arc<testing::SharedPostgres>, PgMetadata) {
    let s = server();
    let url = s.create_database(name);
    let meta = PgMetadata::open(&url).unwrap_or_else(|e| panic!("{e}"));
    (s, meta)
}
