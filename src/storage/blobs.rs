//! Content-addressed blob files: `blobs/<alg>/<xx>/<hex>`, shared by all repositories.
//!
//! A blob file only ever appears by an atomic rename of a fully written, verified and fsynced
//! temporary file, so a reader can never see a partial or mismatching blob.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::error::{Result, StorageError};
use super::fsutil::{create_dir_durable, sync_dir};
use crate::registry::Digest;

/// The blob directory tree of one data directory.
#[derive(Debug, Clone)]
pub struct BlobStore {
    root: PathBuf,
}

impl BlobStore {
    /// Opens (creating if needed) the blob tree under `data_dir/blobs`.
    pub fn open(data_dir: &Path) -> Result<Self> {
        let root = data_dir.join("blobs");
        create_dir_durable(&root)?;
        Ok(BlobStore { root })
    }

    /// Where the blob with this digest lives (whether or not it exists).
    pub fn path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.root
            .join(digest.algorithm().name())
            .join(&hex[..2])
            .join(hex)
    }

    /// Size of a stored blob, or `None` when absent.
    pub fn size(&self, digest: &Digest) -> Result<Option<u64>> {
        match std::fs::metadata(self.path(digest)) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StorageError::io("reading blob metadata", e)),
        }
    }

    /// Opens a stored blob for reading, or `None` when absent.
    pub fn open_blob(&self, digest: &Digest) -> Result<Option<(File, u64)>> {
        match File::open(self.path(digest)) {
            Ok(f) => {
                let len = f
                    .metadata()
                    .map_err(|e| StorageError::io("reading blob metadata", e))?
                    .len();
                Ok(Some((f, len)))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StorageError::io("opening blob", e)),
        }
    }

    /// Moves a verified, already fsynced temporary file into place under its digest.
    ///
    /// The temp file must be on the same filesystem (it lives in the data directory). If the
    /// blob already exists the temp file is simply dropped: content addressing makes them equal.
    pub fn commit(&self, temp: &Path, digest: &Digest) -> Result<()> {
        let dest = self.path(digest);
        if dest.exists() {
            let _ = std::fs::remove_file(temp);
            return Ok(());
        }
        let dir = dest
            .parent()
            .ok_or_else(|| StorageError::Corrupt("blob path has no parent".into()))?;
        if !dir.is_dir() {
            if let Some(alg_dir) = dir.parent() {
                create_dir_durable(alg_dir)?;
            }
            create_dir_durable(dir)?;
        }
        std::fs::rename(temp, &dest)
            .map_err(|e| StorageError::io("moving a verified blob into place", e))?;
        sync_dir(dir)
    }

    /// Deletes a blob file (garbage collection only; repositories unlink instead); the bytes
    /// freed, or `None` when it was gone already.
    pub fn remove(&self, digest: &Digest) -> Result<Option<u64>> {
        let Some(size) = self.size(digest)? else {
            return Ok(None);
        };
        match std::fs::remove_file(self.path(digest)) {
            Ok(()) => Ok(Some(size)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StorageError::io("removing blob", e)),
        }
    }

    /// Calls `f` with the digests of every stored blob, `batch` at a time (one directory's
    /// worth at most, so memory stays small however many blobs there are). Names that are not
    /// digests are left alone.
    pub fn for_each_batch(
        &self,
        batch: usize,
        mut f: impl FnMut(&[Digest]) -> Result<()>,
    ) -> Result<()> {
        let list = |dir: &Path| -> Result<Vec<std::fs::DirEntry>> {
            match std::fs::read_dir(dir) {
                Ok(entries) => Ok(entries.flatten().collect()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
                Err(e) => Err(StorageError::io(format!("listing {}", dir.display()), e)),
            }
        };
        let mut pending: Vec<Digest> = Vec::with_capacity(batch);
        for alg in list(&self.root)? {
            let alg_name = alg.file_name().to_string_lossy().into_owned();
            for prefix in list(&alg.path())? {
                for file in list(&prefix.path())? {
                    let name = format!("{alg_name}:{}", file.file_name().to_string_lossy());
                    if let Ok(d) = name.parse::<Digest>() {
                        pending.push(d);
                    }
                    if pending.len() >= batch {
                        f(&pending)?;
                        pending.clear();
                    }
                }
            }
        }
        if !pending.is_empty() {
            f(&pending)?;
        }
        Ok(())
    }
}
