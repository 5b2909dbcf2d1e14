//! Sync state: values by key, families listed by prefix, counters.

use super::*;
use crate::storage::metadata::{StateKey, StatePrefix};

/// The value of `key`.
fn get(m: &dyn MetadataStore, key: StateKey<'_>) -> Option<String> {
    ok(m.sync_state(&key))
}

/// Sets (or with `None` removes) the value of `key`.
fn set(m: &dyn MetadataStore, key: StateKey<'_>, value: Option<&str>) {
    ok(m.set_sync_state(&key, value));
}

/// Values are set, replaced and removed (removing an absent one is no error), exactly as given:
/// an empty value is a value.
pub(super) fn values_are_set_and_removed(m: &dyn MetadataStore) {
    assert_eq!(get(m, StateKey::Status), None);
    set(m, StateKey::Status, Some("{\"state\":\"ok\"}"));
    assert_eq!(
        get(m, StateKey::Status).as_deref(),
        Some("{\"state\":\"ok\"}")
    );
    set(m, StateKey::Status, Some("line one\nünïcödé ✓"));
    assert_eq!(
        get(m, StateKey::Status).as_deref(),
        Some("line one\nünïcödé ✓")
    );
    set(m, StateKey::HierarchyCursor, Some(""));
    assert_eq!(get(m, StateKey::HierarchyCursor).as_deref(), Some(""));
    assert_eq!(get(m, StateKey::HierarchyTree), None);
    set(m, StateKey::Status, None);
    assert_eq!(get(m, StateKey::Status), None);
    set(m, StateKey::Status, None);
    assert_eq!(get(m, StateKey::HierarchyCursor).as_deref(), Some(""));
}

/// A family lists the names after its prefix with their values, in bytewise order of the key;
/// names holding `_`, `%` or another family's prefix match only their own family.
pub(super) fn prefixed_families(m: &dyn MetadataStore) {
    let digest = "sha256:00";
    let entries = [
        (StateKey::PushCursor("app"), "1"),
        (StateKey::PushCursor("a_b"), "2"),
        (StateKey::PushCursor("a%b"), "3"),
        (StateKey::PushCursor("Zed"), "4"),
        (StateKey::PushCursor("a-b"), "5"),
        (StateKey::PushCursor("a.b"), "6"),
        (StateKey::PushCursor("repo:x"), "7"),
        (StateKey::SyncedRepo("app"), "{}"),
        (StateKey::SyncedRepo("a_"), "{\"x\":1}"),
        (StateKey::NotifyCursor("hooks"), "8"),
        (StateKey::NotifyCursor(""), "0"),
        (
            StateKey::Upload {
                repo: "app",
                digest,
            },
            "{\"id\":1}",
        ),
        (StateKey::Status, "s"),
        (StateKey::SyncRequest, "9"),
    ];
    for (key, value) in entries {
        set(m, key, Some(value));
    }
    let listed = |p| ok(m.sync_state_prefixed(p));
    let pairs = |items: &[(&str, &str)]| -> Vec<(String, String)> {
        items
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let pushed = [
        ("Zed", "4"),
        ("a%b", "3"),
        ("a-b", "5"),
        ("a.b", "6"),
        ("a_b", "2"),
        ("app", "1"),
        ("repo:x", "7"),
    ];
    assert_eq!(listed(StatePrefix::PushCursor), pairs(&pushed));
    let repos = [("a_", "{\"x\":1}"), ("app", "{}")];
    assert_eq!(listed(StatePrefix::SyncedRepo), pairs(&repos));
    assert_eq!(
        listed(StatePrefix::NotifyCursor),
        pairs(&[("", "0"), ("hooks", "8")])
    );
    let uploads = [("app@sha256:00", "{\"id\":1}")];
    assert_eq!(listed(StatePrefix::Upload), pairs(&uploads));

    set(m, StateKey::PushCursor("a_b"), None);
    set(m, StateKey::PushCursor("a%b"), None);
    let rest: Vec<_> = pushed
        .iter()
        .filter(|(k, _)| !["a_b", "a%b"].contains(k))
        .copied()
        .collect();
    assert_eq!(listed(StatePrefix::PushCursor), pairs(&rest));
}

/// A counter counts from 1 (from 0 when its value is not a number) and is stored as text.
pub(super) fn counters_bump(m: &dyn MetadataStore) {
    let key = StateKey::SyncRequest;
    assert_eq!(ok(m.bump_sync_counter(&key)), 1);
    assert_eq!(ok(m.bump_sync_counter(&key)), 2);
    assert_eq!(ok(m.bump_sync_counter(&key)), 3);
    assert_eq!(get(m, key).as_deref(), Some("3"));
    assert_eq!(ok(m.bump_sync_counter(&StateKey::NotifyCursor("x"))), 1);
    set(m, key, Some("41"));
    assert_eq!(ok(m.bump_sync_counter(&key)), 42);
    set(m, key, Some("not a number"));
    assert_eq!(ok(m.bump_sync_counter(&key)), 1);
    assert_eq!(get(m, key).as_deref(), Some("1"));
}
