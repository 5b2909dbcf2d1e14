//! The local blob backend: content-addressed files `blobs/<alg>/<xx>/<hex>` in the data
//! directory.
//!
//! A blob file only ever appears by an atomic link of a fully written, verified and fsynced
//! temporary file, so a reader can never see a partial or mismatching blob. Claims are advisory
//! locks: a writer holds one on its file, and a collection pass deletes only files it can claim.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::{Batches, BlobBackend, Placed};
use crate::registry::Digest;
use crate::storage::error::{Result, StorageError};
use crate::storage::fsutil::{create_dir_durable, lock_wait, sync_dir, try_lock};
use crate::storage::reader::BlobReader;

/// The blob directory tree of one data directory.
#[derive(Debug, Clone)]
pub struct LocalBlobs {
    root: PathBuf,
}

impl LocalBlobs {
    /// Opens (creating if needed) the blob tree under `data_dir/blobs`.
    pub fn open(data_dir: &Path) -> Result<Self> {
        let root = data_dir.join("blobs");
        create_dir_durable(&root)?;
        Ok(LocalBlobs { root })
    }

    /// Where the blob with this digest lives (whether or not it exists).
    fn path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.root
            .join(digest.algorithm().name())
            .join(&hex[..2])
            .join(hex)
    }
}

impl BlobBackend for LocalBlobs {
    fn size(&self, digest: &Digest) -> Result<Option<u64>> {
        match std::fs::metadata(self.path(digest)) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StorageError::io("reading blob metadata", e)),
        }
    }

    fn open_blob(&self, digest: &Digest) -> Result<Option<BlobReader>> {
        BlobReader::open(&self.path(digest))
    }

    /// Links the temporary file under its digest (a hard link fails on an existing name where
    /// a rename would replace it; content addressing makes them equal, so the temporary file is
    /// dropped). The caller's writer holds its claim on the temporary file; that claim, or the
    /// one returned when the blob existed already, keeps a pass away until the caller has linked
    /// the blob, so the metadata lock is not held across these file system syncs.
    fn place(&self, temp: &Path, digest: &Digest) -> Result<Placed> {
        let dest = self.path(digest);
        let dir = dest
            .parent()
            .ok_or_else(|| StorageError::Corrupt("blob path has no parent".into()))?;
        if !dir.is_dir() {
            if let Some(alg_dir) = dir.parent() {
                create_dir_durable(alg_dir)?;
            }
            create_dir_durable(dir)?;
        }
        let moving = "moving a verified blob into place";
        // A pass deletes a file while claiming it; a few rounds always get past one.
        for _ in 0..8 {
            // A hard link fails on an existing name, where a rename would replace it.
            match std::fs::hard_link(temp, &dest) {
                Ok(()) => {
                    let _ = std::fs::remove_file(temp);
                    sync_dir(dir)?;
                    return Ok(Placed::unclaimed());
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(StorageError::io(moving, e)),
            }
            let existing = match File::open(&dest) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StorageError::io(moving, e)),
            };
            lock_wait(&existing);
            let alive = existing
                .metadata()
                .map_err(|e| StorageError::io(moving, e))?
                .nlink()
                > 0;
            if alive {
                let _ = std::fs::remove_file(temp);
                // Its writer may not have synced the directory yet.
                sync_dir(dir)?;
                return Ok(Placed::claimed(existing));
            }
        }
        Err(StorageError::Busy(format!(
            "blob {digest} kept being removed while it was stored"
        )))
    }

    /// Deletes the file while holding its claim, so a writer finding it waits and then sees it
    /// gone.
    fn remove(&self, digest: &Digest) -> Result<Option<u64>> {
        let path = self.path(digest);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StorageError::io("opening blob", e)),
        };
        // Held while deleting, so a writer finding the file waits and then sees it gone.
        if !try_lock(&file) {
            return Ok(None);
        }
        let size = file
            .metadata()
            .map_err(|e| StorageError::io("reading blob metadata", e))?
            .len();
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(Some(size)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StorageError::io("removing blob", e)),
        }
    }

    /// Walks the tree one directory at a time; names that are not digests are left alone.
    fn for_each_batch(
        &self,
        batch: usize,
        f: &mut dyn FnMut(&[Digest]) -> Result<()>,
    ) -> Result<()> {
        let list = |dir: &Path| -> Result<Vec<std::fs::DirEntry>> {
            match std::fs::read_dir(dir) {
                Ok(entries) => Ok(entries.flatten().collect()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
                Err(e) => Err(StorageError::io(format!("listing {}", dir.display()), e)),
            }
        };
        let mut batches = Batches::new(batch, f);
        for alg in list(&self.root)? {
            let alg_name = alg.file_name().to_string_lossy().into_owned();
            for prefix in list(&alg.path())? {
                for file in list(&prefix.path())? {
                    let name = format!("{alg_name}:{}", file.file_name().to_string_lossy());
                    if let Ok(d) = name.parse::<Digest>() {
                        batches.push(d)?;
                    }
                }
            }
        }
        batches.finish()
    }
}
