//! The tree of connected registries: definitions applied with access records, activation,
//! reported status, and the counters children long-poll on.

use super::access::{scope_map, token};
use super::*;
use crate::storage::error::StorageError;
use crate::storage::metadata::{HierarchyChange, RecordSource, RegistryRow};

/// A definition to apply (activation, status and heard are the store's).
fn registry(name: &str, source: RecordSource, created: i64) -> RegistryRow {
    RegistryRow {
        name: name.to_owned(),
        definition: format!("{{\"name\":\"{name}\",\"created\":{created}}}"),
        source,
        activation: String::new(),
        status: None,
        heard: None,
        created,
    }
}

/// `registry` as freshly stored: no activation (`{}`), no status.
fn stored(row: &RegistryRow) -> RegistryRow {
    RegistryRow {
        activation: "{}".to_owned(),
        ..row.clone()
    }
}

/// One registry, which must exist.
fn one(m: &dyn MetadataStore, name: &str) -> RegistryRow {
    ok(m.connected_registry(name)).unwrap_or_else(|| panic!("registry {name} missing"))
}

/// The names of every registry, in the store's order.
fn names(m: &dyn MetadataStore) -> Vec<String> {
    ok(m.connected_registries())
        .into_iter()
        .map(|r| r.name)
        .collect()
}

/// Applies `change`.
fn apply(m: &dyn MetadataStore, change: HierarchyChange) {
    ok(m.apply_hierarchy(&change));
}

/// The (definition, access) counters.
fn generations(m: &dyn MetadataStore) -> (i64, i64) {
    let (h, a, _) = ok(m.change_counters());
    (h, a)
}

/// Definitions and access records change together, bumping both counters once (nothing for
/// an empty change); a re-applied definition keeps its name's spelling, creation, activation and
/// status; a scope map a token still uses is not deleted; deletions are no error when unknown.
pub(super) fn apply_hierarchy_changes_both(m: &dyn MetadataStore) {
    let (h, a) = generations(m);
    apply(m, HierarchyChange::default());
    assert_eq!(generations(m), (h, a), "an empty change bumps nothing");
    let rows = [
        registry("edge-one", RecordSource::Parent, 100),
        registry("Beta", RecordSource::Local, 200),
        registry("alpha", RecordSource::Relay, 300),
    ];
    apply(
        m,
        HierarchyChange {
            registries: rows.to_vec(),
            scope_maps: vec![scope_map("m", RecordSource::Parent, 1)],
            tokens: vec![token("t", "m", RecordSource::Parent, 1)],
            ..HierarchyChange::default()
        },
    );
    assert_eq!(generations(m), (h + 1, a + 1));
    assert_eq!(
        names(m),
        ["alpha", "Beta", "edge-one"],
        "case-insensitive order"
    );
    assert_eq!(one(m, "edge-one"), stored(&rows[0]));
    assert_eq!(one(m, "Beta"), stored(&rows[1]));
    assert!(ok(m.scope_map("m")).is_some() && ok(m.token("t")).is_some());

    ok(m.set_activation("edge-one", "{\"instance\":\"i1\"}", false));
    assert!(ok(m.set_registry_status("edge-one", "{\"ok\":true}", 50)));
    let redefined = registry("EDGE-ONE", RecordSource::Local, 999);
    apply(
        m,
        HierarchyChange {
            registries: vec![redefined.clone()],
            ..HierarchyChange::default()
        },
    );
    assert_eq!(generations(m), (h + 2, a + 2));
    let want = RegistryRow {
        name: "edge-one".to_owned(),
        definition: redefined.definition,
        source: RecordSource::Local,
        activation: "{\"instance\":\"i1\"}".to_owned(),
        status: Some("{\"ok\":true}".to_owned()),
        heard: Some(50),
        created: 100,
    };
    assert_eq!(one(m, "edge-one"), want);
    assert_eq!(names(m).len(), 3);

    apply(
        m,
        HierarchyChange {
            delete_scope_maps: vec!["m".to_owned()],
            ..HierarchyChange::default()
        },
    );
    assert!(ok(m.scope_map("m")).is_some(), "token t still uses it");
    assert_eq!(generations(m), (h + 3, a + 3));
    apply(
        m,
        HierarchyChange {
            delete_tokens: strings(&["t", "unknown"]),
            delete_scope_maps: strings(&["m", "unknown"]),
            delete_registries: strings(&["ALPHA", "unknown"]),
            ..HierarchyChange::default()
        },
    );
    assert!(ok(m.scope_map("m")).is_none() && ok(m.token("t")).is_none());
    assert_eq!(names(m), ["Beta", "edge-one"]);
    assert_eq!(generations(m), (h + 4, a + 4));
}

