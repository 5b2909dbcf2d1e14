//! ACR's access model: scope maps grant actions on repository patterns; tokens use a scope map.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::AuthError;

/// One of ACR's scope-map actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Action {
    /// Pull manifests and blobs.
    #[serde(rename = "content/read")]
    ContentRead,
    /// Push: uploads, mounts, manifest PUT.
    #[serde(rename = "content/write")]
    ContentWrite,
    /// Delete manifests, tags and blobs.
    #[serde(rename = "content/delete")]
    ContentDelete,
    /// Tags list, catalog, referrers.
    #[serde(rename = "metadata/read")]
    MetadataRead,
    /// Repository attributes (kept for ACR compatibility).
    #[serde(rename = "metadata/write")]
    MetadataWrite,
}

/// All actions, in ACR's order.
pub const ALL_ACTIONS: [Action; 5] = [
    Action::ContentRead,
    Action::ContentWrite,
    Action::ContentDelete,
    Action::MetadataRead,
    Action::MetadataWrite,
];

impl Action {
    /// ACR's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::ContentRead => "content/read",
            Action::ContentWrite => "content/write",
            Action::ContentDelete => "content/delete",
            Action::MetadataRead => "metadata/read",
            Action::MetadataWrite => "metadata/write",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl FromStr for Action {
    type Err = AuthError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ALL_ACTIONS
            .into_iter()
            .find(|a| a.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                AuthError::Invalid(format!(
                    "unknown action '{}' (use content/read, content/write, content/delete, \
                     metadata/read or metadata/write)",
                    crate::registry::echo(s)
                ))
            })
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of actions, as a bit mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct ActionSet(u8);

impl ActionSet {
    /// No action.
    pub const NONE: ActionSet = ActionSet(0);
    /// Every action.
    pub const ALL: ActionSet = ActionSet(0b1_1111);

    /// Whether `a` is in the set.
    pub fn has(self, a: Action) -> bool {
        self.0 & a.bit() != 0
    }

    /// The set plus `a`.
    pub fn with(self, a: Action) -> Self {
        ActionSet(self.0 | a.bit())
    }

    /// Union.
    pub fn union(self, o: ActionSet) -> Self {
        ActionSet(self.0 | o.0)
    }

    /// Intersection.
    pub fn intersect(self, o: ActionSet) -> Self {
        ActionSet(self.0 & o.0)
    }

    /// Whether empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl FromIterator<Action> for ActionSet {
    fn from_iter<I: IntoIterator<Item = Action>>(iter: I) -> Self {
        iter.into_iter().fold(ActionSet::NONE, ActionSet::with)
    }
}

/// A repository pattern: an exact name, `prefix/*`, or `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepoPattern {
    /// Every repository.
    Any,
    /// Repositories under a prefix (`team/*` matches `team/a` and `team/a/b`).
    Prefix(String),
    /// One repository.
    Exact(String),
}

impl RepoPattern {
    /// Parses and validates a pattern.
    pub fn parse(s: &str) -> Result<Self, AuthError> {
        let s = s.trim();
        if s == "*" {
            return Ok(RepoPattern::Any);
        }
        let (name, prefix) = match s.strip_suffix("/*") {
            Some(p) => (p, true),
            None => (s, false),
        };
        crate::registry::RepoName::parse(name).map_err(|_| {
            AuthError::Invalid(format!(
                "'{}' is not a repository, prefix/* or *",
                crate::registry::echo(s)
            ))
        })?;
        Ok(if prefix {
            RepoPattern::Prefix(format!("{name}/"))
        } else {
            RepoPattern::Exact(name.to_owned())
        })
    }

    /// Whether `repo` matches.
    pub fn matches(&self, repo: &str) -> bool {
        match self {
            RepoPattern::Any => true,
            RepoPattern::Prefix(p) => repo.starts_with(p.as_str()),
            RepoPattern::Exact(n) => n == repo,
        }
    }
}

impl fmt::Display for RepoPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RepoPattern::Any => f.write_str("*"),
            RepoPattern::Prefix(p) => write!(f, "{p}*"),
            RepoPattern::Exact(n) => f.write_str(n),
        }
    }
}

/// One line of a scope map: a pattern and the actions it grants, as stored (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// Repository pattern text.
    pub repository: String,
    /// Actions granted.
    pub actions: Vec<Action>,
}

/// One of ACR's gateway actions: what a connected registry's sync token may do on the control
/// plane of its parent, for itself and (for an ancestor) for its descendants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum GatewayAction {
    /// Read the connected registry's configuration.
    #[serde(rename = "config/read")]
    ConfigRead,
    /// Write its configuration (kept for ACR compatibility).
    #[serde(rename = "config/write")]
    ConfigWrite,
    /// Read sync messages (the change feed).
    #[serde(rename = "message/read")]
    MessageRead,
    /// Write sync messages (status reports).
    #[serde(rename = "message/write")]
    MessageWrite,
}

