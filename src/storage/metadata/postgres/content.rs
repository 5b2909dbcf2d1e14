//! PostgreSQL implementation of `Content`, ported from SQLite's (`../sqlite/repos.rs`,
//! `manifests.rs`, `refs.rs`, `sync.rs`): the same statements, the same events in the same
//! transactions. The SQL sits in one file per table group below; every statement is sent typed,
//! in one round trip (`content/sql.rs`).

mod links;
mod log;
pub(super) mod manifests;
pub(super) mod refs;
mod repos;
pub(super) mod sql;
mod tags;
#[cfg(test)]
mod tests;

use super::PgMetadata;
use crate::registry::{Digest, ParsedManifest, Reference, RepoName, Tag};
use crate::storage::error::Result;
use crate::storage::metadata::{Content, ManifestRecord, Origin};
use manifests::NewManifest;

impl Content for PgMetadata {
    fn link_if_present(
        &self,
        repo: &RepoName,
        digest: &Digest,
        present: &mut dyn FnMut() -> Result<Option<u64>>,
    ) -> Result<Option<u64>> {
        // Under the writer lock, which garbage collection holds while it deletes blobs.
        self.write(|tx| {
            let size = present()?;
            if let Some(size) = size {
                links::insert_link(tx, repo, digest, size)?;
            }
            Ok(size)
        })
    }

    fn link_placed(&self, repo: &RepoName, digest: &Digest, size: u64) -> Result<()> {
        self.write(|tx| links::insert_link(tx, repo, digest, size))
    }

    fn hold_blob(&self, digest: &Digest, until: i64) -> Result<()> {
        self.write(|tx| links::hold(tx, digest, until))
    }

    fn link_from(
        &self,
        target: &RepoName,
        from: &RepoName,
        digest: &Digest,
    ) -> Result<Option<u64>> {
        self.write(|tx| links::link_from(tx, target, from, digest))
    }

    fn link_from_first(
        &self,
        target: &RepoName,
        digest: &Digest,
        accept: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Option<(String, u64)>> {
        self.write(|tx| links::link_from_first(tx, target, digest, accept))
    }

    fn blob_link(&self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>> {
        self.read(|c| links::blob_link(c, repo, digest))
    }

    fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool> {
        self.write(|tx| links::unlink(tx, repo, digest))
    }

    fn repos_linking(&self, digest: &Digest) -> Result<Vec<String>> {
        self.read(|c| links::repos_linking(c, digest))
    }

    fn repo_exists(&self, repo: &RepoName) -> Result<bool> {
        self.read(|c| Ok(repos::repo_id(c, repo)?.is_some()))
    }

    fn put_manifest_as(
        &self,
        origin: Origin,
        repo: &RepoName,
        digest: &Digest,
        manifest: &ParsedManifest,
        body: &[u8],
        tags: &[Tag],
    ) -> Result<()> {
        let new = NewManifest {
            origin,
            repo,
            digest,
            manifest,
            body,
        };
        self.write(|tx| manifests::store(tx, &new, tags))
    }

    fn manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        with_body: bool,
    ) -> Result<Option<ManifestRecord>> {
        self.read(|c| manifests::find(c, repo, reference, with_body))
    }

    fn delete_manifest_as(&self, origin: Origin, repo: &RepoName, digest: &Digest) -> Result<()> {
        self.write(|tx| manifests::delete(tx, origin, repo, digest))
    }

    fn delete_tag_as(&self, origin: Origin, repo: &RepoName, tag: &Tag) -> Result<()> {
        self.write(|tx| tags::delete_tag(tx, origin, repo, tag))
    }

    fn set_tag_as(
        &self,
        origin: Origin,
        repo: &RepoName,
        tag: &Tag,
        digest: &Digest,
    ) -> Result<bool> {
        self.write(|tx| tags::set_tag_checked(tx, origin, repo, tag, digest, None))
    }

    fn set_tag_if(
        &self,
        origin: Origin,
        repo: &RepoName,
        tag: &Tag,
        digest: &Digest,
        expected: Option<&str>,
    ) -> Result<bool> {
        self.write(|tx| tags::set_tag_checked(tx, origin, repo, tag, digest, Some(expected)))
    }

    fn delete_repository_as(&self, origin: Origin, repo: &RepoName) -> Result<bool> {
        self.write(|tx| repos::delete_repository(tx, origin, repo))
    }
}
