//! The event log: reading it in order, the push-up outbox and the change feeds.

use super::*;

/// Events come back oldest first after a sequence number, at most `limit`, and the newest
/// sequence number is the last one's (0 with none).
pub(super) fn events_follow_in_order(m: &dyn MetadataStore) {
    assert!(ok(m.events_after(0, 10)).is_empty());
    assert_eq!(newest(m), 0);
    let t0 = now_secs();
    push(m, Origin::Client, "a", "one", &["v1"]);
    push(m, Origin::Sync, "b", "two", &["v2"]);
    ok(m.delete_tag(&name("a"), &tag("v1")));
    let all = all_events(m);
    let repos: Vec<&str> = all.iter().map(|e| e.repo.as_str()).collect();
    assert_eq!(repos, ["a", "a", "b", "b", "a"]);
    assert_eq!(changes(&all, t0).len(), 5, "in order, times now");
    assert_eq!(newest(m), all[4].seq);
    assert!(all[0].seq > 0);

    assert_eq!(ok(m.events_after(0, 2)), all[..2]);
    assert_eq!(ok(m.events_after(all[1].seq, 2)), all[2..4]);
    assert_eq!(ok(m.events_after(all[3].seq, 10)), all[4..]);
    assert!(ok(m.events_after(all[4].seq, 10)).is_empty());
    assert!(ok(m.events_after(0, 0)).is_empty());
}

/// The outbox of a repository is its client-made events (not sync's, not collection's),
/// oldest first, after a cursor, at most `limit`; its size counts them and gives the oldest
/// one's time.
pub(super) fn client_events_and_outbox_size(m: &dyn MetadataStore) {
    let t0 = now_secs();
    let a = name("a");
    assert_eq!(ok(m.outbox_size("a", 0)), (0, None));
    push(m, Origin::Client, "a", "one", &["v1"]);
    push(m, Origin::Sync, "a", "two", &["v2"]);
    ok(m.delete_tag_as(Origin::Gc, &a, &tag("v2")));
    push(m, Origin::Client, "b", "three", &[]);
    ok(m.delete_tag_as(Origin::Client, &a, &tag("v1")));

    let mine: Vec<Event> = all_events(m)
        .into_iter()
        .filter(|e| e.repo == "a" && e.origin == Origin::Client)
        .collect();
    assert_eq!(mine.len(), 3);
    assert_eq!(ok(m.client_events("a", 0, 100)), mine);
    assert_eq!(ok(m.client_events("a", 0, 2)), mine[..2]);
    assert_eq!(ok(m.client_events("a", mine[0].seq, 100)), mine[1..]);
    assert_eq!(ok(m.client_events("a", mine[1].seq, 100)), mine[2..]);
    assert!(ok(m.client_events("a", 0, 0)).is_empty());
    assert!(ok(m.client_events("nowhere", 0, 10)).is_empty());
    assert!(ok(m.client_events("a", newest(m), 10)).is_empty());

    let oldest = mine.iter().map(|e| e.time).min();
    assert!(oldest.is_some_and(|t| t >= t0));
    assert_eq!(ok(m.outbox_size("a", 0)), (3, oldest));
    assert_eq!(ok(m.outbox_size("a", mine[1].seq)), (1, Some(mine[2].time)));
    assert_eq!(ok(m.outbox_size("a", newest(m))), (0, None));
    assert_eq!(ok(m.outbox_size("b", 0)).0, 1);
    assert_eq!(ok(m.outbox_size("nowhere", 0)), (0, None));
}

