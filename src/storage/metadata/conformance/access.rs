//! Access records: scope maps and tokens, their errors, and the generation counter.

use super::*;
use crate::storage::error::StorageError;
use crate::storage::metadata::{RecordSource, ScopeMapRow, TokenRow};

/// A scope map row to store (its `updated` is the store's to set).
pub(super) fn scope_map(name: &str, source: RecordSource, created: i64) -> ScopeMapRow {
    ScopeMapRow {
        name: name.to_owned(),
        description: Some(format!("{name} for tests")),
        actions: r#"[{"repository":"app","actions":["pull"]}]"#.to_owned(),
        gateways: "[]".to_owned(),
        source,
        created,
        updated: 0,
    }
}

/// A token row on `map` to store (its `updated` is the store's to set).
pub(super) fn token(name: &str, map: &str, source: RecordSource, created: i64) -> TokenRow {
    TokenRow {
        name: name.to_owned(),
        scope_map: map.to_owned(),
        status: "enabled".to_owned(),
        passwords: r#"[{"name":"password1","hash":"$2b$04$x"}]"#.to_owned(),
        source,
        created,
        updated: 0,
    }
}

/// The access generation.
fn generation(m: &dyn MetadataStore) -> i64 {
    ok(m.access_generation())
}

/// Expects `AlreadyExists`, `NotFound` or `InUse` (by `kind`) with a message containing `what`.
#[track_caller]
fn refused(r: Result<()>, kind: &str, what: &str) {
    let msg = match (kind, r) {
        ("AlreadyExists", Err(StorageError::AlreadyExists(msg)))
        | ("NotFound", Err(StorageError::NotFound(msg)))
        | ("InUse", Err(StorageError::InUse(msg))) => msg,
        (_, other) => panic!("expected {kind}, got {other:?}"),
    };
    assert!(msg.contains(what), "{kind}: {msg}");
}

/// Checks `stored` is `row` as stored at a time in `[since, now]`, created at `created`.
#[track_caller]
fn stored_map(stored: Option<ScopeMapRow>, row: &ScopeMapRow, created: i64, since: i64) {
    let stored = stored.unwrap_or_else(|| panic!("scope map {} missing", row.name));
    assert!((since..=now_secs()).contains(&stored.updated), "{stored:?}");
    let want = ScopeMapRow {
        created,
        updated: stored.updated,
        ..row.clone()
    };
    assert_eq!(stored, want);
}

/// A scope map is created once, replaced only when it exists (keeping its creation time) and
/// deleted only when no token uses it; each change bumps the generation, each refusal not.
pub(super) fn scope_maps_are_created_and_replaced(m: &dyn MetadataStore) {
    let t0 = now_secs();
    let g = generation(m);
    let readers = scope_map("readers", RecordSource::Local, 1000);
    ok(m.put_scope_map(&readers, true));
    assert_eq!(generation(m), g + 1);
    stored_map(ok(m.scope_map("readers")), &readers, 1000, t0);
    refused(m.put_scope_map(&readers, true), "AlreadyExists", "readers");
    refused(
        m.put_scope_map(&scope_map("nope", RecordSource::Local, 1), false),
        "NotFound",
        "nope",
    );
    assert_eq!(ok(m.scope_map("nope")), None);
    assert_eq!(generation(m), g + 1, "refusals change nothing");

    let replacement = ScopeMapRow {
        description: None,
        actions: r#"[{"repository":"*","actions":["pull","push"]}]"#.to_owned(),
        gateways: r#"[{"gateway":"edge","actions":["read"]}]"#.to_owned(),
        source: RecordSource::Parent,
        created: 2000,
        ..readers.clone()
    };
    ok(m.put_scope_map(&replacement, false));
    assert_eq!(generation(m), g + 2);
    stored_map(ok(m.scope_map("readers")), &replacement, 1000, t0);

    refused(m.delete_scope_map("nope"), "NotFound", "nope");
    ok(m.put_token(&token("t1", "readers", RecordSource::Local, 5), true));
    ok(m.put_token(&token("t0", "readers", RecordSource::Local, 5), true));
    assert_eq!(generation(m), g + 4);
    refused(m.delete_scope_map("readers"), "InUse", "t0, t1");
    assert!(ok(m.scope_map("readers")).is_some());
    assert_eq!(generation(m), g + 4);
    ok(m.delete_token("t0"));
    ok(m.delete_token("t1"));
    ok(m.delete_scope_map("readers"));
    assert_eq!(generation(m), g + 7);
    assert_eq!(ok(m.scope_map("readers")), None);
}

