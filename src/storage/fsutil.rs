//! Small filesystem helpers for durability: directory fsync and free-space queries.

use std::fs::File;
use std::path::Path;

use super::error::{Result, StorageError};

/// Makes a rename or file creation inside `dir` durable by syncing the directory itself.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StorageError::io(format!("syncing directory {}", dir.display()), e))
}

/// Creates `dir` (and parents) and syncs the parent so the new entry survives a power cut.
pub fn create_dir_durable(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| StorageError::io(format!("creating {}", dir.display()), e))?;
    // A relative one-part path (`data`) has the empty path as parent: that is the current
    // directory.
    match dir.parent() {
        Some(p) if p.as_os_str().is_empty() => sync_dir(Path::new("."))?,
        Some(p) => sync_dir(p)?,
        None => {}
    }
    Ok(())
}

/// Bytes available to this process on the filesystem holding `path`.
pub fn free_bytes(path: &Path) -> Result<u64> {
    let st = rustix::fs::statvfs(path).map_err(|e| {
        StorageError::io(
            format!("reading free space of {}", path.display()),
            e.into(),
        )
    })?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Seconds since the Unix epoch, for timestamps stored in metadata.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Takes an exclusive advisory lock on `file` without waiting; false when another open file
/// (in this process or another) holds it. The lock ends when the file is closed.
pub fn try_lock(file: &std::fs::File) -> bool {
    lock(file, libc::LOCK_EX | libc::LOCK_NB)
}

/// Takes an exclusive advisory lock on `file`, waiting for the holder to let go.
pub fn lock_wait(file: &std::fs::File) -> bool {
    lock(file, libc::LOCK_EX)
}

fn lock(file: &std::fs::File, how: libc::c_int) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor we own; it has no memory effects.
    unsafe { libc::flock(file.as_raw_fd(), how) == 0 }
}
