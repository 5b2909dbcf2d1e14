//! In-progress downloads from the parent: `partial/<alg>-<hex>`, resumable by byte offset.
//!
//! A partial file survives restarts so a cut or a crash costs at most what was not yet written.
//! It becomes a blob only through the same verify → fsync → rename path as an upload, so a
//! partial or corrupt download is never served as the blob.

use std::path::{Path, PathBuf};

use super::blobs::BlobBackend;
use super::error::{Result, StorageError};
use super::fsutil::create_dir_durable;
use super::reader::BlobReader;
use super::writer::BlobWriter;
use crate::registry::Digest;

/// The `partial/` directory of one data directory.
#[derive(Debug, Clone)]
pub struct Partials {
    dir: PathBuf,
}

impl Partials {
    /// Opens (creating if needed) `data_dir/partial`.
    pub fn open(data_dir: &Path) -> Result<Self> {
        let dir = data_dir.join("partial");
        create_dir_durable(&dir)?;
        Ok(Partials { dir })
    }

    /// Where the download of `digest` is kept while in progress.
    pub(super) fn path(&self, digest: &Digest) -> PathBuf {
        self.dir
            .join(format!("{}-{}", digest.algorithm().name(), digest.hex()))
    }

    /// A writer positioned after the bytes already downloaded (a new file when none), claimed
    /// so garbage collection leaves the file alone while it downloads.
    pub fn writer(&self, digest: &Digest) -> Result<BlobWriter> {
        let path = self.path(digest);
        let writer = if path.exists() {
            BlobWriter::reopen(path)?
        } else {
            BlobWriter::create(path, digest.algorithm())?
        };
        if !writer.claim() {
            return Err(StorageError::Busy(format!(
                "the download of {digest} is already being written"
            )));
        }
        Ok(writer)
    }

    /// Removes downloads whose blob arrived another way, and those idle (untouched) since
    /// `idle_before` that nobody is writing; with `dry_run` only counts them. Returns the files
    /// and bytes.
    pub fn sweep(
        &self,
        idle_before: std::time::SystemTime,
        blobs: &dyn BlobBackend,
        dry_run: bool,
    ) -> Result<(u64, u64)> {
        let entries = std::fs::read_dir(&self.dir)
            .map_err(|e| StorageError::io("listing partial downloads", e))?;
        let (mut files, mut bytes) = (0, 0);
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().replacen('-', ":", 1);
            let Ok(digest) = name.parse::<Digest>() else {
                continue;
            };
            let Ok(file) = std::fs::File::open(entry.path()) else {
                continue;
            };
            let Ok(meta) = file.metadata() else { continue };
            let arrived = blobs.size(&digest)?.is_some();
            let idle = meta.modified().is_ok_and(|m| m < idle_before);
            // Held while a download writes it; we hold it ourselves while deleting, so a
            // download starting meanwhile fails to claim it and begins anew.
            if !(arrived || idle) || !super::fsutil::try_lock(&file) {
                continue;
            }
            if dry_run || std::fs::remove_file(entry.path()).is_ok() {
                files += 1;
                bytes += meta.len();
            }
        }
        Ok((files, bytes))
    }

    /// Verifies a complete download and moves it into the blob store with `place` (given the
    /// file); returns its size. On a digest mismatch the file is deleted so the next attempt
    /// starts from zero.
    pub fn finish(
        &self,
        mut writer: BlobWriter,
        digest: &Digest,
        place: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<u64> {
        match writer.verify(digest) {
            Ok(size) => {
                place(writer.path())?;
                Ok(size)
            }
            Err(e @ StorageError::DigestMismatch { .. }) => {
                writer.discard();
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// The download of `digest` in progress, open for reading, or `None` when there is none.
    pub fn reader(&self, digest: &Digest) -> Result<Option<BlobReader>> {
        BlobReader::open(&self.path(digest))
    }

    /// Deletes the download of `digest` (bad data, or the blob arrived another way).
    pub fn discard(&self, digest: &Digest) {
        let _ = std::fs::remove_file(self.path(digest));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{Algorithm, DigestHasher};

    fn digest_of(bytes: &[u8]) -> Digest {
        let mut h = DigestHasher::new(Algorithm::Sha256);
        h.update(bytes);
        h.finalize()
    }

    #[test]
    fn resumes_after_reopen_and_verifies() -> Result<()> {
        let tmp = tempfile::TempDir::new().map_err(|e| StorageError::io("tempdir", e))?;
        let blobs = crate::storage::LocalBlobs::open(tmp.path())?;
        let partials = Partials::open(tmp.path())?;
        let data = b"0123456789abcdef".repeat(1000);
        let d = digest_of(&data);
        let mut w = partials.writer(&d)?;
        w.append(&data[..5000])?;
        w.sync()?;
        drop(w);
        let mut w = partials.writer(&d)?;
        assert_eq!(w.offset(), 5000);
        w.append(&data[5000..])?;
        assert_eq!(
            partials.finish(w, &d, |p| blobs.place(p, &d).map(drop))?,
            data.len() as u64
        );
        assert_eq!(blobs.size(&d)?, Some(data.len() as u64));
        assert!(!partials.path(&d).exists());
        Ok(())
    }

    #[test]
    fn mismatch_deletes_the_partial_file() -> Result<()> {
        let tmp = tempfile::TempDir::new().map_err(|e| StorageError::io("tempdir", e))?;
        let blobs = crate::storage::LocalBlobs::open(tmp.path())?;
        let partials = Partials::open(tmp.path())?;
        let d = digest_of(b"the real content");
        let mut w = partials.writer(&d)?;
        w.append(b"something else")?;
        assert!(matches!(
            partials.finish(w, &d, |p| blobs.place(p, &d).map(drop)),
            Err(StorageError::DigestMismatch { .. })
        ));
        assert!(!partials.path(&d).exists());
        assert_eq!(blobs.size(&d)?, None);
        Ok(())
    }
}
