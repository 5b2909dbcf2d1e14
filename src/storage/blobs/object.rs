//! The object storage blob backend: blobs as objects `blobs/<alg>/<xx>/<hex>` in a bucket or
//! container, through the `object_store` crate (Azure Blob Storage; S3 is the same code with
//! another builder).
//!
//! Object stores are asynchronous and the backend seam is not (its callers already run off the
//! async workers), so the backend owns a small runtime and blocks on it. A staged file is
//! uploaded in parts of `PART` bytes, never whole in memory; an object appears only when its
//! upload completes, so a reader never sees a partial blob.
//!
//! Claims live in this process: a blob being placed is kept from `remove` here until its
//! `Placed` is dropped. Keeping other replicas' collection passes away from it needs the shared
//! metadata's holds (the scale-out work that follows this backend).

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, WriteMultipart};

use super::{Batches, BlobBackend, Placed};
use crate::registry::Digest;
use crate::storage::error::{Result, StorageError};
use crate::storage::reader::{BlobReader, RemoteRead};

/// Bytes per uploaded part (object stores want parts of at least 5 MiB, but for the last).
const PART: usize = 8 * 1024 * 1024;
/// Bytes read from a staged file at a time (the upload gathers them into parts).
const READ: usize = 1024 * 1024;
/// Parts uploading at once per staged file: memory held is about this many parts.
const PARTS_IN_FLIGHT: usize = 2;

/// Blobs kept in an object store.
pub struct ObjectBlobs {
    store: Arc<dyn ObjectStore>,
    /// Where the object store's requests run; taken (and shut down) on drop.
    runtime: Option<tokio::runtime::Runtime>,
    /// Digests being placed here, and how many placers hold each.
    claims: Arc<Mutex<HashMap<String, usize>>>,
    /// What the store is, for messages.
    name: String,
}

impl std::fmt::Debug for ObjectBlobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectBlobs")
            .field("store", &self.name)
            .finish()
    }
}

impl Drop for ObjectBlobs {
    fn drop(&mut self) {
        // A runtime dropped inside another one's async context panics; this never waits.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// A claim on a digest being placed, released when dropped.
struct Claim {
    claims: Arc<Mutex<HashMap<String, usize>>>,
    key: String,
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Ok(mut c) = self.claims.lock() {
            if let Some(n) = c.get_mut(&self.key) {
                *n -= 1;
                if *n == 0 {
                    c.remove(&self.key);
                }
            }
        }
    }
}

/// One object read by ranged requests.
#[derive(Debug)]
struct RemoteObject {
    store: Arc<dyn ObjectStore>,
    path: ObjectPath,
    runtime: tokio::runtime::Handle,
}

impl RemoteRead for RemoteObject {
    fn read_exact_at(&self, pos: u64, want: usize) -> std::io::Result<Bytes> {
        let range = pos..pos + want as u64;
        let got = self
            .runtime
            .block_on(self.store.get_range(&self.path, range))
            .map_err(std::io::Error::other)?;
        if got.len() != want {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("{} bytes at {pos} asked for, {} came", want, got.len()),
            ));
        }
        Ok(got)
    }
}

/// Where the blob with this digest is kept.
fn object_path(digest: &Digest) -> ObjectPath {
    let hex = digest.hex();
    ObjectPath::from(format!(
        "blobs/{}/{}/{hex}",
        digest.algorithm().name(),
        &hex[..2]
    ))
}

/// The digest an object's path names, or `None` for anything else.
fn digest_of(path: &ObjectPath) -> Option<Digest> {
    let mut parts = path.parts();
    let (top, alg, _prefix, hex) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if top.as_ref() != "blobs" || parts.next().is_some() {
        return None;
    }
    format!("{}:{}", alg.as_ref(), hex.as_ref()).parse().ok()
}

/// A storage error for a failed object store request.
fn remote(what: &str, e: object_store::Error) -> StorageError {
    StorageError::io(what.to_owned(), std::io::Error::other(e))
}

