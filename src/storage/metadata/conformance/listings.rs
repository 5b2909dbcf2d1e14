//! Listings: the catalog and tag pages (bytewise order), referrers, summaries and figures.

use super::*;
use crate::storage::error::StorageError;
use crate::storage::metadata::ContentCounts;
use crate::storage::uploads::SessionCaps;

/// Pages of at most `n` fetched by `page(n, last)` until a short one: each full but the last,
/// and together `all`.
#[track_caller]
fn walk(all: &[&str], n: usize, page: impl Fn(usize, Option<&str>) -> Vec<String>) {
    let mut seen: Vec<String> = Vec::new();
    loop {
        let got = page(n, seen.last().map(String::as_str));
        assert!(got.len() <= n, "page of {n}: {got:?}");
        let short = got.len() < n;
        seen.extend(got);
        if short {
            break;
        }
    }
    assert_eq!(seen, all, "pages of {n}");
}

/// Repositories holding a manifest, in bytewise order (`-` < `.` < `/` < digits < `_` <
/// letters), after `last`, at most `n`.
pub(super) fn catalog_pages_bytewise(m: &dyn MetadataStore) {
    assert!(ok(m.catalog(None, None)).is_empty());
    for r in ["b", "a_b", "a/b", "a.b", "a-b", "a0", "a"] {
        push(m, Origin::Client, r, r, &[]);
    }
    link(m, "blobs-only", &blob(b"no manifest"));
    let all = ["a", "a-b", "a.b", "a/b", "a0", "a_b", "b"];
    assert_eq!(ok(m.catalog(None, None)), all);
    assert_eq!(ok(m.catalog(None, Some(""))), all);
    assert_eq!(
        ok(m.catalog(None, Some("A"))),
        all,
        "upper case sorts first"
    );
    assert!(ok(m.catalog(Some(0), None)).is_empty());
    for n in 1..=4 {
        walk(&all, n, |n, last| ok(m.catalog(Some(n), last)));
    }
    assert_eq!(ok(m.catalog(Some(2), Some("a.b"))), ["a/b", "a0"]);
    assert_eq!(ok(m.catalog(None, Some("a-"))), all[1..]);
    assert_eq!(ok(m.catalog(None, Some("a_"))), ["a_b", "b"]);
    assert!(ok(m.catalog(None, Some("b"))).is_empty());

    let b = push(m, Origin::Client, "b", "b", &[]);
    ok(m.delete_manifest(&name("b"), &b.digest));
    assert_eq!(ok(m.catalog(None, None)), all[..6], "no manifest left");
}

/// Tags of a repository in bytewise order, after `last`, at most `n`; `NameUnknown` for an
/// unknown repository.
pub(super) fn tags_page_bytewise(m: &dyn MetadataStore) {
    let app = name("app");
    let names = ["b", "a_b", "Z", "a", "A", "a.b", "a-b", "0", "_a"];
    push(m, Origin::Client, "app", "one", &names);
    let all = ["0", "A", "Z", "_a", "a", "a-b", "a.b", "a_b", "b"];
    assert_eq!(ok(m.tags(&app, None, None)), all);
    assert_eq!(ok(m.tags(&app, None, Some(""))), all);
    for n in 1..=4 {
        walk(&all, n, |n, last| ok(m.tags(&app, Some(n), last)));
    }
    assert_eq!(ok(m.tags(&app, Some(3), Some("Z"))), ["_a", "a", "a-b"]);
    assert_eq!(
        ok(m.tags(&app, None, Some("a"))),
        ["a-b", "a.b", "a_b", "b"]
    );
    assert_eq!(
        ok(m.tags(&app, None, Some("B"))),
        ["Z", "_a", "a", "a-b", "a.b", "a_b", "b"]
    );
    assert!(ok(m.tags(&app, Some(0), None)).is_empty());
    assert!(ok(m.tags(&app, None, Some("b"))).is_empty());
    let unknown = m.tags(&name("nowhere"), None, None);
    assert!(
        matches!(unknown, Err(StorageError::NameUnknown)),
        "{unknown:?}"
    );
    link(m, "blobs-only", &blob(b"no manifest"));
    assert!(ok(m.tags(&name("blobs-only"), None, None)).is_empty());
}

