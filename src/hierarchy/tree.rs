//! Configuration down: the part of the tree a child needs (its definition, its descendants', and
//! the access records that must work there or below), built by its parent and applied by it.
//!
//! Tokens travel with their argon2 hashes only. At the child, its own client tokens and its
//! direct children's sync tokens are put in force; the rest is kept as `relay`, only to be
//! handed on further down. Local records are never touched.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::definition::{sync_token_name, Definition};
use super::family::Family;
use super::HierarchyError;
use crate::storage::metadata::{
    HierarchyChange, MetadataStore, RecordSource, RegistryRow, ScopeMapRow, TokenRow,
};

/// A scope map as it travels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WireScopeMap {
    /// Name.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// Repository grants (the stored JSON, parsed).
    pub actions: serde_json::Value,
    /// Gateway grants.
    pub gateways: serde_json::Value,
}

/// A token as it travels: hashes, never passwords.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WireToken {
    /// Name.
    pub name: String,
    /// Its scope map.
    pub scope_map: String,
    /// `enabled` or `disabled`.
    pub status: String,
    /// Password slots with argon2id hashes.
    pub passwords: serde_json::Value,
}

/// What a parent sends a child: definitions of the child and its descendants, and the records.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tree {
    /// The registry this tree is for.
    pub registry: String,
    /// It and its descendants, parents first.
    pub registries: Vec<Definition>,
    /// Scope maps of the tokens below.
    pub scope_maps: Vec<WireScopeMap>,
    /// Client tokens of the subtree and its descendants' sync tokens.
    pub tokens: Vec<WireToken>,
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or(serde_json::Value::Array(Vec::new()))
}

impl Tree {
    /// The tree for `name` from what this registry knows; `None` when it does not know `name`.
    pub fn for_child(meta: &dyn MetadataStore, name: &str) -> Result<Option<Tree>, HierarchyError> {
        let family = Family::load(meta)?;
        let Some(me) = family.get(name) else {
            return Ok(None);
        };
        let below = family.descendants(name);
        let registries: Vec<Definition> = std::iter::once(me)
            .chain(below.iter().copied())
            .map(|m| m.definition.clone())
            .collect();
        let mut wanted: BTreeSet<String> = registries
            .iter()
            .flat_map(|d| d.client_tokens.iter().cloned())
            .collect();
        wanted.extend(below.iter().map(|m| sync_token_name(&m.definition.name)));
        let rows = meta.all_access_rows()?;
        let tokens: Vec<WireToken> = rows
            .tokens
            .iter()
            .filter(|t| wanted.contains(&t.name))
            .map(|t| WireToken {
                name: t.name.clone(),
                scope_map: t.scope_map.clone(),
                status: t.status.clone(),
                passwords: json(&t.passwords),
            })
            .collect();
        let maps: BTreeSet<&str> = tokens.iter().map(|t| t.scope_map.as_str()).collect();
        let scope_maps = rows
            .scope_maps
            .iter()
            .filter(|m| maps.contains(m.name.as_str()))
            .map(|m| WireScopeMap {
                name: m.name.clone(),
                description: m.description.clone(),
                actions: json(&m.actions),
                gateways: json(&m.gateways),
            })
            .collect();
        Ok(Some(Tree {
            registry: me.definition.name.clone(),
            registries,
            scope_maps,
            tokens,
        }))
    }

    /// This registry's own definition in the tree.
    pub fn own(&self) -> Option<&Definition> {
        self.registries
            .iter()
            .find(|d| d.name.eq_ignore_ascii_case(&self.registry))
    }

    /// Which tokens are in force at the registry the tree is for: its client tokens and its
    /// direct children's sync tokens.
    fn in_force(&self) -> BTreeSet<String> {
        let mut out: BTreeSet<String> = self
            .own()
            .map(|d| d.client_tokens.iter().cloned().collect())
            .unwrap_or_default();
        for d in &self.registries {
            if d.parent
                .as_deref()
                .is_some_and(|p| p.eq_ignore_ascii_case(&self.registry))
            {
                out.insert(sync_token_name(&d.name));
            }
        }
        out
    }

