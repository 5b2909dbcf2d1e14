//! What garbage collection asks of the metadata. Every deletion runs in a write transaction, the
//! lock every link takes too, so what a pass decides cannot go stale before it acts.

use crate::registry::Digest;
use crate::storage::error::Result;

/// The metadata side of garbage collection.
pub trait Collection {
    /// Deletes manifests untagged since `cutoff` or earlier that no index of their repository
    /// lists, whose subject is gone (signatures stay with their image) and, with
    /// `keep_outbox`, that push-up has sent; logged as garbage collection's. With `dry_run` only
    /// counts them (without the cascade to index children). Returns how many.
    fn expire_untagged(&self, cutoff: i64, keep_outbox: bool, dry_run: bool) -> Result<u64>;

    /// Removes links no manifest of their repository has referenced since `cutoff` or earlier;
    /// with `dry_run` only counts them. Returns how many.
    fn lapse_links(&self, cutoff: i64, dry_run: bool) -> Result<u64>;

    /// In one write transaction, calls `remove` for each of `digests` that no link keeps and no
    /// download holds at `now`; `remove` deletes the blob and says how many bytes it freed
    /// (`None`: it was gone already). Returns the blobs and bytes freed.
    fn sweep_blobs(
        &self,
        digests: &[Digest],
        now: i64,
        remove: &mut dyn FnMut(&Digest) -> Result<Option<u64>>,
    ) -> Result<(u64, u64)>;

    /// Which of `digests` a pass that lapses links unreferenced since `lapse_cutoff` would
    /// free at `now` (for a dry run).
    fn blobs_unkept(&self, digests: &[Digest], now: i64, lapse_cutoff: i64) -> Result<Vec<bool>>;

    /// Forgets download holds that ended at `now` or before.
    fn drop_expired_holds(&self, now: i64) -> Result<()>;
}
