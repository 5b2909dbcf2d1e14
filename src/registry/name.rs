//! Repository names and tags, validated by the distribution grammar.

use std::fmt;

use super::error::RegistryError;

/// Longest repository name accepted (distribution's limit).
pub const NAME_MAX: usize = 255;
/// Longest tag accepted.
pub const TAG_MAX: usize = 128;

/// A repository name: `component(/component)*`, each `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(String);

impl RepoName {
    /// Validates a name; nothing else (no `..`, no empty or dotted segment) can get through.
    pub fn parse(s: &str) -> Result<Self, RegistryError> {
        if s.is_empty() || s.len() > NAME_MAX || !s.split('/').all(valid_component) {
            return Err(RegistryError::name(s));
        }
        Ok(RepoName(s.to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// One path component: alphanumeric runs joined by `.`, `_`, `__` or any run of `-`.
fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    let mut i = 0;
    loop {
        let start = i;
        while i < b.len() && is_alnum(b[i]) {
            i += 1;
        }
        if i == start {
            return false;
        }
        if i == b.len() {
            return true;
        }
        let sep_start = i;
        match b[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < b.len() && b[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
        debug_assert!(i > sep_start);
    }
}

/// A tag: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

impl Tag {
    /// Validates a tag.
    pub fn parse(s: &str) -> Result<Self, RegistryError> {
        let b = s.as_bytes();
        let first_ok = b
            .first()
            .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_');
        let rest_ok = b
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'));
        if !first_ok || !rest_ok || b.len() > TAG_MAX {
            return Err(RegistryError::tag(s));
        }
        Ok(Tag(s.to_owned()))
    }

    /// The tag as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::ErrorCode;

    #[test]
    fn accepts_valid_names() {
        for n in [
            "a",
            "hello-world",
            "library/ubuntu",
            "team/app/v2",
            "a.b_c__d---e",
            "0",
            "x/y/z/1/2/3",
        ] {
            assert!(RepoName::parse(n).is_ok(), "rejected {n}");
        }
        assert!(RepoName::parse(&"a".repeat(NAME_MAX)).is_ok());
    }

    #[test]
    fn rejects_hostile_names() {
        let long = "a".repeat(NAME_MAX + 1);
        for n in [
            "",
            "/",
            "a/",
            "/a",
            "a//b",
            "..",
            "a/../b",
            "a/./b",
            ".a",
            "a.",
            "a..b",
            "a___b",
            "a_-b",
            "-a",
            "a-",
            "A",
            "Hello",
            "%2e%2e",
            "a/%2e%2e/b",
            "a\\b",
            "a b",
            "a\0b",
            "a\nb",
            "é",
            long.as_str(),
        ] {
            assert!(RepoName::parse(n).is_err(), "accepted {n:?}");
        }
    }

    #[test]
    fn tags_follow_the_grammar() {
        for t in ["latest", "v1.0", "_x", "1", "A-b_c.d", &"a".repeat(TAG_MAX)] {
            assert!(Tag::parse(t).is_ok(), "rejected {t}");
        }
        for t in [
            "",
            ".x",
            "-x",
            "a/b",
            "a:b",
            "..",
            "%2e",
            "a b",
            "ü",
            &"a".repeat(TAG_MAX + 1),
        ] {
            assert!(Tag::parse(t).is_err(), "accepted {t:?}");
        }
    }

    #[test]
    fn errors_use_spec_codes() {
        assert_eq!(
            RepoName::parse("..").unwrap_err().code(),
            ErrorCode::NameInvalid
        );
        assert_eq!(
            Tag::parse("..").unwrap_err().code(),
            ErrorCode::ManifestInvalid
        );
    }
}