/// A token needs its scope map (checked before anything else); it is created once, replaced
/// only when it exists (keeping its creation time) and deleted once; each change bumps the
/// generation, each refusal not.
pub(super) fn tokens_need_their_scope_map(m: &dyn MetadataStore) {
    let t0 = now_secs();
    let g = generation(m);
    let t = token("t", "m1", RecordSource::Local, 100);
    refused(m.put_token(&t, true), "NotFound", "m1");
    assert_eq!(ok(m.token("t")), None);
    assert_eq!(generation(m), g);
    ok(m.put_scope_map(&scope_map("m1", RecordSource::Local, 1), true));
    ok(m.put_scope_map(&scope_map("m2", RecordSource::Local, 1), true));
    let g = generation(m);
    ok(m.put_token(&t, true));
    assert_eq!(generation(m), g + 1);
    let stored = ok(m.token("t")).unwrap_or_else(|| panic!("token t missing"));
    assert!((t0..=now_secs()).contains(&stored.updated), "{stored:?}");
    assert_eq!(
        stored,
        TokenRow {
            updated: stored.updated,
            ..t.clone()
        }
    );

    refused(m.put_token(&t, true), "AlreadyExists", "'t'");
    let orphan = token("t", "missing", RecordSource::Local, 1);
    refused(m.put_token(&orphan, true), "NotFound", "missing");
    refused(
        m.put_token(&token("u", "m1", RecordSource::Local, 1), false),
        "NotFound",
        "'u'",
    );
    assert_eq!(generation(m), g + 1);

    let replacement = TokenRow {
        scope_map: "m2".to_owned(),
        status: "disabled".to_owned(),
        passwords: "[]".to_owned(),
        source: RecordSource::Parent,
        created: 999,
        ..t.clone()
    };
    ok(m.put_token(&replacement, false));
    assert_eq!(generation(m), g + 2);
    let stored = ok(m.token("t")).unwrap_or_else(|| panic!("token t missing"));
    let want = TokenRow {
        created: 100,
        updated: stored.updated,
        ..replacement
    };
    assert_eq!(stored, want, "the creation time is kept");

    ok(m.delete_token("t"));
    assert_eq!(ok(m.token("t")), None);
    refused(m.delete_token("t"), "NotFound", "'t'");
    assert_eq!(generation(m), g + 3);
}

/// The rows in force leave relayed records out; all rows take them in; both sorted bytewise by
/// name, with the generation they were read at.
pub(super) fn access_rows_leave_relays_out(m: &dyn MetadataStore) {
    let maps = [
        scope_map("b-local", RecordSource::Local, 1),
        scope_map("A-parent", RecordSource::Parent, 2),
        scope_map("a_relay", RecordSource::Relay, 3),
        scope_map("Z", RecordSource::Local, 4),
    ];
    for map in &maps {
        ok(m.put_scope_map(map, true));
    }
    let tokens = [
        token("tok-relay", "a_relay", RecordSource::Relay, 5),
        token("Tok-parent", "A-parent", RecordSource::Parent, 6),
        token("tok-local", "b-local", RecordSource::Local, 7),
    ];
    for t in &tokens {
        ok(m.put_token(t, true));
    }
    let map_names = |rows: &[ScopeMapRow]| rows.iter().map(|r| r.name.clone()).collect::<Vec<_>>();
    let token_names = |rows: &[TokenRow]| rows.iter().map(|r| r.name.clone()).collect::<Vec<_>>();

    let in_force = ok(m.access_rows());
    assert_eq!(in_force.generation, generation(m));
    assert_eq!(
        map_names(&in_force.scope_maps),
        ["A-parent", "Z", "b-local"]
    );
    assert_eq!(token_names(&in_force.tokens), ["Tok-parent", "tok-local"]);
    let every = ok(m.all_access_rows());
    assert_eq!(every.generation, generation(m));
    assert_eq!(
        map_names(&every.scope_maps),
        ["A-parent", "Z", "a_relay", "b-local"]
    );
    assert_eq!(
        token_names(&every.tokens),
        ["Tok-parent", "tok-local", "tok-relay"]
    );
    for row in &every.scope_maps {
        assert_eq!(ok(m.scope_map(&row.name)).as_ref(), Some(row));
    }
    for row in &every.tokens {
        assert_eq!(ok(m.token(&row.name)).as_ref(), Some(row));
    }
}
