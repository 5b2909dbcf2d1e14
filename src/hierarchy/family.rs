//! The connected registries a registry knows (all of them at the root, its own subtree lower
//! down) as a tree: parents, descendants, tree order, and each one's sync scope map.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::definition::Definition;
use super::report::Report;
use super::HierarchyError;
use crate::auth::model::{Action, GatewayGrant, Grant, GATEWAY_ACTIONS};
use crate::config::Mode;
use crate::storage::metadata::{MetadataStore, RecordSource, RegistryRow};

/// Which instance of a registry is active, as its parent records it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Activation {
    /// The active instance's id; `None` when inactive.
    #[serde(default)]
    pub instance: Option<String>,
    /// When it activated (RFC 3339).
    #[serde(default)]
    pub since: Option<String>,
}

/// One known registry: its definition and what its parent knows of it.
#[derive(Debug, Clone)]
pub struct Member {
    /// Its definition.
    pub definition: Definition,
    /// Defined here or received.
    pub source: RecordSource,
    /// Its active instance.
    pub activation: Activation,
    /// What it last reported.
    pub report: Option<Report>,
    /// When it was last heard from (Unix seconds).
    pub heard: Option<i64>,
    /// Unix seconds.
    pub created: i64,
}

/// All known registries, by lower-cased name.
#[derive(Debug, Clone, Default)]
pub struct Family {
    members: BTreeMap<String, Member>,
}

fn key(name: &str) -> String {
    name.to_ascii_lowercase()
}

/// Repository actions of a sync token by mode (ACR's `REPO_SCOPES_BY_MODE`).
pub fn repo_actions(mode: Mode) -> Vec<Action> {
    match mode {
        Mode::ReadOnly => vec![Action::ContentRead, Action::MetadataRead],
        Mode::ReadWrite => vec![
            Action::ContentRead,
            Action::ContentWrite,
            Action::ContentDelete,
            Action::MetadataRead,
            Action::MetadataWrite,
        ],
    }
}

impl Family {
    /// Reads every stored registry (an unreadable definition is an error: it would otherwise
    /// silently drop a registry and its descendants from the tree).
    pub fn load(meta: &dyn MetadataStore) -> Result<Family, HierarchyError> {
        Family::from_rows(&meta.connected_registries()?)
    }

    /// Builds the tree from stored rows.
    pub fn from_rows(rows: &[RegistryRow]) -> Result<Family, HierarchyError> {
        let mut members = BTreeMap::new();
        for r in rows {
            let definition: Definition = serde_json::from_str(&r.definition).map_err(|e| {
                HierarchyError::Internal(format!(
                    "connected registry '{}' is unreadable: {e}",
                    r.name
                ))
            })?;
            let activation = serde_json::from_str(&r.activation).unwrap_or_default();
            let report = r
                .status
                .as_deref()
                .and_then(|s| serde_json::from_str(s).ok());
            members.insert(
                key(&r.name),
                Member {
                    definition,
                    source: r.source,
                    activation,
                    report,
                    heard: r.heard,
                    created: r.created,
                },
            );
        }
        Ok(Family { members })
    }

    /// One registry.
    pub fn get(&self, name: &str) -> Option<&Member> {
        self.members.get(&key(name))
    }

    /// Every registry, by name.
    pub fn all(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    /// Adds or replaces a definition (for computing a change before storing it).
    pub fn put(&mut self, d: Definition) {
        let k = key(&d.name);
        match self.members.get_mut(&k) {
            Some(m) => m.definition = d,
            None => {
                self.members.insert(
                    k,
                    Member {
                        definition: d,
                        source: RecordSource::Local,
                        activation: Activation::default(),
                        report: None,
                        heard: None,
                        created: crate::storage::fsutil::now_secs(),
                    },
                );
            }
        }
    }

    /// Removes a definition.
    pub fn remove(&mut self, name: &str) {
        self.members.remove(&key(name));
    }

    /// The direct children of `name`.
    pub fn children(&self, name: &str) -> Vec<&Member> {
        self.members
            .values()
            .filter(|m| {
                m.definition
                    .parent
                    .as_deref()
                    .is_some_and(|p| p.eq_ignore_ascii_case(name))
            })
            .collect()
    }

    /// Every descendant of `name`, parents before their children (bounded, so a loop in a
    /// configuration received from a parent cannot hang).
    pub fn descendants(&self, name: &str) -> Vec<&Member> {
        let mut out = Vec::new();
        let mut stack: Vec<&Member> = self.children(name);
        stack.reverse();
        while let Some(m) = stack.pop() {
            if out.len() >= self.members.len() {
                break;
            }
            out.push(m);
            let mut kids = self.children(&m.definition.name);
            kids.reverse();
            stack.extend(kids);
        }
        out
    }

    /// The ancestors of `name`, nearest first (bounded, so a corrupt loop cannot hang).
    pub fn ancestors(&self, name: &str) -> Vec<&Member> {
        let mut out = Vec::new();
        let mut next = self.get(name).and_then(|m| m.definition.parent.clone());
        while let Some(p) = next {
            match self.get(&p) {
                Some(m) if out.len() < self.members.len() => {
                    next = m.definition.parent.clone();
                    out.push(m);
                }
                _ => break,
            }
        }
        out
    }

    /// Registries whose parent is not among the known ones (the root's direct children at the
    /// root; this registry itself lower down), in name order.
    pub fn tops(&self) -> Vec<&Member> {
        self.members
            .values()
            .filter(|m| {
                m.definition
                    .parent
                    .as_deref()
                    .is_none_or(|p| self.get(p).is_none())
            })
            .collect()
    }

    /// Every registry in tree order: each top, then its descendants (as `az … list` prints).
    pub fn tree_order(&self) -> Vec<&Member> {
        self.tops()
            .into_iter()
            .flat_map(|t| {
                let name = t.definition.name.clone();
                std::iter::once(t).chain(self.descendants(&name))
            })
            .collect()
    }

    /// The sync scope map `name` must have: its mode's actions on its repositories, and the
    /// gateway actions on itself and on every descendant (ACR grants ancestors their
    /// descendants' gateways, so status and configuration can be relayed).
    pub fn sync_grants(&self, name: &str) -> Option<(Vec<Grant>, Vec<GatewayGrant>)> {
        let m = self.get(name)?;
        let actions = repo_actions(m.definition.mode());
        let grants = m
            .definition
            .repositories
            .iter()
            .map(|r| Grant {
                repository: r.clone(),
                actions: actions.clone(),
            })
            .collect();
        let gateway = |n: &str| GatewayGrant {
            gateway: n.to_ascii_lowercase(),
            actions: GATEWAY_ACTIONS.to_vec(),
        };
        let gateways = std::iter::once(gateway(&m.definition.name))
            .chain(
                self.descendants(name)
                    .into_iter()
                    .map(|d| gateway(&d.definition.name)),
            )
            .collect();
        Some((grants, gateways))
    }

    /// Whether `name` is `ancestor` itself or below it.
    pub fn is_within(&self, name: &str, ancestor: &str) -> bool {
        name.eq_ignore_ascii_case(ancestor)
            || self
                .ancestors(name)
                .iter()
                .any(|a| a.definition.name.eq_ignore_ascii_case(ancestor))
    }
}
