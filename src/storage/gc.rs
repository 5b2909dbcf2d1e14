//! One online garbage-collection pass over a data directory, safe alongside clients and sync.
//!
//! Order matters: the untagged retention deletes manifests (which starts the grace of the links
//! only they referenced), then links unreferenced for longer than the grace lapse, then every
//! blob file that no link keeps and no download holds goes. Each deletion happens under the
//! metadata write lock that every link takes, so nothing committed is collected; see
//! `metadata/gc.rs` and `commit.rs`.

use std::fs::File;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use super::fsutil::{lock_wait, now_secs, try_lock};
use super::{Result, StorageError, Store};

/// Blob files decided per metadata transaction.
const SWEEP_BATCH: usize = 256;

/// How a pass runs.
#[derive(Debug, Clone)]
pub struct GcOptions {
    /// How long a link stays after no manifest references it.
    pub grace: Duration,
    /// Untagged manifests older than this are deleted; `None` keeps them.
    pub untagged_retention: Option<Duration>,
    /// Upload sessions idle for longer than this are removed.
    pub upload_max_age: Duration,
    /// Whether local changes travel up (ReadWrite with a parent): manifests whose push waits in
    /// the outbox are then kept.
    pub keep_outbox: bool,
    /// Count what would go without removing anything.
    pub dry_run: bool,
}

/// What a pass freed (or, in a dry run, would free).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GcReport {
    /// Blob files removed.
    pub blobs: u64,
    /// Bytes those blob files held.
    pub bytes: u64,
    /// Manifests removed by the untagged retention.
    pub manifests: u64,
    /// Repository links to blobs that lapsed.
    pub links: u64,
    /// Abandoned upload sessions removed.
    pub uploads: u64,
    /// Partial downloads removed.
    pub partials: u64,
    /// Bytes those partial downloads held.
    pub partial_bytes: u64,
    /// Whether nothing was actually removed.
    pub dry_run: bool,
    /// When the pass started (RFC 3339).
    pub started: String,
    /// How long it took, in seconds.
    pub seconds: f64,
}

/// Proof that this process runs the only pass on the data directory; released on drop.
#[derive(Debug)]
pub struct GcLock {
    _file: File,
}

