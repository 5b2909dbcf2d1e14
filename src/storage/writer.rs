//! Streams incoming blob bytes to a temporary file while hashing them.

use std::fs::{File, OpenOptions};
use std::io::{IoSlice, Read, Seek, SeekFrom, Write};
#[cfg(target_os = "linux")]
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use super::error::{Result, StorageError};
use crate::registry::{Algorithm, Digest, DigestHasher};

/// Bytes gathered before one write(2): fewer syscalls without holding much memory.
const BUFFER: usize = 1 << 20;
/// Written bytes after which the kernel is asked to start writing them to disk, so the fsync
/// that acknowledges a chunk or the upload finds little left to do: the disk works while the
/// network delivers (8 MiB chunked pushes went from ~400 to ~650 MB/s against a larger step).
const WRITEBACK_STEP: u64 = 1 << 20;

/// A temporary blob being written: a file in the data directory plus the running hash.
#[derive(Debug)]
pub struct BlobWriter {
    path: PathBuf,
    /// `None` while parked: an idle upload session holds no descriptor; the next write reopens.
    file: Option<File>,
    buf: Vec<u8>,
    /// Bytes accepted so far (written or buffered).
    offset: u64,
    /// Hash of bytes `0..offset`; `None` after a rollback, then recomputed from the file.
    hasher: Option<DigestHasher>,
    /// Bytes already handed to the kernel's writeback.
    kicked: u64,
}

