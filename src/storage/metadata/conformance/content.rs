//! Content: blob links, manifests and tags, their deletion, and the events each change logs.

use std::cell::Cell;

use super::*;
use crate::storage::error::StorageError;

/// Blobs are linked when placed or when found present (idempotently, the first size kept) and
/// unlinked; a failed or absent lookup links nothing and makes no repository.
pub(super) fn links_placed_and_present(m: &dyn MetadataStore) {
    let (app, other) = (name("app"), name("other"));
    let (a, b) = (blob(b"first blob"), blob(b"second blob"));
    assert!(!ok(m.repo_exists(&app)));
    assert_eq!(ok(m.blob_link(&app, &a.digest)), None);
    link(m, "app", &a);
    assert!(ok(m.repo_exists(&app)));
    assert_eq!(ok(m.blob_link(&app, &a.digest)), Some(a.size));
    ok(m.link_placed(&app, &a.digest, a.size + 100));
    assert_eq!(ok(m.blob_link(&app, &a.digest)), Some(a.size), "first kept");

    let calls = Cell::new(0);
    let found = m.link_if_present(&app, &b.digest, &mut || {
        calls.set(calls.get() + 1);
        Ok(Some(b.size))
    });
    assert_eq!((ok(found), calls.get()), (Some(b.size), 1));
    assert_eq!(ok(m.blob_link(&app, &b.digest)), Some(b.size));

    assert_eq!(
        ok(m.link_if_present(&other, &a.digest, &mut || Ok(None))),
        None
    );
    let failed = m.link_if_present(&other, &a.digest, &mut || {
        Err(StorageError::Busy("collecting".into()))
    });
    assert!(matches!(failed, Err(StorageError::Busy(_))), "{failed:?}");
    assert!(
        !ok(m.repo_exists(&other)),
        "absent blobs make no repository"
    );
    assert_eq!(ok(m.blob_link(&other, &a.digest)), None);

    assert!(ok(m.unlink_blob(&app, &a.digest)));
    assert!(!ok(m.unlink_blob(&app, &a.digest)), "already unlinked");
    assert_eq!(ok(m.blob_link(&app, &a.digest)), None);
    assert_eq!(ok(m.blob_link(&app, &b.digest)), Some(b.size));
    assert!(ok(m.repo_exists(&app)), "the repository stays");
    assert!(!ok(m.unlink_blob(&name("nowhere"), &a.digest)));
    assert!(!ok(m.repo_exists(&name("nowhere"))));
}

/// Mounts: from a named repository that links the blob, or from the first one by name (in
/// bytewise order) that `accept` approves; nothing happens (no repository made) otherwise.
pub(super) fn links_from_another_repository(m: &dyn MetadataStore) {
    let (dst, fresh) = (name("dst"), name("fresh"));
    let b = blob(b"shared layer");
    link(m, "src", &b);
    assert_eq!(ok(m.link_from(&dst, &name("src"), &b.digest)), Some(b.size));
    assert_eq!(ok(m.blob_link(&dst, &b.digest)), Some(b.size));
    let elsewhere = blob(b"not in src");
    assert_eq!(
        ok(m.link_from(&fresh, &name("src"), &elsewhere.digest)),
        None
    );
    assert_eq!(ok(m.link_from(&fresh, &name("missing"), &b.digest)), None);
    assert!(!ok(m.repo_exists(&fresh)));

    let d = blob(b"mounted");
    for r in ["b", "a_b", "a-b", "a.b"] {
        link(m, r, &d);
    }
    let mut offered = Vec::new();
    let got = m.link_from_first(&name("target"), &d.digest, &mut |r| {
        offered.push(r.to_owned());
        r == "a.b" || r == "a_b"
    });
    assert_eq!(ok(got), Some(("a.b".to_owned(), d.size)));
    assert_eq!(offered, ["a-b", "a.b"], "offered by name, until accepted");
    assert_eq!(ok(m.blob_link(&name("target"), &d.digest)), Some(d.size));

    offered.clear();
    let got = m.link_from_first(&fresh, &d.digest, &mut |r| {
        offered.push(r.to_owned());
        false
    });
    assert_eq!(ok(got), None);
    assert_eq!(offered, ["a-b", "a.b", "a_b", "b", "target"]);
    assert!(!ok(m.repo_exists(&fresh)));
    let unknown = blob(b"linked nowhere");
    let got = m.link_from_first(&fresh, &unknown.digest, &mut |r| panic!("offered {r}"));
    assert_eq!(ok(got), None);
}