    /// Stores the tree at the registry it is for, in one transaction: definitions, and the
    /// records in force or relayed; received records no longer sent are deleted; a local record
    /// with the same name is kept (and named in the returned warnings).
    pub fn apply(&self, meta: &dyn MetadataStore) -> Result<Vec<String>, HierarchyError> {
        let mut warnings = Vec::new();
        let mut change = HierarchyChange::default();
        let now = crate::storage::fsutil::now_secs();
        let stored = Family::load(meta)?;
        for d in &self.registries {
            let row_def =
                serde_json::to_string(d).map_err(|e| HierarchyError::Internal(e.to_string()))?;
            let previous = stored.get(&d.name);
            if previous.is_some_and(|p| p.definition == *d) {
                continue;
            }
            change.registries.push(RegistryRow {
                name: d.name.clone(),
                definition: row_def,
                source: RecordSource::Parent,
                activation: "{}".into(),
                status: None,
                heard: None,
                created: now,
            });
        }
        let names: BTreeSet<String> = self
            .registries
            .iter()
            .map(|d| d.name.to_ascii_lowercase())
            .collect();
        for m in stored.all() {
            if m.source != RecordSource::Local
                && !names.contains(&m.definition.name.to_ascii_lowercase())
            {
                change.delete_registries.push(m.definition.name.clone());
            }
        }
        let rows = meta.all_access_rows()?;
        let local_tokens: BTreeSet<&str> = rows
            .tokens
            .iter()
            .filter(|t| t.source == RecordSource::Local)
            .map(|t| t.name.as_str())
            .collect();
        let local_maps: BTreeSet<&str> = rows
            .scope_maps
            .iter()
            .filter(|m| m.source == RecordSource::Local)
            .map(|m| m.name.as_str())
            .collect();
        let in_force = self.in_force();
        let mut map_source: BTreeMap<&str, RecordSource> = BTreeMap::new();
        let stored_tokens: BTreeMap<&str, &TokenRow> =
            rows.tokens.iter().map(|t| (t.name.as_str(), t)).collect();
        let stored_maps: BTreeMap<&str, &ScopeMapRow> = rows
            .scope_maps
            .iter()
            .map(|m| (m.name.as_str(), m))
            .collect();
        for t in &self.tokens {
            if local_tokens.contains(t.name.as_str()) || local_maps.contains(t.scope_map.as_str()) {
                warnings.push(format!(
                    "token '{}' from the parent has the name of a local token or scope map: the \
                     local one is kept",
                    t.name
                ));
                continue;
            }
            let source = if in_force.contains(&t.name) {
                RecordSource::Parent
            } else {
                RecordSource::Relay
            };
            let e = map_source.entry(t.scope_map.as_str()).or_insert(source);
            if source == RecordSource::Parent {
                *e = RecordSource::Parent;
            }
            let row = TokenRow {
                name: t.name.clone(),
                scope_map: t.scope_map.clone(),
                status: t.status.clone(),
                passwords: t.passwords.to_string(),
                created: now,
                updated: now,
                source,
            };
            let same = stored_tokens.get(t.name.as_str()).is_some_and(|s| {
                s.scope_map == row.scope_map
                    && s.status == row.status
                    && json(&s.passwords) == t.passwords
                    && s.source == row.source
            });
            if !same {
                change.tokens.push(row);
            }
        }
        for m in &self.scope_maps {
            let Some(source) = map_source.get(m.name.as_str()).copied() else {
                continue;
            };
            let row = ScopeMapRow {
                name: m.name.clone(),
                description: m.description.clone(),
                actions: m.actions.to_string(),
                gateways: m.gateways.to_string(),
                source,
                created: now,
                updated: now,
            };
            let same = stored_maps.get(m.name.as_str()).is_some_and(|s| {
                s.description == row.description
                    && json(&s.actions) == m.actions
                    && json(&s.gateways) == m.gateways
                    && s.source == row.source
            });
            if !same {
                // Scope maps first: a token needs its scope map to exist.
                change.scope_maps.push(row);
            }
        }
        let sent_tokens: BTreeSet<&str> = self.tokens.iter().map(|t| t.name.as_str()).collect();
        let sent_maps: BTreeSet<&str> = map_source.keys().copied().collect();
        for t in &rows.tokens {
            if t.source != RecordSource::Local && !sent_tokens.contains(t.name.as_str()) {
                change.delete_tokens.push(t.name.clone());
            }
        }
        for m in &rows.scope_maps {
            if m.source != RecordSource::Local && !sent_maps.contains(m.name.as_str()) {
                change.delete_scope_maps.push(m.name.clone());
            }
        }
        meta.apply_hierarchy(&change)?;
        // A parent that saw a child deactivated at the root forgets its active instance.
        for d in &self.registries {
            let was = stored.get(&d.name);
            if was.is_some_and(|w| w.definition.deactivations < d.deactivations) {
                meta.set_activation(&d.name, "{}", false)?;
            }
        }
        Ok(warnings)
    }
}