impl BlobWriter {
    /// Creates a new, empty temporary file at `path`.
    pub fn create(path: PathBuf, algo: Algorithm) -> Result<Self> {
        let file = OpenOptions::new()
            .create_new(true)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| StorageError::io("creating an upload file", e))?;
        Ok(BlobWriter {
            path,
            file: Some(file),
            buf: Vec::new(),
            offset: 0,
            hasher: Some(DigestHasher::new(algo)),
            kicked: 0,
        })
    }

    /// Reopens an existing upload file (after a restart); the hash is rebuilt when needed.
    pub fn reopen(path: PathBuf) -> Result<Self> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| StorageError::io("reopening an upload file", e))?;
        let offset = file
            .seek(SeekFrom::End(0))
            .map_err(|e| StorageError::io("reading an upload's size", e))?;
        Ok(BlobWriter {
            path,
            file: Some(file),
            buf: Vec::new(),
            offset,
            hasher: None,
            kicked: offset,
        })
    }

    /// An existing upload file (after a restart), parked: nothing is opened until it is written.
    pub fn parked(path: PathBuf) -> Result<Self> {
        let offset = std::fs::metadata(&path)
            .map_err(|e| StorageError::io("reading an upload's size", e))?
            .len();
        Ok(BlobWriter {
            path,
            file: None,
            buf: Vec::new(),
            offset,
            hasher: None,
            kicked: offset,
        })
    }

    /// Closes the file and frees the buffer between requests, keeping the running hash, so
    /// thousands of idle sessions cost neither descriptors nor buffers. With bytes still
    /// buffered it does nothing: parking must never need I/O.
    pub fn park(&mut self) {
        if self.buf.is_empty() {
            self.file = None;
            self.buf = Vec::new();
        }
    }

    /// Runs `f` on the file, reopening it at its end when parked. A file that is not as long
    /// as the bytes accepted (changed behind our back) drops the running hash, as after a
    /// failed write.
    fn with_file<T>(
        &mut self,
        f: impl FnOnce(&mut File) -> std::io::Result<T>,
    ) -> std::io::Result<T> {
        self.open()?;
        match self.file.as_mut() {
            Some(file) => f(file),
            None => Err(std::io::Error::other("upload file not open")),
        }
    }

    /// Reopens a parked writer's file (see `with_file`); a no-op when open.
    fn open(&mut self) -> std::io::Result<()> {
        if self.file.is_none() {
            let mut file = OpenOptions::new().read(true).write(true).open(&self.path)?;
            let len = file.seek(SeekFrom::End(0))?;
            if len != self.offset - self.buf.len() as u64 {
                self.hasher = None;
                self.offset = len + self.buf.len() as u64;
            }
            self.file = Some(file);
        }
        Ok(())
    }

    /// Marks the file as being written (an advisory lock), so garbage collection in any
    /// process leaves it alone; false when someone else already writes it.
    pub fn claim(&self) -> bool {
        // A parked writer holds no file to lock; callers claim after a write or a verify.
        self.file.as_ref().is_some_and(super::fsutil::try_lock)
    }

    /// Where the temporary file lives.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes received so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Accepts the next bytes of the blob.
    pub fn append(&mut self, data: &[u8]) -> Result<()> {
        // Before the hash and offset move, so a file that cannot be reopened changes nothing.
        self.open()
            .map_err(|e| StorageError::io("reopening an upload file", e))?;
        if let Some(h) = self.hasher.as_mut() {
            h.update(data);
        }
        self.offset += data.len() as u64;
        if self.buf.len() + data.len() > BUFFER && !self.buf.is_empty() {
            self.flush()?;
        }
        if data.len() >= BUFFER {
            if let Err(e) = self.with_file(|f| f.write_all(data)) {
                self.recover();
                return Err(StorageError::io("writing upload data", e));
            }
            return Ok(());
        }
        if self.buf.capacity() == 0 {
            self.buf.reserve_exact(BUFFER);
        }
        self.buf.extend_from_slice(data);
        Ok(())
    }

    /// Writes buffered bytes to the file (not yet durable).
    pub fn flush(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let buf = std::mem::take(&mut self.buf);
        let res = self.with_file(|f| f.write_all(&buf));
        self.buf = buf;
        self.buf.clear();
        if let Err(e) = res {
            self.recover();
            return Err(StorageError::io("writing upload data", e));
        }
        self.start_writeback();
        Ok(())
    }

    /// Accepts the next bytes of the blob as a batch of pieces, written with one `writev`
    /// (no copy into the buffer): for request bodies, which arrive in many small pieces.
    pub fn append_batch<B: AsRef<[u8]>>(&mut self, pieces: &[B]) -> Result<()> {
        self.flush()?;
        self.open()
            .map_err(|e| StorageError::io("reopening an upload file", e))?;
        let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(pieces.len());
        for p in pieces.iter().map(AsRef::as_ref).filter(|p| !p.is_empty()) {
            if let Some(h) = self.hasher.as_mut() {
                h.update(p);
            }
            self.offset += p.len() as u64;
            slices.push(IoSlice::new(p));
        }
        if let Err(e) = self.with_file(|f| write_all_vectored(f, &mut slices)) {
            self.recover();
            return Err(StorageError::io("writing upload data", e));
        }
        self.start_writeback();
        Ok(())
    }

    /// Asks the kernel to start writing out what was written since the last call, once that is
    /// `WRITEBACK_STEP` or more: the disk works while the rest of the blob arrives.
    fn start_writeback(&mut self) {
        let written = self.offset.saturating_sub(self.buf.len() as u64);
        if written < self.kicked + WRITEBACK_STEP {
            return;
        }
        #[cfg(target_os = "linux")]
        {
            let (from, len) = (
                self.kicked as libc::off64_t,
                (written - self.kicked) as libc::off64_t,
            );
            if let Some(file) = &self.file {
                // SAFETY: a hint on our own open descriptor; failure only means no early
                // writeback.
                unsafe {
                    libc::sync_file_range(file.as_raw_fd(), from, len, libc::SYNC_FILE_RANGE_WRITE);
                }
            }
        }
        self.kicked = written;
    }

    /// After a failed write (disk full) the file holds fewer bytes than were accepted: forget
    /// the buffer and the running hash and carry on from what the file really holds.
    fn recover(&mut self) {
        self.buf.clear();
        self.hasher = None;
        let len = match self.file.as_mut() {
            Some(f) => f.seek(SeekFrom::End(0)).ok(),
            None => std::fs::metadata(&self.path).ok().map(|m| m.len()),
        };
        if let Some(len) = len {
            self.offset = len;
        }
        self.kicked = self.kicked.min(self.offset);
    }

    /// Flushes and fsyncs, so the bytes accepted so far survive a power cut.
    pub fn sync(&mut self) -> Result<()> {
        self.flush()?;
        self.with_file(|f| f.sync_data())
            .map_err(|e| StorageError::io("syncing upload data", e))
    }

    /// Drops everything after `offset` (a failed chunk), keeping the upload consistent.
    pub fn rollback(&mut self, offset: u64) -> Result<()> {
        self.buf.clear();
        let res = self.with_file(|f| {
            f.set_len(offset)?;
            f.seek(SeekFrom::Start(offset)).map(|_| ())
        });
        self.hasher = None;
        self.offset = offset;
        self.kicked = self.kicked.min(offset);
        res.map_err(|e| StorageError::io("truncating a failed upload chunk", e))
    }

    /// Flushes, fsyncs and checks the content against `expected`; returns the size.
    pub fn verify(&mut self, expected: &Digest) -> Result<u64> {
        self.sync()?;
        // Belt and braces: the running hash only counts when the file holds every byte.
        let len = self
            .with_file(|f| f.metadata())
            .map_err(|e| StorageError::io("reading upload size", e))?
            .len();
        if len != self.offset {
            self.hasher = None;
            self.offset = len;
        }
        let actual = match self.hasher.take() {
            Some(h) if h.algorithm() == expected.algorithm() => h.finalize(),
            _ => self.rehash(expected.algorithm())?,
        };
        if &actual != expected {
            return Err(StorageError::DigestMismatch {
                expected: expected.clone(),
                actual,
            });
        }
        Ok(self.offset)
    }

    /// Hashes the file from the start (after a restart, a rollback or another algorithm).
    fn rehash(&mut self, algo: Algorithm) -> Result<Digest> {
        let mut h = DigestHasher::new(algo);
        let mut f = File::open(&self.path).map_err(|e| StorageError::io("rehashing upload", e))?;
        let mut chunk = vec![0u8; 256 * 1024];
        loop {
            let n = f
                .read(&mut chunk)
                .map_err(|e| StorageError::io("rehashing upload", e))?;
            if n == 0 {
                break;
            }
            h.update(&chunk[..n]);
        }
        Ok(h.finalize())
    }

    /// Deletes the temporary file.
    pub fn discard(self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Writes every slice with `writev`, resuming after short writes.
fn write_all_vectored(file: &mut File, slices: &mut [IoSlice<'_>]) -> std::io::Result<()> {
    let mut rest = slices;
    while !rest.is_empty() {
        match file.write_vectored(rest) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut rest, n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha256(data: &[u8]) -> Digest {
        let mut h = DigestHasher::new(Algorithm::Sha256);
        h.update(data);
        h.finalize()
    }

    #[test]
    fn a_parked_writer_holds_no_file_and_resumes_where_it_stopped() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("u");
        let mut w = BlobWriter::create(path.clone(), Algorithm::Sha256).unwrap();
        w.append_batch(&[b"hello ".as_slice()]).unwrap();
        w.sync().unwrap();
        w.park();
        assert!(w.file.is_none() && w.buf.capacity() == 0);
        assert!(!w.claim(), "a parked writer has nothing to lock");
        w.append_batch(&[b"world".as_slice()]).unwrap();
        w.park();
        // The running hash survived the park: no rehash is needed to verify.
        assert!(w.hasher.is_some());
        assert_eq!(w.verify(&sha256(b"hello world")).unwrap(), 11);

        // After a restart the session is parked from the start and rehashes on verify.
        let mut again = BlobWriter::parked(path).unwrap();
        assert!(again.file.is_none());
        assert_eq!(again.offset(), 11);
        again.append_batch(&[b"!".as_slice()]).unwrap();
        assert_eq!(again.verify(&sha256(b"hello world!")).unwrap(), 12);
    }

    #[test]
    fn a_parked_writer_rolls_back_and_notices_a_changed_file() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("u");
        let mut w = BlobWriter::create(path.clone(), Algorithm::Sha256).unwrap();
        w.append_batch(&[b"abcdef".as_slice()]).unwrap();
        w.park();
        w.rollback(3).unwrap();
        w.park();
        assert_eq!(w.verify(&sha256(b"abc")).unwrap(), 3);
        let mut w = BlobWriter::create(dir.path().join("v"), Algorithm::Sha256).unwrap();
        w.append_batch(&[b"abc".as_slice()]).unwrap();
        w.park();
        std::fs::write(dir.path().join("v"), b"abcXYZ").unwrap();
        w.append_batch(&[b"d".as_slice()]).unwrap();
        // The file grew behind its back: the writer carries on from what the file holds.
        assert_eq!(w.offset(), 7);
        assert_eq!(w.verify(&sha256(b"abcXYZd")).unwrap(), 7);
    }
}