/// The repositories linking a blob, by bytewise name, at most eight.
pub(super) fn repos_linking_is_sorted_and_capped(m: &dyn MetadataStore) {
    let d = blob(b"popular");
    assert!(ok(m.repos_linking(&d.digest)).is_empty());
    for r in ["r9", "b", "a_b", "a-b", "a.b", "a/b", "a0", "a", "c", "z"] {
        link(m, r, &d);
    }
    link(m, "other", &blob(b"unrelated"));
    let first = ["a", "a-b", "a.b", "a/b", "a0", "a_b", "b", "c"];
    assert_eq!(ok(m.repos_linking(&d.digest)), first);
    ok(m.unlink_blob(&name("a0"), &d.digest));
    let next = ["a", "a-b", "a.b", "a/b", "a_b", "b", "c", "r9"];
    assert_eq!(ok(m.repos_linking(&d.digest)), next);
}

/// Manifests read back by tag and by digest, with the exact bytes when asked; the bytes of a
/// manifest several repositories hold outlive its deletion from one; an index may list
/// children that are not stored.
pub(super) fn manifests_read_back_byte_exact(m: &dyn MetadataStore) {
    let (config, layer) = seed_blobs("one");
    for r in ["app", "copy"] {
        link(m, r, &config);
        link(m, r, &layer);
    }
    let extra = json!({"annotations": {"note": "ünïcödé ✓", "z": "last"}});
    let man = image(&config, &[&layer], extra);
    put(m, Origin::Client, "app", &man, &["v1", "latest"]);
    let record = |r: Option<ManifestRecord>| r.map(|r| (r.digest, r.media_type, r.size, r.body));
    let full = Some((
        man.digest.to_string(),
        OCI_MANIFEST.to_owned(),
        man.size(),
        Some(man.body.clone()),
    ));
    let head = full.clone().map(|(d, t, s, _)| (d, t, s, None));
    assert_eq!(record(by_tag(m, "app", "v1", true)), full);
    assert_eq!(record(by_tag(m, "app", "latest", false)), head);
    assert_eq!(record(by_digest(m, "app", &man.digest, true)), full);
    assert_eq!(record(by_digest(m, "app", &man.digest, false)), head);
    assert!(by_tag(m, "app", "v2", true).is_none());
    assert!(by_digest(m, "app", &blob(b"no manifest").digest, true).is_none());
    assert!(
        by_digest(m, "copy", &man.digest, true).is_none(),
        "not in copy yet"
    );
    assert!(by_tag(m, "nowhere", "v1", true).is_none());

    put(m, Origin::Client, "copy", &man, &[]);
    ok(m.delete_manifest(&name("app"), &man.digest));
    assert_eq!(record(by_digest(m, "copy", &man.digest, true)), full);

    let absent_child = image(&blob(b"never stored"), &[], Value::Null);
    let idx = index(&[&absent_child, &man], Value::Null);
    put(m, Origin::Client, "copy", &idx, &["multi"]);
    let got = record(by_tag(m, "copy", "multi", true));
    let want = (
        idx.digest.to_string(),
        OCI_INDEX.to_owned(),
        idx.size(),
        Some(idx.body),
    );
    assert_eq!(got, Some(want));
    assert!(by_digest(m, "copy", &absent_child.digest, false).is_none());
}

