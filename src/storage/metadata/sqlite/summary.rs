//! A repository's summary (ACR's `/acr/v1/<name>`): counts, times and a change marker.

use rusqlite::{Connection, OptionalExtension};

use super::SqliteMetadata;
use crate::registry::RepoName;
use crate::storage::error::Result;
use crate::storage::metadata::RepoSummary;

impl SqliteMetadata {
    /// The summary of `repo`, `None` when it does not exist.
    pub(super) fn repo_summary(&self, repo: &RepoName) -> Result<Option<RepoSummary>> {
        self.read(|c| summary(c, repo))
    }
}

/// The summary query: the counts walk the repository's own rows of two primary keys, and the
/// newest event is the last entry of the `(repo, seq)` index.
fn summary(c: &Connection, repo: &RepoName) -> Result<Option<RepoSummary>> {
    let row: Option<(i64, i64)> = c
        .query_row(
            "SELECT id, created FROM repositories WHERE name = ?1",
            [repo.as_str()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let Some((id, created)) = row else {
        return Ok(None);
    };
    let count = |sql: &str| -> Result<u64> {
        let n: i64 = c.query_row(sql, [id], |r| r.get(0))?;
        Ok(u64::try_from(n).unwrap_or(0))
    };
    let manifests = count("SELECT count(*) FROM manifests WHERE repo_id = ?1")?;
    let tags = count("SELECT count(*) FROM tags WHERE repo_id = ?1")?;
    let newest: Option<(i64, i64)> = c
        .query_row(
            "SELECT seq, time FROM events WHERE repo = ?1 ORDER BY seq DESC LIMIT 1",
            [repo.as_str()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let (last_event, updated) = newest.unwrap_or((0, created));
    Ok(Some(RepoSummary {
        created,
        updated: updated.max(created),
        manifests,
        tags,
        last_event,
    }))
}

#[cfg(test)]
mod tests {
    use super::super::tests::open;
    use super::*;

    fn name(s: &str) -> RepoName {
        RepoName::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Counts and the newest event follow the repository's own rows only.
    #[test]
    fn counts_and_the_newest_event_are_the_repositorys_own() {
        let (_tmp, meta) = open();
        meta.write(|tx| {
            tx.execute_batch(
                "INSERT INTO repositories (id, name, created) VALUES (1, 'app', 10), (2, 'other', 20);
                 INSERT INTO manifests (repo_id, digest, media_type, size, created)
                     VALUES (1, 'sha256:m1', 't', 1, 11), (1, 'sha256:m2', 't', 1, 12),
                            (2, 'sha256:m3', 't', 1, 21);
                 INSERT INTO tags VALUES (1, 'a', 'sha256:m1', 13), (2, 'b', 'sha256:m3', 22);
                 INSERT INTO events (time, repo, action, digest) VALUES
                     (30, 'app', 'push', 'sha256:m1'), (40, 'other', 'push', 'sha256:m3');",
            )?;
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
        let app = meta.repo_summary(&name("app")).ok().flatten();
        let want = RepoSummary {
            created: 10,
            updated: 30,
            manifests: 2,
            tags: 1,
            last_event: 1,
        };
        assert_eq!(app, Some(want));
        let other = meta.repo_summary(&name("other")).ok().flatten();
        assert_eq!(other.map(|s| (s.last_event, s.updated)), Some((2, 40)));
        assert_eq!(meta.repo_summary(&name("none")).ok(), Some(None));
    }
}
