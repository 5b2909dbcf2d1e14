//! Content: repositories, blob links, manifests, tags and referrers, and the listings and
//! figures read from them. One call is one transaction, so a multi-step change (a manifest
//! with its tags and event, a mount) cannot be half-done.

use crate::registry::{Digest, ParsedManifest, Reference, RepoName, Tag};
use crate::storage::error::Result;

use super::Origin;

/// A stored manifest as served to clients.
#[derive(Debug, Clone)]
pub struct ManifestRecord {
    /// Digest of the exact bytes.
    pub digest: String,
    /// Media type it was pushed with.
    pub media_type: String,
    /// Size in bytes.
    pub size: u64,
    /// The bytes, when asked for (GET), or `None` (HEAD).
    pub body: Option<Vec<u8>>,
}

/// One entry of a referrers response.
#[derive(Debug, Clone)]
pub struct Referrer {
    /// Digest of the referring manifest.
    pub digest: String,
    /// Its media type.
    pub media_type: String,
    /// Its size.
    pub size: u64,
    /// Its artifact type (artifactType, else the config media type).
    pub artifact_type: Option<String>,
    /// Its annotations as a JSON object string.
    pub annotations: Option<String>,
}

/// One tag of a listing page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagEntry {
    /// The tag.
    pub name: String,
    /// Digest of the manifest it points at.
    pub digest: String,
    /// Unix time the tagged manifest arrived in the repository: the schema keeps no time per
    /// tag creation, so this is the closest record (the tag's own time if the row is missing).
    pub created: i64,
    /// Unix time the tag was last pointed (or re-pointed) at a manifest.
    pub updated: i64,
}

/// What a repository holds and when it last changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoSummary {
    /// Unix time the repository was created.
    pub created: i64,
    /// Unix time of its newest change (its creation when the event log keeps none).
    pub updated: i64,
    /// Manifests it holds, tagged or not (referrers included).
    pub manifests: u64,
    /// Tags it holds.
    pub tags: u64,
    /// Sequence of its newest event: it changes with every manifest or tag change and never
    /// comes back, so a child that saw the same value knows nothing changed in between.
    pub last_event: i64,
}

/// What the store holds, counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ContentCounts {
    /// Distinct blobs linked into any repository.
    pub blobs: u64,
    /// Distinct manifests stored.
    pub manifests: u64,
    /// Upload sessions open.
    pub uploads: u64,
}

/// Blob links, manifests and tags: what each repository holds.
pub trait Content {
    /// Lets `repo` serve the blob if `present` (run under the write lock, which garbage
    /// collection also takes to delete a blob) finds it; the size when it did. So a link never
    /// points at a blob a collection pass removed meanwhile.
    fn link_if_present(
        &self,
        repo: &RepoName,
        digest: &Digest,
        present: &mut dyn FnMut() -> Result<Option<u64>>,
    ) -> Result<Option<u64>>;

    /// Lets `repo` serve a blob the caller has just placed and still claims (see
    /// `BlobBackend::place`), so no collection pass can have removed it.
    fn link_placed(&self, repo: &RepoName, digest: &Digest, size: u64) -> Result<()>;

    /// Holds a blob a download has just placed (and still claims) until `until` (Unix
    /// seconds) or its first link, whichever comes first.
    fn hold_blob(&self, digest: &Digest, until: i64) -> Result<()>;

    /// Links `digest` into `target` when `from` links it, in one transaction; the size when it
    /// did.
    fn link_from(&self, target: &RepoName, from: &RepoName, digest: &Digest)
        -> Result<Option<u64>>;