/// Every blob a manifest needs must be linked in its repository (layers with URLs excepted),
/// else `ManifestBlobUnknown` naming the first missing one, and nothing is stored or logged.
pub(super) fn a_manifest_needs_its_blobs(m: &dyn MetadataStore) {
    let fresh = name("fresh");
    let (config, layer) = seed_blobs("needs");
    let man = image(&config, &[&layer], Value::Null);
    let attempt = |man: &Manifest| {
        m.put_manifest_as(
            Origin::Client,
            &fresh,
            &man.digest,
            &man.parsed,
            &man.body,
            &tags(&["v1"]),
        )
    };
    let missing = |r: Result<()>| match r {
        Err(StorageError::ManifestBlobUnknown(d)) => d,
        other => panic!("expected ManifestBlobUnknown, got {other:?}"),
    };
    assert_eq!(
        missing(attempt(&man)),
        config.digest,
        "the config comes first"
    );
    link(m, "elsewhere", &config);
    link(m, "elsewhere", &layer);
    assert_eq!(
        missing(attempt(&man)),
        config.digest,
        "linked elsewhere only"
    );
    assert!(
        !ok(m.repo_exists(&fresh)),
        "the failed push made no repository"
    );
    assert_eq!(newest(m), 0, "nothing logged");

    link(m, "fresh", &config);
    assert_eq!(missing(attempt(&man)), layer.digest);
    assert!(by_digest(m, "fresh", &man.digest, false).is_none());
    assert!(ok(m.tag_digests(&fresh)).is_empty());
    assert_eq!(newest(m), 0, "nothing logged");

    let foreign = json!({"layers": [{
        "mediaType": "application/vnd.oci.image.layer.nondistributable.v1.tar",
        "digest": blob(b"foreign layer").digest.as_str(),
        "size": 13,
        "urls": ["https://example.com/foreign-layer"],
    }]});
    let with_urls = image(&config, &[], foreign);
    ok(attempt(&with_urls));
    assert!(by_tag(m, "fresh", "v1", false).is_some());
    link(m, "fresh", &layer);
    ok(attempt(&man));
    assert_eq!(
        by_tag(m, "fresh", "v1", false).map(|r| r.digest),
        Some(man.digest.to_string())
    );
}

/// A push logs `manifest_put` (when the manifest is new here) then `tag_set` for each tag that
/// moves, in the order given, with the pusher's origin; a repeat logs nothing.
pub(super) fn manifest_events(m: &dyn MetadataStore) {
    let t0 = now_secs();
    let one = push(m, Origin::Client, "app", "one", &["v1", "latest"]);
    let (c, s) = (Origin::Client, Origin::Sync);
    let want = [
        Change::manifest_put(c, "app", &one),
        Change::tag_set(c, "app", "v1", &one, None),
        Change::tag_set(c, "app", "latest", &one, None),
    ];
    assert_eq!(changes_since(m, 0, t0), want);
    let seq = newest(m);
    put(m, Origin::Client, "app", &one, &["v1", "latest"]);
    assert_eq!(changes_since(m, seq, t0), [], "a repeat logs nothing");

    let two = push(m, Origin::Sync, "app", "two", &["latest", "v2"]);
    let want = [
        Change::manifest_put(s, "app", &two),
        Change::tag_set(s, "app", "latest", &two, Some(&one.digest)),
        Change::tag_set(s, "app", "v2", &two, None),
    ];
    assert_eq!(changes_since(m, seq, t0), want);
    let seq = newest(m);
    put(m, Origin::Client, "app", &one, &["v1", "again"]);
    let want = [Change::tag_set(c, "app", "again", &one, None)];
    assert_eq!(changes_since(m, seq, t0), want, "only the new tag");
}

