//! Where a registry keeps its metadata, as `--metadata` names it: SQLite in the data directory
//! (the default), or a PostgreSQL database shared by replicas.

use std::path::Path;

use super::postgres::PgMetadata;
use super::{MetadataStore, SqliteMetadata};
use crate::storage::error::Result;

/// A metadata setting, parsed.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum MetadataLocation {
    /// `registry.db` in the data directory.
    #[default]
    DataDir,
    /// A PostgreSQL database (`postgres://user:password@host:port/db?…`).
    Postgres {
        /// The connection URL as given (it may hold a password: never print it).
        url: String,
    },
}

impl std::str::FromStr for MetadataLocation {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let s = s.trim();
        if s.is_empty() || s == "data-dir" || s == "sqlite" {
            return Ok(MetadataLocation::DataDir);
        }
        match s.split_once("://") {
            Some(("postgres" | "postgresql", rest)) if !rest.is_empty() => {
                Ok(MetadataLocation::Postgres { url: s.to_owned() })
            }
            Some((scheme, _)) => Err(format!(
                "unknown metadata scheme {scheme}://: postgres://user:password@host/db, or data-dir (SQLite, the default)"
            )),
            None => Err(format!(
                "{s:?} is not a metadata database: postgres://user:password@host/db, or data-dir (SQLite, the default)"
            )),
        }
    }
}

impl std::fmt::Display for MetadataLocation {
    /// The setting as logs and status show it, with any password masked.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MetadataLocation::DataDir => f.write_str("data-dir"),
            MetadataLocation::Postgres { url } => f.write_str(&mask_password(url)),
        }
    }
}

impl std::fmt::Debug for MetadataLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl MetadataLocation {
    /// Opens the database, creating its schema (or bringing it up to date) when needed.
    pub fn open(&self, data_dir: &Path) -> Result<Box<dyn MetadataStore>> {
        Ok(match self {
            MetadataLocation::DataDir => Box::new(SqliteMetadata::open(data_dir)?),
            MetadataLocation::Postgres { url } => Box::new(PgMetadata::open(url)?),
        })
    }

    /// Whether several registry processes may share it (replicas).
    pub fn is_shared(&self) -> bool {
        matches!(self, MetadataLocation::Postgres { .. })
    }
}

/// `url` with the password of its user-info part replaced by `***`.
fn mask_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}{tail}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> std::result::Result<MetadataLocation, String> {
        s.parse()
    }

    /// The default, PostgreSQL URLs, and refusals that say what is accepted.
    #[test]
    fn settings_parse() {
        assert_eq!(parse(""), Ok(MetadataLocation::DataDir));
        assert_eq!(parse("data-dir"), Ok(MetadataLocation::DataDir));
        assert_eq!(parse("sqlite"), Ok(MetadataLocation::DataDir));
        let url = "postgres://cr:secret@db:5432/registry";
        assert_eq!(
            parse(url),
            Ok(MetadataLocation::Postgres { url: url.into() })
        );
        assert!(parse("postgresql://db/registry").is_ok());
        for bad in ["mysql://db/x", "postgres://", "/var/lib/registry.db"] {
            let e = parse(bad).err().unwrap_or_default();
            assert!(e.contains("postgres://"), "{bad}: {e}");
        }
    }

    /// A password never reaches a log line.
    #[test]
    fn display_masks_the_password() {
        let shown = |s: &str| parse(s).map(|l| l.to_string()).unwrap_or_default();
        assert_eq!(
            shown("postgres://cr:s3cr@t@db:5432/r?sslmode=disable"),
            "postgres://cr:***@db:5432/r?sslmode=disable"
        );
        assert_eq!(shown("postgres://cr@db/r"), "postgres://cr@db/r");
        assert_eq!(shown("postgres://db/r"), "postgres://db/r");
        assert_eq!(
            format!("{:?}", parse("postgres://a:b@h/d").ok()),
            "Some(postgres://a:***@h/d)"
        );
    }
}
