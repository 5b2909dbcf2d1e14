//! The policy file, watched for edits so a running server applies them without a restart.

use std::path::PathBuf;
use std::time::SystemTime;

use sha2::{Digest as _, Sha256};

use super::SyncPolicy;
use crate::config::ConfigError;

/// A policy file as read: the policy it gives alone, and its document, over which the module
/// twin's desired properties are laid key by key.
#[derive(Debug, Clone, Default)]
pub struct FilePolicy {
    /// The file's policy.
    pub policy: SyncPolicy,
    /// The file as parsed (empty without a file).
    pub doc: toml::Table,
}

impl FilePolicy {
    /// Reads a policy file's text; `origin` names the file in errors.
    pub fn parse(text: &str, origin: &std::path::Path) -> Result<Self, ConfigError> {
        let policy = SyncPolicy::from_toml_str(text, origin)?;
        // The text parsed as the policy, so it is a valid TOML document.
        let doc = text.parse::<toml::Table>().unwrap_or_default();
        Ok(FilePolicy { policy, doc })
    }
}

/// The config file watched for edits, so a running server applies a changed policy.
#[derive(Debug)]
pub struct PolicyFile {
    path: Option<PathBuf>,
    last: Option<Seen>,
}

/// What the last poll found.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    NoFile,
    Missing,
    Unreadable(std::io::ErrorKind),
    Content {
        mtime: Option<SystemTime>,
        len: usize,
        hash: [u8; 32],
    },
}

impl PolicyFile {
    /// Watches `path`; `None` (no `--config`) yields the default policy once.
    pub fn new(path: Option<PathBuf>) -> Self {
        PolicyFile { path, last: None }
    }

    /// The policy when the file changed since the last poll (mtime, length or content), else
    /// `None`; the first poll always answers. A file that cannot be read or parsed is reported
    /// once as an error: keep the last good policy until it is fixed.
    pub fn poll(&mut self) -> Option<Result<FilePolicy, ConfigError>> {
        let Some(path) = &self.path else {
            return self
                .last
                .replace(Seen::NoFile)
                .is_none()
                .then(|| Ok(FilePolicy::default()));
        };
        let (seen, result) = match std::fs::read(path) {
            Ok(bytes) => {
                let mtime = std::fs::metadata(path).and_then(|m| m.modified()).ok();
                let seen = Seen::Content {
                    mtime,
                    len: bytes.len(),
                    hash: Sha256::digest(&bytes).into(),
                };
                let result = match std::str::from_utf8(&bytes) {
                    Ok(text) => FilePolicy::parse(text, path),
                    Err(e) => Err(ConfigError::Parse {
                        path: path.clone(),
                        message: format!("not UTF-8 text ({e})"),
                    }),
                };
                (seen, result)
            }
            Err(source) => {
                let seen = match source.kind() {
                    std::io::ErrorKind::NotFound => Seen::Missing,
                    kind => Seen::Unreadable(kind),
                };
                let error = ConfigError::Read {
                    path: path.clone(),
                    source,
                };
                (seen, Err(error))
            }
        };
        if self.last.as_ref() == Some(&seen) {
            return None;
        }
        self.last = Some(seen);
        Some(result)
    }
}
