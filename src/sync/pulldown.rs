//! Pull-down of one repository (DESIGN §6): tags → manifests byte-exact → index children per
//! the platform filter → referrers → missing blobs (never twice) → commit tags; in ReadOnly,
//! tags gone at the parent are removed here.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::stream::{self, StreamExt};

use super::audit::{self, Subject, SyncEvent};
use super::error::SyncError;
use super::local;
use super::parent::{FetchedManifest, ParentClient, ParentError};
use super::policy::SyncPolicy;
use super::status::Progress;
use super::transfer::{Job, Stop, Transfers};
use crate::config::Mode;
use crate::registry::{manifest, Digest, Reference, RepoName, Tag};
use crate::storage::{Origin, Store};

/// Deepest nesting followed (index → manifest → referrer …); deeper is refused as hostile.
const MAX_DEPTH: u32 = 4;

/// What one repository's pull-down works with.
pub struct Puller {
    /// The local store.
    pub store: Arc<Store>,
    /// The parent.
    pub parent: ParentClient,
    /// Blob downloads (shared: a blob is fetched once for all repositories).
    pub transfers: Arc<Transfers>,
    /// The policy in force for this run.
    pub policy: Arc<SyncPolicy>,
    /// Byte counters of this repository.
    pub progress: Arc<Progress>,
    /// Set when the window closes.
    pub stop: Stop,
    /// Tags with local changes still waiting in the push-up outbox: left alone.
    pub skip_tags: HashSet<String>,
    /// What this pass learnt about the parent, so unchanged content costs few requests.
    pub seen: PassCache,
    /// The parent's change marker of the repository when a pass last mirrored it whole,
    /// referrers included: while it stays the same, unchanged images need no referrer check.
    pub last_marker: Option<String>,
}

/// What a pull-down of one repository left.
#[derive(Debug, Default)]
pub struct Pulled {
    /// Tags the repository holds afterwards.
    pub tags: usize,
    /// The parent's change marker taken before the pass, when referrers were mirrored.
    pub marker: Option<String>,
}

/// Per-pass knowledge that spares requests: subjects whose referrers were already mirrored,
/// whether the parent has a referrers API, and the parent's tags (for the tag-schema fallback).
#[derive(Default)]
pub struct PassCache {
    referrers_done: Mutex<HashSet<String>>,
    no_referrers_api: AtomicBool,
    parent_tags: Mutex<HashSet<String>>,
}

type Boxed<'a, T> = Pin<Box<dyn Future<Output = Result<T, SyncError>> + Send + 'a>>;

/// One tag to bring up to date.
struct TagWork {
    tag: String,
    /// Its digest here, if it exists here.
    here: Option<String>,
    /// Its digest at the parent, when the parent's listing said it.
    there: Option<String>,
}

impl Puller {
    /// Mirrors `repo`; returns how many tags it holds afterwards and the parent's marker.
    pub async fn sync_repository(&self, repo: &RepoName) -> Result<Pulled, SyncError> {
        // The marker is taken before any referrer check, so a referrer that arrives meanwhile
        // changes the next pass's marker and is checked then.
        let (listed, marker) = tokio::join!(self.parent_tags(repo), self.marker(repo));
        let listed = listed?;
        // Referrers of an image whose tag did not move are checked only when the repository
        // changed at the parent since the last whole pass (or the parent cannot say).
        let recheck = self.policy.referrers && (marker.is_none() || marker != self.last_marker);
        if let Ok(mut known) = self.seen.parent_tags.lock() {
            known.extend(listed.iter().map(|(t, _)| t.clone()));
        }
        let selected: Vec<(String, Option<String>)> = listed
            .into_iter()
            .filter(|(t, _)| self.policy.tag_selected(t))
            .collect();
        let local_tags: HashMap<String, String> = local(|| self.store.meta.tag_digests(repo))?
            .into_iter()
            .collect();
        let parallel = self.policy.max_parallel.max(1) * 2;
        let work: Vec<TagWork> = selected
            .iter()
            .filter(|(t, _)| !self.skip_tags.contains(t))
            .map(|(t, there)| TagWork {
                tag: t.clone(),
                here: local_tags.get(t).cloned(),
                there: there.clone(),
            })
            // A tag the listing shows unchanged needs nothing, unless its referrers may have.
            .filter(|w| recheck || w.there.is_none() || w.there != w.here)
            .collect();
        let results: Vec<Result<(), SyncError>> = stream::iter(work)
            .map(|w| self.sync_tag(repo, w))
            .buffer_unordered(parallel)
            .collect()
            .await;
        if let Some(e) = results.into_iter().find_map(Result::err) {
            return Err(e);
        }
        let selected: Vec<String> = selected.into_iter().map(|(t, _)| t).collect();
        if self.policy.mode == Mode::ReadOnly {
            let keep: HashSet<&String> = selected.iter().collect();
            for tag in local_tags.keys().filter(|t| !keep.contains(t)) {
                if let Ok(t) = Tag::parse(tag) {
                    tracing::info!(repo = %repo.as_str(), tag = %tag, "tag gone at the parent: removed here");
                    local(|| self.store.meta.delete_tag_as(Origin::Sync, repo, &t))?;
                    let tag = Some(tag.as_str());
                    self.audit(
                        SyncEvent::TagDeleted,
                        Subject {
                            repo: repo.as_str(),
                            tag,
                            ..Subject::default()
                        },
                    );
                }
            }
        }
        Ok(Pulled {
            tags: selected.len(),
            // Tags left to push-up were not checked: the next pass checks them.
            marker: marker.filter(|_| self.skip_tags.is_empty()),
        })
    }

