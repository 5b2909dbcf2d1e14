//! Files one program owns in a directory it shares with others (a node's containerd host
//! directory): written atomically (temporary file, fsync, rename, directory fsync) and
//! recognised by a marker first line, so replacing and removing never touch a file somebody
//! else wrote.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Why a file could not be written or removed.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// The file system refused.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// What the file system said.
        source: io::Error,
    },
    /// A file with the name exists without the marker: it is not ours to replace.
    #[error("{} exists and was not written by this program (no marker line); left alone", .0.display())]
    Foreign(PathBuf),
}

/// What [`MarkedDir::remove`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Removal {
    /// Our files that were deleted.
    pub removed: Vec<String>,
    /// Files with our names but without the marker, left in place.
    pub foreign: Vec<String>,
    /// Whether the directory itself went (only when nothing else was left in it).
    pub dir_removed: bool,
}

/// A directory holding marked files.
#[derive(Debug, Clone)]
pub struct MarkedDir {
    dir: PathBuf,
    marker: &'static str,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> FilesError + '_ {
    move |source| FilesError::Io {
        path: path.to_owned(),
        source,
    }
}

impl MarkedDir {
    /// Files in `dir`, each of which starts with the line `marker`.
    pub fn new(dir: PathBuf, marker: &'static str) -> Self {
        MarkedDir { dir, marker }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// True when `bytes` start with the marker line.
    fn is_marked(&self, bytes: &[u8]) -> bool {
        bytes.starts_with(self.marker.as_bytes())
            && bytes.get(self.marker.len()).is_none_or(|b| *b == b'\n')
    }

    /// Makes each `(name, content)` file hold exactly `content` (which starts with the marker),
    /// in order; files already holding it are left untouched. Returns the names written.
    pub fn sync(&self, files: &[(&str, &[u8])]) -> Result<Vec<String>, FilesError> {
        fs::create_dir_all(&self.dir).map_err(io_err(&self.dir))?;
        let mut written = Vec::new();
        for (name, content) in files {
            let path = self.dir.join(name);
            match fs::read(&path) {
                Ok(old) if old == *content => continue,
                Ok(old) if !self.is_marked(&old) => return Err(FilesError::Foreign(path)),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&path)(e)),
            }
            self.write_atomic(name, content)?;
            written.push((*name).to_owned());
        }
        Ok(written)
    }

    /// Writes `dir/name` through a temporary file renamed over it, both fsynced, so a reader
    /// (containerd) sees the old file or the new one, never a part.
    fn write_atomic(&self, name: &str, content: &[u8]) -> Result<(), FilesError> {
        let tmp = self.dir.join(temp_name(name));
        let written = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&tmp)
            .and_then(|mut f| {
                f.write_all(content)?;
                f.sync_all()
            });
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(io_err(&tmp)(e));
        }
        let path = self.dir.join(name);
        if let Err(e) = fs::rename(&tmp, &path) {
            let _ = fs::remove_file(&tmp);
            return Err(io_err(&path)(e));
        }
        self.sync_dir()
    }

    /// Makes renames and deletions in the directory durable.
    fn sync_dir(&self) -> Result<(), FilesError> {
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(&self.dir))
    }

    /// Deletes `name` if it is ours (marked); `Ok(None)` when it is absent, `Ok(Some(false))`
    /// when it is someone else's.
    fn remove_one(&self, name: &str) -> Result<Option<bool>, FilesError> {
        let path = self.dir.join(name);
        match fs::read(&path) {
            Ok(old) if self.is_marked(&old) => {
                fs::remove_file(&path).map_err(io_err(&path))?;
                Ok(Some(true))
            }
            Ok(_) => Ok(Some(false)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// Deletes our files among `names` (and their leftover temporary files), then the directory
    /// if that left it empty. Someone else's files, and the directory holding them, stay.
    pub fn remove(&self, names: &[&str]) -> Result<Removal, FilesError> {
        let mut done = Removal::default();
        if !self.dir.exists() {
            return Ok(done);
        }
        for name in names {
            match self.remove_one(name)? {
                Some(true) => done.removed.push((*name).to_owned()),
                Some(false) => done.foreign.push((*name).to_owned()),
                None => {}
            }
            // The temporary name is ours alone: a crash between write and rename leaves it.
            let tmp = self.dir.join(temp_name(name));
            match fs::remove_file(&tmp) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_err(&tmp)(e)),
                _ => {}
            }
        }
        self.sync_dir()?;
        // remove_dir (not remove_dir_all): anything else in it means it is not ours to delete.
        done.dir_removed = fs::remove_dir(&self.dir).is_ok();
        Ok(done)
    }

    /// Deletes `name` if it is ours; true when it was deleted.
    pub fn remove_file(&self, name: &str) -> Result<bool, FilesError> {
        let removed = self.remove_one(name)? == Some(true);
        if removed {
            self.sync_dir()?;
        }
        Ok(removed)
    }
}

