//! Garbage collection's side of the metadata: untagged retention, lapsing links, sweeping
//! blobs and download holds.

use super::*;
use crate::storage::error::StorageError;
use crate::storage::metadata::StateKey;

/// Whether `repo` still holds the manifest `man`.
fn holds(m: &dyn MetadataStore, repo: &str, man: &Manifest) -> bool {
    by_digest(m, repo, &man.digest, false).is_some()
}

/// Untagged manifests (since the cutoff or earlier) go unless an index lists them or their
/// subject is there; an index's children follow it in the same pass, though a dry run counts
/// only what goes first; each deletion is logged as collection's.
pub(super) fn expire_untagged_manifests(m: &dyn MetadataStore) {
    let t0 = now_secs();
    let tagged = push(m, Origin::Client, "app", "tagged", &["v1"]);
    let untagged = push(m, Origin::Client, "app", "untagged", &[]);
    let detagged = push(m, Origin::Client, "app", "detagged", &["old"]);
    ok(m.delete_tag(&name("app"), &tag("old")));
    let child = push(m, Origin::Client, "app", "child", &[]);
    let idx = index(&[&child], Value::Null);
    put(m, Origin::Client, "app", &idx, &[]);
    let (sig_config, orphan_config) = (blob(b"signature config"), blob(b"orphan config"));
    link(m, "app", &sig_config);
    link(m, "app", &orphan_config);
    let sig = image(&sig_config, &[], json!({"subject": tagged.descriptor()}));
    put(m, Origin::Client, "app", &sig, &[]);
    let gone_subject = image(&blob(b"never stored"), &[], Value::Null);
    let orphan = image(
        &orphan_config,
        &[],
        json!({"subject": gone_subject.descriptor()}),
    );
    put(m, Origin::Client, "app", &orphan, &[]);
    let t1 = now_secs();

    assert_eq!(
        ok(m.expire_untagged(t0 - 1, false, false)),
        0,
        "none that old"
    );
    assert_eq!(
        ok(m.expire_untagged(t1, false, true)),
        4,
        "dry run: no cascade"
    );
    for man in [&untagged, &detagged, &idx, &orphan, &child] {
        assert!(holds(m, "app", man), "a dry run deletes nothing");
    }
    let seq = newest(m);
    assert_eq!(ok(m.expire_untagged(t1, false, false)), 5);
    for man in [&untagged, &detagged, &idx, &orphan, &child] {
        assert!(!holds(m, "app", man), "{} expired", man.digest);
    }
    assert!(holds(m, "app", &tagged) && holds(m, "app", &sig));
    let mut got = changes_since(m, seq, t0);
    got.sort();
    let mut want: Vec<Change> = [&untagged, &detagged, &idx, &orphan, &child]
        .iter()
        .map(|man| Change::manifest_delete(Origin::Gc, "app", &man.digest))
        .collect();
    want.sort();
    assert_eq!(got, want);
    assert_eq!(ok(m.expire_untagged(t1, false, false)), 0);
}

/// With `keep_outbox`, an untagged manifest a client change to which push-up has not sent yet
/// (by the repository's push cursor) stays.
pub(super) fn expire_untagged_keeps_the_outbox(m: &dyn MetadataStore) {
    let pending = push(m, Origin::Client, "pushme", "client", &[]);
    let mirrored = push(m, Origin::Sync, "mirror", "sync", &[]);
    let t1 = now_secs();
    assert_eq!(ok(m.expire_untagged(t1, true, true)), 1);
    assert_eq!(ok(m.expire_untagged(t1, false, true)), 2);
    assert_eq!(ok(m.expire_untagged(t1, true, false)), 1);
    assert!(holds(m, "pushme", &pending) && !holds(m, "mirror", &mirrored));

    let cursor = StateKey::PushCursor("pushme");
    let pushed_at = all_events(m)
        .iter()
        .find(|e| e.digest == pending.digest.as_str())
        .map(|e| e.seq);
    let behind = pushed_at
        .map(|s| s - 1)
        .unwrap_or_else(|| panic!("no event of the push"));
    ok(m.set_sync_state(&cursor, Some(&behind.to_string())));
    assert_eq!(ok(m.expire_untagged(t1, true, true)), 0, "not sent yet");
    ok(m.set_sync_state(&cursor, Some(&newest(m).to_string())));
    assert_eq!(ok(m.expire_untagged(t1, true, true)), 1, "sent");
    assert_eq!(ok(m.expire_untagged(t1, true, false)), 1);
    assert!(!holds(m, "pushme", &pending));
}