impl Store {
    /// Takes the data directory's pass lock: `wait` blocks until a running pass ends, else
    /// `None` says one is running (in this process or another).
    pub fn gc_lock(&self, wait: bool) -> Result<Option<GcLock>> {
        let path = self.root.join("gc.lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| StorageError::io("opening the collection lock", e))?;
        let locked = if wait {
            lock_wait(&file)
        } else {
            try_lock(&file)
        };
        Ok(locked.then_some(GcLock { _file: file }))
    }

    /// Runs one pass (the caller holds the pass lock).
    pub fn collect_garbage(&self, _lock: &GcLock, o: &GcOptions) -> Result<GcReport> {
        let clock = Instant::now();
        let started = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let now = now_secs();
        let mut r = GcReport {
            dry_run: o.dry_run,
            started,
            ..GcReport::default()
        };
        if let Some(keep) = o.untagged_retention {
            let cutoff = now - keep.as_secs() as i64;
            r.manifests = self
                .meta
                .expire_untagged(cutoff, o.keep_outbox, o.dry_run)?;
        }
        let link_cutoff = now - o.grace.as_secs() as i64;
        r.links = self.meta.lapse_links(link_cutoff, o.dry_run)?;
        (r.blobs, r.bytes) = self.sweep_blob_files(now, link_cutoff, o.dry_run)?;
        if !o.dry_run {
            self.meta.drop_expired_holds(now)?;
        }
        r.uploads = if o.dry_run {
            let cutoff = now - o.upload_max_age.as_secs() as i64;
            self.meta.idle_uploads(cutoff)?.len() as u64
        } else {
            self.uploads
                .expire(&*self.meta, o.upload_max_age.as_secs())? as u64
        };
        let idle_before = SystemTime::now()
            .checked_sub(o.grace)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        (r.partials, r.partial_bytes) =
            self.partials
                .sweep(idle_before, self.blobs.as_ref(), o.dry_run)?;
        r.seconds = clock.elapsed().as_secs_f64();
        Ok(r)
    }

    /// Removes (or counts) every blob file no link keeps; the files and bytes.
    fn sweep_blob_files(&self, now: i64, link_cutoff: i64, dry_run: bool) -> Result<(u64, u64)> {
        let (mut blobs, mut bytes) = (0, 0);
        self.blobs.for_each_batch(SWEEP_BATCH, &mut |batch| {
            if dry_run {
                let unkept = self.meta.blobs_unkept(batch, now, link_cutoff)?;
                for (d, free) in batch.iter().zip(unkept) {
                    if let (true, Some(size)) = (free, self.blobs.size(d)?) {
                        blobs += 1;
                        bytes += size;
                    }
                }
            } else {
                let (n, b) = self
                    .meta
                    .sweep_blobs(batch, now, &mut |d| self.blobs.remove(d))?;
                blobs += n;
                bytes += b;
            }
            Ok(())
        })?;
        Ok((blobs, bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{manifest, Algorithm, Digest, RepoName, Tag};

    const OCI: &str = "application/vnd.oci.image.manifest.v1+json";

    fn name(s: &str) -> RepoName {
        RepoName::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn tag(s: &str) -> Tag {
        Tag::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn options(grace: u64, retention: Option<u64>, dry_run: bool) -> GcOptions {
        GcOptions {
            grace: Duration::from_secs(grace),
            untagged_retention: retention.map(Duration::from_secs),
            upload_max_age: Duration::from_secs(86_400),
            keep_outbox: false,
            dry_run,
        }
    }

    struct Fixture {
        _tmp: tempfile::TempDir,
        store: Store,
    }

    impl Fixture {
        fn new() -> Self {
            let tmp = tempfile::TempDir::new().unwrap_or_else(|e| panic!("{e}"));
            let store = Store::open(tmp.path()).unwrap_or_else(|e| panic!("{e}"));
            Fixture { _tmp: tmp, store }
        }

        fn blob(&self, repo: &RepoName, data: &[u8]) -> Digest {
            let mut w = self.store.uploads.oneshot(Algorithm::Sha256).unwrap();
            w.append(data).unwrap();
            let d = Digest::sha256_of(data);
            self.store.finish_oneshot(repo, w, &d).unwrap();
            d
        }

        /// A manifest with `config` and `layers`, tagged `tags`; its digest.
        fn image(
            &self,
            repo: &RepoName,
            config: &Digest,
            layers: &[&Digest],
            tags: &[&str],
        ) -> Digest {
            let desc = |d: &Digest, mt: &str| {
                let size = self.store.blobs.size(d).unwrap().unwrap();
                serde_json::json!({"mediaType": mt, "digest": d.as_str(), "size": size})
            };
            let body = serde_json::to_vec(&serde_json::json!({
                "schemaVersion": 2,
                "mediaType": OCI,
                "config": desc(config, "application/vnd.oci.image.config.v1+json"),
                "layers": layers.iter().map(|l| desc(l, "application/vnd.oci.image.layer.v1.tar")).collect::<Vec<_>>(),
            }))
            .unwrap();
            let parsed = manifest::parse(&body, Some(OCI)).unwrap();
            let d = Digest::sha256_of(&body);
            let tags: Vec<Tag> = tags.iter().map(|t| tag(t)).collect();
            self.store
                .meta
                .put_manifest(repo, &d, &parsed, &body, &tags)
                .unwrap();
            d
        }

        fn pass(&self, o: &GcOptions) -> GcReport {
            let lock = self.store.gc_lock(false).unwrap().unwrap();
            self.store.collect_garbage(&lock, o).unwrap()
        }

        fn has(&self, d: &Digest) -> bool {
            self.store.blobs.size(d).unwrap().is_some()
        }
    }

    #[test]
    fn deleting_an_image_frees_its_unshared_layers_after_the_grace() {
        let f = Fixture::new();
        let app = name("app");
        let (cfg1, cfg2) = (f.blob(&app, b"config one"), f.blob(&app, b"config two"));
        let (shared, only1, only2) = (
            f.blob(&app, b"shared layer"),
            f.blob(&app, b"layer of one"),
            f.blob(&app, b"layer of image two"),
        );
        f.image(&app, &cfg1, &[&shared, &only1], &["v1"]);
        let m2 = f.image(&app, &cfg2, &[&shared, &only2], &["v2"]);
        assert_eq!(
            f.pass(&options(0, None, false)).blobs,
            0,
            "everything is referenced"
        );
        f.store.meta.delete_manifest(&app, &m2).unwrap();
        // Within the grace nothing goes.
        assert_eq!(f.pass(&options(3600, None, false)).blobs, 0);
        let dry = f.pass(&options(0, None, true));
        let r = f.pass(&options(0, None, false));
        assert_eq!((r.blobs, r.bytes, r.links), (2, 28, 2));
        assert_eq!(
            (dry.blobs, dry.bytes, dry.links),
            (r.blobs, r.bytes, r.links)
        );
        assert!(!f.has(&cfg2) && !f.has(&only2));
        assert!(f.has(&cfg1) && f.has(&shared) && f.has(&only1));
        assert_eq!(f.store.meta.blob_link(&app, &only2).unwrap(), None);
    }

    #[test]
    fn a_blob_linked_in_another_repository_stays() {
        let f = Fixture::new();
        let (a, b) = (name("a"), name("b"));
        let layer = f.blob(&a, b"layer");
        assert!(f.store.mount(&b, &a, &layer).unwrap());
        let cfg = f.blob(&b, b"cfg");
        f.image(&b, &cfg, &[&layer], &["v1"]);
        // `a` never referenced it: its link lapses, `b`'s manifest keeps the file.
        let r = f.pass(&options(0, None, false));
        assert_eq!((r.links, r.blobs), (1, 0));
        assert!(f.has(&layer));
        assert_eq!(f.store.meta.blob_link(&b, &layer).unwrap(), Some(5));
    }

    #[test]
    fn untagged_retention_deletes_manifests_that_lost_their_tags() {
        let f = Fixture::new();
        let app = name("app");
        let (cfg1, l1) = (f.blob(&app, b"c1"), f.blob(&app, b"l1"));
        let (cfg2, l2) = (f.blob(&app, b"c2"), f.blob(&app, b"l2"));
        let old = f.image(&app, &cfg1, &[&l1], &["latest"]);
        f.image(&app, &cfg2, &[&l2], &["latest"]); // the tag moves: `old` is untagged
        assert_eq!(
            f.pass(&options(0, None, false)).manifests,
            0,
            "no retention: kept"
        );
        assert_eq!(f.pass(&options(0, Some(3600), false)).manifests, 0, "young");
        let r = f.pass(&options(0, Some(0), false));
        assert_eq!((r.manifests, r.blobs), (1, 2));
        assert!(f
            .store
            .meta
            .manifest(&app, &crate::registry::Reference::Digest(old), false)
            .unwrap()
            .is_none());
        assert!(f.has(&cfg2) && f.has(&l2));
    }

    #[test]
    fn a_download_is_held_until_linked_and_a_collected_blob_is_not_linked() {
        let f = Fixture::new();
        let data = b"downloaded".to_vec();
        let d = Digest::sha256_of(&data);
        let mut w = f.store.partials.writer(&d).unwrap();
        w.append(&data).unwrap();
        f.store.finish_download(w, &d).unwrap();
        assert_eq!(f.pass(&options(0, None, false)).blobs, 0, "held");
        let app = name("app");
        assert_eq!(f.store.link_stored(&app, &d).unwrap(), Some(10));
        // Linked but unreferenced: the link lapses and the file goes.
        assert_eq!(f.pass(&options(0, None, false)).blobs, 1);
        assert_eq!(
            f.store.link_stored(&app, &d).unwrap(),
            None,
            "no link to a missing file"
        );
    }

    #[test]
    fn partial_downloads_go_when_idle_unless_being_written() {
        let f = Fixture::new();
        let (busy, idle) = (Digest::sha256_of(b"busy"), Digest::sha256_of(b"idle"));
        let mut writing = f.store.partials.writer(&busy).unwrap();
        writing.append(b"bu").unwrap();
        writing.sync().unwrap();
        let mut w = f.store.partials.writer(&idle).unwrap();
        w.append(b"id").unwrap();
        w.sync().unwrap();
        drop(w);
        let young = f.pass(&options(3600, None, false));
        assert_eq!(young.partials, 0);
        let r = f.pass(&options(0, None, false));
        assert_eq!((r.partials, r.partial_bytes), (1, 2));
        assert!(f.store.partials.path(&busy).exists());
        assert!(!f.store.partials.path(&idle).exists());
    }

    #[test]
    fn one_pass_at_a_time() {
        let f = Fixture::new();
        let held = f.store.gc_lock(false).unwrap();
        assert!(held.is_some());
        assert!(f.store.gc_lock(false).unwrap().is_none());
        drop(held);
        assert!(f.store.gc_lock(false).unwrap().is_some());
    }
}
