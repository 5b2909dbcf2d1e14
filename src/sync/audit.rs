//! Audit lines for sync actions, when `sync.audit_logs` is on: one
//! `INFO audit event="sync_manifest_stored" repo=… digest=…` line per thing sync changed here or
//! sent up, so a log collector can tell what reached the device and what left it.

/// What a sync audit line records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncEvent {
    /// A manifest from the parent was stored here.
    ManifestStored,
    /// Sync pointed a tag here at a manifest (new or moved).
    TagSet,
    /// Sync removed a tag here (gone at the parent).
    TagDeleted,
    /// A blob was downloaded from the parent (or linked from a download) into a repository.
    BlobDownloaded,
    /// A repository no longer in the policy was removed here.
    RepositoryRemoved,
    /// A manifest made here was sent to the parent.
    ManifestPushed,
    /// A tag set here was sent to the parent.
    TagPushed,
    /// A delete made here was sent to the parent.
    DeletePushed,
}

impl SyncEvent {
    /// The `event` field's value.
    pub const fn as_str(self) -> &'static str {
        match self {
            SyncEvent::ManifestStored => "sync_manifest_stored",
            SyncEvent::TagSet => "sync_tag_set",
            SyncEvent::TagDeleted => "sync_tag_deleted",
            SyncEvent::BlobDownloaded => "sync_blob_downloaded",
            SyncEvent::RepositoryRemoved => "sync_repository_removed",
            SyncEvent::ManifestPushed => "sync_manifest_pushed",
            SyncEvent::TagPushed => "sync_tag_pushed",
            SyncEvent::DeletePushed => "sync_delete_pushed",
        }
    }
}

/// What a sync action touched; fields left `None` are left out of the line.
#[derive(Debug, Clone, Copy, Default)]
pub struct Subject<'a> {
    /// Repository.
    pub repo: &'a str,
    /// Tag, for tag actions.
    pub tag: Option<&'a str>,
    /// Manifest or blob digest (or the reference deleted).
    pub digest: Option<&'a str>,
    /// Blob size in bytes.
    pub size: Option<u64>,
}

/// Writes one audit line when `enabled` (the policy's `audit_logs`).
pub fn record(enabled: bool, event: SyncEvent, s: Subject<'_>) {
    if !enabled {
        return;
    }
    tracing::info!(
        target: "audit",
        event = event.as_str(),
        repo = s.repo,
        tag = s.tag,
        digest = s.digest,
        size = s.size,
        // The message marks the line, since the target is not printed.
        "audit"
    );
}