    /// Links `digest` into `target` from the first repository (by name) that links it and that
    /// `accept` approves, in one transaction; that repository and the size when it did.
    fn link_from_first(
        &self,
        target: &RepoName,
        digest: &Digest,
        accept: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Option<(String, u64)>>;

    /// Size of the blob if `repo` may serve it.
    fn blob_link(&self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>>;

    /// Removes the blob from `repo`; false when it was not linked there.
    fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool>;

    /// Repositories that link `digest` (candidates to mount it from at the parent).
    fn repos_linking(&self, digest: &Digest) -> Result<Vec<String>>;

    /// True when the repository exists (has ever held content).
    fn repo_exists(&self, repo: &RepoName) -> Result<bool>;

    /// Stores a validated manifest and points `tags` at it, in one durable transaction that
    /// also logs who made the change. Every blob the manifest needs must already be linked in
    /// the repository; index children may be missing (sparse indexes).
    fn put_manifest_as(
        &self,
        origin: Origin,
        repo: &RepoName,
        digest: &Digest,
        manifest: &ParsedManifest,
        body: &[u8],
        tags: &[Tag],
    ) -> Result<()>;

    /// `put_manifest_as` by a client.
    fn put_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
        manifest: &ParsedManifest,
        body: &[u8],
        tags: &[Tag],
    ) -> Result<()> {
        self.put_manifest_as(Origin::Client, repo, digest, manifest, body, tags)
    }

    /// Looks a manifest up by tag or digest; with `with_body` the bytes are read too.
    fn manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        with_body: bool,
    ) -> Result<Option<ManifestRecord>>;

    /// Deletes a manifest and every tag pointing at it, logging who did.
    fn delete_manifest_as(&self, origin: Origin, repo: &RepoName, digest: &Digest) -> Result<()>;

    /// `delete_manifest_as` by a client.
    fn delete_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        self.delete_manifest_as(Origin::Client, repo, digest)
    }

    /// Deletes one tag, leaving the manifest in place, logging who did.
    fn delete_tag_as(&self, origin: Origin, repo: &RepoName, tag: &Tag) -> Result<()>;

    /// `delete_tag_as` by a client.
    fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> Result<()> {
        self.delete_tag_as(Origin::Client, repo, tag)
    }

    /// Points `tag` at a manifest already stored in `repo`; false when the manifest is not
    /// there. A tag already pointing at it is left alone (no event).
    fn set_tag_as(
        &self,
        origin: Origin,
        repo: &RepoName,
        tag: &Tag,
        digest: &Digest,
    ) -> Result<bool>;

    /// `set_tag_as`, but only while the tag still points at `expected` (`None`: absent), so a
    /// client's move made meanwhile is never overwritten; false when it moved.
    fn set_tag_if(
        &self,
        origin: Origin,
        repo: &RepoName,
        tag: &Tag,
        digest: &Digest,
        expected: Option<&str>,
    ) -> Result<bool>;

    /// Removes a repository with its tags, manifests and blob links (blobs stay for other
    /// repositories); every tag and manifest removal is logged. False when it did not exist.
    fn delete_repository_as(&self, origin: Origin, repo: &RepoName) -> Result<bool>;
}

/// Listings and figures read from the content.
pub trait Listings {
    /// Repositories holding at least one manifest, sorted, after `last`, at most `n`.
    fn catalog(&self, n: Option<usize>, last: Option<&str>) -> Result<Vec<String>>;

    /// Tags of a repository in lexical order, after `last`, at most `n`.
    fn tags(&self, repo: &RepoName, n: Option<usize>, last: Option<&str>) -> Result<Vec<String>>;

    /// Every tag of `repo` with the digest it points at, sorted by tag; empty when unknown.
    fn tag_digests(&self, repo: &RepoName) -> Result<Vec<(String, String)>>;

    /// Up to `n` tags of `repo` after `last` by name; `NameUnknown` for an unknown repository.
    fn tag_page(&self, repo: &RepoName, n: usize, last: Option<&str>) -> Result<Vec<TagEntry>>;

    /// Manifests in `repo` whose subject is `subject`, optionally of one artifact type.
    fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Referrer>>;

    /// The summary of `repo`, `None` when it does not exist.
    fn repo_summary(&self, repo: &RepoName) -> Result<Option<RepoSummary>>;

    /// Counts blobs, manifests and upload sessions, in one snapshot.
    fn content_counts(&self) -> Result<ContentCounts>;

    /// Bytes of distinct blobs linked anywhere plus manifests: what the content takes.
    fn content_bytes(&self) -> Result<u64>;
}
