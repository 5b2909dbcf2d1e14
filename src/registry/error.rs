//! Errors of the OCI grammar and manifest validation.

use super::ErrorCode;

/// Longest excerpt of hostile input echoed back in a message.
const ECHO_MAX: usize = 80;

/// Shortens client input before it goes into an error message or a log line.
pub fn echo(input: &str) -> String {
    let mut out: String = input.chars().take(ECHO_MAX).collect();
    if out.len() < input.len() {
        out.push('…');
    }
    out.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// Why a name, reference, digest or manifest was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// The repository name breaks the distribution grammar.
    #[error("invalid repository name {0:?}")]
    NameInvalid(String),
    /// The tag breaks the distribution grammar.
    #[error("invalid tag {0:?}")]
    TagInvalid(String),
    /// The digest is malformed or uses an unsupported algorithm.
    #[error("invalid digest {0:?}")]
    DigestInvalid(String),
    /// The manifest is not acceptable.
    #[error("manifest invalid: {0}")]
    ManifestInvalid(String),
}

impl RegistryError {
    /// The distribution-spec error code the HTTP edge reports.
    pub fn code(&self) -> ErrorCode {
        match self {
            RegistryError::NameInvalid(_) => ErrorCode::NameInvalid,
            // The spec has no TAG_INVALID; distribution answers MANIFEST_INVALID.
            RegistryError::TagInvalid(_) => ErrorCode::ManifestInvalid,
            RegistryError::DigestInvalid(_) => ErrorCode::DigestInvalid,
            RegistryError::ManifestInvalid(_) => ErrorCode::ManifestInvalid,
        }
    }

    /// A name error echoing a shortened copy of the input.
    pub fn name(input: &str) -> Self {
        RegistryError::NameInvalid(echo(input))
    }

    /// A tag error echoing a shortened copy of the input.
    pub fn tag(input: &str) -> Self {
        RegistryError::TagInvalid(echo(input))
    }

    /// A digest error echoing a shortened copy of the input.
    pub fn digest(input: &str) -> Self {
        RegistryError::DigestInvalid(echo(input))
    }

    /// A manifest error with a reason.
    pub fn manifest(reason: impl Into<String>) -> Self {
        RegistryError::ManifestInvalid(reason.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_shortens_and_neutralises_control_characters() {
        let long = "a".repeat(10_000);
        assert!(echo(&long).chars().count() <= ECHO_MAX + 1);
        assert_eq!(echo("x\r\ny"), "x??y");
    }
}