/// All gateway actions, ACR's `DEFAULT_GATEWAY_SCOPE`.
pub const GATEWAY_ACTIONS: [GatewayAction; 4] = [
    GatewayAction::ConfigRead,
    GatewayAction::ConfigWrite,
    GatewayAction::MessageRead,
    GatewayAction::MessageWrite,
];

impl GatewayAction {
    /// ACR's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            GatewayAction::ConfigRead => "config/read",
            GatewayAction::ConfigWrite => "config/write",
            GatewayAction::MessageRead => "message/read",
            GatewayAction::MessageWrite => "message/write",
        }
    }
}

impl FromStr for GatewayAction {
    type Err = AuthError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        GATEWAY_ACTIONS
            .into_iter()
            .find(|a| a.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                AuthError::Invalid(format!(
                    "unknown gateway action '{}' (use config/read, config/write, message/read \
                     or message/write)",
                    crate::registry::echo(s)
                ))
            })
    }
}

/// One gateway line of a scope map: a connected registry's name and the actions granted on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayGrant {
    /// The connected registry's name (compared case-insensitively, as ACR lower-cases it).
    pub gateway: String,
    /// Actions granted.
    pub actions: Vec<GatewayAction>,
}

/// A parsed scope map, ready to answer "what may be done to this repository".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeMap {
    /// Unique name.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// Grants as stored.
    pub grants: Vec<Grant>,
    /// Gateway grants as stored.
    pub gateways: Vec<GatewayGrant>,
    patterns: Vec<(RepoPattern, ActionSet)>,
}

impl ScopeMap {
    /// Builds a scope map, validating every pattern.
    pub fn new(
        name: &str,
        description: Option<String>,
        grants: Vec<Grant>,
    ) -> Result<Self, AuthError> {
        validate_name("scope map", name)?;
        let patterns = grants
            .iter()
            .map(|g| {
                Ok((
                    RepoPattern::parse(&g.repository)?,
                    g.actions.iter().copied().collect(),
                ))
            })
            .collect::<Result<_, AuthError>>()?;
        Ok(ScopeMap {
            name: name.to_owned(),
            description,
            grants,
            gateways: Vec::new(),
            patterns,
        })
    }

    /// The same scope map granting `gateways` too.
    pub fn with_gateways(mut self, gateways: Vec<GatewayGrant>) -> Self {
        self.gateways = gateways;
        self
    }

    /// Whether `action` is granted on the gateway of connected registry `name`.
    pub fn gateway_allows(&self, name: &str, action: GatewayAction) -> bool {
        self.gateways
            .iter()
            .any(|g| g.gateway.eq_ignore_ascii_case(name) && g.actions.contains(&action))
    }

    /// Actions granted on `repo` (union of every matching line).
    pub fn allowed(&self, repo: &str) -> ActionSet {
        self.patterns
            .iter()
            .filter(|(p, _)| p.matches(repo))
            .fold(ActionSet::NONE, |acc, (_, a)| acc.union(*a))
    }
}

/// ACR's rule for token and scope-map names: 5–50 letters, digits and dashes… relaxed to allow
/// `_` and 1 character names that scripts commonly use, and up to 64 characters so a 40-character
/// connected registry's `<name>-sync-scope-map` fits; never anything that needs escaping.
pub fn validate_name(kind: &str, name: &str) -> Result<(), AuthError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(AuthError::Invalid(format!(
            "{kind} name '{}' must be 1-64 letters, digits, '-' or '_', starting with a letter or digit",
            crate::registry::echo(name)
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_as_acr_does() {
        let m = ScopeMap::new(
            "m",
            None,
            vec![
                Grant {
                    repository: "hello".into(),
                    actions: vec![Action::ContentRead],
                },
                Grant {
                    repository: "team/*".into(),
                    actions: vec![Action::ContentWrite],
                },
            ],
        )
        .unwrap();
        assert!(m.allowed("hello").has(Action::ContentRead));
        assert!(m.allowed("hello/x").is_empty());
        assert!(m.allowed("team/a/b").has(Action::ContentWrite));
        assert!(m.allowed("team").is_empty());
        assert!(m.allowed("teamx/a").is_empty());
        let any = ScopeMap::new(
            "a",
            None,
            vec![Grant {
                repository: "*".into(),
                actions: ALL_ACTIONS.to_vec(),
            }],
        )
        .unwrap();
        assert_eq!(any.allowed("x/y"), ActionSet::ALL);
    }

    #[test]
    fn rejects_bad_patterns_actions_and_names() {
        for p in ["", "a/**", "../x", "A", "x/*/y", "*/x"] {
            assert!(RepoPattern::parse(p).is_err(), "{p}");
        }
        assert!("content/execute".parse::<Action>().is_err());
        assert!("Content/Read".parse::<Action>().is_ok());
        for n in ["", "-x", "a b", "a;b", &"a".repeat(65)] {
            assert!(validate_name("token", n).is_err(), "{n}");
        }
    }
}