/// Links no manifest of their repository references (since the cutoff or earlier) lapse; a
/// link a manifest references, here or in its own repository, stays.
pub(super) fn lapse_unreferenced_links(m: &dyn MetadataStore) {
    let t0 = now_secs();
    let app = name("app");
    let one = push(m, Origin::Client, "app", "one", &["v1"]);
    let (config, layer) = seed_blobs("one");
    let loose = blob(b"loose");
    link(m, "app", &loose);
    let (shared, other_config) = (blob(b"shared"), blob(b"other config"));
    link(m, "app", &shared);
    link(m, "other", &shared);
    link(m, "other", &other_config);
    put(
        m,
        Origin::Client,
        "other",
        &image(&other_config, &[&shared], Value::Null),
        &[],
    );
    let t1 = now_secs();

    assert_eq!(ok(m.lapse_links(t0 - 1, true)), 0);
    assert_eq!(ok(m.lapse_links(t0 - 1, false)), 0);
    assert_eq!(ok(m.lapse_links(t1, true)), 2);
    assert_eq!(
        ok(m.blob_link(&app, &loose.digest)),
        Some(loose.size),
        "a dry run"
    );
    assert_eq!(ok(m.lapse_links(t1, false)), 2);
    assert_eq!(ok(m.blob_link(&app, &loose.digest)), None);
    assert_eq!(ok(m.blob_link(&app, &shared.digest)), None);
    assert_eq!(
        ok(m.blob_link(&name("other"), &shared.digest)),
        Some(shared.size)
    );
    assert_eq!(ok(m.blob_link(&app, &config.digest)), Some(config.size));
    assert_eq!(ok(m.blob_link(&app, &layer.digest)), Some(layer.size));

    let late = blob(b"referenced later");
    link(m, "app", &late);
    put(
        m,
        Origin::Client,
        "app",
        &image(&late, &[], Value::Null),
        &[],
    );
    assert_eq!(ok(m.lapse_links(now_secs(), false)), 0, "referenced now");
    ok(m.delete_manifest(&app, &one.digest));
    assert_eq!(
        ok(m.lapse_links(now_secs(), true)),
        2,
        "what only it referenced"
    );
    assert_eq!(ok(m.lapse_links(now_secs(), false)), 2);
    assert_eq!(ok(m.blob_link(&app, &config.digest)), None);
    assert_eq!(ok(m.blob_link(&app, &late.digest)), Some(late.size));
}

/// `remove` is called, in order, only for the blobs no link keeps (referenced or not) and no
/// hold keeps at `now`; its errors fail the sweep.
pub(super) fn sweep_blobs_no_one_keeps(m: &dyn MetadataStore) {
    let now = now_secs();
    push(m, Origin::Client, "app", "kept", &["v1"]);
    let (kept_config, _) = seed_blobs("kept");
    let loose = blob(b"linked, unreferenced");
    link(m, "app", &loose);
    let (free, held, ended, gone) = (blob(b"free"), blob(b"held"), blob(b"ended"), blob(b"gone"));
    ok(m.hold_blob(&held.digest, now + 100));
    ok(m.hold_blob(&ended.digest, now));
    let asked = std::cell::RefCell::new(Vec::new());
    let mut remove = |d: &Digest| -> Result<Option<u64>> {
        asked.borrow_mut().push(d.to_string());
        Ok(if *d == free.digest {
            Some(10)
        } else if *d == ended.digest {
            Some(20)
        } else {
            None
        })
    };
    let digests: Vec<Digest> = [&kept_config, &loose, &free, &held, &ended, &gone]
        .iter()
        .map(|b| b.digest.clone())
        .collect();
    assert_eq!(ok(m.sweep_blobs(&digests, now, &mut remove)), (2, 30));
    let want = [&free, &ended, &gone].map(|b| b.digest.to_string());
    assert_eq!(*asked.borrow(), want);

    asked.borrow_mut().clear();
    assert_eq!(
        ok(m.sweep_blobs(std::slice::from_ref(&held.digest), now + 100, &mut remove)),
        (0, 0)
    );
    assert_eq!(*asked.borrow(), [held.digest.to_string()], "the hold ended");
    asked.borrow_mut().clear();
    assert_eq!(ok(m.sweep_blobs(&[], now, &mut remove)), (0, 0));
    assert!(asked.borrow().is_empty());

    let failed = m.sweep_blobs(std::slice::from_ref(&free.digest), now, &mut |_| {
        Err(StorageError::Busy("claimed".into()))
    });
    assert!(matches!(failed, Err(StorageError::Busy(_))), "{failed:?}");
}