/// Deleting a tag leaves its manifest; deleting a manifest takes its tags along (each logged
/// before the manifest's own event); unknown ones are `ManifestUnknown` and log nothing.
pub(super) fn tags_and_manifests_are_deleted(m: &dyn MetadataStore) {
    let t0 = now_secs();
    let app = name("app");
    let one = push(m, Origin::Client, "app", "one", &["v1", "latest", "stable"]);
    let two = push(m, Origin::Client, "app", "two", &["v2"]);
    let seq = newest(m);
    ok(m.delete_tag_as(Origin::Sync, &app, &tag("stable")));
    assert!(by_tag(m, "app", "stable", false).is_none());
    assert!(by_digest(m, "app", &one.digest, false).is_some());
    assert_eq!(ok(m.tags(&app, None, None)), ["latest", "v1", "v2"]);
    let want = [Change::tag_delete(
        Origin::Sync,
        "app",
        "stable",
        &one.digest,
    )];
    assert_eq!(changes_since(m, seq, t0), want);

    let seq = newest(m);
    let unknown = |r: Result<()>| match r {
        Err(StorageError::ManifestUnknown(what)) => what,
        other => panic!("expected ManifestUnknown, got {other:?}"),
    };
    assert_eq!(unknown(m.delete_tag(&app, &tag("stable"))), "stable");
    assert_eq!(unknown(m.delete_tag(&name("nowhere"), &tag("v1"))), "v1");
    ok(m.delete_manifest_as(Origin::Client, &app, &one.digest));
    assert!(by_digest(m, "app", &one.digest, false).is_none());
    assert!(by_tag(m, "app", "v1", false).is_none());
    let v2 = vec![("v2".to_owned(), two.digest.to_string())];
    assert_eq!(ok(m.tag_digests(&app)), v2);
    let mut got = changes_since(m, seq, t0);
    let last = got.pop();
    got.sort();
    let c = Origin::Client;
    let tag_deletes = [
        Change::tag_delete(c, "app", "latest", &one.digest),
        Change::tag_delete(c, "app", "v1", &one.digest),
    ];
    assert_eq!(got, tag_deletes, "each tag, in any order");
    assert_eq!(last, Some(Change::manifest_delete(c, "app", &one.digest)));

    let seq = newest(m);
    let d = one.digest.to_string();
    assert_eq!(unknown(m.delete_manifest(&app, &one.digest)), d);
    assert_eq!(unknown(m.delete_manifest(&name("nowhere"), &one.digest)), d);
    assert_eq!(changes_since(m, seq, t0), []);
    let untagged = push(m, Origin::Client, "app", "untagged", &[]);
    let seq = newest(m);
    ok(m.delete_manifest_as(Origin::Sync, &app, &untagged.digest));
    let want = [Change::manifest_delete(
        Origin::Sync,
        "app",
        &untagged.digest,
    )];
    assert_eq!(changes_since(m, seq, t0), want);
}

/// `set_tag_as` points a tag at a manifest stored in the repository (true), logs the move
/// with the tag's previous digest, and leaves a tag already there alone (true, no event);
/// false, with nothing logged, for a manifest that is not there.
pub(super) fn set_tag_moves_and_logs(m: &dyn MetadataStore) {
    let t0 = now_secs();
    let app = name("app");
    let one = push(m, Origin::Client, "app", "one", &[]);
    let two = push(m, Origin::Client, "app", "two", &[]);
    let elsewhere = push(m, Origin::Client, "other", "three", &[]);
    let t = tag("t");
    let seq = newest(m);
    assert!(ok(m.set_tag_as(Origin::Sync, &app, &t, &one.digest)));
    let want = [Change::tag_set(Origin::Sync, "app", "t", &one, None)];
    assert_eq!(changes_since(m, seq, t0), want);
    let seq = newest(m);
    assert!(ok(m.set_tag_as(Origin::Sync, &app, &t, &one.digest)));
    assert_eq!(changes_since(m, seq, t0), [], "already there");
    assert!(ok(m.set_tag_as(Origin::Client, &app, &t, &two.digest)));
    let want = [Change::tag_set(
        Origin::Client,
        "app",
        "t",
        &two,
        Some(&one.digest),
    )];
    assert_eq!(changes_since(m, seq, t0), want);

    let seq = newest(m);
    let absent = blob(b"no such manifest").digest;
    assert!(!ok(m.set_tag_as(Origin::Client, &app, &t, &absent)));
    assert!(!ok(m.set_tag_as(
        Origin::Client,
        &app,
        &tag("u"),
        &elsewhere.digest
    )));
    assert!(!ok(m.set_tag_as(
        Origin::Client,
        &name("nowhere"),
        &t,
        &one.digest
    )));
    assert!(!ok(m.repo_exists(&name("nowhere"))));
    assert_eq!(changes_since(m, seq, t0), []);
    assert_eq!(
        by_tag(m, "app", "t", false).map(|r| r.digest),
        Some(two.digest.to_string())
    );
    assert!(by_tag(m, "app", "u", false).is_none());
}

