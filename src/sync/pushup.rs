//! Push-up (ReadWrite, DESIGN §6): the event log is the outbox. Per repository, in order, each
//! change a client made here goes to the parent: blobs first (skipped when the parent has them,
//! mounted when possible, chunked uploads that resume from the parent's offset), then the
//! manifest byte-exact by digest, then the tag; deletes when the sync token may delete.
//!
//! A per-repository cursor (the last event sent) is saved after every event, so a restart or a
//! `kill -9` re-sends at most one event, and every send is idempotent.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::audit::{self, Subject, SyncEvent};
use super::error::SyncError;
use super::local;
use super::parent::{DeleteResult, MountResult, ParentClient, ParentError, UploadSession};
use super::policy::SyncPolicy;
use super::status::{DetailCode, Status};
use super::transfer::{Stop, Transfers};
use crate::registry::{manifest, Algorithm, Digest, Reference, RepoName};
use crate::storage::metadata::{Event, StateKey};
use crate::storage::{fsutil::now_secs, Store};

/// Events read from the outbox at a time.
const BATCH: usize = 100;
/// Consecutive failed chunks without progress before an upload waits for the next pass.
const MAX_ATTEMPTS: u32 = 6;
/// Deepest nesting followed when pushing (index → manifest).
const MAX_DEPTH: u32 = 4;

type Boxed<'a> = Pin<Box<dyn Future<Output = Result<(), SyncError>> + Send + 'a>>;

/// What one repository's push-up works with.
pub struct Pusher {
    /// The local store.
    pub store: Arc<Store>,
    /// The parent.
    pub parent: ParentClient,
    /// The policy in force for this run.
    pub policy: Arc<SyncPolicy>,
    /// Where conflicts and expired messages are reported.
    pub status: Arc<Status>,
    /// Shared bandwidth limit (and the sync runtime's transfers).
    pub transfers: Arc<Transfers>,
    /// Set when the window closes.
    pub stop: Stop,
}

/// The sync state key of an upload of `digest` to `repo` in progress.
fn upload_key<'a>(repo: &'a RepoName, digest: &'a Digest) -> StateKey<'a> {
    StateKey::Upload {
        repo: repo.as_str(),
        digest: digest.as_str(),
    }
}

impl Pusher {
    /// The last event of `repo` already sent (0: none).
    pub fn cursor(&self, repo: &RepoName) -> Result<i64, SyncError> {
        let v = local(|| {
            self.store
                .meta
                .sync_state(&StateKey::PushCursor(repo.as_str()))
        })?;
        Ok(v.and_then(|s| s.parse().ok()).unwrap_or(0))
    }

    /// Sends every pending client change of `repo`, in order; returns how many were sent.
    pub async fn push_repository(&self, repo: &RepoName) -> Result<usize, SyncError> {
        let mut cursor = self.cursor(repo)?;
        let mut sent = 0;
        loop {
            let batch = local(|| self.store.meta.client_events(repo.as_str(), cursor, BATCH))?;
            if batch.is_empty() {
                return Ok(sent);
            }
            for ev in batch {
                if self.stop.load(Ordering::SeqCst) {
                    return Err(SyncError::Stopped("sync window closed"));
                }
                let age = now_secs().saturating_sub(ev.time);
                if age > self.policy.message_ttl.as_secs() as i64 {
                    self.expire(&ev);
                } else {
                    self.send(repo, &ev).await?;
                    sent += 1;
                }
                cursor = ev.seq;
                let key = StateKey::PushCursor(repo.as_str());
                local(|| {
                    self.store
                        .meta
                        .set_sync_state(&key, Some(&cursor.to_string()))
                })?;
            }
        }
    }

    /// Drops an event older than the message TTL from the outbox and says so.
    fn expire(&self, ev: &Event) {
        let what = match &ev.tag {
            Some(t) => format!("{}:{t}", ev.repo),
            None => ev.repo.clone(),
        };
        let msg = format!(
            "{} of {what} ({}) was not delivered within the message TTL; dropped from the outbox, kept here",
            ev.action, ev.digest
        );
        tracing::warn!(repo = %ev.repo, tag = ?ev.tag, digest = %ev.digest, action = %ev.action, "outbox message expired");
        self.status.append_detail(DetailCode::MessageExpired, msg);
    }

    /// Sends one change, with an audit line when the policy asks for them.
    async fn send(&self, repo: &RepoName, ev: &Event) -> Result<(), SyncError> {
        let Ok(digest) = ev.digest.parse::<Digest>() else {
            return Ok(());
        };
        self.send_one(repo, ev, &digest).await?;
        let event = match ev.action.as_str() {
            "manifest_put" => SyncEvent::ManifestPushed,
            "tag_set" => SyncEvent::TagPushed,
            "tag_delete" | "manifest_delete" => SyncEvent::DeletePushed,
            _ => return Ok(()),
        };
        let subject = Subject {
            repo: repo.as_str(),
            tag: ev.tag.as_deref(),
            digest: Some(digest.as_str()),
            size: None,
        };
        audit::record(self.policy.audit_logs, event, subject);
        Ok(())
    }