/// Every tag with its digest; pages of tags with the manifest's arrival and the tag's time.
pub(super) fn tag_digests_and_tag_pages(m: &dyn MetadataStore) {
    let t0 = now_secs();
    let app = name("app");
    let one = push(m, Origin::Client, "app", "one", &["b", "a_b"]);
    let two = push(m, Origin::Client, "app", "two", &["a", "A", "a-b"]);
    let t1 = now_secs();
    let (d1, d2) = (one.digest.to_string(), two.digest.to_string());
    let pairs: Vec<(String, String)> = [
        ("A", &d2),
        ("a", &d2),
        ("a-b", &d2),
        ("a_b", &d1),
        ("b", &d1),
    ]
    .iter()
    .map(|(t, d)| (t.to_string(), d.to_string()))
    .collect();
    assert_eq!(ok(m.tag_digests(&app)), pairs);
    assert!(ok(m.tag_digests(&name("nowhere"))).is_empty());

    let entries = |n: usize, last: Option<&str>| ok(m.tag_page(&app, n, last));
    let all = entries(10, None);
    let got: Vec<(String, String)> = all
        .iter()
        .map(|e| (e.name.clone(), e.digest.clone()))
        .collect();
    assert_eq!(got, pairs);
    for e in &all {
        assert!((t0..=t1).contains(&e.created), "{e:?}");
        assert!((e.created..=t1).contains(&e.updated), "{e:?}");
    }
    assert_eq!(entries(2, None), all[..2]);
    assert_eq!(entries(2, Some("a")), all[2..4]);
    assert_eq!(entries(10, Some("a-b")), all[3..]);
    assert!(entries(0, None).is_empty());
    assert!(entries(10, Some("b")).is_empty());
    let unknown = m.tag_page(&name("nowhere"), 10, None);
    assert!(
        matches!(unknown, Err(StorageError::NameUnknown)),
        "{unknown:?}"
    );
    link(m, "blobs-only", &blob(b"no manifest"));
    assert!(ok(m.tag_page(&name("blobs-only"), 10, None)).is_empty());

    // A tag moved later takes the time of the move, and the arrival of its new manifest.
    let later = next_second(t1);
    assert!(ok(m.set_tag_as(
        Origin::Client,
        &app,
        &tag("b"),
        &two.digest
    )));
    let moved = entries(1, Some("a_b"));
    let e = moved.first().unwrap_or_else(|| panic!("tag b missing"));
    assert_eq!((e.name.as_str(), e.digest.as_str()), ("b", d2.as_str()));
    assert!((t0..=t1).contains(&e.created), "{e:?}");
    assert!((later..=now_secs()).contains(&e.updated), "{e:?}");
}

/// A referrer as compared: digest, media type, size, artifact type and annotations (as JSON).
type ReferrerFields = (String, String, u64, Option<String>, Option<Value>);

/// The referrers of `subject` in `repo`, optionally of one artifact type.
fn referrers(
    m: &dyn MetadataStore,
    repo: &str,
    subject: &Digest,
    kind: Option<&str>,
) -> Vec<ReferrerFields> {
    ok(m.referrers(&name(repo), subject, kind))
        .into_iter()
        .map(|r| {
            let annotations = r.annotations.map(|a| {
                serde_json::from_str(&a).unwrap_or_else(|e| panic!("annotations {a:?}: {e}"))
            });
            (r.digest, r.media_type, r.size, r.artifact_type, annotations)
        })
        .collect()
}

/// The fields a referrer listing gives for `man`.
fn fields(man: &Manifest, kind: Option<&str>, annotations: Option<Value>) -> ReferrerFields {
    let media_type = man.parsed.media_type.clone();
    (
        man.digest.to_string(),
        media_type,
        man.size(),
        kind.map(str::to_owned),
        annotations,
    )
}

/// Manifests naming a subject, in arrival order (then by digest), with their artifact type
/// (`artifactType`, else the config's media type) and non-empty annotations; filtered by
/// artifact type on request; only the repository's own.
pub(super) fn referrers_by_subject(m: &dyn MetadataStore) {
    const SIG: &str = "application/vnd.example.signature";
    const SBOM: &str = "application/vnd.example.sbom.config";
    let subject = push(m, Origin::Client, "app", "subject", &["v1"]);
    let (sig_config, sbom_config) = (blob(b"{}"), blob(b"{\"sbom\":true}"));
    link(m, "app", &sig_config);
    link(m, "app", &sbom_config);
    let annotations = json!({"org.example.b": "2", "org.example.a": "1"});
    let sig = image(
        &sig_config,
        &[],
        json!({
            "artifactType": SIG, "subject": subject.descriptor(), "annotations": annotations,
        }),
    );
    let sbom = image(
        &sbom_config,
        &[],
        json!({
            "config": descriptor(SBOM, &sbom_config.digest, sbom_config.size),
            "subject": subject.descriptor(), "annotations": {},
        }),
    );
    let idx = index(&[], json!({"subject": subject.descriptor()}));
    let mut listed = vec![
        (sig.clone(), fields(&sig, Some(SIG), Some(annotations))),
        (sbom.clone(), fields(&sbom, Some(SBOM), None)),
        (idx.clone(), fields(&idx, None, None)),
    ];
    // Pushed in digest order, so arrival order and digest order agree whatever the clock does.
    listed.sort_by(|a, b| a.1 .0.cmp(&b.1 .0));
    for (man, _) in &listed {
        put(m, Origin::Client, "app", man, &[]);
    }
    let other = push(m, Origin::Client, "app", "other", &[]);
    let unrelated = image(&sig_config, &[], json!({"subject": other.descriptor()}));
    put(m, Origin::Client, "app", &unrelated, &[]);
    link(m, "mirror", &sig_config);
    put(m, Origin::Client, "mirror", &sig, &[]);

    let want: Vec<ReferrerFields> = listed.into_iter().map(|(_, f)| f).collect();
    assert_eq!(referrers(m, "app", &subject.digest, None), want);
    let of_kind = |kind| referrers(m, "app", &subject.digest, Some(kind));
    assert_eq!(
        of_kind(SIG),
        [fields(
            &sig,
            Some(SIG),
            Some(json!({"org.example.a": "1", "org.example.b": "2"}))
        )]
    );
    assert_eq!(of_kind(SBOM), [fields(&sbom, Some(SBOM), None)]);
    assert!(of_kind("application/vnd.example.none").is_empty());
    let cfg = "application/vnd.oci.image.config.v1+json";
    assert_eq!(
        referrers(m, "app", &other.digest, Some(cfg)),
        [fields(&unrelated, Some(cfg), None)]
    );
    assert!(referrers(m, "app", &sig.digest, None).is_empty());
    assert!(referrers(m, "nowhere", &subject.digest, None).is_empty());
    assert_eq!(
        referrers(m, "mirror", &subject.digest, None).len(),
        1,
        "the subject need not be there"
    );
}

