//! The blob backend seam: where blob bytes are kept, as one content-addressed namespace shared
//! by all repositories. Which repository may serve a blob is metadata's business, not this.
//!
//! A backend is given only verified, durable bytes to place, so a reader can never see a partial
//! or mismatching blob; and it deletes nothing a writer claims, so a collection pass cannot take
//! a blob between its placing and its link (see `storage::commit`).

pub mod azure;
#[cfg(test)]
mod conformance;
mod local;
mod location;
mod object;

use std::any::Any;
use std::path::Path;

pub use local::LocalBlobs;
pub use location::BlobLocation;
pub use object::ObjectBlobs;

use super::error::Result;
use super::reader::BlobReader;
use crate::registry::Digest;

/// What a blob backend does; every operation may block (callers run them off the async workers).
pub trait BlobBackend: Send + Sync + std::fmt::Debug {
    /// Size of the stored blob, or `None` when absent.
    fn size(&self, digest: &Digest) -> Result<Option<u64>>;

    /// Opens the stored blob for reading, or `None` when absent.
    fn open_blob(&self, digest: &Digest) -> Result<Option<BlobReader>>;

    /// Makes the verified, fsynced file at `staged` the blob `digest`, never replacing a stored
    /// one (content addressing makes them equal: the staged file is then dropped). The caller's
    /// writer claims the staged file; the returned claim keeps a blob that existed already from
    /// collection until the caller has linked it.
    fn place(&self, staged: &Path, digest: &Digest) -> Result<Placed>;

    /// Deletes the blob (garbage collection only; repositories unlink instead) unless a writer
    /// claims it; the bytes freed, or `None` when it was gone already or claimed.
    fn remove(&self, digest: &Digest) -> Result<Option<u64>>;

    /// Calls `f` with the digests of every stored blob, at most `batch` at a time, so memory
    /// stays small however many blobs there are.
    fn for_each_batch(
        &self,
        batch: usize,
        f: &mut dyn FnMut(&[Digest]) -> Result<()>,
    ) -> Result<()>;
}

/// Hands digests to a `for_each_batch` callback at most `size` at a time.
pub(super) struct Batches<'a> {
    pending: Vec<Digest>,
    size: usize,
    f: &'a mut dyn FnMut(&[Digest]) -> Result<()>,
}

impl<'a> Batches<'a> {
    /// Batches of at most `size` (at least one) for `f`.
    pub(super) fn new(size: usize, f: &'a mut dyn FnMut(&[Digest]) -> Result<()>) -> Self {
        let size = size.max(1);
        Batches {
            pending: Vec::with_capacity(size),
            size,
            f,
        }
    }

    /// Adds one digest, handing on a full batch.
    pub(super) fn push(&mut self, digest: Digest) -> Result<()> {
        self.pending.push(digest);
        if self.pending.len() >= self.size {
            (self.f)(&self.pending)?;
            self.pending.clear();
        }
        Ok(())
    }

    /// Hands on what is left.
    pub(super) fn finish(self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        (self.f)(&self.pending)
    }
}

/// A blob just placed, kept from garbage collection until dropped (link or hold it first).
#[derive(Debug)]
#[must_use = "drop it only once the blob is linked or held"]
pub struct Placed {
    /// The backend's claim on a blob that existed already (the writer's own claim covers a new
    /// one); released when dropped.
    _claim: Option<Box<dyn Any + Send>>,
}

impl Placed {
    /// Placed anew: the writer's claim covers it.
    pub fn unclaimed() -> Self {
        Placed { _claim: None }
    }

    /// Found stored already, and kept by `claim` until dropped.
    pub fn claimed(claim: impl Any + Send) -> Self {
        Placed {
            _claim: Some(Box::new(claim)),
        }
    }
}
