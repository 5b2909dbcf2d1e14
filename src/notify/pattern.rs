//! ACR's notification patterns, `repository[:tag][@digest]:action`, as `az acr connected-registry
//! create --notifications` takes them: `*` matches any run of characters in each part.

use std::fmt;

use super::Action;
use crate::registry::echo;

/// Which actions a pattern selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Actions {
    /// `push`.
    Push,
    /// `delete`.
    Delete,
    /// `*`.
    Any,
}

/// One parsed pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    text: String,
    repository: String,
    tag: Option<String>,
    digest: Option<String>,
    actions: Actions,
}

/// What is wrong with a pattern (one line, naming the pattern).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{pattern}' is not a notification pattern (repository[:tag][@digest]:action, action push, delete or *): {reason}")]
pub struct PatternError {
    pattern: String,
    reason: &'static str,
}

impl Pattern {
    /// Every change of every repository (`*:*`).
    pub fn any() -> Self {
        Pattern {
            text: "*:*".into(),
            repository: "*".into(),
            tag: None,
            digest: None,
            actions: Actions::Any,
        }
    }

    /// Parses `repository[:tag][@digest]:action`.
    pub fn parse(text: &str) -> Result<Self, PatternError> {
        let fail = |reason| PatternError {
            pattern: echo(text).to_string(),
            reason,
        };
        // The action is after the last colon: a digest holds a colon of its own.
        let (rest, action) = text.rsplit_once(':').ok_or_else(|| fail("no action"))?;
        let actions = match action.to_ascii_lowercase().as_str() {
            "push" => Actions::Push,
            "delete" => Actions::Delete,
            "*" => Actions::Any,
            _ => return Err(fail("the action is not push, delete or *")),
        };
        let (named, digest) = match rest.split_once('@') {
            Some((n, d)) => (n, Some(d)),
            None => (rest, None),
        };
        let (repository, tag) = match named.split_once(':') {
            Some((r, t)) => (r, Some(t)),
            None => (named, None),
        };
        if !part_ok(repository, |c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || "._-/".contains(c)
        }) {
            return Err(fail(
                "the repository is not lowercase letters, digits, . _ - / and *",
            ));
        }
        if let Some(t) = tag {
            if t.len() > 128 || !part_ok(t, |c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
                return Err(fail(
                    "the tag is not letters, digits, . _ - and * (at most 128)",
                ));
            }
        }
        if let Some(d) = digest {
            let shaped = d == "*"
                || d.split_once(':')
                    .is_some_and(|(a, h)| !a.is_empty() && !h.is_empty());
            if !shaped || !part_ok(d, |c| c.is_ascii_alphanumeric() || ":+._-".contains(c)) {
                return Err(fail("the digest is not algorithm:hex (or *)"));
            }
        }
        Ok(Pattern {
            text: text.to_owned(),
            repository: repository.to_owned(),
            tag: tag.filter(|t| *t != "*").map(str::to_owned),
            digest: digest.filter(|d| *d != "*").map(str::to_owned),
            actions,
        })
    }

    /// Whether a change selects this pattern. A tag part other than `*` needs a tag; a digest
    /// part other than `*` needs that digest.
    pub fn matches(
        &self,
        action: Action,
        repository: &str,
        tag: Option<&str>,
        digest: &str,
    ) -> bool {
        let action_ok = match self.actions {
            Actions::Any => true,
            Actions::Push => action == Action::Push,
            Actions::Delete => action == Action::Delete,
        };
        action_ok
            && glob(&self.repository, repository)
            && self
                .tag
                .as_deref()
                .is_none_or(|p| tag.is_some_and(|t| glob(p, t)))
            && self.digest.as_deref().is_none_or(|p| glob(p, digest))
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A part is non-empty and each character is `*` or allowed.
fn part_ok(part: &str, allowed: impl Fn(char) -> bool) -> bool {
    !part.is_empty() && part.chars().all(|c| c == '*' || allowed(c))
}

/// Whether `text` matches `pattern`, where `*` stands for any run of characters (`/` included).
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    // Where the last `*` was and how much of the text it has taken, to backtrack to.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:4a5bd2d6e5e4e1f2e5c5a3b9e0b0f2a1a0c1d2e3f405162738495a6b7c8d9e0f";

    fn m(p: &str, action: Action, repo: &str, tag: Option<&str>, digest: &str) -> bool {
        Pattern::parse(p)
            .unwrap()
            .matches(action, repo, tag, digest)
    }

    #[test]
    fn acr_examples_select_what_they_say() {
        // The examples of ACR's connected registry documentation.
        assert!(m(
            "hello-world:*:*",
            Action::Push,
            "hello-world",
            Some("v1"),
            D
        ));
        assert!(m("hello-world:*:*", Action::Delete, "hello-world", None, D));
        assert!(!m("hello-world:*:*", Action::Push, "hello-world2", None, D));
        assert!(m(
            "sample/repo/*:1.0:*",
            Action::Push,
            "sample/repo/a/b",
            Some("1.0"),
            D
        ));
        assert!(!m(
            "sample/repo/*:1.0:*",
            Action::Push,
            "sample/repo/a",
            Some("1.1"),
            D
        ));
        assert!(!m(
            "sample/repo/*:1.0:*",
            Action::Push,
            "sample/repo/a",
            None,
            D
        ));
        assert!(!m(
            "sample/repo/*:1.0:*",
            Action::Push,
            "other/repo/a",
            Some("1.0"),
            D
        ));
        assert!(m(
            "hello-world:latest:push",
            Action::Push,
            "hello-world",
            Some("latest"),
            D
        ));
        assert!(!m(
            "hello-world:latest:push",
            Action::Delete,
            "hello-world",
            Some("latest"),
            D
        ));
        let by_digest = format!("hello-world@{D}:delete");
        assert!(m(&by_digest, Action::Delete, "hello-world", None, D));
        assert!(!m(
            &by_digest,
            Action::Delete,
            "hello-world",
            None,
            "sha256:00"
        ));
        let both = format!("app:v1@{D}:push");
        assert!(m(&both, Action::Push, "app", Some("v1"), D));
        assert!(!m(&both, Action::Push, "app", None, D));
    }

    #[test]
    fn wildcards_in_every_part() {
        assert!(m("*:*", Action::Delete, "a/b", None, D));
        assert!(m("*:push", Action::Push, "x", Some("t"), D));
        assert!(!m("*:push", Action::Delete, "x", Some("t"), D));
        assert!(m(
            "team/*/app:v*:push",
            Action::Push,
            "team/x/y/app",
            Some("v2.1"),
            D
        ));
        assert!(!m(
            "team/*/app:v*:push",
            Action::Push,
            "team/x/app2",
            Some("v2"),
            D
        ));
        assert!(m("app@sha256:4a5b*:*", Action::Push, "app", None, D));
        assert!(m("app@*:*", Action::Push, "app", None, D));
        assert!(m("a*b*c:*", Action::Push, "aXbYbc", None, D));
        assert!(!m("a*b*c:*", Action::Push, "aXbYc_", None, D));
        assert!(
            m("app:*:PUSH", Action::Push, "app", None, D),
            "actions in any case"
        );
    }

    #[test]
    fn refuses_what_is_not_a_pattern() {
        for bad in [
            "app",
            "app:pull",
            ":push",
            "App:push",
            "app::push",
            "app:v1:",
            "app@:push",
            "app@nothex:push",
            "app:v 1:push",
        ] {
            let e = Pattern::parse(bad).unwrap_err().to_string();
            assert!(e.contains(bad), "{bad}: {e}");
        }
    }
}