    /// Sends one change by its action.
    async fn send_one(
        &self,
        repo: &RepoName,
        ev: &Event,
        digest: &Digest,
    ) -> Result<(), SyncError> {
        match (ev.action.as_str(), ev.tag.as_deref()) {
            ("manifest_put", _) => self.push_manifest(repo, digest, 0).await,
            ("tag_set", Some(tag)) => {
                self.push_tag(repo, tag, digest, ev.previous.as_deref())
                    .await
            }
            ("tag_delete", Some(tag)) => {
                // A manifest deleted here logs its tags' deletes first; the manifest delete that
                // follows removes them at the parent too, so a refusal here is no news.
                let gone = self.local_manifest(repo, digest)?.is_none();
                self.delete(repo, tag, !gone).await
            }
            ("manifest_delete", _) => self.delete(repo, digest.as_str(), true).await,
            _ => Ok(()),
        }
    }

    /// Points the parent's `tag` at `digest` (pushing the manifest first); a tag the parent
    /// moved meanwhile is overwritten — the change reaching the parent last wins — and reported.
    async fn push_tag(
        &self,
        repo: &RepoName,
        tag: &str,
        digest: &Digest,
        previous: Option<&str>,
    ) -> Result<(), SyncError> {
        let Some((media_type, bytes)) = self.local_manifest(repo, digest)? else {
            return Ok(()); // deleted here since; its delete event follows
        };
        self.push_manifest(repo, digest, 0).await?;
        let at_parent = self.parent.manifest_head(repo.as_str(), tag).await?;
        if let Some(h) = &at_parent {
            if h.digest == digest.as_str() {
                return Ok(());
            }
            if Some(h.digest.as_str()) != previous {
                let msg = format!(
                    "{}:{tag} was moved at the parent to {} while this registry moved it to {digest}; \
                     this change reached the parent last and wins ({} is overwritten)",
                    repo.as_str(),
                    h.digest,
                    h.digest
                );
                tracing::warn!(repo = %repo.as_str(), tag, parent = %h.digest, here = %digest, "tag conflict");
                self.status.append_detail(DetailCode::TagConflict, msg);
            }
        }
        let bytes = bytes::Bytes::from(bytes);
        // A tag pushed by name addresses the manifest by sha256 at the parent; any other digest
        // is kept by tagging the push by digest, where the parent supports `?tag=`.
        if digest.algorithm() != Algorithm::Sha256 {
            let (r, m) = (repo.as_str(), media_type.as_str());
            if self
                .parent
                .put_manifest_tagged(r, digest, tag, m, bytes.clone())
                .await?
            {
                return Ok(());
            }
            tracing::warn!(repo = %r, tag, digest = %digest, "the parent cannot tag a manifest by its digest; it is tagged under its sha256 there");
        }
        self.parent
            .put_manifest(repo.as_str(), tag, &media_type, bytes)
            .await?;
        Ok(())
    }