/// The temporary file `name` is written to before the rename (hidden, fixed: one writer).
fn temp_name(name: &str) -> String {
    format!(".{name}.tmp")
}

#[cfg(test)]
mod tests {
    use super::*;

    const MARK: &str = "# ours";

    fn dir() -> (tempfile::TempDir, MarkedDir) {
        let t = tempfile::TempDir::new().unwrap_or_else(|e| panic!("{e}"));
        let d = MarkedDir::new(t.path().join("reg:5000"), MARK);
        (t, d)
    }

    fn read(p: &Path) -> String {
        fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    #[test]
    fn writes_replaces_and_skips_unchanged_files() {
        let (_t, d) = dir();
        let v1: &[u8] = b"# ours\nv1\n";
        let written = d
            .sync(&[("a", v1), ("b", v1)])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(written, ["a", "b"]);
        assert_eq!(read(&d.path().join("a")), "# ours\nv1\n");
        let v2: &[u8] = b"# ours\nv2\n";
        let written = d
            .sync(&[("a", v2), ("b", v1)])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(written, ["a"], "b unchanged is not rewritten");
        assert_eq!(read(&d.path().join("a")), "# ours\nv2\n");
        assert!(!d.path().join(".a.tmp").exists(), "no temporary file left");
    }

    #[test]
    fn never_replaces_or_removes_a_foreign_file() {
        let (_t, d) = dir();
        fs::create_dir_all(d.path()).unwrap_or_else(|e| panic!("{e}"));
        let theirs = d.path().join("a");
        fs::write(&theirs, "admin's file\n").unwrap_or_else(|e| panic!("{e}"));
        let e = d.sync(&[("a", b"# ours\nx\n")]);
        assert!(matches!(e, Err(FilesError::Foreign(_))), "{e:?}");
        // A longer first line that merely starts like the marker is not the marker.
        fs::write(&theirs, "# ourselves\n").unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            d.sync(&[("a", b"# ours\n")]),
            Err(FilesError::Foreign(_))
        ));
        let r = d.remove(&["a"]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.foreign, ["a"]);
        assert!(r.removed.is_empty() && !r.dir_removed);
        assert_eq!(read(&theirs), "# ourselves\n");
    }

    #[test]
    fn removal_takes_our_files_and_an_empty_directory_only() {
        let (_t, d) = dir();
        d.sync(&[("a", b"# ours\n"), ("b", b"# ours\n")])
            .unwrap_or_else(|e| panic!("{e}"));
        fs::write(d.path().join(".a.tmp"), "crash leftover").unwrap_or_else(|e| panic!("{e}"));
        let r = d.remove(&["a", "b", "c"]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.removed, ["a", "b"]);
        assert!(r.dir_removed && !d.path().exists());
        // Gone already: nothing to do, no error.
        assert_eq!(d.remove(&["a"]).ok(), Some(Removal::default()));

        d.sync(&[("a", b"# ours\n")])
            .unwrap_or_else(|e| panic!("{e}"));
        fs::write(d.path().join("other"), "x").unwrap_or_else(|e| panic!("{e}"));
        let r = d.remove(&["a"]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.removed, ["a"]);
        assert!(!r.dir_removed && d.path().join("other").exists());
    }

    #[test]
    fn remove_file_deletes_only_a_marked_file() {
        let (_t, d) = dir();
        d.sync(&[("a", b"# ours\n")])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(d.remove_file("a").ok(), Some(true));
        assert_eq!(d.remove_file("a").ok(), Some(false));
        fs::write(d.path().join("a"), "theirs").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(d.remove_file("a").ok(), Some(false));
        assert!(d.path().join("a").exists());
    }
}
