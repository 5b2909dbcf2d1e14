//! Audit lines for changes to tokens and scope maps: one `INFO audit event="token_created" …`
//! line per change, written by the process that makes it (a management command) and by a running
//! server that notices it in the records (a command run elsewhere, or the parent's
//! configuration). Names, slots and sources only: never a password or hash.

use std::collections::BTreeMap;

use serde_json::Value;

use super::token::{status_str, Token};
use crate::storage::metadata::{AccessRows, RecordSource, ScopeMapRow, TokenRow};

/// What changed in the access records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeEvent {
    /// A token appeared.
    TokenCreated,
    /// A token's scope map or source changed, or a password's expiry.
    TokenUpdated,
    /// A token was enabled.
    TokenEnabled,
    /// A token was disabled.
    TokenDisabled,
    /// A password slot was (re)generated.
    TokenPasswordGenerated,
    /// A password slot was removed.
    TokenPasswordDeleted,
    /// A token disappeared.
    TokenDeleted,
    /// A scope map appeared.
    ScopeMapCreated,
    /// A scope map's grants, gateways, description or source changed.
    ScopeMapUpdated,
    /// A scope map disappeared.
    ScopeMapDeleted,
}

impl ChangeEvent {
    /// The `event` field's value.
    pub const fn as_str(self) -> &'static str {
        match self {
            ChangeEvent::TokenCreated => "token_created",
            ChangeEvent::TokenUpdated => "token_updated",
            ChangeEvent::TokenEnabled => "token_enabled",
            ChangeEvent::TokenDisabled => "token_disabled",
            ChangeEvent::TokenPasswordGenerated => "token_password_generated",
            ChangeEvent::TokenPasswordDeleted => "token_password_deleted",
            ChangeEvent::TokenDeleted => "token_deleted",
            ChangeEvent::ScopeMapCreated => "scope_map_created",
            ChangeEvent::ScopeMapUpdated => "scope_map_updated",
            ChangeEvent::ScopeMapDeleted => "scope_map_deleted",
        }
    }

    /// Whether the record changed is a token (else a scope map).
    const fn is_token(self) -> bool {
        !matches!(
            self,
            ChangeEvent::ScopeMapCreated
                | ChangeEvent::ScopeMapUpdated
                | ChangeEvent::ScopeMapDeleted
        )
    }
}

/// One change, ready to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessChange {
    /// What happened.
    pub event: ChangeEvent,
    /// The token's or scope map's name.
    pub name: String,
    /// Where the record comes from (after the change; before it for a deletion).
    pub source: RecordSource,
    /// What changed, in a few words (`scope_map a -> b`, `password1`); empty when the event says
    /// it all.
    pub detail: String,
}

impl AccessChange {
    fn new(event: ChangeEvent, name: &str, source: RecordSource, detail: String) -> Self {
        AccessChange {
            event,
            name: name.to_owned(),
            source,
            detail,
        }
    }
}

/// Writes one audit line per change.
pub fn record(changes: &[AccessChange]) {
    for c in changes {
        let (event, source) = (c.event.as_str(), c.source.as_str());
        if c.event.is_token() {
            tracing::info!(target: "audit", event, token = %c.name, source, detail = %c.detail, "audit");
        } else {
            tracing::info!(target: "audit", event, scope_map = %c.name, source, detail = %c.detail, "audit");
        }
    }
}

/// Logs changes made by this process; a management command starts the logger first, since it
/// has none of its own (a server already has one, and then this does nothing).
pub fn record_here(changes: &[AccessChange]) {
    #[cfg(not(test))]
    if !tracing::dispatcher::has_been_set() {
        let _ = crate::config::logging::init(None);
    }
    record(changes);
}

/// The audited parts of a token: no hashes, only which slots exist and when they were made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    source: RecordSource,
    scope_map: String,
    enabled: bool,
    /// Slot name → (created, expiry).
    slots: BTreeMap<String, (i64, Option<i64>)>,
}

impl TokenRecord {
    /// The record of a token with the given source.
    pub fn of(t: &Token, source: RecordSource) -> Self {
        TokenRecord {
            source,
            scope_map: t.scope_map.clone(),
            enabled: t.enabled,
            slots: t
                .passwords
                .iter()
                .map(|p| (p.name.clone(), (p.created, p.expiry)))
                .collect(),
        }
    }

    /// The record of a stored token.
    pub fn from_row(row: &TokenRow) -> Self {
        match Token::from_row(row) {
            Ok(t) => Self::of(&t, row.source),
            // Unreadable passwords: still audit name, status and scope map.
            Err(_) => TokenRecord {
                source: row.source,
                scope_map: row.scope_map.clone(),
                enabled: row.status == "enabled",
                slots: BTreeMap::new(),
            },
        }
    }
}

