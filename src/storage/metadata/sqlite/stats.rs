//! Content figures for monitoring: how many blobs, manifests and upload sessions there are.

use super::SqliteMetadata;
use crate::storage::error::Result;
use crate::storage::metadata::ContentCounts;

impl SqliteMetadata {
    /// Counts blobs, manifests and upload sessions (three aggregate queries, one snapshot).
    pub(super) fn content_counts(&self) -> Result<ContentCounts> {
        self.read(|c| {
            let (b, m, u): (i64, i64, i64) = c.query_row(
                "SELECT (SELECT count(DISTINCT digest) FROM blob_links),
                        (SELECT count(*) FROM manifest_content),
                        (SELECT count(*) FROM uploads)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?;
            let n = |v: i64| u64::try_from(v).unwrap_or(0);
            Ok(ContentCounts {
                blobs: n(b),
                manifests: n(m),
                uploads: n(u),
            })
        })
    }
}