/// A repository's summary: its creation, newest change, counts and newest event of its own.
pub(super) fn repo_summary_counts(m: &dyn MetadataStore) {
    let t0 = now_secs();
    let app = name("app");
    assert_eq!(ok(m.repo_summary(&app)), None);
    link(m, "app", &blob(b"first"));
    let fresh = ok(m.repo_summary(&app)).unwrap_or_else(|| panic!("app exists"));
    assert!((t0..=now_secs()).contains(&fresh.created), "{fresh:?}");
    assert_eq!(
        (fresh.updated, fresh.manifests, fresh.tags, fresh.last_event),
        (fresh.created, 0, 0, 0)
    );

    let later = next_second(fresh.created);
    push(m, Origin::Client, "app", "one", &["v1", "latest"]);
    push(m, Origin::Sync, "app", "two", &[]);
    let last_of_app = newest(m);
    push(m, Origin::Client, "other", "three", &["v1"]);
    let s = ok(m.repo_summary(&app)).unwrap_or_else(|| panic!("app exists"));
    assert_eq!(
        (s.created, s.manifests, s.tags, s.last_event),
        (fresh.created, 2, 2, last_of_app)
    );
    assert!((later..=now_secs()).contains(&s.updated), "{s:?}");

    ok(m.delete_tag(&app, &tag("latest")));
    let s = ok(m.repo_summary(&app)).unwrap_or_else(|| panic!("app exists"));
    assert_eq!((s.manifests, s.tags, s.last_event), (2, 1, newest(m)));
    let other = ok(m.repo_summary(&name("other"))).unwrap_or_else(|| panic!("other exists"));
    let of_other = all_events(m)
        .iter()
        .filter(|e| e.repo == "other")
        .map(|e| e.seq)
        .max();
    assert_eq!(
        (other.manifests, other.tags, Some(other.last_event)),
        (1, 1, of_other)
    );
}

/// Distinct blobs linked anywhere, distinct manifests and open upload sessions, counted; the
/// bytes of distinct blobs and manifests.
pub(super) fn content_counts_and_bytes(m: &dyn MetadataStore) {
    assert_eq!(ok(m.content_counts()), ContentCounts::default());
    assert_eq!(ok(m.content_bytes()), 0);
    let (a, b) = (blob(b"aaaa"), blob(b"bbbb"));
    link(m, "r1", &a);
    link(m, "r2", &a);
    link(m, "r1", &b);
    let counts = |blobs, manifests, uploads| ContentCounts {
        blobs,
        manifests,
        uploads,
    };
    assert_eq!(ok(m.content_counts()), counts(2, 0, 0));
    assert_eq!(ok(m.content_bytes()), 8, "each blob once, same sizes too");

    let one = image(&a, &[&b], Value::Null);
    link(m, "r2", &b);
    put(m, Origin::Client, "r1", &one, &["v1"]);
    put(m, Origin::Client, "r2", &one, &[]);
    let two = image(&a, &[], json!({"annotations": {"n": "2"}}));
    put(m, Origin::Client, "r1", &two, &[]);
    assert_eq!(ok(m.content_counts()), counts(2, 2, 0));
    assert_eq!(ok(m.content_bytes()), 8 + one.size() + two.size());

    let caps = SessionCaps {
        total: 10,
        per_client: 10,
        per_repository: 10,
    };
    ok(m.create_upload("u1", &name("r1"), "client", &caps));
    ok(m.create_upload("u2", &name("r3"), "client", &caps));
    assert_eq!(ok(m.content_counts()), counts(2, 2, 2));

    ok(m.delete_manifest(&name("r1"), &one.digest));
    assert_eq!(ok(m.content_counts()), counts(2, 2, 2), "r2 still holds it");
    ok(m.delete_manifest(&name("r2"), &one.digest));
    ok(m.unlink_blob(&name("r1"), &b.digest));
    ok(m.unlink_blob(&name("r2"), &b.digest));
    ok(m.delete_upload("u1"));
    assert_eq!(ok(m.content_counts()), counts(1, 1, 1));
    assert_eq!(ok(m.content_bytes()), 4 + two.size());
}