/// A hold keeps a blob until it ends (a later hold extends it, an earlier one does not
/// shorten it) or the blob is linked; dropping expired holds forgets only those.
pub(super) fn holds_keep_blobs_until_they_end(m: &dyn MetadataStore) {
    let base = now_secs();
    let h = blob(b"downloaded");
    let unkept =
        |at: i64, b: &Blob| ok(m.blobs_unkept(std::slice::from_ref(&b.digest), at, base))[0];
    assert!(unkept(base, &h), "no hold yet");
    ok(m.hold_blob(&h.digest, base + 100));
    assert!(!unkept(base, &h) && !unkept(base + 99, &h));
    assert!(unkept(base + 100, &h), "ended");
    ok(m.hold_blob(&h.digest, base + 50));
    assert!(!unkept(base + 75, &h), "not shortened");
    ok(m.hold_blob(&h.digest, base + 200));
    assert!(!unkept(base + 150, &h), "extended");

    ok(m.drop_expired_holds(base + 150));
    assert!(!unkept(base + 150, &h), "still on");
    ok(m.drop_expired_holds(base + 200));
    assert!(unkept(base, &h), "forgotten, even for an earlier time");

    let g = blob(b"downloaded, then linked");
    ok(m.hold_blob(&g.digest, base + 100));
    link(m, "app", &g);
    assert!(ok(m.unlink_blob(&name("app"), &g.digest)));
    assert!(unkept(base, &g), "the link ended the hold");
}

/// Which blobs a pass would free: not those referenced, held, or linked more recently than the
/// lapse cutoff; in the order asked.
pub(super) fn blobs_unkept_by_a_pass(m: &dyn MetadataStore) {
    let t0 = now_secs();
    push(m, Origin::Client, "app", "one", &["v1"]);
    let (config, _) = seed_blobs("one");
    let (loose, shared, never, held) = (
        blob(b"loose"),
        blob(b"shared"),
        blob(b"never linked"),
        blob(b"held"),
    );
    link(m, "app", &loose);
    link(m, "app", &shared);
    link(m, "other", &shared);
    let other_config = blob(b"other config");
    link(m, "other", &other_config);
    put(
        m,
        Origin::Client,
        "other",
        &image(&other_config, &[&shared], Value::Null),
        &[],
    );
    ok(m.hold_blob(&held.digest, t0 + 1000));
    let t1 = now_secs();
    let digests: Vec<Digest> = [&config, &loose, &shared, &never, &held]
        .iter()
        .map(|b| b.digest.clone())
        .collect();
    let want_young = [false, false, false, true, false];
    assert_eq!(ok(m.blobs_unkept(&digests, t1, t0 - 1)), want_young);
    assert_eq!(
        ok(m.blobs_unkept(&digests, t1, t1)),
        [false, true, false, true, false]
    );
    assert_eq!(
        ok(m.blobs_unkept(&digests, t0 + 1000, t1)),
        [false, true, false, true, true]
    );
    assert!(ok(m.blobs_unkept(&[], t1, t1)).is_empty());
    assert_eq!(
        ok(m.lapse_links(t1, true)),
        2,
        "app's links to loose and shared"
    );
}

/// Passes larger than one write batch (of 256 rows) go on until done.
pub(super) fn passes_go_on_past_a_batch(m: &dyn MetadataStore) {
    let config = blob(b"shared config");
    link(m, "app", &config);
    for i in 0..300 {
        let man = image(&config, &[], json!({"annotations": {"n": i.to_string()}}));
        put(m, Origin::Client, "app", &man, &[]);
        link(m, "app", &blob(format!("loose {i}").as_bytes()));
    }
    let t1 = now_secs();
    assert_eq!(ok(m.expire_untagged(t1, false, true)), 300);
    assert_eq!(ok(m.expire_untagged(t1, false, false)), 300);
    assert_eq!(ok(m.content_counts()).manifests, 0);
    let t2 = now_secs();
    assert_eq!(
        ok(m.lapse_links(t2, true)),
        301,
        "the config is unreferenced too"
    );
    assert_eq!(ok(m.lapse_links(t2, false)), 301);
    assert_eq!(ok(m.content_counts()).blobs, 0);
}

/// A full batch of manifests push-up still needs (with `keep_outbox`) does not stop the pass
/// before the deletable ones behind it.
pub(super) fn kept_batches_do_not_hide_deletable_manifests(m: &dyn MetadataStore) {
    let config = blob(b"outbox config");
    link(m, "pushme", &config);
    for i in 0..300 {
        let man = image(&config, &[], json!({"annotations": {"n": i.to_string()}}));
        put(m, Origin::Client, "pushme", &man, &[]);
    }
    next_second(now_secs());
    let mirrored = blob(b"mirrored config");
    link(m, "mirror", &mirrored);
    for i in 0..5 {
        let man = image(&mirrored, &[], json!({"annotations": {"n": i.to_string()}}));
        put(m, Origin::Sync, "mirror", &man, &[]);
    }
    let t1 = now_secs();
    assert_eq!(ok(m.expire_untagged(t1, true, true)), 5, "a dry run");
    assert_eq!(ok(m.expire_untagged(t1, true, false)), 5);
    assert_eq!(ok(m.content_counts()).manifests, 300);
}
