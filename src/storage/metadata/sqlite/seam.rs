//! The SQLite implementation of the metadata traits: each method is the inherent one of the same
//! name, written beside the SQL it runs (one file per table group).

use super::SqliteMetadata;
use crate::registry::{Digest, ParsedManifest, Reference, RepoName, Tag};
use crate::storage::error::Result;
use crate::storage::metadata::{
    AccessRecords, AccessRows, Collection, Content, ContentCounts, Event, EventLog, Hierarchy,
    HierarchyChange, Listings, ManifestRecord, MetadataStore, Origin, Referrer, RegistryRow,
    RepoSummary, ScopeMapRow, StateKey, StatePrefix, SyncState, TagEntry, TokenRow, UploadSessions,
};
use crate::storage::uploads::SessionCaps;

impl Content for SqliteMetadata {
    fn link_if_present(
        &self,
        repo: &RepoName,
        digest: &Digest,
        present: &mut dyn FnMut() -> Result<Option<u64>>,
    ) -> Result<Option<u64>> {
        SqliteMetadata::link_if_present(self, repo, digest, present)
    }
    fn link_placed(&self, repo: &RepoName, digest: &Digest, size: u64) -> Result<()> {
        SqliteMetadata::link_placed(self, repo, digest, size)
    }
    fn hold_blob(&self, digest: &Digest, until: i64) -> Result<()> {
        SqliteMetadata::hold_blob(self, digest, until)
    }
    fn link_from(
        &self,
        target: &RepoName,
        from: &RepoName,
        digest: &Digest,
    ) -> Result<Option<u64>> {
        SqliteMetadata::link_from(self, target, from, digest)
    }
    fn link_from_first(
        &self,
        target: &RepoName,
        digest: &Digest,
        accept: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Option<(String, u64)>> {
        SqliteMetadata::link_from_first(self, target, digest, accept)
    }
    fn blob_link(&self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>> {
        SqliteMetadata::blob_link(self, repo, digest)
    }
    fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool> {
        SqliteMetadata::unlink_blob(self, repo, digest)
    }
    fn repos_linking(&self, digest: &Digest) -> Result<Vec<String>> {
        SqliteMetadata::repos_linking(self, digest)
    }
    fn repo_exists(&self, repo: &RepoName) -> Result<bool> {
        SqliteMetadata::repo_exists(self, repo)
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
        SqliteMetadata::put_manifest_as(self, origin, repo, digest, manifest, body, tags)
    }
    fn manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        with_body: bool,
    ) -> Result<Option<ManifestRecord>> {
        SqliteMetadata::manifest(self, repo, reference, with_body)
    }
    fn delete_manifest_as(&self, origin: Origin, repo: &RepoName, digest: &Digest) -> Result<()> {
        SqliteMetadata::delete_manifest_as(self, origin, repo, digest)
    }
    fn delete_tag_as(&self, origin: Origin, repo: &RepoName, tag: &Tag) -> Result<()> {
        SqliteMetadata::delete_tag_as(self, origin, repo, tag)
    }
    fn set_tag_as(
        &self,
        origin: Origin,
        repo: &RepoName,
        tag: &Tag,
        digest: &Digest,
    ) -> Result<bool> {
        SqliteMetadata::set_tag_as(self, origin, repo, tag, digest)
    }
    fn set_tag_if(
        &self,
        origin: Origin,
        repo: &RepoName,
        tag: &Tag,
        digest: &Digest,
        expected: Option<&str>,
    ) -> Result<bool> {
        SqliteMetadata::set_tag_if(self, origin, repo, tag, digest, expected)
    }
    fn delete_repository_as(&self, origin: Origin, repo: &RepoName) -> Result<bool> {
        SqliteMetadata::delete_repository_as(self, origin, repo)
    }
}

impl Listings for SqliteMetadata {
    fn catalog(&self, n: Option<usize>, last: Option<&str>) -> Result<Vec<String>> {
        SqliteMetadata::catalog(self, n, last)
    }
    fn tags(&self, repo: &RepoName, n: Option<usize>, last: Option<&str>) -> Result<Vec<String>> {
        SqliteMetadata::tags(self, repo, n, last)
    }
    fn tag_digests(&self, repo: &RepoName) -> Result<Vec<(String, String)>> {
        SqliteMetadata::tag_digests(self, repo)
    }
    fn tag_page(&self, repo: &RepoName, n: usize, last: Option<&str>) -> Result<Vec<TagEntry>> {
        SqliteMetadata::tag_page(self, repo, n, last)
    }
    fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Referrer>> {
        SqliteMetadata::referrers(self, repo, subject, artifact_type)
    }
    fn repo_summary(&self, repo: &RepoName) -> Result<Option<RepoSummary>> {
        SqliteMetadata::repo_summary(self, repo)
    }
    fn content_counts(&self) -> Result<ContentCounts> {
        SqliteMetadata::content_counts(self)
    }
    fn content_bytes(&self) -> Result<u64> {
        SqliteMetadata::content_bytes(self)
    }
}

impl EventLog for SqliteMetadata {
    fn events_after(&self, after: i64, limit: usize) -> Result<Vec<Event>> {
        SqliteMetadata::events_after(self, after, limit)
    }
    fn newest_event_seq(&self) -> Result<i64> {
        SqliteMetadata::newest_event_seq(self)
    }
    fn client_events(&self, repo: &str, after: i64, limit: usize) -> Result<Vec<Event>> {
        SqliteMetadata::client_events(self, repo, after, limit)
    }
    fn outbox_size(&self, repo: &str, after: i64) -> Result<(u64, Option<i64>)> {
        SqliteMetadata::outbox_size(self, repo, after)
    }
    fn outbox_bytes(&self, repo: &str, after: i64) -> Result<u64> {
        SqliteMetadata::outbox_bytes(self, repo, after)
    }
    fn changed_repositories(&self, after: i64, repos: &[String]) -> Result<(Vec<String>, i64)> {
        SqliteMetadata::changed_repositories(self, after, repos)
    }
    fn client_changes_after(&self, after: i64) -> Result<(Vec<String>, i64)> {
        SqliteMetadata::client_changes_after(self, after)
    }
}

impl UploadSessions for SqliteMetadata {
    fn create_upload(
        &self,
        id: &str,
        repo: &RepoName,
        client: &str,
        caps: &SessionCaps,
    ) -> Result<()> {
        SqliteMetadata::create_upload(self, id, repo, client, caps)
    }
    fn upload_repo(&self, id: &str) -> Result<Option<String>> {
        SqliteMetadata::upload_repo(self, id)
    }
    fn touch_upload(&self, id: &str) -> Result<()> {
        SqliteMetadata::touch_upload(self, id)
    }
    fn delete_upload(&self, id: &str) -> Result<()> {
        SqliteMetadata::delete_upload(self, id)
    }
    fn idle_uploads(&self, cutoff: i64) -> Result<Vec<String>> {
        SqliteMetadata::idle_uploads(self, cutoff)
    }
    fn all_uploads(&self) -> Result<Vec<String>> {
        SqliteMetadata::all_uploads(self)
    }
}

impl SyncState for SqliteMetadata {
    fn sync_state(&self, key: &StateKey<'_>) -> Result<Option<String>> {
        SqliteMetadata::sync_state(self, key)
    }
    fn sync_state_prefixed(&self, prefix: StatePrefix) -> Result<Vec<(String, String)>> {
        SqliteMetadata::sync_state_prefixed(self, prefix)
    }
    fn set_sync_state(&self, key: &StateKey<'_>, value: Option<&str>) -> Result<()> {
        SqliteMetadata::set_sync_state(self, key, value)
    }
    fn bump_sync_counter(&self, key: &StateKey<'_>) -> Result<i64> {
        SqliteMetadata::bump_sync_counter(self, key)
    }
}

impl AccessRecords for SqliteMetadata {
    fn access_generation(&self) -> Result<i64> {
        SqliteMetadata::access_generation(self)
    }
    fn access_rows(&self) -> Result<AccessRows> {
        SqliteMetadata::access_rows(self)
    }
    fn all_access_rows(&self) -> Result<AccessRows> {
        SqliteMetadata::all_access_rows(self)
    }
    fn scope_map(&self, name: &str) -> Result<Option<ScopeMapRow>> {
        SqliteMetadata::scope_map(self, name)
    }
    fn put_scope_map(&self, row: &ScopeMapRow, create: bool) -> Result<()> {
        SqliteMetadata::put_scope_map(self, row, create)
    }
    fn delete_scope_map(&self, name: &str) -> Result<()> {
        SqliteMetadata::delete_scope_map(self, name)
    }
    fn token(&self, name: &str) -> Result<Option<TokenRow>> {
        SqliteMetadata::token(self, name)
    }
    fn put_token(&self, row: &TokenRow, create: bool) -> Result<()> {
        SqliteMetadata::put_token(self, row, create)
    }
    fn delete_token(&self, name: &str) -> Result<()> {
        SqliteMetadata::delete_token(self, name)
    }
}

impl Hierarchy for SqliteMetadata {
    fn hierarchy_generation(&self) -> Result<i64> {
        SqliteMetadata::hierarchy_generation(self)
    }
    fn change_counters(&self) -> Result<(i64, i64, i64)> {
        SqliteMetadata::change_counters(self)
    }
    fn connected_registries(&self) -> Result<Vec<RegistryRow>> {
        SqliteMetadata::connected_registries(self)
    }
    fn connected_registry(&self, name: &str) -> Result<Option<RegistryRow>> {
        SqliteMetadata::connected_registry(self, name)
    }
    fn apply_hierarchy(&self, change: &HierarchyChange) -> Result<()> {
        SqliteMetadata::apply_hierarchy(self, change)
    }
    fn set_activation(&self, name: &str, activation: &str, announce: bool) -> Result<()> {
        SqliteMetadata::set_activation(self, name, activation, announce)
    }
    fn set_registry_status(&self, name: &str, status: &str, heard: i64) -> Result<bool> {
        SqliteMetadata::set_registry_status(self, name, status, heard)
    }
}

impl Collection for SqliteMetadata {
    fn expire_untagged(&self, cutoff: i64, keep_outbox: bool, dry_run: bool) -> Result<u64> {
        SqliteMetadata::expire_untagged(self, cutoff, keep_outbox, dry_run)
    }
    fn lapse_links(&self, cutoff: i64, dry_run: bool) -> Result<u64> {
        SqliteMetadata::lapse_links(self, cutoff, dry_run)
    }
    fn sweep_blobs(
        &self,
        digests: &[Digest],
        now: i64,
        remove: &mut dyn FnMut(&Digest) -> Result<Option<u64>>,
    ) -> Result<(u64, u64)> {
        SqliteMetadata::sweep_blobs(self, digests, now, remove)
    }
    fn blobs_unkept(&self, digests: &[Digest], now: i64, lapse_cutoff: i64) -> Result<Vec<bool>> {
        SqliteMetadata::blobs_unkept(self, digests, now, lapse_cutoff)
    }
    fn drop_expired_holds(&self, now: i64) -> Result<()> {
        SqliteMetadata::drop_expired_holds(self, now)
    }
}

impl MetadataStore for SqliteMetadata {
    fn checkpoint(&self) -> Result<()> {
        SqliteMetadata::checkpoint(self)
    }
}
