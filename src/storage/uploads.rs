//! Upload sessions: resumable across restarts, one writer at a time, cleaned up when abandoned.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::blobs::BlobBackend;
use super::error::{Result, StorageError};
use super::fsutil::{create_dir_durable, now_secs};
use super::metadata::MetadataStore;
use super::writer::BlobWriter;
use crate::registry::{Algorithm, Digest, RepoName};

/// A session's writer, locked for the duration of one request so chunks cannot interleave.
pub type SessionHandle = Arc<tokio::sync::Mutex<Option<BlobWriter>>>;

/// A locked session, owned so it can travel to the blocking pool with the work on its writer.
/// Letting go of it parks the writer: an idle session holds no file descriptor and no buffer
/// (thousands of idle sessions once exhausted the process's descriptors).
pub struct SessionGuard(tokio::sync::OwnedMutexGuard<Option<BlobWriter>>);

impl SessionGuard {
    /// Waits for the session's lock.
    pub async fn lock(handle: SessionHandle) -> Self {
        SessionGuard(handle.lock_owned().await)
    }
}

impl std::ops::Deref for SessionGuard {
    type Target = Option<BlobWriter>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for SessionGuard {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        if let Some(w) = self.0.as_mut() {
            w.park();
        }
    }
}

/// How many upload sessions may be open at once: in all, per client and per repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionCaps {
    /// In the whole registry.
    pub total: u64,
    /// Started by one client.
    pub per_client: u64,
    /// In one repository.
    pub per_repository: u64,
}

/// Prefix of one-shot (monolithic) upload files, which never outlive their request.
const ONESHOT_PREFIX: &str = "tmp-";

/// The `uploads/` directory and the sessions currently open in memory.
#[derive(Debug)]
pub struct Uploads {
    dir: PathBuf,
    open: Mutex<HashMap<String, SessionHandle>>,
    /// Whether other replicas share the metadata and blobs: their collection passes cannot see
    /// this process's claims, so a blob is held in the metadata before it is placed.
    shared: bool,
}

/// How long a blob being placed by an upload is held in shared metadata before its link (the
/// link follows at once; this only matters when the process stops in between).
const UPLOAD_HOLD_SECS: i64 = 3600;

