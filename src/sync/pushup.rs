//! Push-up (ReadWrite, DESIGN §6): the event log is the outbox. Per repository, in order, each
//! change a client made here goes to the parent: blobs first (skipped when the parent has them,
//! mounted when possible, uploads that resume from the parent's offset), then the manifest
//! byte-exact by digest, then the tag; deletes when the sync token may delete.
//!
//! A far link is kept full: the existence checks of a manifest and all its blobs go out
//! together; two blobs are under way at a time, one chunk on the wire at a time, so one blob's
//! bytes flow while the other waits for the answer to its chunk (the wait the protocol
//! requires; `pace` times the turns to when a chunk has crossed the link, not to when a buffer
//! took it). Chunks take about two seconds on the wire (within the policy's chunk size), so a
//! cut link costs little, and a blob's last chunk travels in its finishing `PUT`. A parent
//! that forgets an interrupted upload (distribution does) loses at most two blobs' progress. A
//! manifest pushed for the tag that follows it in the outbox goes up once, by tag.
//!
//! A per-repository cursor (the last event sent) is saved after every event, so a restart or a
//! `kill -9` re-sends at most one event, and every send is idempotent.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use futures_util::stream::{self, StreamExt};
use std::time::Instant;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::audit::{self, Subject, SyncEvent};
use super::error::SyncError;
use super::local;
use super::pace::Pacer;
use super::parent::{DeleteResult, MountResult, ParentClient, ParentError, UploadSession};
use super::policy::SyncPolicy;
use super::status::{DetailCode, Status};
use super::transfer::{Stop, Transfers};
use super::upload::blob_body;
use crate::registry::{manifest, Algorithm, Digest, Reference, RepoName};
use crate::storage::metadata::{Event, EventAction, StateKey};
use crate::storage::{fsutil::now_secs, BlobReader, Store};

/// Events read from the outbox at a time.
const BATCH: usize = 100;
/// Consecutive failed requests without progress before an upload waits for the next pass.
const MAX_ATTEMPTS: u32 = 6;
/// Blobs whose bytes are under way at once: one sending while the other awaits an answer.
const IN_PROGRESS: usize = 2;
/// Deepest nesting followed when pushing (index → manifest).
const MAX_DEPTH: u32 = 4;

type Boxed<'a> = Pin<Box<dyn Future<Output = Result<(), SyncError>> + Send + 'a>>;

/// What one repository's push-up works with.
pub struct Pusher {
    store: Arc<Store>,
    parent: ParentClient,
    policy: Arc<SyncPolicy>,
    status: Arc<Status>,
    transfers: Arc<Transfers>,
    stop: Stop,
    /// One chunk's bytes on the wire at a time, sized and timed to the link (see `pace`).
    pacer: Pacer,
    /// Turns of the blobs whose bytes are under way (`IN_PROGRESS`).
    in_progress: Arc<Semaphore>,
    /// Manifests the parent is known to hold by digest (this pass): not asked about again.
    at_parent: Mutex<HashSet<String>>,
}

/// The sync state key of an upload of `digest` to `repo` in progress.
fn upload_key<'a>(repo: &'a RepoName, digest: &'a Digest) -> StateKey<'a> {
    StateKey::Upload {
        repo: repo.as_str(),
        digest: digest.as_str(),
    }
}

impl Pusher {
    /// A push-up of one pass: the local store, the parent, the policy in force, where conflicts
    /// are reported, the shared transfers (bandwidth limit) and the flag set when the window
    /// closes.
    pub fn new(
        store: Arc<Store>,
        parent: ParentClient,
        policy: Arc<SyncPolicy>,
        status: Arc<Status>,
        transfers: Arc<Transfers>,
        stop: Stop,
    ) -> Pusher {
        Pusher {
            store,
            parent,
            policy,
            status,
            transfers,
            stop,
            pacer: Pacer::default(),
            in_progress: Arc::new(Semaphore::new(IN_PROGRESS)),
            at_parent: Mutex::new(HashSet::new()),
        }
    }

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
            let mut events = batch.iter().peekable();
            while let Some(ev) = events.next() {
                if self.stop.load(Ordering::SeqCst) {
                    return Err(SyncError::Stopped("sync window closed"));
                }
                let age = now_secs().saturating_sub(ev.time);
                if age > self.policy.message_ttl.as_secs() as i64 {
                    self.expire(ev);
                } else if events
                    .peek()
                    .is_some_and(|next| tags_pushed_manifest(ev, next))
                {
                    // The tag push stores the manifest too: one request instead of two.
                    let Some(next) = events.next() else { break };
                    self.send(repo, next).await?;
                    self.audit_sent(repo, ev);
                    sent += 2;
                    cursor = next.seq;
                } else {
                    self.send(repo, ev).await?;
                    sent += 1;
                }
                cursor = cursor.max(ev.seq);
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
        self.audit_sent(repo, ev);
        Ok(())
    }