/// The outbox's bytes: for each client manifest push after the cursor, the blobs it references
/// (counted per push) and the manifest itself; sync pushes and tag events add nothing.
pub(super) fn outbox_bytes_of_client_pushes(m: &dyn MetadataStore) {
    let (config, l1, l2) = (
        blob(b"config"),
        blob(b"first layer"),
        blob(b"the second layer"),
    );
    for b in [&config, &l1, &l2] {
        link(m, "app", b);
    }
    let one = image(&config, &[&l1, &l2], Value::Null);
    put(m, Origin::Client, "app", &one, &["v1", "latest"]);
    let first = config.size + l1.size + l2.size + one.size();
    assert_eq!(ok(m.outbox_bytes("app", 0)), first);
    assert_eq!(ok(m.outbox_bytes("app", newest(m))), 0);
    assert_eq!(ok(m.outbox_bytes("other", 0)), 0);

    push(m, Origin::Sync, "app", "synced", &["s"]);
    assert_eq!(
        ok(m.outbox_bytes("app", 0)),
        first,
        "sync pushes are not sent"
    );
    let seq = newest(m);
    let l3 = blob(b"a third layer, longer");
    link(m, "app", &l3);
    let two = image(&config, &[&l3], json!({"annotations": {"n": "2"}}));
    put(m, Origin::Client, "app", &two, &[]);
    let second = config.size + l3.size + two.size();
    assert_eq!(ok(m.outbox_bytes("app", seq)), second);
    assert_eq!(
        ok(m.outbox_bytes("app", 0)),
        first + second,
        "the config counts per push"
    );
    ok(m.set_tag_as(Origin::Client, &name("app"), &tag("t"), &two.digest));
    assert_eq!(
        ok(m.outbox_bytes("app", seq)),
        second,
        "tag events add nothing"
    );
}

/// The repositories among those asked about with an event (of any origin) after `after`, in
/// bytewise order, and the newest sequence number.
pub(super) fn changed_repositories_after(m: &dyn MetadataStore) {
    let asked = strings(&["zed", "a_b", "a-b", "a.b", "nope"]);
    assert_eq!(ok(m.changed_repositories(0, &asked)), (Vec::new(), 0));
    push(m, Origin::Client, "a_b", "one", &["v1"]);
    push(m, Origin::Sync, "a-b", "two", &[]);
    push(m, Origin::Client, "a.b", "three", &[]);
    push(m, Origin::Client, "unasked", "four", &[]);
    let before_zed = newest(m);
    push(m, Origin::Client, "zed", "five", &["v1"]);
    let n = newest(m);
    let changed = strings(&["a-b", "a.b", "a_b", "zed"]);
    assert_eq!(ok(m.changed_repositories(0, &asked)), (changed, n));
    assert_eq!(
        ok(m.changed_repositories(0, &strings(&["a.b"]))),
        (strings(&["a.b"]), n)
    );
    assert_eq!(ok(m.changed_repositories(0, &[])), (Vec::new(), n));
    assert_eq!(
        ok(m.changed_repositories(before_zed, &asked)),
        (strings(&["zed"]), n)
    );
    assert_eq!(ok(m.changed_repositories(n, &asked)), (Vec::new(), n));
}

/// The repositories with client-made events after `after`, in bytewise order, and the newest
/// sequence number of any origin.
pub(super) fn client_changes_after(m: &dyn MetadataStore) {
    assert_eq!(ok(m.client_changes_after(0)), (Vec::new(), 0));
    push(m, Origin::Sync, "mirror", "one", &["v1"]);
    assert_eq!(ok(m.client_changes_after(0)), (Vec::new(), newest(m)));
    push(m, Origin::Client, "b", "two", &[]);
    let after_b = newest(m);
    push(m, Origin::Client, "a_b", "three", &["v1"]);
    push(m, Origin::Client, "a-b", "four", &[]);
    ok(m.delete_tag_as(Origin::Gc, &name("mirror"), &tag("v1")));
    let n = newest(m);
    assert_eq!(
        ok(m.client_changes_after(0)),
        (strings(&["a-b", "a_b", "b"]), n)
    );
    assert_eq!(
        ok(m.client_changes_after(after_b)),
        (strings(&["a-b", "a_b"]), n)
    );
    assert_eq!(ok(m.client_changes_after(n)), (Vec::new(), n));
}
