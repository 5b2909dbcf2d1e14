//! A manifest reference: a tag or a digest.

use std::fmt;

use super::digest::Digest;
use super::error::RegistryError;
use super::name::Tag;

/// What a `/manifests/<reference>` path segment names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Reference {
    /// A mutable tag.
    Tag(Tag),
    /// An immutable digest.
    Digest(Digest),
}

impl Reference {
    /// A reference containing `:` is a digest, anything else a tag.
    pub fn parse(s: &str) -> Result<Self, RegistryError> {
        if s.contains(':') {
            Ok(Reference::Digest(s.parse()?))
        } else {
            Ok(Reference::Tag(Tag::parse(s)?))
        }
    }

    /// The reference as text.
    pub fn as_str(&self) -> &str {
        match self {
            Reference::Tag(t) => t.as_str(),
            Reference::Digest(d) => d.as_str(),
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::ErrorCode;

    #[test]
    fn distinguishes_tags_from_digests() {
        assert!(matches!(Reference::parse("latest"), Ok(Reference::Tag(_))));
        let d = format!("sha256:{}", "0".repeat(64));
        assert!(matches!(Reference::parse(&d), Ok(Reference::Digest(_))));
        assert_eq!(Reference::parse(&d).unwrap().to_string(), d);
    }

    #[test]
    fn rejects_hostile_references() {
        for r in ["", "..", "../x", "sha256:..", "a:b", "%2e%2e", "x\0"] {
            assert!(Reference::parse(r).is_err(), "accepted {r:?}");
        }
        assert_eq!(
            Reference::parse("sha256:zz").unwrap_err().code(),
            ErrorCode::DigestInvalid
        );
    }
}
