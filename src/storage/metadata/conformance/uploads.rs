//! Upload sessions: recorded by id, touched, found idle, and capped.

use super::*;
use crate::storage::error::StorageError;
use crate::storage::uploads::SessionCaps;

/// Caps no check reaches.
const ROOMY: SessionCaps = SessionCaps {
    total: 100,
    per_client: 100,
    per_repository: 100,
};

/// Every session id, sorted.
fn all(m: &dyn MetadataStore) -> Vec<String> {
    let mut ids = ok(m.all_uploads());
    ids.sort();
    ids
}

/// The sessions idle since before `cutoff`, sorted.
fn idle(m: &dyn MetadataStore, cutoff: i64) -> Vec<String> {
    let mut ids = ok(m.idle_uploads(cutoff));
    ids.sort();
    ids
}

/// A session belongs to its repository until deleted; an id is used once; touching or
/// deleting an unknown session is no error.
pub(super) fn sessions_are_recorded(m: &dyn MetadataStore) {
    assert!(all(m).is_empty());
    ok(m.create_upload("u1", &name("app"), "c1", &ROOMY));
    ok(m.create_upload("u2", &name("other"), "c1", &ROOMY));
    assert_eq!(ok(m.upload_repo("u1")).as_deref(), Some("app"));
    assert_eq!(ok(m.upload_repo("u2")).as_deref(), Some("other"));
    assert_eq!(ok(m.upload_repo("nope")), None);
    assert_eq!(all(m), ["u1", "u2"]);
    let again = m.create_upload("u1", &name("third"), "c2", &ROOMY);
    assert!(again.is_err(), "an id is used once");
    assert_eq!(ok(m.upload_repo("u1")).as_deref(), Some("app"));

    ok(m.delete_upload("u1"));
    assert_eq!(ok(m.upload_repo("u1")), None);
    assert_eq!(all(m), ["u2"]);
    ok(m.delete_upload("u1"));
    ok(m.delete_upload("nope"));
    ok(m.touch_upload("nope"));
    assert_eq!(ok(m.upload_repo("nope")), None);
}

/// A session is idle since its creation or last touch: `idle_uploads` finds those before the
/// cutoff (strictly).
pub(super) fn idle_sessions_follow_touches(m: &dyn MetadataStore) {
    let t0 = now_secs();
    ok(m.create_upload("u1", &name("app"), "c1", &ROOMY));
    ok(m.create_upload("u2", &name("app"), "c2", &ROOMY));
    let t1 = now_secs();
    assert!(idle(m, t0).is_empty());
    assert_eq!(idle(m, t1 + 1), ["u1", "u2"]);
    let before_touch = next_second(t1);
    ok(m.touch_upload("u1"));
    assert_eq!(idle(m, before_touch), ["u2"]);
    assert_eq!(idle(m, now_secs() + 1), ["u1", "u2"]);
    assert_eq!(all(m), ["u1", "u2"]);
}

/// Expects `TooManySessions` naming the cap `what` (`registry`, `repository` or `client`).
#[track_caller]
fn refused(r: Result<()>, what: &str) {
    match r {
        Err(StorageError::TooManySessions(msg)) => assert!(msg.contains(what), "{msg}"),
        other => panic!("expected TooManySessions ({what}), got {other:?}"),
    }
}

/// The caps on open sessions in all, per repository and per client refuse a new session
/// (checked in that order) with `TooManySessions`, recording nothing.
pub(super) fn caps_refuse_new_sessions(m: &dyn MetadataStore) {
    let caps = SessionCaps {
        total: 3,
        per_client: 2,
        per_repository: 2,
    };
    let create =
        |id: &str, repo: &str, client: &str| m.create_upload(id, &name(repo), client, &caps);
    ok(create("u1", "a", "c1"));
    ok(create("u2", "a", "c2"));
    refused(create("u3", "a", "c3"), "in this repository");
    assert_eq!(ok(m.upload_repo("u3")), None);
    ok(create("u3", "b", "c1"));
    refused(create("u4", "c", "c4"), "in this registry");
    refused(create("u4", "a", "c1"), "in this registry");
    ok(m.delete_upload("u2"));
    refused(create("u4", "b", "c1"), "from this client");
    assert_eq!(ok(m.upload_repo("u4")), None);
    ok(create("u4", "b", "c2"));
    assert_eq!(all(m), ["u1", "u3", "u4"]);
    let wider = SessionCaps { total: 10, ..caps };
    let full_both = m.create_upload("u5", &name("b"), "c1", &wider);
    refused(full_both, "in this repository");

    let none_per_repo = SessionCaps {
        per_repository: 0,
        ..ROOMY
    };
    refused(
        m.create_upload("u5", &name("d"), "c5", &none_per_repo),
        "in this repository",
    );
    let none_at_all = SessionCaps { total: 0, ..ROOMY };
    refused(
        m.create_upload("u5", &name("d"), "c5", &none_at_all),
        "in this registry",
    );
    assert_eq!(all(m), ["u1", "u3", "u4"]);
}