    /// The audit line of a change sent, when the policy asks for them.
    fn audit_sent(&self, repo: &RepoName, ev: &Event) {
        let event = match ev.action {
            EventAction::ManifestPut => SyncEvent::ManifestPushed,
            EventAction::TagSet => SyncEvent::TagPushed,
            EventAction::TagDelete | EventAction::ManifestDelete => SyncEvent::DeletePushed,
        };
        let subject = Subject {
            repo: repo.as_str(),
            tag: ev.tag.as_deref(),
            digest: Some(ev.digest.as_str()),
            size: None,
        };
        audit::record(self.policy.audit_logs, event, subject);
    }

    /// Sends one change by its action.
    async fn send_one(
        &self,
        repo: &RepoName,
        ev: &Event,
        digest: &Digest,
    ) -> Result<(), SyncError> {
        match (ev.action, ev.tag.as_deref()) {
            (EventAction::ManifestPut, _) => self.push_manifest(repo, digest, 0, true).await,
            (EventAction::TagSet, Some(tag)) => {
                self.push_tag(repo, tag, digest, ev.previous.as_deref())
                    .await
            }
            (EventAction::TagDelete, Some(tag)) => {
                // A manifest deleted here logs its tags' deletes first; the manifest delete that
                // follows removes them at the parent too, so a refusal here is no news.
                let gone = self.local_manifest(repo, digest)?.is_none();
                self.delete(repo, tag, !gone).await
            }
            (EventAction::ManifestDelete, _) => self.delete(repo, digest.as_str(), true).await,
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
        // What the parent's tag points at is asked while the manifest's content goes up.
        let (pushed, at_parent) = tokio::join!(
            self.push_manifest(repo, digest, 0, false),
            self.parent.manifest_head(repo.as_str(), tag)
        );
        pushed?;
        if let Some(h) = &at_parent? {
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
                self.known_at_parent(digest);
                return Ok(());
            }
            tracing::warn!(repo = %r, tag, digest = %digest, "the parent cannot tag a manifest by its digest; it is tagged under its sha256 there");
        }
        self.parent
            .put_manifest(repo.as_str(), tag, &media_type, bytes)
            .await?;
        if digest.algorithm() == Algorithm::Sha256 {
            self.known_at_parent(digest);
        }
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

    /// Whether the parent is known (this pass) to hold manifest `digest`.
    fn is_at_parent(&self, digest: &Digest) -> bool {
        self.at_parent
            .lock()
            .map(|s| s.contains(digest.as_str()))
            .unwrap_or(false)
    }

    /// Remembers that the parent holds manifest `digest`.
    fn known_at_parent(&self, digest: &Digest) {
        if let Ok(mut s) = self.at_parent.lock() {
            s.insert(digest.to_string());
        }
    }

    /// Makes the parent have everything manifest `digest` needs that it lacks, and the manifest
    /// itself by digest when `put` (a tag push stores it by tag instead).
    fn push_manifest<'a>(
        &'a self,
        repo: &'a RepoName,
        digest: &'a Digest,
        depth: u32,
        put: bool,
    ) -> Boxed<'a> {
        Box::pin(async move {
            if depth > MAX_DEPTH {
                return Err(SyncError::Invalid(format!(
                    "{digest}: manifests nested too deep"
                )));
            }
            if self.is_at_parent(digest) {
                return Ok(());
            }
            let Some((media_type, bytes)) = self.local_manifest(repo, digest)? else {
                return Ok(());
            };
            let parsed = manifest::parse(&bytes, Some(&media_type))
                .map_err(|e| SyncError::Invalid(format!("stored manifest {digest}: {e}")))?;
            let blobs: Vec<Digest> = parsed.required_blobs().map(|b| b.digest.clone()).collect();
            // One round trip for every existence check: the manifest's and its blobs'.
            let (there, missing) = tokio::join!(
                self.parent.manifest_head(repo.as_str(), digest.as_str()),
                self.missing_blobs(repo, blobs)
            );
            if there?.is_some() {
                self.known_at_parent(digest);
                return Ok(());
            }
            let children: Vec<Digest> =
                parsed.child_manifests().map(|c| c.digest.clone()).collect();
            let parallel = self.policy.max_parallel.max(1);
            // By index: a closure over borrowed items would need a higher-ranked future.
            let pushed: Vec<Result<(), SyncError>> = stream::iter(0..children.len())
                .map(|i| self.push_manifest(repo, &children[i], depth + 1, true))
                .buffer_unordered(parallel)
                .collect()
                .await;
            pushed.into_iter().collect::<Result<(), _>>()?;
            let uploaded: Vec<Result<(), SyncError>> = stream::iter(missing?)
                .map(|d| self.upload_blob(repo, d))
                .buffer_unordered(parallel)
                .collect()
                .await;
            uploaded.into_iter().collect::<Result<(), _>>()?;
            if put {
                let body = bytes::Bytes::from(bytes);
                let (r, d, m) = (repo.as_str(), digest.as_str(), media_type.as_str());
                self.parent.put_manifest(r, d, m, body).await?;
                self.known_at_parent(digest);
            }
            Ok(())
        })
    }

    /// Those of `blobs` the parent lacks in `repo`, asked all at once.
    async fn missing_blobs(
        &self,
        repo: &RepoName,
        blobs: Vec<Digest>,
    ) -> Result<Vec<Digest>, SyncError> {
        let parallel = self.policy.max_parallel.max(1) * 2;
        let heads: Vec<Result<Option<Digest>, SyncError>> = stream::iter(blobs)
            .map(|d| async move {
                let there = self.parent.blob_exists(repo.as_str(), d.as_str()).await?;
                if there.is_none() {
                    return Ok(Some(d));
                }
                // A kill between the last PUT and forgetting the session leaves its key behind.
                self.save(&upload_key(repo, &d), None)?;
                Ok(None)
            })
            .buffer_unordered(parallel)
            .collect()
            .await;
        let mut missing = Vec::new();
        for h in heads {
            missing.extend(h?);
        }
        Ok(missing)
    }

    /// An upload session for a blob the parent lacks: the saved one where the parent still
    /// knows it, else a mount from another repository here, else a new one; `None` when a
    /// mount made the blob present.
    async fn open_session(
        &self,
        repo: &RepoName,
        digest: &Digest,
        key: &StateKey<'_>,
    ) -> Result<Option<UploadSession>, SyncError> {
        if let Some(s) = self.resume(key).await? {
            return Ok(Some(s));
        }
        for from in local(|| self.store.meta.repos_linking(digest))? {
            if from == repo.as_str() {
                continue;
            }
            match self
                .parent
                .mount_blob(repo.as_str(), digest.as_str(), &from)
                .await
            {
                Ok(MountResult::Mounted) => return Ok(None),
                Ok(MountResult::Upload(s)) => return Ok(Some(s)),
                Err(e) if e.is_transient() => return Err(e.into()),
                Err(_) => continue,
            }
        }
        let asked = Instant::now();
        let session = self.parent.start_upload(repo.as_str()).await?;
        // A small request each way: its answer time bounds the link's round trip.
        self.pacer.learn_round_trip(asked.elapsed());
        Ok(Some(session))
    }

    /// Uploads a blob the parent lacks, resuming from the parent's offset after a failure.
    async fn upload_blob(&self, repo: &RepoName, digest: Digest) -> Result<(), SyncError> {
        let key = upload_key(repo, &digest);
        // The session opens before the blob waits for its turn, so its round trip overlaps
        // the bytes of the blobs under way instead of leaving the link idle when one ends.
        let Some(mut session) = self.open_session(repo, &digest, &key).await? else {
            return Ok(());
        };
        let mut turn = Some(self.take_turn().await?);
        let Some(blob) = local(|| self.store.open_blob(&digest))? else {
            return Err(SyncError::Invalid(format!("blob {digest} is missing here")));
        };
        self.save(&key, Some(&session))?;
        let mut failures = 0u32;
        loop {
            if self.stop.load(Ordering::SeqCst) {
                return Err(SyncError::Stopped("sync window closed"));
            }
            if turn.is_none() {
                turn = Some(self.take_turn().await?);
            }
            let before = session.offset;
            let sent = self.send_rest(&key, &mut session, &digest, &blob, &mut turn);
            let e = match sent.await {
                Ok(()) => break,
                Err(e) => e,
            };
            match e {
                SyncError::Parent(e) if e.is_transient() && failures + 1 < MAX_ATTEMPTS => {
                    // A cut link: see how far the parent got and go on from there, within this
                    // pass (repeated failures without progress back off, then give up).
                    tracing::info!(%digest, offset = before, error = %e, "upload interrupted; resuming");
                    let found = self.recover(repo, &digest, &key, &mut session).await?;
                    if found == Recovered::Done {
                        break;
                    }
                    let progress = found == Recovered::Progress || session.offset > before;
                    failures = if progress { 0 } else { failures + 1 };
                    if failures > 0 {
                        let wait =
                            super::backoff::delay(failures, std::time::Duration::from_secs(10));
                        tokio::time::sleep(wait).await;
                    }
                }
                SyncError::Parent(ParentError::Protocol(m)) => {
                    // The parent disagrees about the offset (some append at their own offset
                    // whatever Content-Range says): its copy cannot be trusted, start over.
                    tracing::warn!(%digest, message = %m, "upload offset disputed; starting the upload again");
                    self.parent.cancel_upload(&session).await;
                    session = self.parent.start_upload(repo.as_str()).await?;
                    self.save(&key, Some(&session))?;
                }
                e => return Err(e),
            }
        }
        self.save(&key, None)?;
        Ok(())
    }

    /// A place among the blobs whose bytes are under way (`IN_PROGRESS`).
    async fn take_turn(&self) -> Result<OwnedSemaphorePermit, SyncError> {
        let turns = self.in_progress.clone();
        turns
            .acquire_owned()
            .await
            .map_err(|_| SyncError::Stopped("push-up ended"))
    }

    /// Sends the rest of the blob from `session.offset` in chunks sized to the link (the last
    /// one in the finishing `PUT`), each waiting for the send slot; the blob's `turn` is
    /// handed on with its last byte.
    async fn send_rest(
        &self,
        key: &StateKey<'_>,
        session: &mut UploadSession,
        digest: &Digest,
        blob: &BlobReader,
        turn: &mut Option<OwnedSemaphorePermit>,
    ) -> Result<(), SyncError> {
        let size = blob.len();
        loop {
            let left = size.saturating_sub(session.offset);
            let len = self.pacer.chunk_len(self.policy.chunk_size).min(left);
            let last = len == left;
            // `_answered` lives until this chunk's request is over (see `Pacer::slot`).
            let (last_byte, _answered) = match self.pacer.slot(len).await {
                Some(t) => (Some(t.last_byte), Some(t.answered)),
                None => (None, None),
            };
            let permits = [if last { turn.take() } else { None }, None];
            let t = self.transfers.clone();
            let body = blob_body(blob.clone(), session.offset, len, t, permits, last_byte);
            let started = Instant::now();
            if last {
                let body = Some((body, len));
                self.parent
                    .finish_upload(session, digest.as_str(), body)
                    .await?;
                self.pacer.learn_chunk(len, started.elapsed());
                return Ok(());
            }
            self.parent.upload_chunk(session, body, len).await?;
            self.pacer.learn_chunk(len, started.elapsed());
            self.save(key, Some(session))?;
        }
    }

    /// After a failed request: whether the blob arrived after all, or where the parent's copy
    /// stands (a new session when it forgot the upload).
    async fn recover(
        &self,
        repo: &RepoName,
        digest: &Digest,
        key: &StateKey<'_>,
        session: &mut UploadSession,
    ) -> Result<Recovered, SyncError> {
        let before = session.offset;
        // The finishing PUT may have completed with only its answer lost.
        match self
            .parent
            .blob_exists(repo.as_str(), digest.as_str())
            .await
        {
            Ok(Some(_)) => return Ok(Recovered::Done),
            Ok(None) => {}
            Err(e) if e.is_transient() => return Ok(Recovered::Nothing),
            Err(e) => return Err(e.into()),
        }
        match self.parent.upload_status(session).await {
            Ok(Some(s)) => {
                let progress = s.offset > before;
                *session = s;
                self.save(key, Some(session))?;
                Ok(if progress {
                    Recovered::Progress
                } else {
                    Recovered::Nothing
                })
            }
            Ok(None) => {
                *session = self.parent.start_upload(repo.as_str()).await?;
                self.save(key, Some(session))?;
                Ok(Recovered::Nothing)
            }
            Err(e) if e.is_transient() => Ok(Recovered::Nothing),
            Err(e) => Err(e.into()),
        }
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

/// What a look at the parent after a failed upload request found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Recovered {
    /// The blob is there: the upload is done.
    Done,
    /// The parent holds more than before: go on at once.
    Progress,
    /// No progress (or a new session): wait a little first.
    Nothing,
}

/// Whether `next` tags the manifest `ev` stored (a `docker push`): pushing the tag stores it
/// (by sha256, so other digests keep their own push by digest).
fn tags_pushed_manifest(ev: &Event, next: &Event) -> bool {
    ev.action == EventAction::ManifestPut
        && next.action == EventAction::TagSet
        && next.digest == ev.digest
        && ev.digest.starts_with("sha256:")
}