    /// The parent's change marker of `repo`, asked for only when referrers are mirrored and
    /// the parent has ACR's listings; `None` when it cannot tell (the referrers are checked).
    async fn marker(&self, repo: &RepoName) -> Option<String> {
        if !self.policy.referrers || self.parent.has_tag_listing() != Some(true) {
            return None;
        }
        match self.parent.repository_marker(repo.as_str()).await {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(repo = %repo.as_str(), error = %e, "no repository marker from the parent");
                None
            }
        }
    }

    /// The parent's tags of `repo`, each with its digest where the parent lists them so (ACR's
    /// tag listing: one request per 1,000 tags instead of a HEAD per tag). Until it is known
    /// whether the parent has the listing, the tag list is asked for at the same time, so a
    /// generic parent costs no extra round trip.
    async fn parent_tags(
        &self,
        repo: &RepoName,
    ) -> Result<Vec<(String, Option<String>)>, SyncError> {
        let listing = match self.parent.has_tag_listing() {
            Some(false) => None,
            Some(true) => self.tag_listing(repo).await?,
            None => {
                let (listed, plain) = tokio::join!(self.tag_listing(repo), self.plain_tags(repo));
                match listed? {
                    Some(l) => Some(l),
                    None => return plain,
                }
            }
        };
        match listing {
            Some(l) => Ok(l.into_iter().map(|(t, d)| (t, Some(d))).collect()),
            None => self.plain_tags(repo).await,
        }
    }

    /// The parent's tag listing with digests; `None` when it has none (or botched it).
    async fn tag_listing(
        &self,
        repo: &RepoName,
    ) -> Result<Option<Vec<(String, String)>>, SyncError> {
        match self.parent.tag_digests(repo.as_str()).await {
            Ok(listed) => Ok(listed),
            Err(e) if e.is_transient() => Err(e.into()),
            // A listing the parent botched is no reason to fail: the tag list still works.
            Err(e) => {
                tracing::debug!(error = %e, "tag listing failed; using the tag list");
                Ok(None)
            }
        }
    }

    /// The parent's tags of `repo` from the OCI tag list, without digests.
    async fn plain_tags(
        &self,
        repo: &RepoName,
    ) -> Result<Vec<(String, Option<String>)>, SyncError> {
        match self.parent.tags(repo.as_str()).await {
            Ok(t) => Ok(t.into_iter().map(|t| (t, None)).collect()),
            Err(ParentError::NotFound) => Ok(Vec::new()),
            Err(e) => Err(e.into()),
        }
    }

    /// Where `tag` points at the parent and, for a tag new here, its manifest fetched by tag in
    /// the same request (one round trip fewer before the first blob).
    async fn resolve_tag(
        &self,
        repo: &RepoName,
        w: &TagWork,
    ) -> Result<Option<(Digest, Option<FetchedManifest>)>, SyncError> {
        let bad = || SyncError::Invalid(format!("the parent gave a bad digest for {}", w.tag));
        if let Some(d) = &w.there {
            return Ok(Some((d.parse().map_err(|_| bad())?, None)));
        }
        if w.here.is_none() {
            let Some(f) = self.parent.manifest(repo.as_str(), &w.tag).await? else {
                return Ok(None); // deleted at the parent meanwhile
            };
            return Ok(Some((f.digest.parse().map_err(|_| bad())?, Some(f))));
        }
        let Some(head) = self.parent.manifest_head(repo.as_str(), &w.tag).await? else {
            return Ok(None);
        };
        Ok(Some((head.digest.parse().map_err(|_| bad())?, None)))
    }

    /// Brings one tag up to date: its manifest tree first, the tag last.
    async fn sync_tag(&self, repo: &RepoName, w: TagWork) -> Result<(), SyncError> {
        let tag = w.tag.as_str();
        let Ok(t) = Tag::parse(tag) else {
            tracing::warn!(repo = %repo.as_str(), tag, "the parent lists an invalid tag; skipped");
            return Ok(());
        };
        let Some((digest, fetched)) = self.resolve_tag(repo, &w).await? else {
            return Ok(());
        };
        let here = w.here;
        if here.as_deref() != Some(digest.as_str()) {
            match fetched {
                Some(f) if !self.have_manifest(repo, &digest)? => {
                    self.store_fetched(repo, &digest, f, 0).await?
                }
                _ => self.ensure_manifest(repo, &digest, 0).await?,
            }
            // Only if no client moved the tag since the snapshot: that move waits in the outbox.
            let set = local(|| {
                self.store
                    .meta
                    .set_tag_if(Origin::Sync, repo, &t, &digest, here.as_deref())
            })?;
            if set {
                let (tag, digest) = (Some(tag), Some(digest.as_str()));
                self.audit(
                    SyncEvent::TagSet,
                    Subject {
                        repo: repo.as_str(),
                        tag,
                        digest,
                        size: None,
                    },
                );
            } else {
                tracing::debug!(repo = %repo.as_str(), tag, "tag moved here meanwhile; left for push-up");
            }
        }
        if self.policy.referrers {
            self.sync_referrers(repo, &digest).await?;
        }
        Ok(())
    }

    /// Whether manifest `digest` is stored in `repo` already.
    fn have_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<bool, SyncError> {
        let r = Reference::Digest(digest.clone());
        Ok(local(|| self.store.meta.manifest(repo, &r, false))?.is_some())
    }

    /// Stores the manifest `digest` with everything it needs (children per platform filter).
    pub fn ensure_manifest<'a>(
        &'a self,
        repo: &'a RepoName,
        digest: &'a Digest,
        depth: u32,
    ) -> Boxed<'a, ()> {
        Box::pin(async move {
            if depth > MAX_DEPTH {
                return Err(SyncError::Invalid(format!(
                    "{digest}: manifests nested too deep"
                )));
            }
            if self.have_manifest(repo, digest)? {
                return Ok(());
            }
            let fetched = self
                .parent
                .manifest(repo.as_str(), digest.as_str())
                .await?
                .ok_or_else(|| SyncError::Invalid(format!("{digest} vanished at the parent")))?;
            self.store_fetched(repo, digest, fetched, depth).await
        })
    }

    /// Stores a manifest fetched from the parent after its children and blobs.
    fn store_fetched<'a>(
        &'a self,
        repo: &'a RepoName,
        digest: &'a Digest,
        fetched: FetchedManifest,
        depth: u32,
    ) -> Boxed<'a, ()> {
        Box::pin(async move {
            let parsed =
                manifest::parse(&fetched.bytes, Some(&fetched.media_type)).map_err(|e| {
                    SyncError::Invalid(format!("manifest {digest} from the parent: {e}"))
                })?;
            for child in parsed.child_manifests() {
                let selected = match &child.platform {
                    Some(p) => {
                        self.policy
                            .platform_selected(&p.os, &p.architecture, p.variant.as_deref())
                    }
                    None => true,
                };
                if selected {
                    self.ensure_manifest(repo, &child.digest, depth + 1).await?;
                }
            }
            let blobs: Vec<(Digest, u64)> = parsed
                .required_blobs()
                .map(|d| (d.digest.clone(), d.size))
                .collect();
            let results: Vec<Result<(), SyncError>> = stream::iter(blobs)
                .map(|(d, size)| self.ensure_blob(repo, d, Some(size)))
                .buffer_unordered(self.policy.max_parallel.max(1))
                .collect()
                .await;
            if let Some(e) = results.into_iter().find_map(Result::err) {
                return Err(e);
            }
            local(|| {
                self.store.meta.put_manifest_as(
                    Origin::Sync,
                    repo,
                    digest,
                    &parsed,
                    &fetched.bytes,
                    &[],
                )
            })?;
            let digest = Some(digest.as_str());
            self.audit(
                SyncEvent::ManifestStored,
                Subject {
                    repo: repo.as_str(),
                    digest,
                    ..Subject::default()
                },
            );
            Ok(())
        })
    }

    /// Links a blob into `repo`, downloading it only if no repository here has it yet.
    pub async fn ensure_blob(
        &self,
        repo: &RepoName,
        digest: Digest,
        size: Option<u64>,
    ) -> Result<(), SyncError> {
        if local(|| self.store.meta.blob_link(repo, &digest))?.is_some() {
            return Ok(());
        }
        // A blob stored here already is linked in place, checked under the same lock garbage
        // collection deletes with; one collected meanwhile is downloaded after all.
        if let Some(stored) = local(|| self.store.blob_size(&digest))? {
            check_size(&digest, stored, size)?;
            if local(|| self.store.link_stored(repo, &digest))?.is_some() {
                return Ok(());
            }
        }
        let job = Job {
            parent: self.parent.clone(),
            repo: repo.as_str().to_owned(),
            digest: digest.clone(),
            size,
            progress: Some(self.progress.clone()),
            stop: self.stop.clone(),
        };
        let inflight = self.transfers.fetch(job);
        let stored = inflight.wait().await.map_err(|f| {
            if f.offline {
                SyncError::Parent(ParentError::Unreachable(f.message))
            } else {
                SyncError::Shared {
                    code: f.code,
                    message: f.message,
                }
            }
        })?;
        check_size(&digest, stored, size)?;
        match local(|| self.store.link_stored(repo, &digest))? {
            Some(_) => {
                let (d, size) = (Some(digest.as_str()), Some(stored));
                self.audit(
                    SyncEvent::BlobDownloaded,
                    Subject {
                        repo: repo.as_str(),
                        digest: d,
                        size,
                        tag: None,
                    },
                );
                Ok(())
            }
            None => Err(SyncError::Invalid(format!(
                "blob {digest} was removed before it could be linked; it is fetched again next pass"
            ))),
        }
    }

    /// Writes a sync audit line when the policy asks for them.
    fn audit(&self, event: SyncEvent, subject: Subject<'_>) {
        audit::record(self.policy.audit_logs, event, subject);
    }

    /// Mirrors the referrers (signatures, SBOMs) of `subject`: the referrers API, or the
    /// `<alg>-<hex>` tag schema when the parent has no such API.
    async fn sync_referrers(&self, repo: &RepoName, subject: &Digest) -> Result<(), SyncError> {
        let first = self
            .seen
            .referrers_done
            .lock()
            .map(|mut done| done.insert(subject.to_string()))
            .unwrap_or(true);
        if !first {
            return Ok(()); // many tags, one digest: its referrers were mirrored this pass
        }
        let api = if self.seen.no_referrers_api.load(Ordering::Relaxed) {
            None
        } else {
            let r = self
                .parent
                .referrers(repo.as_str(), subject.as_str())
                .await?;
            if r.is_none() {
                self.seen.no_referrers_api.store(true, Ordering::Relaxed);
            }
            r
        };
        let listed = match api {
            Some(list) => list,
            None => {
                let tag = format!("{}-{}", subject.algorithm().name(), subject.hex());
                // Without the API, referrers live under a tag the tag list already showed.
                let listed_tag = self
                    .seen
                    .parent_tags
                    .lock()
                    .map(|t| t.contains(&tag))
                    .unwrap_or(true);
                if !listed_tag {
                    return Ok(());
                }
                match self.parent.manifest(repo.as_str(), &tag).await? {
                    Some(index) => serde_json::from_slice::<serde_json::Value>(&index.bytes)
                        .ok()
                        .and_then(|v| v.get("manifests").and_then(|m| m.as_array()).cloned())
                        .unwrap_or_default(),
                    None => Vec::new(),
                }
            }
        };
        for desc in listed {
            let Some(d) = desc.get("digest").and_then(|d| d.as_str()) else {
                continue;
            };
            let Ok(d) = d.parse::<Digest>() else {
                continue;
            };
            self.ensure_manifest(repo, &d, 1).await?;
        }
        Ok(())
    }
}

/// Refuses a blob whose stored size is not the one the manifest gives.
fn check_size(digest: &Digest, stored: u64, size: Option<u64>) -> Result<(), SyncError> {
    if size.is_some_and(|s| s != stored) {
        return Err(SyncError::Invalid(format!(
            "blob {digest} is {stored} bytes, the manifest says {size:?}"
        )));
    }
    Ok(())
}
