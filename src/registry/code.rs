//! The distribution spec's error codes, as the `code` of `{"errors":[…]}` bodies.

use std::fmt;

/// An error code of the OCI distribution spec (plus `TOOMANYREQUESTS`, `PAGINATION_NUMBER_INVALID`
/// and `UNKNOWN`, which registries and clients use alike).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The blob is unknown to the registry.
    BlobUnknown,
    /// The blob upload encountered an error.
    BlobUploadInvalid,
    /// The upload session is unknown.
    BlobUploadUnknown,
    /// The digest did not match or is malformed.
    DigestInvalid,
    /// A blob the manifest references is unknown.
    ManifestBlobUnknown,
    /// The manifest is invalid.
    ManifestInvalid,
    /// The manifest is unknown.
    ManifestUnknown,
    /// The repository name is invalid.
    NameInvalid,
    /// The repository is unknown.
    NameUnknown,
    /// The content length did not match.
    SizeInvalid,
    /// Authentication is required.
    Unauthorized,
    /// Access to the resource is denied.
    Denied,
    /// The operation is unsupported.
    Unsupported,
    /// Too many requests.
    TooManyRequests,
    /// The `n` of a listing is not a valid number.
    PaginationNumberInvalid,
    /// Anything else (conflicts, internal errors).
    Unknown,
    /// A connected registry the control plane does not define.
    NotFound,
    /// Another instance of a connected registry is active (ACR's activation error).
    AlreadyActivated,
}

impl ErrorCode {
    /// The code as the spec writes it.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BlobUnknown => "BLOB_UNKNOWN",
            ErrorCode::BlobUploadInvalid => "BLOB_UPLOAD_INVALID",
            ErrorCode::BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            ErrorCode::DigestInvalid => "DIGEST_INVALID",
            ErrorCode::ManifestBlobUnknown => "MANIFEST_BLOB_UNKNOWN",
            ErrorCode::ManifestInvalid => "MANIFEST_INVALID",
            ErrorCode::ManifestUnknown => "MANIFEST_UNKNOWN",
            ErrorCode::NameInvalid => "NAME_INVALID",
            ErrorCode::NameUnknown => "NAME_UNKNOWN",
            ErrorCode::SizeInvalid => "SIZE_INVALID",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::Denied => "DENIED",
            ErrorCode::Unsupported => "UNSUPPORTED",
            ErrorCode::TooManyRequests => "TOOMANYREQUESTS",
            ErrorCode::PaginationNumberInvalid => "PAGINATION_NUMBER_INVALID",
            ErrorCode::Unknown => "UNKNOWN",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::AlreadyActivated => "ALREADY_ACTIVATED",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}
