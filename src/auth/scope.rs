//! Docker token scopes (`repository:NAME:pull,push`, `registry:catalog:*`) and how they map to
//! ACR actions.

use serde::{Deserialize, Serialize};

use super::model::{Action, ActionSet};

/// One entry of a token's `access` claim, as the Docker token spec writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopeEntry {
    /// `repository` or `registry`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Repository name, or `catalog`.
    pub name: String,
    /// `pull`, `push`, `delete`, `*`.
    pub actions: Vec<String>,
}

/// Longest scope string considered; anything longer is ignored rather than parsed.
const SCOPE_MAX: usize = 1024;

/// Parses one `scope` parameter (which may hold several space-separated scopes).
/// Malformed scopes are skipped: the token then simply grants less.
pub fn parse(scope: &str) -> Vec<ScopeEntry> {
    if scope.len() > SCOPE_MAX * 8 {
        return Vec::new();
    }
    scope
        .split(' ')
        .filter(|s| !s.is_empty() && s.len() <= SCOPE_MAX)
        .filter_map(parse_one)
        .collect()
}

fn parse_one(s: &str) -> Option<ScopeEntry> {
    let (kind, rest) = s.split_once(':')?;
    let (name, actions) = rest.rsplit_once(':')?;
    let kind = match kind {
        "repository" | "repository(plugin)" => "repository",
        "registry" => "registry",
        _ => return None,
    };
    if kind == "repository" {
        crate::registry::RepoName::parse(name).ok()?;
    } else if name != "catalog" {
        return None;
    }
    let mut actions: Vec<String> = actions
        .split(',')
        .filter(|a| matches!(*a, "pull" | "push" | "delete" | "*"))
        .map(str::to_owned)
        .collect();
    actions.sort();
    actions.dedup();
    Some(ScopeEntry {
        kind: kind.to_owned(),
        name: name.to_owned(),
        actions,
    })
}

/// ACR actions a Docker action stands for.
pub fn acr_actions(docker_action: &str) -> ActionSet {
    match docker_action {
        "pull" => [Action::ContentRead, Action::MetadataRead]
            .into_iter()
            .collect(),
        "push" => [Action::ContentWrite, Action::MetadataWrite]
            .into_iter()
            .collect(),
        "delete" => [Action::ContentDelete].into_iter().collect(),
        "*" => ActionSet::ALL,
        _ => ActionSet::NONE,
    }
}

/// Docker actions granted, given what the scope map allows on the repository.
pub fn grant(requested: &[String], allowed: ActionSet) -> Vec<String> {
    let mut out: Vec<String> = requested
        .iter()
        .flat_map(|a| {
            if a == "*" {
                vec!["pull", "push", "delete"]
            } else {
                vec![a.as_str()]
            }
        })
        .filter(|a| !acr_actions(a).intersect(allowed).is_empty())
        .map(str::to_owned)
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_scopes() {
        let v = parse("repository:team/app:pull,push registry:catalog:*");
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].name, "team/app");
        assert_eq!(v[0].actions, vec!["pull", "push"]);
        assert_eq!(v[1].kind, "registry");
    }

    #[test]
    fn hostile_scopes_grant_nothing() {
        for s in [
            "repository:../etc:pull",
            "repository:a:pull;rm -rf",
            "repository:a\"b:pull",
            "registry:everything:*",
            "user:admin:*",
            "repository::pull",
            "repository:a",
        ] {
            let v = parse(s);
            assert!(
                v.iter().all(|e| e.actions.is_empty()) || v.is_empty(),
                "{s}: {v:?}"
            );
        }
        assert!(parse(&"repository:a:pull ".repeat(10_000)).is_empty());
    }

    #[test]
    fn grants_are_the_intersection() {
        let read: ActionSet = [Action::ContentRead].into_iter().collect();
        assert_eq!(grant(&["pull".into(), "push".into()], read), vec!["pull"]);
        assert_eq!(
            grant(&["*".into()], ActionSet::ALL),
            vec!["delete", "pull", "push"]
        );
        assert!(grant(&["push".into()], read).is_empty());
    }
}