    /// Deletes `reference` at the parent when it allows; a refusal is reported, not retried.
    async fn delete(
        &self,
        repo: &RepoName,
        reference: &str,
        report: bool,
    ) -> Result<(), SyncError> {
        match self.parent.delete_manifest(repo.as_str(), reference).await {
            Ok(DeleteResult::Deleted | DeleteResult::NotFound) | Err(ParentError::NotFound) => {
                Ok(())
            }
            Ok(DeleteResult::Unsupported) if !report => Ok(()),
            Ok(DeleteResult::Unsupported) => {
                self.status.append_detail(
                    DetailCode::DeleteUnsupported,
                    format!(
                        "the parent cannot delete {}:{reference}; in ReadWrite the next sync brings it back from the parent",
                        repo.as_str()
                    ),
                );
                Ok(())
            }
            Err(e @ (ParentError::Denied(_) | ParentError::Unauthorized(_))) => {
                self.status.append_detail(
                    DetailCode::DeleteDenied,
                    format!(
                        "the sync token may not delete {}:{reference}: {e}",
                        repo.as_str()
                    ),
                );
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Media type and bytes of a local manifest, `None` when it is gone.
    fn local_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<(String, Vec<u8>)>, SyncError> {
        let m = local(|| {
            self.store
                .meta
                .manifest(repo, &Reference::Digest(digest.clone()), true)
        })?;
        Ok(m.and_then(|m| m.body.map(|b| (m.media_type, b))))
    }

    /// Pushes a manifest by digest with everything it needs that the parent lacks.
    fn push_manifest<'a>(
        &'a self,
        repo: &'a RepoName,
        digest: &'a Digest,
        depth: u32,
    ) -> Boxed<'a> {
        Box::pin(async move {
            if depth > MAX_DEPTH {
                return Err(SyncError::Invalid(format!(
                    "{digest}: manifests nested too deep"
                )));
            }
            let Some((media_type, bytes)) = self.local_manifest(repo, digest)? else {
                return Ok(());
            };
            if self
                .parent
                .manifest_head(repo.as_str(), digest.as_str())
                .await?
                .is_some()
            {
                return Ok(());
            }
            let parsed = manifest::parse(&bytes, Some(&media_type))
                .map_err(|e| SyncError::Invalid(format!("stored manifest {digest}: {e}")))?;
            for child in parsed.child_manifests() {
                self.push_manifest(repo, &child.digest, depth + 1).await?;
            }
            for blob in parsed.required_blobs() {
                self.push_blob(repo, &blob.digest).await?;
            }
            self.parent
                .put_manifest(
                    repo.as_str(),
                    digest.as_str(),
                    &media_type,
                    bytes::Bytes::from(bytes),
                )
                .await?;
            Ok(())
        })
    }

    /// Makes the parent have a blob: already there, mounted from another repository, or
    /// uploaded in chunks that resume from the parent's offset.
    async fn push_blob(&self, repo: &RepoName, digest: &Digest) -> Result<(), SyncError> {
        if self
            .parent
            .blob_exists(repo.as_str(), digest.as_str())
            .await?
            .is_some()
        {
            // A kill between the last PUT and forgetting the session leaves its key behind.
            self.save(&upload_key(repo, digest), None)?;
            return Ok(());
        }
        let key = upload_key(repo, digest);
        let mut session = self.resume(&key).await?;
        if session.is_none() {
            for from in local(|| self.store.meta.repos_linking(digest))? {
                if from == repo.as_str() {
                    continue;
                }
                match self
                    .parent
                    .mount_blob(repo.as_str(), digest.as_str(), &from)
                    .await
                {
                    Ok(MountResult::Mounted) => return Ok(()),
                    Ok(MountResult::Upload(s)) => {
                        session = Some(s);
                        break;
                    }
                    Err(e) if e.is_transient() => return Err(e.into()),
                    Err(_) => continue,
                }
            }
        }
        let mut session = match session {
            Some(s) => s,
            None => self.parent.start_upload(repo.as_str()).await?,
        };
        let (path, size) = match local(|| self.store.blobs.open_blob(digest))? {
            Some((_, size)) => (self.store.blobs.path(digest), size),
            None => return Err(SyncError::Invalid(format!("blob {digest} is missing here"))),
        };
        self.save(&key, Some(&session))?;
        let mut failures = 0u32;
        while session.offset < size {
            if self.stop.load(Ordering::SeqCst) {
                return Err(SyncError::Stopped("sync window closed"));
            }
            let len = self.policy.chunk_size.min(size - session.offset);
            let body =
                super::upload::file_body(path.clone(), session.offset, len, self.transfers.clone());
            let before = session.offset;
            match self.parent.upload_chunk(&mut session, body, len).await {
                Ok(()) => {
                    failures = 0;
                    self.save(&key, Some(&session))?;
                }
                Err(e) if e.is_transient() && failures + 1 < MAX_ATTEMPTS => {
                    // A cut link: ask the parent how far it got and go on from there, within
                    // this pass (repeated failures without progress back off, then give up).
                    tracing::info!(%digest, offset = before, error = %e, "upload interrupted; resuming");
                    match self.parent.upload_status(&session).await {
                        Ok(Some(s)) => {
                            failures = if s.offset > before { 0 } else { failures + 1 };
                            session = s;
                            self.save(&key, Some(&session))?;
                        }
                        Ok(None) => {
                            failures += 1;
                            session = self.parent.start_upload(repo.as_str()).await?;
                            self.save(&key, Some(&session))?;
                        }
                        Err(e) if e.is_transient() => failures += 1,
                        Err(e) => return Err(e.into()),
                    }
                    if failures > 0 {
                        let wait =
                            super::backoff::delay(failures, std::time::Duration::from_secs(10));
                        tokio::time::sleep(wait).await;
                    }
                }
                Err(ParentError::Protocol(m)) => {
                    // The parent disagrees about the offset (some append at their own offset
                    // whatever Content-Range says): its copy cannot be trusted, start over.
                    tracing::warn!(%digest, message = %m, "upload offset disputed; starting the upload again");
                    self.parent.cancel_upload(&session).await;
                    session = self.parent.start_upload(repo.as_str()).await?;
                    self.save(&key, Some(&session))?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        self.parent
            .finish_upload(&session, digest.as_str(), None)
            .await?;
        self.save(&key, None)?;
        Ok(())
    }

    /// A saved upload the parent still knows, with its true offset.
    async fn resume(&self, key: &StateKey<'_>) -> Result<Option<UploadSession>, SyncError> {
        let saved = local(|| self.store.meta.sync_state(key))?;
        let Some(s) = saved.and_then(|t| serde_json::from_str::<UploadSession>(&t).ok()) else {
            return Ok(None);
        };
        Ok(self.parent.upload_status(&s).await?)
    }

    fn save(&self, key: &StateKey<'_>, s: Option<&UploadSession>) -> Result<(), SyncError> {
        let text = s.and_then(|s| serde_json::to_string(s).ok());
        local(|| self.store.meta.set_sync_state(key, text.as_deref()))?;
        Ok(())
    }
}