/// `set_tag_if` moves a tag only while it points at `expected` (`None`: absent); a tag already
/// at the wanted manifest is left alone and reported true whatever was expected.
pub(super) fn set_tag_if_checks_the_expected(m: &dyn MetadataStore) {
    let t0 = now_secs();
    let app = name("app");
    let one = push(m, Origin::Client, "app", "one", &[]);
    let two = push(m, Origin::Client, "app", "two", &[]);
    let (d1, d2) = (one.digest.as_str(), two.digest.as_str());
    let set = |t: &str, to: &Manifest, expected: Option<&str>| {
        ok(m.set_tag_if(Origin::Sync, &app, &tag(t), &to.digest, expected))
    };
    let seq = newest(m);
    assert!(set("t", &one, None), "absent as expected");
    let want = [Change::tag_set(Origin::Sync, "app", "t", &one, None)];
    assert_eq!(changes_since(m, seq, t0), want);

    let seq = newest(m);
    assert!(!set("t", &two, None), "no longer absent");
    assert!(!set("t", &two, Some(d2)), "points elsewhere");
    assert!(!set("u", &one, Some(d1)), "absent, not as expected");
    assert_eq!(changes_since(m, seq, t0), []);
    assert_eq!(
        by_tag(m, "app", "t", false).map(|r| r.digest),
        Some(d1.to_owned())
    );

    assert!(set("t", &two, Some(d1)));
    let want = [Change::tag_set(
        Origin::Sync,
        "app",
        "t",
        &two,
        Some(&one.digest),
    )];
    assert_eq!(changes_since(m, seq, t0), want);
    let seq = newest(m);
    assert!(set("t", &two, Some(d1)), "already there");
    let absent = blob(b"no such manifest").digest;
    let r = m.set_tag_if(Origin::Sync, &app, &tag("t"), &absent, Some(d2));
    assert!(!ok(r), "no such manifest");
    assert_eq!(changes_since(m, seq, t0), []);
    assert_eq!(
        by_tag(m, "app", "t", false).map(|r| r.digest),
        Some(d2.to_owned())
    );
}

/// Deleting a repository removes its tags, manifests and links, logging each tag deletion and
/// then each manifest deletion; other repositories keep theirs; false when it did not exist.
pub(super) fn repositories_are_deleted_whole(m: &dyn MetadataStore) {
    let t0 = now_secs();
    let app = name("app");
    let one = push(m, Origin::Client, "app", "one", &["v1", "latest"]);
    let two = push(m, Origin::Client, "app", "two", &[]);
    link(m, "app", &blob(b"loose"));
    let (config, layer) = seed_blobs("one");
    link(m, "keep", &config);
    link(m, "keep", &layer);
    put(m, Origin::Client, "keep", &one, &["v1"]);
    let seq = newest(m);
    assert!(ok(m.delete_repository_as(Origin::Sync, &app)));

    let got = changes_since(m, seq, t0);
    assert_eq!(got.len(), 4, "{got:?}");
    let (mut tag_deletes, mut manifest_deletes) = (got[..2].to_vec(), got[2..].to_vec());
    tag_deletes.sort();
    manifest_deletes.sort();
    let s = Origin::Sync;
    let want_tags = [
        Change::tag_delete(s, "app", "latest", &one.digest),
        Change::tag_delete(s, "app", "v1", &one.digest),
    ];
    assert_eq!(tag_deletes, want_tags);
    let mut want_manifests = vec![
        Change::manifest_delete(s, "app", &one.digest),
        Change::manifest_delete(s, "app", &two.digest),
    ];
    want_manifests.sort();
    assert_eq!(manifest_deletes, want_manifests);

    assert!(!ok(m.repo_exists(&app)));
    assert_eq!(ok(m.blob_link(&app, &config.digest)), None);
    assert!(by_digest(m, "app", &one.digest, false).is_none());
    assert!(matches!(
        m.tags(&app, None, None),
        Err(StorageError::NameUnknown)
    ));
    assert_eq!(ok(m.catalog(None, None)), ["keep"]);
    assert_eq!(ok(m.repos_linking(&config.digest)), ["keep"]);
    let kept = by_tag(m, "keep", "v1", true).and_then(|r| r.body);
    assert_eq!(
        kept,
        Some(one.body.clone()),
        "the other repository keeps its bytes"
    );
    assert_eq!(
        ok(m.blob_link(&name("keep"), &layer.digest)),
        Some(layer.size)
    );

    let seq = newest(m);
    assert!(!ok(m.delete_repository_as(Origin::Sync, &app)));
    assert!(!ok(m.delete_repository_as(Origin::Client, &name("nowhere"))));
    assert_eq!(changes_since(m, seq, t0), []);
    link(m, "app", &config);
    assert!(ok(m.repo_exists(&app)), "made anew");
    assert!(ok(m.tag_digests(&app)).is_empty());
    assert!(by_digest(m, "app", &two.digest, false).is_none());
}
