//! Typed statement parameters. Statements run with `query_typed`/`execute_typed`, which send
//! parse, bind and execute together: one round trip each, where an untyped `query` first
//! prepares the statement (a second round trip) and the pool keeps no statement cache.

use ::postgres::types::{ToSql, Type};

/// One parameter with the type the server is to read it as.
pub(crate) type Param<'a> = (&'a (dyn ToSql + Sync), Type);

/// A `TEXT` parameter (`&str`, `String`, or `Option<&str>` for NULL).
pub(crate) fn text<T: ToSql + Sync>(v: &T) -> Param<'_> {
    (v, Type::TEXT)
}

/// A `BIGINT` parameter (`i64`, or `Option<i64>` for NULL).
pub(crate) fn int<T: ToSql + Sync>(v: &T) -> Param<'_> {
    (v, Type::INT8)
}

/// A `TEXT[]` parameter (`Vec<&str>`).
pub(crate) fn texts<T: ToSql + Sync>(v: &T) -> Param<'_> {
    (v, Type::TEXT_ARRAY)
}

/// A `BYTEA` parameter (`&[u8]`).
pub(crate) fn bytes<T: ToSql + Sync>(v: &T) -> Param<'_> {
    (v, Type::BYTEA)
}

/// A row limit as bound: `None` (no limit) binds NULL, which `LIMIT` reads as `ALL` like
/// SQLite's `-1`; a count beyond `i64` means no limit either.
pub(crate) fn limit(n: Option<usize>) -> Option<i64> {
    n.map(|n| i64::try_from(n).unwrap_or(i64::MAX))
}

/// A size or count as bound (sizes never reach `i64::MAX`; saturate rather than wrap).
pub(crate) fn signed(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A stored size or count as returned (a negative one, which nothing writes, reads as 0).
pub(crate) fn unsigned(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}
