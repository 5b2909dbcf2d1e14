//! Fetch-through: content of a synced repository that is not here yet is served from the
//! parent while it is stored. Blob downloads are shared (one upstream fetch per digest).

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use super::error::SyncError;
use super::parent::FetchedManifest;
use super::pulldown::Puller;
use super::service::SyncService;
use super::status::Progress;
use super::transfer::{Inflight, Job};
use crate::registry::{Digest, Reference, RepoName, Tag};
use crate::storage::Origin;

impl SyncService {
    fn puller(&self) -> Puller {
        Puller {
            store: self.store.clone(),
            parent: self.parent.clone(),
            transfers: self.transfers.clone(),
            policy: self.policy(),
            progress: Arc::new(Progress::default()),
            stop: Arc::new(AtomicBool::new(false)),
            skip_tags: Default::default(),
            seen: Default::default(),
            last_marker: None,
        }
    }

    /// The parent's manifest for `reference`, and in the background the same manifest (with
    /// its blobs and, for a tag, the tag) stored here. `None` when the parent lacks it.
    pub async fn fetch_manifest(
        self: &Arc<Self>,
        repo: RepoName,
        reference: Reference,
    ) -> Result<Option<FetchedManifest>, SyncError> {
        let me = self.clone();
        let job = async move {
            let fetched = me
                .parent
                .manifest(repo.as_str(), reference.as_str())
                .await?;
            if let Some(m) = &fetched {
                let digest: Digest = m.digest.parse().map_err(|_| {
                    SyncError::Invalid(format!("the parent gave a bad digest {}", m.digest))
                })?;
                let bg = me.clone();
                me.spawn(async move {
                    let puller = bg.puller();
                    let stored = puller.ensure_manifest(&repo, &digest, 0).await;
                    let tagged = match (&stored, &reference) {
                        (Ok(()), Reference::Tag(t)) => tag(&bg, &repo, t, &digest),
                        (Ok(()), _) => Ok(()),
                        (Err(e), _) => Err(e.to_string()),
                    };
                    match tagged {
                        Ok(()) => tracing::info!(repo = %repo.as_str(), %digest, "fetched through from the parent and stored"),
                        Err(e) => tracing::warn!(repo = %repo.as_str(), %digest, error = %e, "fetch-through could not store the manifest"),
                    }
                });
            }
            Ok(fetched)
        };
        self.run(job)
            .await
            .unwrap_or(Err(SyncError::Stopped("shutting down")))
    }

    /// The shared download of a blob the client asked for; it is linked into `repo` when done.
    pub fn fetch_blob(self: &Arc<Self>, repo: &RepoName, digest: &Digest) -> Arc<Inflight> {
        let job = Job {
            parent: self.parent.clone(),
            repo: repo.as_str().to_owned(),
            digest: digest.clone(),
            size: None,
            progress: None,
            stop: Arc::new(AtomicBool::new(false)),
        };
        let inflight = self.transfers.fetch(job);
        let (me, repo, digest, i) = (self.clone(), repo.clone(), digest.clone(), inflight.clone());
        self.spawn(async move {
            if i.wait().await.is_ok() {
                match super::local(|| me.store.link_stored(&repo, &digest)) {
                    Ok(Some(_)) => {}
                    Ok(None) => tracing::warn!(%digest, "a fetched-through blob was collected before it was linked"),
                    Err(e) => tracing::warn!(%digest, error = %e, "could not link a fetched-through blob"),
                }
            }
        });
        inflight
    }

    /// The size of a blob at the parent (`None` when it lacks it).
    pub async fn parent_blob_size(
        self: &Arc<Self>,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<u64>, SyncError> {
        let (me, repo, digest) = (self.clone(), repo.clone(), digest.clone());
        self.run(async move {
            me.parent
                .blob_head(repo.as_str(), digest.as_str())
                .await
                .map_err(SyncError::from)
        })
        .await
        .unwrap_or(Err(SyncError::Stopped("shutting down")))
    }
}

fn tag(svc: &SyncService, repo: &RepoName, t: &Tag, digest: &Digest) -> Result<(), String> {
    super::local(|| svc.store.meta.set_tag_as(Origin::Sync, repo, t, digest))
        .map(|_| ())
        .map_err(|e| e.to_string())
}
