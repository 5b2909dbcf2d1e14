//! Content figures for monitoring: how many blobs, manifests and upload sessions there are.

use super::Metadata;
use crate::storage::error::Result;

/// What the store holds, counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ContentCounts {
    /// Distinct blobs linked into any repository.
    pub blobs: u64,
    /// Distinct manifests stored.
    pub manifests: u64,
    /// Upload sessions open.
    pub uploads: u64,
}

impl Metadata {
    /// Counts blobs, manifests and upload sessions (three aggregate queries, one snapshot).
    pub fn content_counts(&self) -> Result<ContentCounts> {
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
