//! Tags with their digests and times, a page at a time (ACR's `/acr/v1/<name>/_tags`).

use rusqlite::params;

use super::repos::repo_id;
use super::SqliteMetadata;
use crate::registry::RepoName;
use crate::storage::error::{Result, StorageError};
use crate::storage::metadata::TagEntry;

/// The page query. The tags primary key `(repo_id, name)` both finds the start after `last` and
/// gives the order, and the manifest is found by its primary key, so a page costs its own rows.
const PAGE_SQL: &str = "SELECT t.name, t.digest, t.updated, COALESCE(m.created, t.updated)
     FROM tags t LEFT JOIN manifests m ON m.repo_id = t.repo_id AND m.digest = t.digest
     WHERE t.repo_id = ?1 AND t.name > ?2 ORDER BY t.name LIMIT ?3";

impl SqliteMetadata {
    /// Up to `n` tags of `repo` after `last` by name; `NameUnknown` for an unknown repository.
    pub(super) fn tag_page(
        &self,
        repo: &RepoName,
        n: usize,
        last: Option<&str>,
    ) -> Result<Vec<TagEntry>> {
        self.read(|c| {
            let id = repo_id(c, repo)?.ok_or(StorageError::NameUnknown)?;
            let mut stmt = c.prepare_cached(PAGE_SQL)?;
            let limit = i64::try_from(n).unwrap_or(i64::MAX);
            let rows = stmt.query_map(params![id, last.unwrap_or(""), limit], |r| {
                Ok(TagEntry {
                    name: r.get(0)?,
                    digest: r.get(1)?,
                    updated: r.get(2)?,
                    created: r.get(3)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::open;
    use super::*;

    /// Repository `app` (id 1) with tags b → m1 and a, c → m2; `c`'s manifest row is missing.
    fn seed(meta: &SqliteMetadata) {
        meta.write(|tx| {
            tx.execute_batch(
                "INSERT INTO repositories (id, name, created) VALUES (1, 'app', 0), (2, 'empty', 0);
                 INSERT INTO manifests (repo_id, digest, media_type, size, created)
                     VALUES (1, 'sha256:m1', 't', 1, 100), (1, 'sha256:m2', 't', 1, 200);
                 INSERT INTO tags VALUES (1, 'b', 'sha256:m1', 150), (1, 'a', 'sha256:m2', 250),
                     (1, 'c', 'sha256:gone', 300);",
            )?;
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
    }

    fn names(page: &[TagEntry]) -> Vec<&str> {
        page.iter().map(|t| t.name.as_str()).collect()
    }

    #[test]
    fn pages_follow_names_after_last() {
        let (_tmp, meta) = open();
        seed(&meta);
        let app = RepoName::parse("app").unwrap_or_else(|e| panic!("{e}"));
        let first = meta
            .tag_page(&app, 2, None)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(names(&first), ["a", "b"]);
        let a = &first[0];
        assert_eq!(
            (a.digest.as_str(), a.created, a.updated),
            ("sha256:m2", 200, 250)
        );
        let rest = meta
            .tag_page(&app, 2, Some("b"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(names(&rest), ["c"]);
        assert_eq!(
            (rest[0].created, rest[0].updated),
            (300, 300),
            "no manifest row"
        );
        assert!(meta.tag_page(&app, 0, None).unwrap_or_default().is_empty());
        let empty = RepoName::parse("empty").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(meta.tag_page(&empty, 5, None).ok(), Some(Vec::new()));
        let none = RepoName::parse("none").unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            meta.tag_page(&none, 5, None),
            Err(StorageError::NameUnknown)
        ));
    }

    /// A page is found through primary keys: no scan of the tags and no sort.
    #[test]
    fn a_page_uses_the_primary_keys() {
        let (_tmp, meta) = open();
        let plan = meta
            .read(|c| {
                let mut stmt = c.prepare(&format!("EXPLAIN QUERY PLAN {PAGE_SQL}"))?;
                let rows = stmt.query_map(params![1, "", 10], |r| r.get::<_, String>(3))?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
            })
            .unwrap_or_else(|e| panic!("{e}"));
        let text = plan.join("\n");
        assert!(
            text.contains("SEARCH t USING PRIMARY KEY (repo_id=? AND name>?)"),
            "{text}"
        );
        assert!(text.contains("SEARCH m USING PRIMARY KEY"), "{text}");
        assert!(
            !text.contains("SCAN") && !text.contains("TEMP B-TREE"),
            "{text}"
        );
    }
}
