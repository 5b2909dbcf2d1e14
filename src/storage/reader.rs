//! Reading a stored blob, or a download still being written, by byte position: what the HTTP
//! edge and push-up stream from, without knowing where or how the bytes are kept.
//!
//! Pages already in the page cache are read right on the caller's thread (`preadv2` with
//! `RWF_NOWAIT`, which never waits for the disk); callers read anything else on a blocking
//! thread. Buffers are filled without being zeroed first. (Measured on two cores: reading inline
//! instead of hopping to the blocking pool for every piece cut the server's CPU per GB served by
//! a third; mapping the file instead of reading it cost more in page faults and unmapping than
//! the copy it saved.)

use std::fs::File;
#[cfg(target_os = "linux")]
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

use super::error::{Result, StorageError};

/// An open blob: cheap to clone. A local one keeps reading the same bytes whatever happens to
/// the name it was opened by (a download moved into place, a blob collected meanwhile).
#[derive(Debug, Clone)]
pub struct BlobReader {
    source: Source,
    len: u64,
}

/// Where a reader's bytes come from.
#[derive(Debug, Clone)]
enum Source {
    /// An open local file.
    File(Arc<File>),
    /// An object in an object store, read by ranged requests.
    Remote(Arc<dyn RemoteRead>),
}

/// Ranged reads of one remote object, for a blob backend that keeps blobs elsewhere.
pub trait RemoteRead: Send + Sync + std::fmt::Debug {
    /// Exactly `want` bytes at `pos` (an error when fewer are there); blocks until they came.
    fn read_exact_at(&self, pos: u64, want: usize) -> std::io::Result<Bytes>;
}

impl BlobReader {
    /// Opens the file at `path`, or `None` when there is none.
    pub(super) fn open(path: &Path) -> Result<Option<Self>> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StorageError::io("opening blob", e)),
        };
        let len = file
            .metadata()
            .map_err(|e| StorageError::io("reading blob metadata", e))?
            .len();
        Ok(Some(BlobReader {
            source: Source::File(Arc::new(file)),
            len,
        }))
    }

    /// A reader of `len` bytes of a remote object.
    pub fn remote(object: Arc<dyn RemoteRead>, len: u64) -> Self {
        BlobReader {
            source: Source::Remote(object),
            len,
        }
    }

    /// A reader of an already open file (tests of the code that streams from one).
    #[cfg(test)]
    pub fn from_file(file: File) -> Self {
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        BlobReader {
            source: Source::File(Arc::new(file)),
            len,
        }
    }

    /// Its length when opened (a download in progress grows past it).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether it held no bytes when opened.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Up to `want` bytes at `pos` if they are in memory already, without waiting for the disk:
    /// `None` when they are not (or the kernel cannot tell), so the caller reads them with
    /// [`read_exact_at`](Self::read_exact_at) on a thread that may block.
    #[cfg(target_os = "linux")]
    pub fn read_cached(&self, pos: u64, want: usize) -> Option<Bytes> {
        let Source::File(file) = &self.source else {
            return None;
        };
        let offset = libc::off_t::try_from(pos).ok()?;
        let mut buf = Vec::<u8>::with_capacity(want);
        let iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: want,
        };
        // SAFETY: the iovec covers exactly the vector's `want` bytes of spare capacity, which
        // the kernel fills; only the `n` bytes it reports written become part of the vector.
        let n = unsafe { libc::preadv2(file.as_raw_fd(), &iov, 1, offset, libc::RWF_NOWAIT) };
        let n = usize::try_from(n).ok().filter(|&n| n > 0 && n <= want)?;
        // SAFETY: the kernel initialised the first `n` bytes (checked to be within capacity).
        unsafe { buf.set_len(n) };
        Some(Bytes::from(buf))
    }

    /// Without `RWF_NOWAIT` nothing is known to be in memory.
    #[cfg(not(target_os = "linux"))]
    pub fn read_cached(&self, _pos: u64, _want: usize) -> Option<Bytes> {
        None
    }

    /// Exactly `want` bytes at `pos`, waiting for the disk (an error when fewer are there).
    pub fn read_exact_at(&self, pos: u64, want: usize) -> std::io::Result<Bytes> {
        match &self.source {
            Source::File(file) => {
                let mut buf = vec![0u8; want];
                file.read_exact_at(&mut buf, pos)?;
                Ok(Bytes::from(buf))
            }
            Source::Remote(object) => object.read_exact_at(pos, want),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn reads_what_is_there_and_fails_past_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b");
        assert!(BlobReader::open(&path).unwrap().is_none());
        std::fs::File::create(&path)
            .unwrap()
            .write_all(b"0123456789")
            .unwrap();
        let r = BlobReader::open(&path).unwrap().unwrap();
        assert_eq!(r.len(), 10);
        assert_eq!(&r.read_exact_at(3, 4).unwrap()[..], b"3456");
        assert!(r.read_exact_at(8, 4).is_err());
        if let Some(b) = r.read_cached(0, 100) {
            assert_eq!(&b[..], b"0123456789");
        }
        // Moved away (as a download into place): the open reader goes on reading it.
        std::fs::rename(&path, dir.path().join("c")).unwrap();
        assert_eq!(&r.read_exact_at(0, 2).unwrap()[..], b"01");
    }
}