/// The audited parts of a scope map, JSON compared as values so formatting does not count.
#[derive(Debug, Clone, PartialEq)]
pub struct MapRecord {
    source: RecordSource,
    description: Option<String>,
    actions: Value,
    gateways: Value,
}

impl MapRecord {
    /// The record of a stored scope map.
    pub fn from_row(row: &ScopeMapRow) -> Self {
        let parse = |s: &str| serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.into()));
        MapRecord {
            source: row.source,
            description: row.description.clone(),
            actions: parse(&row.actions),
            gateways: parse(&row.gateways),
        }
    }
}

/// Every token and scope map (relayed ones included), as audited.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Records {
    tokens: BTreeMap<String, TokenRecord>,
    maps: BTreeMap<String, MapRecord>,
}

impl Records {
    /// Reads the records of all rows.
    pub fn from_rows(rows: &AccessRows) -> Self {
        Records {
            tokens: rows
                .tokens
                .iter()
                .map(|r| (r.name.clone(), TokenRecord::from_row(r)))
                .collect(),
            maps: rows
                .scope_maps
                .iter()
                .map(|r| (r.name.clone(), MapRecord::from_row(r)))
                .collect(),
        }
    }
}

/// The changes from `old` to `new`, tokens first, by name.
pub fn diff(old: &Records, new: &Records) -> Vec<AccessChange> {
    let mut out = Vec::new();
    for name in union(&old.tokens, &new.tokens) {
        out.extend(diff_token(name, old.tokens.get(name), new.tokens.get(name)));
    }
    for name in union(&old.maps, &new.maps) {
        out.extend(diff_map(name, old.maps.get(name), new.maps.get(name)));
    }
    out
}

fn union<'a, V>(a: &'a BTreeMap<String, V>, b: &'a BTreeMap<String, V>) -> Vec<&'a String> {
    let mut names: Vec<&String> = a.keys().chain(b.keys()).collect();
    names.sort();
    names.dedup();
    names
}

/// The changes to one token; `None` is absent.
pub fn diff_token(
    name: &str,
    old: Option<&TokenRecord>,
    new: Option<&TokenRecord>,
) -> Vec<AccessChange> {
    use ChangeEvent::*;
    let (o, n) = match (old, new) {
        (None, None) => return Vec::new(),
        (None, Some(n)) => {
            let detail = format!("scope_map {}, {}", n.scope_map, status_str(n.enabled));
            return vec![AccessChange::new(TokenCreated, name, n.source, detail)];
        }
        (Some(o), None) => return vec![AccessChange::new(TokenDeleted, name, o.source, "".into())],
        (Some(o), Some(n)) => (o, n),
    };
    let change = |event, detail: String| AccessChange::new(event, name, n.source, detail);
    let mut out = Vec::new();
    if o.source != n.source {
        let d = format!("source {} -> {}", o.source.as_str(), n.source.as_str());
        out.push(change(TokenUpdated, d));
    }
    if o.scope_map != n.scope_map {
        out.push(change(
            TokenUpdated,
            format!("scope_map {} -> {}", o.scope_map, n.scope_map),
        ));
    }
    if o.enabled != n.enabled {
        let event = if n.enabled {
            TokenEnabled
        } else {
            TokenDisabled
        };
        out.push(change(event, String::new()));
    }
    for slot in union(&o.slots, &n.slots) {
        match (o.slots.get(slot), n.slots.get(slot)) {
            (Some(a), Some(b)) if a.0 == b.0 && a.1 != b.1 => {
                out.push(change(TokenUpdated, format!("{slot} expiry")));
            }
            (a, Some(b)) if a.map(|a| a.0) != Some(b.0) => {
                out.push(change(TokenPasswordGenerated, slot.clone()));
            }
            (Some(_), None) => out.push(change(TokenPasswordDeleted, slot.clone())),
            _ => {}
        }
    }
    out
}

