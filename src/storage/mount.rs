//! Cross-repository mounts: a blob another repository already serves is linked, not uploaded.

use super::{Result, Store};
use crate::registry::{Digest, RepoName};

impl Store {
    /// Links `digest` into `target` when `from` serves it; true when it did.
    pub fn mount(&self, target: &RepoName, from: &RepoName, digest: &Digest) -> Result<bool> {
        if self.blobs.size(digest)?.is_none() {
            return Ok(false);
        }
        Ok(self.meta.link_from(target, from, digest)?.is_some())
    }

    /// Links `digest` into `target` from any repository that serves it and that `readable`
    /// accepts (the caller's read rights); the source repository when it did.
    pub fn mount_any(
        &self,
        target: &RepoName,
        digest: &Digest,
        mut readable: impl FnMut(&str) -> bool,
    ) -> Result<Option<String>> {
        if self.blobs.size(digest)?.is_none() {
            return Ok(None);
        }
        let found = self.meta.link_from_first(target, digest, &mut readable)?;
        Ok(found.map(|(from, _)| from))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Algorithm;
    use crate::storage::StorageError;

    fn store_with_blob(repo: &RepoName, data: &[u8]) -> Result<(tempfile::TempDir, Store, Digest)> {
        let tmp = tempfile::TempDir::new().map_err(|e| StorageError::io("tempdir", e))?;
        let store = Store::open(tmp.path())?;
        let mut w = store.uploads.oneshot(Algorithm::Sha256)?;
        w.append(data)?;
        let d = Digest::sha256_of(data);
        store.finish_oneshot(repo, w, &d)?;
        Ok((tmp, store, d))
    }

    fn name(s: &str) -> RepoName {
        RepoName::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn mounts_only_from_a_repository_that_serves_the_blob() -> Result<()> {
        let (src, dst, other) = (name("team/src"), name("dst"), name("other"));
        let (_tmp, store, d) = store_with_blob(&src, b"layer")?;
        assert!(!store.mount(&dst, &other, &d)?);
        assert_eq!(store.meta.blob_link(&dst, &d)?, None);
        assert!(store.mount(&dst, &src, &d)?);
        assert_eq!(store.meta.blob_link(&dst, &d)?, Some(5));
        let missing = Digest::sha256_of(b"not here");
        assert!(!store.mount(&dst, &src, &missing)?);
        Ok(())
    }

    #[test]
    fn automatic_mount_asks_the_caller_about_each_source() -> Result<()> {
        let (a, b, dst) = (name("a"), name("b"), name("dst"));
        let (_tmp, store, d) = store_with_blob(&a, b"shared")?;
        assert!(store.mount(&b, &a, &d)?);
        let mut asked = Vec::new();
        let found = store.mount_any(&dst, &d, |r| {
            asked.push(r.to_owned());
            r == "b"
        })?;
        assert_eq!(found.as_deref(), Some("b"));
        assert_eq!(asked, ["a", "b"]);
        assert_eq!(store.meta.blob_link(&dst, &d)?, Some(6));
        // Nothing readable: nothing linked.
        let none = name("none");
        assert_eq!(store.mount_any(&none, &d, |_| false)?, None);
        assert_eq!(store.meta.blob_link(&none, &d)?, None);
        Ok(())
    }
}