/// A registry is found whatever the case of its name, and keeps the spelling it was defined
/// with.
pub(super) fn registries_compare_case_insensitively(m: &dyn MetadataStore) {
    let row = registry("Edge-One", RecordSource::Local, 1);
    apply(
        m,
        HierarchyChange {
            registries: vec![row.clone()],
            ..HierarchyChange::default()
        },
    );
    for asked in ["Edge-One", "edge-one", "EDGE-ONE"] {
        assert_eq!(one(m, asked), stored(&row), "{asked}");
    }
    assert_eq!(ok(m.connected_registry("edge-two")), None);
    assert_eq!(ok(m.connected_registry("")), None);
}

/// Activation is stored as given, bumping the definition counter only when announced;
/// `NotFound` for an unknown registry.
pub(super) fn activation_and_announce(m: &dyn MetadataStore) {
    apply(
        m,
        HierarchyChange {
            registries: vec![registry("edge", RecordSource::Local, 1)],
            ..HierarchyChange::default()
        },
    );
    let before = ok(m.change_counters());
    ok(m.set_activation("EDGE", "{\"instance\":\"i1\"}", false));
    assert_eq!(one(m, "edge").activation, "{\"instance\":\"i1\"}");
    assert_eq!(ok(m.change_counters()), before, "not announced");
    ok(m.set_activation("edge", "{}", true));
    assert_eq!(one(m, "edge").activation, "{}");
    let (h, a, e) = before;
    assert_eq!(ok(m.change_counters()), (h + 1, a, e));
    assert_eq!(ok(m.hierarchy_generation()), h + 1);
    match m.set_activation("missing", "{}", true) {
        Err(StorageError::NotFound(msg)) => assert!(msg.contains("missing"), "{msg}"),
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert_eq!(ok(m.change_counters()), (h + 1, a, e));
}

/// A reported status is stored with when it was heard unless what is stored is fresher (the
/// same time is fresh enough); false when kept or the registry is unknown; no counter moves.
pub(super) fn registry_status_keeps_the_fresher_report(m: &dyn MetadataStore) {
    apply(
        m,
        HierarchyChange {
            registries: vec![registry("edge", RecordSource::Local, 1)],
            ..HierarchyChange::default()
        },
    );
    let before = ok(m.change_counters());
    let status = |m: &dyn MetadataStore| {
        let r = one(m, "edge");
        (r.status, r.heard)
    };
    let report = |s: &str, t: i64| (Some(s.to_owned()), Some(t));
    assert_eq!(status(m), (None, None));
    assert!(ok(m.set_registry_status("edge", "s1", 100)));
    assert_eq!(status(m), report("s1", 100));
    assert!(!ok(m.set_registry_status("edge", "s2", 50)), "older");
    assert_eq!(status(m), report("s1", 100));
    assert!(ok(m.set_registry_status("EDGE", "s3", 100)), "as fresh");
    assert_eq!(status(m), report("s3", 100));
    assert!(ok(m.set_registry_status("edge", "s4", 200)));
    assert_eq!(status(m), report("s4", 200));
    assert!(!ok(m.set_registry_status("missing", "s", 300)));
    assert_eq!(ok(m.connected_registry("missing")), None);
    assert_eq!(ok(m.change_counters()), before);
}

/// The counters start at zero and move with access changes, definition changes and events.
pub(super) fn change_counters_move_together(m: &dyn MetadataStore) {
    assert_eq!(ok(m.change_counters()), (0, 0, 0));
    assert_eq!(
        (ok(m.hierarchy_generation()), ok(m.access_generation())),
        (0, 0)
    );
    ok(m.put_scope_map(&scope_map("m", RecordSource::Local, 1), true));
    assert_eq!(ok(m.change_counters()), (0, 1, 0));
    apply(
        m,
        HierarchyChange {
            registries: vec![registry("edge", RecordSource::Local, 1)],
            ..HierarchyChange::default()
        },
    );
    assert_eq!(ok(m.change_counters()), (1, 2, 0));
    assert_eq!(
        (ok(m.hierarchy_generation()), ok(m.access_generation())),
        (1, 2)
    );
    push(m, Origin::Client, "app", "one", &["v1"]);
    let n = newest(m);
    assert!(n > 0);
    assert_eq!(ok(m.change_counters()), (1, 2, n));
    ok(m.set_activation("edge", "{}", true));
    assert_eq!(ok(m.change_counters()), (2, 2, n));
}