/// The changes to one scope map; `None` is absent.
pub fn diff_map(name: &str, old: Option<&MapRecord>, new: Option<&MapRecord>) -> Vec<AccessChange> {
    use ChangeEvent::*;
    let ch = |e, s, d: &str| vec![AccessChange::new(e, name, s, d.to_owned())];
    match (old, new) {
        (None, Some(n)) => ch(ScopeMapCreated, n.source, ""),
        (Some(o), None) => ch(ScopeMapDeleted, o.source, ""),
        (Some(o), Some(n)) if o != n => {
            let parts = [
                (o.actions != n.actions, "repositories"),
                (o.gateways != n.gateways, "gateways"),
                (o.description != n.description, "description"),
                (o.source != n.source, "source"),
            ];
            let what: Vec<&str> = parts.iter().filter(|p| p.0).map(|p| p.1).collect();
            ch(ScopeMapUpdated, n.source, &what.join(", "))
        }
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::token::PasswordSlot;

    fn token(map: &str, enabled: bool, slots: &[(&str, i64)]) -> TokenRecord {
        let t = Token {
            name: "t".into(),
            scope_map: map.into(),
            enabled,
            passwords: slots
                .iter()
                .map(|(n, c)| PasswordSlot {
                    name: (*n).into(),
                    hash: "$argon2id$secret-hash".into(),
                    created: *c,
                    expiry: None,
                })
                .collect(),
            created: 1,
        };
        TokenRecord::of(&t, RecordSource::Local)
    }

    fn map_row(actions: &str, source: RecordSource) -> ScopeMapRow {
        ScopeMapRow {
            name: "m".into(),
            description: None,
            actions: actions.into(),
            gateways: "[]".into(),
            source,
            created: 1,
            updated: 1,
        }
    }

    fn events(c: &[AccessChange]) -> Vec<(&str, &str, &str)> {
        c.iter()
            .map(|c| (c.event.as_str(), c.name.as_str(), c.detail.as_str()))
            .collect()
    }

    #[test]
    fn token_created_deleted_and_unchanged() {
        let t = token("m", true, &[("password1", 5)]);
        let c = diff_token("t", None, Some(&t));
        assert_eq!(events(&c), [("token_created", "t", "scope_map m, enabled")]);
        let c = diff_token("t", Some(&t), None);
        assert_eq!(events(&c), [("token_deleted", "t", "")]);
        assert!(diff_token("t", Some(&t), Some(&t.clone())).is_empty());
    }

    #[test]
    fn token_changes_each_give_one_line() {
        let old = token("m", true, &[("password1", 5), ("password2", 5)]);
        let new = token("n", false, &[("password1", 9)]);
        let c = diff_token("t", Some(&old), Some(&new));
        assert_eq!(
            events(&c),
            [
                ("token_updated", "t", "scope_map m -> n"),
                ("token_disabled", "t", ""),
                ("token_password_generated", "t", "password1"),
                ("token_password_deleted", "t", "password2"),
            ]
        );
        let c = diff_token(
            "t",
            Some(&new),
            Some(&token("n", true, &[("password1", 9)])),
        );
        assert_eq!(events(&c), [("token_enabled", "t", "")]);
    }

    #[test]
    fn scope_maps_compare_by_value_and_carry_the_source() {
        let a = MapRecord::from_row(&map_row(
            r#"[{"repository":"a","actions":[]}]"#,
            RecordSource::Parent,
        ));
        let same = MapRecord::from_row(&map_row(
            r#"[ { "actions": [], "repository": "a" } ]"#,
            RecordSource::Parent,
        ));
        assert!(diff_map("m", Some(&a), Some(&same)).is_empty());
        let b = MapRecord::from_row(&map_row(
            r#"[{"repository":"b","actions":[]}]"#,
            RecordSource::Parent,
        ));
        let c = diff_map("m", Some(&a), Some(&b));
        assert_eq!(events(&c), [("scope_map_updated", "m", "repositories")]);
        assert_eq!(c[0].source, RecordSource::Parent);
        assert_eq!(
            events(&diff_map("m", None, Some(&b)))[0].0,
            "scope_map_created"
        );
        assert_eq!(
            events(&diff_map("m", Some(&b), None))[0].0,
            "scope_map_deleted"
        );
    }

    #[test]
    fn records_diff_covers_relayed_rows_and_never_a_hash() {
        let row = |name: &str, source| TokenRow {
            name: name.into(),
            scope_map: "m".into(),
            status: "enabled".into(),
            passwords:
                r#"[{"name":"password1","hash":"$argon2id$HASH","created":3,"expiry":null}]"#.into(),
            source,
            created: 1,
            updated: 1,
        };
        let old = Records::from_rows(&AccessRows {
            generation: 1,
            scope_maps: vec![],
            tokens: vec![row("a", RecordSource::Local)],
        });
        let new = Records::from_rows(&AccessRows {
            generation: 2,
            scope_maps: vec![map_row("[]", RecordSource::Relay)],
            tokens: vec![row("b", RecordSource::Relay)],
        });
        let c = diff(&old, &new);
        assert_eq!(
            events(&c),
            [
                ("token_deleted", "a", ""),
                ("token_created", "b", "scope_map m, enabled"),
                ("scope_map_created", "m", ""),
            ]
        );
        assert_eq!(c[1].source, RecordSource::Relay);
        assert!(!format!("{c:?}").contains("HASH"));
    }
}
