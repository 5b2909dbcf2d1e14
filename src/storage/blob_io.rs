//! What the HTTP edge and sync ask of blob bytes: open a stored blob or a download in progress
//! for reading, write a download, start and find upload sessions. They name blobs by digest and
//! sessions by id; where and how the bytes are kept stays in here.

use super::reader::BlobReader;
use super::uploads::{SessionCaps, SessionHandle};
use super::writer::BlobWriter;
use super::{Result, Store};
use crate::registry::{Algorithm, Digest, RepoName};

impl Store {
    /// The stored blob `digest`, open for reading, or `None` when it is not stored.
    pub fn open_blob(&self, digest: &Digest) -> Result<Option<BlobReader>> {
        self.blobs.open_blob(digest)
    }

    /// Size of the stored blob `digest`, or `None` when it is not stored.
    pub fn blob_size(&self, digest: &Digest) -> Result<Option<u64>> {
        self.blobs.size(digest)
    }

    /// The download of `digest` open for reading: while in progress its bytes so far (the reader
    /// goes on seeing the same bytes once it is moved into place), or the stored blob once done.
    pub fn open_download(&self, digest: &Digest) -> Result<Option<BlobReader>> {
        match self.partials.reader(digest)? {
            Some(r) => Ok(Some(r)),
            None => self.blobs.open_blob(digest),
        }
    }

    /// A writer for the download of `digest`, after the bytes already downloaded (claimed, so
    /// garbage collection and a second downloader leave it alone).
    pub fn download_writer(&self, digest: &Digest) -> Result<BlobWriter> {
        self.partials.writer(digest)
    }

    /// Deletes the download of `digest` (the blob arrived another way).
    pub fn discard_download(&self, digest: &Digest) {
        self.partials.discard(digest);
    }

    /// A writer for a one-request upload (verified and linked by `finish_oneshot`).
    pub fn start_oneshot(&self, algo: Algorithm) -> Result<BlobWriter> {
        self.uploads.oneshot(algo)
    }

    /// Opens an upload session into `repo` for `client` unless `caps` says enough are open; its id.
    pub fn start_upload(
        &self,
        repo: &RepoName,
        client: &str,
        caps: &SessionCaps,
    ) -> Result<String> {
        self.uploads.start(&*self.meta, repo, client, caps)
    }

    /// The upload session `id` of `repo`, reloaded if the process restarted since it began.
    pub fn upload_session(&self, repo: &RepoName, id: &str) -> Result<SessionHandle> {
        self.uploads.session(&*self.meta, repo, id)
    }

    /// Deletes upload sessions idle for longer than `max_age_secs`; how many.
    pub fn expire_uploads(&self, max_age_secs: u64) -> Result<usize> {
        self.uploads.expire(&*self.meta, max_age_secs)
    }
}