impl Uploads {
    /// Opens the uploads directory; `shared` when other replicas share the backends.
    pub fn open(data_dir: &Path, shared: bool) -> Result<Self> {
        let dir = data_dir.join("uploads");
        create_dir_durable(&dir)?;
        Ok(Uploads {
            dir,
            open: Mutex::new(HashMap::new()),
            shared,
        })
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// Starts a session for `repo` on behalf of `client` and returns its id, unless `caps`
    /// says enough sessions are open. The new session starts parked (no descriptor held).
    pub fn start(
        &self,
        meta: &dyn MetadataStore,
        repo: &RepoName,
        client: &str,
        caps: &SessionCaps,
    ) -> Result<String> {
        let id = uuid::Uuid::new_v4().to_string();
        let mut writer = BlobWriter::create(self.path(&id), Algorithm::Sha256)?;
        if let Err(e) = meta.create_upload(&id, repo, client, caps) {
            writer.discard();
            return Err(e);
        }
        writer.park();
        self.insert(&id, writer);
        Ok(id)
    }

    fn insert(&self, id: &str, writer: BlobWriter) -> SessionHandle {
        let handle = Arc::new(tokio::sync::Mutex::new(Some(writer)));
        if let Ok(mut open) = self.open.lock() {
            open.insert(id.to_owned(), handle.clone());
        }
        handle
    }

    /// The session `id` of `repo`, reloaded from disk if the process restarted since.
    pub fn session(
        &self,
        meta: &dyn MetadataStore,
        repo: &RepoName,
        id: &str,
    ) -> Result<SessionHandle> {
        // Ids are UUIDs we made; anything else never reaches the filesystem.
        if uuid::Uuid::parse_str(id).is_err() {
            return Err(StorageError::UploadUnknown);
        }
        match meta.upload_repo(id)? {
            Some(r) if r == repo.as_str() => {}
            _ => return Err(StorageError::UploadUnknown),
        }
        if let Some(h) = self.open.lock().ok().and_then(|o| o.get(id).cloned()) {
            return Ok(h);
        }
        let writer = BlobWriter::parked(self.path(id)).map_err(|e| match e {
            StorageError::Io { .. } => StorageError::UploadUnknown,
            other => other,
        })?;
        Ok(self.insert(id, writer))
    }

    /// Completes a session: verifies the digest, makes the blob durable and links it to `repo`.
    pub fn finish(
        &self,
        meta: &dyn MetadataStore,
        blobs: &dyn BlobBackend,
        repo: &RepoName,
        id: &str,
        writer: &mut Option<BlobWriter>,
        expected: &Digest,
    ) -> Result<u64> {
        let w = writer.as_mut().ok_or(StorageError::UploadUnknown)?;
        let size = match w.verify(expected) {
            Ok(size) => size,
            Err(e @ StorageError::DigestMismatch { .. }) => {
                // The bytes can never become the blob the client wants: end the session.
                self.forget(meta, id, writer);
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        self.place_and_link(meta, blobs, repo, w, expected, size)?;
        self.forget(meta, id, writer);
        Ok(size)
    }

    /// Cancels a session and deletes its data.
    pub fn cancel(&self, meta: &dyn MetadataStore, id: &str, writer: &mut Option<BlobWriter>) {
        self.forget(meta, id, writer);
    }

    fn forget(&self, meta: &dyn MetadataStore, id: &str, writer: &mut Option<BlobWriter>) {
        if let Some(w) = writer.take() {
            w.discard();
        }
        if let Ok(mut open) = self.open.lock() {
            open.remove(id);
        }
        if let Err(e) = meta.delete_upload(id) {
            tracing::warn!(upload = id, error = %e, "could not forget upload session");
        }
    }

    /// A temporary writer for a one-request (monolithic) upload.
    pub fn oneshot(&self, algo: Algorithm) -> Result<BlobWriter> {
        let name = format!("{ONESHOT_PREFIX}{}", uuid::Uuid::new_v4());
        BlobWriter::create(self.path(&name), algo)
    }

    /// Verifies a one-shot upload and stores it; the temp file is removed on any failure.
    pub fn finish_oneshot(
        &self,
        meta: &dyn MetadataStore,
        blobs: &dyn BlobBackend,
        repo: &RepoName,
        mut writer: BlobWriter,
        expected: &Digest,
    ) -> Result<u64> {
        let result = writer.verify(expected).and_then(|size| {
            self.place_and_link(meta, blobs, repo, &writer, expected, size)
                .map(|_| size)
        });
        if result.is_err() {
            writer.discard();
        }
        result
    }

    /// Removes files no session owns (one-shot leftovers, crashes between file and row), and,
    /// unless the metadata is `shared` with other replicas (whose sessions have no file here),
    /// the rows of sessions whose file is gone.
    pub fn remove_orphans(&self, meta: &dyn MetadataStore, shared: bool) -> Result<usize> {
        let live: std::collections::HashSet<String> = meta.all_uploads()?.into_iter().collect();
        let entries = std::fs::read_dir(&self.dir)
            .map_err(|e| StorageError::io("listing upload files", e))?;
        let mut removed = 0;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !live.contains(&name) && std::fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
        for id in live.into_iter().filter(|_| !shared) {
            if !self.path(&id).exists() {
                meta.delete_upload(&id)?;
            }
        }
        Ok(removed)
    }

    /// Deletes sessions idle for longer than `max_age_secs`; busy ones are left for next time.
    pub fn expire(&self, meta: &dyn MetadataStore, max_age_secs: u64) -> Result<usize> {
        let cutoff = now_secs().saturating_sub(max_age_secs as i64);
        let mut expired = 0;
        for id in meta.idle_uploads(cutoff)? {
            let handle = self.open.lock().ok().and_then(|o| o.get(&id).cloned());
            match handle {
                Some(h) => {
                    if let Ok(mut w) = h.try_lock() {
                        self.forget(meta, &id, &mut w);
                        expired += 1;
                    }
                }
                None => {
                    let _ = std::fs::remove_file(self.path(&id));
                    meta.delete_upload(&id)?;
                    expired += 1;
                }
            }
        }
        Ok(expired)
    }

    /// Moves a verified upload into place and links it into `repo`. The writer's claim on the
    /// file keeps this process's collection away in between; with shared backends a hold in the
    /// metadata, written before the blob is placed, keeps every replica's away.
    fn place_and_link(
        &self,
        meta: &dyn MetadataStore,
        blobs: &dyn BlobBackend,
        repo: &RepoName,
        writer: &BlobWriter,
        digest: &Digest,
        size: u64,
    ) -> Result<()> {
        if !writer.claim() {
            return Err(StorageError::Busy(
                "the upload is being written elsewhere".into(),
            ));
        }
        if self.shared {
            meta.hold_blob(digest, now_secs() + UPLOAD_HOLD_SECS)?;
        }
        let placed = blobs.place(writer.path(), digest)?;
        meta.link_placed(repo, digest, size)?;
        drop(placed);
        Ok(())
    }
}
