//! The multi-step operations that make a verified blob servable. The file is moved into place
//! while its writer claims it (garbage collection deletes only files it can claim), then linked
//! or held in the metadata before the claim lapses; a blob already stored is linked only after
//! its file is found under the metadata write lock, which a pass holds while it deletes. So a
//! pass can never take a committed blob.

use super::fsutil::now_secs;
use super::writer::BlobWriter;
use super::{Result, Store};
use crate::registry::{Digest, RepoName};

/// How long a downloaded blob is kept before its first link (the waiters link it at once; this
/// only matters when the process stops in between).
const DOWNLOAD_HOLD_SECS: i64 = 3600;

impl Store {
    /// Verifies a one-request upload and links it into `repo`; the size.
    pub fn finish_oneshot(
        &self,
        repo: &RepoName,
        writer: BlobWriter,
        expected: &Digest,
    ) -> Result<u64> {
        self.uploads
            .finish_oneshot(&*self.meta, self.blobs.as_ref(), repo, writer, expected)
    }

    /// Verifies upload session `id` and links it into `repo`; the size.
    pub fn finish_upload(
        &self,
        repo: &RepoName,
        id: &str,
        session: &mut Option<BlobWriter>,
        expected: &Digest,
    ) -> Result<u64> {
        self.uploads.finish(
            &*self.meta,
            self.blobs.as_ref(),
            repo,
            id,
            session,
            expected,
        )
    }

    /// Cancels upload session `id` and deletes its data.
    pub fn cancel_upload(&self, id: &str, session: &mut Option<BlobWriter>) {
        self.uploads.cancel(&*self.meta, id, session);
    }

    /// Verifies a finished download and moves it into the blob store, held until a repository
    /// links it; the size.
    pub fn finish_download(&self, writer: BlobWriter, digest: &Digest) -> Result<u64> {
        let until = now_secs() + DOWNLOAD_HOLD_SECS;
        // The partial file's writer claims it (see `Partials::writer`) until `finish` returns,
        // so the hold is in place before collection could take the blob.
        // Held before it is placed: other replicas' collection passes cannot see the claim.
        self.partials.finish(writer, digest, |path| {
            self.meta.hold_blob(digest, until)?;
            let placed = self.blobs.place(path, digest)?;
            drop(placed);
            Ok(())
        })
    }

    /// Links a stored blob into `repo` if its file is there; the size when it was.
    pub fn link_stored(&self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>> {
        self.meta
            .link_if_present(repo, digest, &mut || self.blobs.size(digest))
    }
}