impl ObjectBlobs {
    /// A backend over `store` (named `name` in messages), with its own runtime for requests.
    pub fn new(store: Arc<dyn ObjectStore>, name: String) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("object-store")
            .enable_all()
            .build()
            .map_err(|e| StorageError::io("starting the object store's runtime", e))?;
        Ok(ObjectBlobs {
            store,
            runtime: Some(runtime),
            claims: Arc::new(Mutex::new(HashMap::new())),
            name,
        })
    }

    /// The backend's runtime (gone only once the backend is being dropped).
    fn runtime(&self) -> Result<&tokio::runtime::Runtime> {
        self.runtime
            .as_ref()
            .ok_or_else(|| StorageError::Busy("the object store is shutting down".into()))
    }

    /// Runs `f` to completion on the backend's runtime.
    pub(super) fn run<T>(&self, f: impl std::future::Future<Output = T>) -> Result<T> {
        Ok(self.runtime()?.block_on(f))
    }

    /// Registers a claim on `digest` until the returned guard is dropped.
    fn claim(&self, digest: &Digest) -> Claim {
        let key = digest.to_string();
        if let Ok(mut c) = self.claims.lock() {
            *c.entry(key.clone()).or_insert(0) += 1;
        }
        Claim {
            claims: self.claims.clone(),
            key,
        }
    }

    /// Whether a placer here holds `digest`.
    fn claimed(&self, digest: &Digest) -> bool {
        self.claims
            .lock()
            .map(|c| c.contains_key(digest.as_str()))
            .unwrap_or(true)
    }

    /// Uploads the file at `staged` to `path` in parts, reading a little at a time; a failed
    /// upload is aborted, so no uncommitted parts stay behind.
    async fn upload(&self, staged: &Path, path: &ObjectPath) -> Result<()> {
        let reading = "reading a staged blob";
        let mut file = File::open(staged).map_err(|e| StorageError::io(reading, e))?;
        let upload = self
            .store
            .put_multipart(path)
            .await
            .map_err(|e| remote("starting a blob upload", e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART);
        let mut buf = vec![0u8; READ];
        loop {
            let n = match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    let _ = writer.abort().await;
                    return Err(StorageError::io(reading, e));
                }
            };
            if let Err(e) = writer.wait_for_capacity(PARTS_IN_FLIGHT).await {
                let _ = writer.abort().await;
                return Err(remote("uploading a blob", e));
            }
            writer.write(&buf[..n]);
        }
        writer
            .finish()
            .await
            .map_err(|e| remote("finishing a blob upload", e))?;
        Ok(())
    }
}

impl BlobBackend for ObjectBlobs {
    fn size(&self, digest: &Digest) -> Result<Option<u64>> {
        match self.run(self.store.head(&object_path(digest)))? {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(remote("reading blob metadata", e)),
        }
    }

    fn open_blob(&self, digest: &Digest) -> Result<Option<BlobReader>> {
        let Some(len) = self.size(digest)? else {
            return Ok(None);
        };
        let runtime = self.runtime()?.handle().clone();
        let object = RemoteObject {
            store: self.store.clone(),
            path: object_path(digest),
            runtime,
        };
        Ok(Some(BlobReader::remote(Arc::new(object), len)))
    }

    /// Uploads the staged file unless the object is there already (content addressing makes
    /// them equal), then drops the staged file. The claim is taken before the upload and held
    /// by the returned `Placed`.
    fn place(&self, staged: &Path, digest: &Digest) -> Result<Placed> {
        let claim = self.claim(digest);
        if self.size(digest)?.is_none() {
            let path = object_path(digest);
            self.run(self.upload(staged, &path))??;
        }
        let _ = std::fs::remove_file(staged);
        Ok(Placed::claimed(claim))
    }

    fn remove(&self, digest: &Digest) -> Result<Option<u64>> {
        if self.claimed(digest) {
            return Ok(None);
        }
        let Some(size) = self.size(digest)? else {
            return Ok(None);
        };
        match self.run(self.store.delete(&object_path(digest)))? {
            Ok(()) => Ok(Some(size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(remote("removing blob", e)),
        }
    }

    /// Lists `blobs/` page by page as the store returns it.
    fn for_each_batch(
        &self,
        batch: usize,
        f: &mut dyn FnMut(&[Digest]) -> Result<()>,
    ) -> Result<()> {
        let prefix = ObjectPath::from("blobs");
        let mut listing = self.store.list(Some(&prefix));
        let mut batches = Batches::new(batch, f);
        while let Some(next) = self.run(listing.next())? {
            let meta = next.map_err(|e| remote("listing blobs", e))?;
            if let Some(d) = digest_of(&meta.location) {
                batches.push(d)?;
            }
        }
        batches.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_paths_name_their_digest_and_nothing_else_does() {
        let d = Digest::sha256_of(b"x");
        let p = object_path(&d);
        assert_eq!(
            p.as_ref(),
            format!("blobs/sha256/{}/{}", &d.hex()[..2], d.hex())
        );
        assert_eq!(digest_of(&p), Some(d));
        for other in [
            "blobs/sha256/ab",
            "uploads/x/y/z",
            "blobs/sha256/ab/zz",
            "blobs/a/b/c/d",
        ] {
            assert_eq!(digest_of(&ObjectPath::from(other)), None, "{other}");
        }
    }
}
