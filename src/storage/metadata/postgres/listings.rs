//! PostgreSQL implementation of `Listings`, ported from SQLite's (`../sqlite/repos.rs`,
//! `manifests.rs`, `sync.rs`, `tag_list.rs`, `summary.rs`, `stats.rs`, `hierarchy.rs`). Each
//! listing is one statement: one round trip and one snapshot. Names compare and sort with
//! `COLLATE "C"`, bytewise like SQLite, so `last` pages exactly as there.

use ::postgres::Row;

use super::content::sql::{int, limit, text, unsigned};
use super::PgMetadata;
use crate::registry::{Digest, RepoName};
use crate::storage::error::{Result, StorageError};
use crate::storage::metadata::{ContentCounts, Listings, Referrer, RepoSummary, TagEntry};

/// A page of tag names. The repository is the outer row, so an unknown one gives no row at all
/// while a known one without tags (after `last`) gives one row with a NULL name.
const TAGS_SQL: &str = "
SELECT t.name FROM repositories r
  LEFT JOIN LATERAL (SELECT name FROM tags
                      WHERE repo_id = r.id AND name COLLATE \"C\" > $2
                      ORDER BY name COLLATE \"C\" LIMIT $3) t ON true
 WHERE r.name = $1
 ORDER BY t.name COLLATE \"C\"";

/// A page of tags with digests and times; the repository is the outer row, as in `TAGS_SQL`.
const TAG_PAGE_SQL: &str = "
SELECT t.name, t.digest, t.updated, t.created FROM repositories r
  LEFT JOIN LATERAL (SELECT g.name, g.digest, g.updated, COALESCE(m.created, g.updated) AS created
                       FROM tags g LEFT JOIN manifests m
                            ON m.repo_id = g.repo_id AND m.digest = g.digest
                      WHERE g.repo_id = r.id AND g.name COLLATE \"C\" > $2
                      ORDER BY g.name COLLATE \"C\" LIMIT $3) t ON true
 WHERE r.name = $1
 ORDER BY t.name COLLATE \"C\"";

/// A repository's summary: its counts and newest event, in one snapshot.
const SUMMARY_SQL: &str = "
SELECT r.created,
       (SELECT count(*) FROM manifests WHERE repo_id = r.id),
       (SELECT count(*) FROM tags WHERE repo_id = r.id),
       e.seq, e.time
  FROM repositories r
  LEFT JOIN LATERAL (SELECT seq, time FROM events WHERE repo = r.name
                      ORDER BY seq DESC LIMIT 1) e ON true
 WHERE r.name = $1";

impl Listings for PgMetadata {
    fn catalog(&self, n: Option<usize>, last: Option<&str>) -> Result<Vec<String>> {
        self.read(|c| {
            let rows = c.query_typed(
                "SELECT name FROM repositories r
                  WHERE name COLLATE \"C\" > $1
                    AND EXISTS (SELECT 1 FROM manifests m WHERE m.repo_id = r.id)
                  ORDER BY name COLLATE \"C\" LIMIT $2",
                &[text(&last.unwrap_or("")), int(&limit(n))],
            )?;
            strings(&rows)
        })
    }

    fn tags(&self, repo: &RepoName, n: Option<usize>, last: Option<&str>) -> Result<Vec<String>> {
        self.read(|c| {
            let rows = c.query_typed(
                TAGS_SQL,
                &[
                    text(&repo.as_str()),
                    text(&last.unwrap_or("")),
                    int(&limit(n)),
                ],
            )?;
            if rows.is_empty() {
                return Err(StorageError::NameUnknown);
            }
            let names = rows.iter().map(|r| r.try_get::<_, Option<String>>(0));
            let names = names.collect::<std::result::Result<Vec<_>, _>>()?;
            Ok(names.into_iter().flatten().collect())
        })
    }

    fn tag_digests(&self, repo: &RepoName) -> Result<Vec<(String, String)>> {
        self.read(|c| {
            let rows = c.query_typed(
                "SELECT t.name, t.digest FROM repositories r JOIN tags t ON t.repo_id = r.id
                  WHERE r.name = $1 ORDER BY t.name COLLATE \"C\"",
                &[text(&repo.as_str())],
            )?;
            rows.iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                .collect()
        })
    }

    fn tag_page(&self, repo: &RepoName, n: usize, last: Option<&str>) -> Result<Vec<TagEntry>> {
        self.read(|c| {
            let rows = c.query_typed(
                TAG_PAGE_SQL,
                &[
                    text(&repo.as_str()),
                    text(&last.unwrap_or("")),
                    int(&limit(Some(n))),
                ],
            )?;
            if rows.is_empty() {
                return Err(StorageError::NameUnknown);
            }
            let mut page = Vec::with_capacity(rows.len());
            for r in &rows {
                let Some(name) = r.try_get::<_, Option<String>>(0)? else {
                    continue;
                };
                page.push(TagEntry {
                    name,
                    digest: r.try_get(1)?,
                    updated: r.try_get(2)?,
                    created: r.try_get(3)?,
                });
            }
            Ok(page)
        })
    }

    fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Referrer>> {
        self.read(|c| {
            let rows = c.query_typed(
                "SELECT m.digest, m.media_type, m.size, m.artifact_type, m.annotations
                   FROM repositories r JOIN manifests m ON m.repo_id = r.id
                  WHERE r.name = $1 AND m.subject = $2
                    AND ($3::TEXT IS NULL OR m.artifact_type = $3)
                  ORDER BY m.created, m.digest COLLATE \"C\"",
                &[
                    text(&repo.as_str()),
                    text(&subject.as_str()),
                    text(&artifact_type),
                ],
            )?;
            rows.iter().map(referrer).collect()
        })
    }

    fn repo_summary(&self, repo: &RepoName) -> Result<Option<RepoSummary>> {
        self.read(|c| {
            let Some(r) = c.query_typed_opt(SUMMARY_SQL, &[text(&repo.as_str())])? else {
                return Ok(None);
            };
            let created: i64 = r.try_get(0)?;
            let seq: Option<i64> = r.try_get(3)?;
            let time: Option<i64> = r.try_get(4)?;
            // With no event, the repository's creation stands for its newest change.
            let (last_event, updated) = match (seq, time) {
                (Some(seq), Some(time)) => (seq, time),
                _ => (0, created),
            };
            Ok(Some(RepoSummary {
                created,
                updated: updated.max(created),
                manifests: unsigned(r.try_get(1)?),
                tags: unsigned(r.try_get(2)?),
                last_event,
            }))
        })
    }

    fn content_counts(&self) -> Result<ContentCounts> {
        self.read(|c| {
            let r = c.query_typed_one(
                "SELECT (SELECT count(DISTINCT digest) FROM blob_links),
                        (SELECT count(*) FROM manifest_content),
                        (SELECT count(*) FROM uploads)",
                &[],
            )?;
            Ok(ContentCounts {
                blobs: unsigned(r.try_get(0)?),
                manifests: unsigned(r.try_get(1)?),
                uploads: unsigned(r.try_get(2)?),
            })
        })
    }

    fn content_bytes(&self) -> Result<u64> {
        self.read(|c| {
            // sum(BIGINT) is NUMERIC: cast back.
            let r = c.query_typed_one(
                "SELECT (COALESCE((SELECT sum(size) FROM (SELECT max(size) AS size
                                   FROM blob_links GROUP BY digest) s), 0)
                       + COALESCE((SELECT sum(length(body)) FROM manifest_content), 0))::BIGINT",
                &[],
            )?;
            Ok(unsigned(r.try_get(0)?))
        })
    }
}

/// The names in the first column of `rows`.
fn strings(rows: &[Row]) -> Result<Vec<String>> {
    Ok(rows
        .iter()
        .map(|r| r.try_get(0))
        .collect::<std::result::Result<_, _>>()?)
}

/// One referrer row.
fn referrer(r: &Row) -> Result<Referrer> {
    Ok(Referrer {
        digest: r.try_get(0)?,
        media_type: r.try_get(1)?,
        size: unsigned(r.try_get(2)?),
        artifact_type: r.try_get(3)?,
        annotations: r.try_get(4)?,
    })
}
