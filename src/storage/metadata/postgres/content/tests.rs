//! PostgreSQL-specific risks of the content implementation (the general behaviour is the
//! conformance suite's): bytewise text order whatever the columns' collation, writers racing on
//! one tag, garbage collection excluding links, and statements whose PostgreSQL semantics
//! differ from SQLite's (a data-modifying CTE's snapshot, duplicate rows in one insert).

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use super::super::PgMetadata;
use crate::registry::media_types::OCI_MANIFEST;
use crate::registry::{manifest, Digest, ParsedManifest, Reference, RepoName, Tag};
use crate::storage::error::Result;
use crate::storage::metadata::{
    Collection, Content, Listings, MetadataStore, Origin, SqliteMetadata,
};
use crate::testing;

/// A fresh database named after `name` on the shared server, opened; with the server, kept
/// running while the handle lives.
fn open(name: &str) -> (Arc<testing::SharedPostgres>, PgMetadata) {
    let server = testing::Postgres::shared();
    let url = server.create_database(name);
    let meta = ok(PgMetadata::open(&url));
    (server, meta)
}

/// The value of a call that must succeed.
#[track_caller]
fn ok<T>(r: Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

/// A repository name.
fn name(s: &str) -> RepoName {
    RepoName::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// A tag.
fn tag(s: &str) -> Tag {
    Tag::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// A blob: its digest and size.
fn blob(bytes: &[u8]) -> (Digest, u64) {
    (Digest::sha256_of(bytes), bytes.len() as u64)
}

/// A stored manifest's parts.
struct Image {
    digest: Digest,
    parsed: ParsedManifest,
    body: Vec<u8>,
}

/// An image manifest of `config` and `layers`, made distinct by `note`.
fn image(config: &(Digest, u64), layers: &[&(Digest, u64)], note: &str) -> Image {
    let desc =
        |mt: &str, b: &(Digest, u64)| json!({"mediaType": mt, "digest": b.0.as_str(), "size": b.1});
    let doc: Value = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": desc("application/vnd.oci.image.config.v1+json", config),
        "layers": layers.iter().map(|l| desc("application/vnd.oci.image.layer.v1.tar", l)).collect::<Vec<_>>(),
        "annotations": {"note": note},
    });
    let body = serde_json::to_vec(&doc).unwrap_or_else(|e| panic!("{e}"));
    let parsed = manifest::parse(&body, Some(OCI_MANIFEST)).unwrap_or_else(|e| panic!("{e}"));
    Image {
        digest: Digest::sha256_of(&body),
        parsed,
        body,
    }
}

/// Links a config and a layer made from `seed` into `repo`; an image of them.
fn pushable(m: &dyn MetadataStore, repo: &str, seed: &str) -> Image {
    let config = blob(format!("config {seed}").as_bytes());
    let layer = blob(format!("layer {seed}").as_bytes());
    for b in [&config, &layer] {
        ok(m.link_placed(&name(repo), &b.0, b.1));
    }
    image(&config, &[&layer], seed)
}

/// Stores `img` in `repo` with `tags`, as a client.
fn put(m: &dyn MetadataStore, repo: &str, img: &Image, tags: &[&str]) {
    let tags: Vec<Tag> = tags.iter().map(|t| tag(t)).collect();
    ok(m.put_manifest(&name(repo), &img.digest, &img.parsed, &img.body, &tags));
}

/// Rows of `sql` read straight from the database, as text (NULL as `None`).
fn rows(meta: &PgMetadata, sql: &str) -> Vec<Vec<Option<String>>> {
    ok(meta.read(|c| {
        let rows = c.query(sql, &[])?;
        Ok(rows
            .iter()
            .map(|r| {
                (0..r.len())
                    .map(|i| r.get::<_, Option<String>>(i))
                    .collect()
            })
            .collect())
    }))
}

/// Every page of `list` walked `n` at a time, following `last`.
fn walk(n: usize, list: impl Fn(usize, Option<&str>) -> Vec<String>) -> Vec<String> {
    let mut all: Vec<String> = Vec::new();
    loop {
        let page = list(n, all.last().map(String::as_str));
        all.extend(page.iter().cloned());
        if page.len() < n {
            return all;
        }
    }
}

/// Tags and repository names that mix case, digits and punctuation list and page in byte
/// order, exactly as SQLite's, even when the columns carry a collation that sorts otherwise
/// (ICU's root collation puts `a` before `B` and ignores punctuation at first).
#[test]
fn names_order_bytewise_whatever_the_collation() {
    let (_s, pg) = open("content_bytewise");
    ok(pg.write(|tx| {
        Ok(tx.batch_execute(
            "ALTER TABLE tags ALTER COLUMN name TYPE TEXT COLLATE \"und-x-icu\";
             ALTER TABLE repositories ALTER COLUMN name TYPE TEXT COLLATE \"und-x-icu\";",
        )?)
    }));
    let tmp = tempfile::TempDir::new().unwrap_or_else(|e| panic!("{e}"));
    let lite = ok(SqliteMetadata::open(tmp.path()));
    let tag_names = [
        "b", "B", "a", "A", "a-b", "a.b", "a_b", "a0", "_x", "Z9", "z", "0", "9a", "a--", "a.-",
        "ab", "aB", "AB",
    ];
    let repos = [
        "a", "a-b", "a.b", "a/b", "a_b", "a0", "b", "ab", "a/b/c", "a-c/x", "0a", "z",
    ];
    let stores: [&dyn MetadataStore; 2] = [&pg, &lite];
    for m in stores {
        let img = pushable(m, "app", "one");
        put(m, "app", &img, &tag_names);
        for r in repos {
            put(m, r, &pushable(m, r, r), &[]);
        }
        ok(m.link_placed(&name("empty"), &img.digest, 1));
    }
    let mut want_tags: Vec<String> = tag_names.iter().map(|t| t.to_string()).collect();
    want_tags.sort();
    let mut want_repos: Vec<String> = repos.iter().map(|r| r.to_string()).collect();
    want_repos.push("app".into());
    want_repos.sort();
    for m in stores {
        let app = name("app");
        assert_eq!(ok(m.tags(&app, None, None)), want_tags);
        for n in [1, 2, 5] {
            assert_eq!(walk(n, |n, l| ok(m.tags(&app, Some(n), l))), want_tags);
            let page = |n, l: Option<&str>| {
                let entries = ok(m.tag_page(&app, n, l));
                entries.into_iter().map(|e| e.name).collect()
            };
            assert_eq!(walk(n, page), want_tags);
            assert_eq!(walk(n, |n, l| ok(m.catalog(Some(n), l))), want_repos);
        }
        let digests: Vec<String> = ok(m.tag_digests(&app)).into_iter().map(|t| t.0).collect();
        assert_eq!(digests, want_tags);
        assert_eq!(ok(m.catalog(None, None)), want_repos, "no empty repository");
        let after: Vec<String> = want_repos
            .iter()
            .filter(|r| r.as_str() > "a.")
            .cloned()
            .collect();
        assert_eq!(ok(m.catalog(None, Some("a."))), after);
        assert_eq!(
            ok(m.tags(&app, None, Some("a."))),
            ok(lite.tags(&app, None, Some("a.")))
        );
    }
}

/// Four writers pushing to and moving one tag at once leave it consistent: one event per
/// change, each tag move recording where the previous one left the tag, exactly the
/// conditional moves that succeeded logged, and only the final target tagged.
#[test]
fn concurrent_writers_on_one_tag_stay_consistent() {
    const THREADS: usize = 4;
    const PUSHES: usize = 10;
    let (_s, meta) = open("content_tag_race");
    let images: Vec<Vec<Image>> = (0..THREADS)
        .map(|t| {
            (0..PUSHES)
                .map(|i| pushable(&meta, "app", &format!("{t}-{i}")))
                .collect()
        })
        .collect();
    let moved = AtomicU64::new(0);
    std::thread::scope(|s| {
        for mine in &images {
            let (meta, moved) = (&meta, &moved);
            s.spawn(move || {
                for img in mine {
                    put(meta, "app", img, &["latest"]);
                }
                for img in mine {
                    let current =
                        ok(meta.manifest(&name("app"), &Reference::Tag(tag("latest")), false));
                    let current = current.map(|r| r.digest);
                    if current.as_deref() == Some(img.digest.as_str()) {
                        continue;
                    }
                    let set = meta.set_tag_if(
                        Origin::Sync,
                        &name("app"),
                        &tag("latest"),
                        &img.digest,
                        current.as_deref(),
                    );
                    if ok(set) {
                        moved.fetch_add(1, Ordering::SeqCst);
                    }
                }
            });
        }
    });
    let count = |sql: &str| rows(&meta, sql)[0][0].clone().unwrap_or_default();
    let total = (THREADS * PUSHES).to_string();
    let puts = "SELECT count(*)::TEXT FROM events WHERE action = 'manifest_put'";
    assert_eq!(count(puts), total);
    let sets = "SELECT count(*)::TEXT FROM events WHERE action = 'tag_set' AND origin = 'client'";
    assert_eq!(count(sets), total, "every push moved the tag");
    let synced = "SELECT count(*)::TEXT FROM events WHERE action = 'tag_set' AND origin = 'sync'";
    assert_eq!(count(synced), moved.load(Ordering::SeqCst).to_string());
    assert_eq!(count("SELECT count(*)::TEXT FROM events"), {
        (2 * THREADS * PUSHES + moved.load(Ordering::SeqCst) as usize).to_string()
    });
    let chain = rows(
        &meta,
        "SELECT digest, previous FROM events WHERE action = 'tag_set' ORDER BY seq",
    );
    assert_eq!(chain[0][1], None, "the first set found no tag");
    for w in chain.windows(2) {
        assert_eq!(
            w[1][1], w[0][0],
            "each move starts where the last one ended"
        );
    }
    let target = rows(&meta, "SELECT digest FROM tags WHERE name = 'latest'");
    assert_eq!(target[0][0], chain[chain.len() - 1][0]);
    let tagged = rows(
        &meta,
        "SELECT digest FROM manifests WHERE untagged_since IS NULL",
    );
    assert_eq!(tagged, target, "only the final target is tagged");
}

/// A link waits for a sweep in progress: the blob the sweep removes is not linked after it,
/// and a sweep that starts while a link is being made keeps the blob.
#[test]
fn links_and_sweeps_exclude_each_other() {
    let (_s, meta) = open("content_link_sweep");
    let (digest, size) = blob(b"contended");
    let store: Mutex<HashSet<String>> = Mutex::new(HashSet::from([digest.to_string()]));
    let present = || -> Result<Option<u64>> {
        let s = store.lock().unwrap_or_else(|e| e.into_inner());
        Ok(s.contains(digest.as_str()).then_some(size))
    };
    // The sweep first: it holds the lock while it removes the blob, slowly.
    let (started, wait) = mpsc::channel();
    let (swept, linked) = std::thread::scope(|s| {
        let sweeping = s.spawn(|| {
            let mut remove = |d: &Digest| -> Result<Option<u64>> {
                let _ = started.send(());
                std::thread::sleep(Duration::from_millis(300));
                let mut s = store.lock().unwrap_or_else(|e| e.into_inner());
                Ok(s.remove(d.as_str()).then_some(size))
            };
            ok(meta.sweep_blobs(std::slice::from_ref(&digest), 0, &mut remove))
        });
        let _ = wait.recv();
        let mut check = present;
        let linked = ok(meta.link_if_present(&name("app"), &digest, &mut check));
        (
            sweeping.join().unwrap_or_else(|_| panic!("sweep panicked")),
            linked,
        )
    });
    assert_eq!(swept, (1, size));
    assert_eq!(linked, None, "the link saw the blob gone");
    assert_eq!(ok(meta.blob_link(&name("app"), &digest)), None);

    // The link first: a sweep starting meanwhile finds the link and keeps the blob.
    store
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(digest.to_string());
    let (started, wait) = mpsc::channel();
    let (linked, swept) = std::thread::scope(|s| {
        let linking = s.spawn(|| {
            let mut slow = || {
                let _ = started.send(());
                std::thread::sleep(Duration::from_millis(300));
                present()
            };
            ok(meta.link_if_present(&name("app"), &digest, &mut slow))
        });
        let _ = wait.recv();
        let mut remove = |_: &Digest| -> Result<Option<u64>> { panic!("a linked blob removed") };
        let swept = ok(meta.sweep_blobs(std::slice::from_ref(&digest), 0, &mut remove));
        (
            linking.join().unwrap_or_else(|_| panic!("link panicked")),
            swept,
        )
    });
    assert_eq!(linked, Some(size));
    assert_eq!(swept, (0, 0));
    assert_eq!(ok(meta.blob_link(&name("app"), &digest)), Some(size));
}

/// A blob two manifests list stays referenced until the second goes (the release runs as one
/// statement whose update sees the references from before its own deletion); a layer listed
/// twice in one manifest is recorded once.
#[test]
fn shared_blobs_stay_referenced_until_the_last_manifest_goes() {
    let (_s, meta) = open("content_shared_refs");
    let layer = blob(b"shared layer");
    let (ca, cb) = (blob(b"config a"), blob(b"config b"));
    for b in [&layer, &ca, &cb] {
        ok(meta.link_placed(&name("app"), &b.0, b.1));
    }
    let a = image(&ca, &[&layer, &layer], "a");
    let b = image(&cb, &[&layer], "b");
    put(&meta, "app", &a, &[]);
    put(&meta, "app", &b, &[]);
    let refs = format!(
        "SELECT count(*)::TEXT FROM manifest_refs WHERE parent = '{}'",
        a.digest
    );
    assert_eq!(rows(&meta, &refs)[0][0].as_deref(), Some("2"));
    let unref = |d: &Digest| {
        let sql = format!("SELECT unref_since::TEXT FROM blob_links WHERE digest = '{d}'");
        rows(&meta, &sql)[0][0].is_some()
    };
    assert!(!unref(&layer.0) && !unref(&ca.0) && !unref(&cb.0));
    ok(meta.delete_manifest(&name("app"), &a.digest));
    assert!(!unref(&layer.0), "b still lists the layer");
    assert!(unref(&ca.0), "a's config is unreferenced");
    assert!(!unref(&cb.0));
    ok(meta.delete_manifest(&name("app"), &b.digest));
    assert!(unref(&layer.0) && unref(&cb.0));
}
