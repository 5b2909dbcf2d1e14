//! The codes of the status details and the ACR area each belongs to. Their strings are shown in
//! `/acr/v1/status`, reported up the tree and to the module twin, so they never change; the
//! tests below pin every one.

use std::fmt;

use crate::registry::ErrorCode;

/// The code of one reported condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DetailCode {
    /// The parent could not be reached.
    ParentUnreachable,
    /// The parent refused the sync credentials.
    ParentUnauthorized,
    /// The sync credentials lack a right at the parent.
    ParentDenied,
    /// Something asked for does not exist at the parent.
    ParentNotFound,
    /// The parent answered something unusable.
    ParentProtocolError,
    /// The parent failed or throttled.
    ParentServerError,
    /// The parent client cannot be built as configured.
    ParentConfigError,
    /// The disk is full.
    DiskError,
    /// Local storage failed otherwise.
    StorageError,
    /// The sync window closed or the registry is shutting down.
    SyncStopped,
    /// An outbox change was not delivered within the message TTL.
    MessageExpired,
    /// A tag pushed up had been moved at the parent meanwhile.
    TagConflict,
    /// The parent cannot delete what was deleted here.
    DeleteUnsupported,
    /// The sync token may not delete at the parent.
    DeleteDenied,
    /// The parent's configuration cannot be applied.
    ConfigurationInvalid,
    /// Another instance is active under this registry's name.
    AlreadyActivated,
    /// The policy file is invalid.
    PolicyInvalid,
    /// The module twin's desired properties could not be applied.
    DesiredPropertiesInvalid,
    /// edgeHub cannot be reached or refuses the module.
    EdgeHubUnavailable,
    /// edgeHub refused a reported patch.
    ReportedPropertiesRefused,
    /// The IoT Edge workload API gave no trust bundle.
    TrustBundleUnavailable,
}

/// The area of a detail, as ACR's `statusDetails` `type` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DetailKind {
    /// The local disk.
    Disk,
    /// The link to the parent.
    Parent,
    /// Sync itself (and anything not in another area).
    Sync,
    /// This instance's activation.
    Activation,
    /// The policy or configuration.
    Configuration,
    /// The IoT Edge runtime: edgeHub, the workload API.
    IotEdge,
}

impl DetailCode {
    /// Every code, for reading one back from its string.
    pub const ALL: [DetailCode; 21] = [
        DetailCode::ParentUnreachable,
        DetailCode::ParentUnauthorized,
        DetailCode::ParentDenied,
        DetailCode::ParentNotFound,
        DetailCode::ParentProtocolError,
        DetailCode::ParentServerError,
        DetailCode::ParentConfigError,
        DetailCode::DiskError,
        DetailCode::StorageError,
        DetailCode::SyncStopped,
        DetailCode::MessageExpired,
        DetailCode::TagConflict,
        DetailCode::DeleteUnsupported,
        DetailCode::DeleteDenied,
        DetailCode::ConfigurationInvalid,
        DetailCode::AlreadyActivated,
        DetailCode::PolicyInvalid,
        DetailCode::DesiredPropertiesInvalid,
        DetailCode::EdgeHubUnavailable,
        DetailCode::ReportedPropertiesRefused,
        DetailCode::TrustBundleUnavailable,
    ];

    /// The code as reported.
    pub const fn as_str(self) -> &'static str {
        match self {
            DetailCode::ParentUnreachable => "ParentUnreachable",
            DetailCode::ParentUnauthorized => "ParentUnauthorized",
            DetailCode::ParentDenied => "ParentDenied",
            DetailCode::ParentNotFound => "ParentNotFound",
            DetailCode::ParentProtocolError => "ParentProtocolError",
            DetailCode::ParentServerError => "ParentServerError",
            DetailCode::ParentConfigError => "ParentConfigError",
            DetailCode::DiskError => "DiskError",
            DetailCode::StorageError => "StorageError",
            DetailCode::SyncStopped => "SyncStopped",
            DetailCode::MessageExpired => "MessageExpired",
            DetailCode::TagConflict => "TagConflict",
            DetailCode::DeleteUnsupported => "DeleteUnsupported",
            DetailCode::DeleteDenied => "DeleteDenied",
            DetailCode::ConfigurationInvalid => "ConfigurationInvalid",
            // The parent refuses a second instance with this spec-style code; the detail
            // repeats it so both read the same.
            DetailCode::AlreadyActivated => ErrorCode::AlreadyActivated.as_str(),
            DetailCode::PolicyInvalid => "PolicyInvalid",
            DetailCode::DesiredPropertiesInvalid => "DesiredPropertiesInvalid",
            DetailCode::EdgeHubUnavailable => "EdgeHubUnavailable",
            DetailCode::ReportedPropertiesRefused => "ReportedPropertiesRefused",
            DetailCode::TrustBundleUnavailable => "TrustBundleUnavailable",
        }
    }

    /// The code whose string is `s`, if this version knows it.
    pub fn parse(s: &str) -> Option<DetailCode> {
        DetailCode::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// The ACR area the code is reported under.
    pub const fn kind(self) -> DetailKind {
        match self {
            DetailCode::ParentUnreachable
            | DetailCode::ParentUnauthorized
            | DetailCode::ParentDenied
            | DetailCode::ParentNotFound
            | DetailCode::ParentProtocolError
            | DetailCode::ParentServerError
            | DetailCode::ParentConfigError => DetailKind::Parent,
            DetailCode::DiskError | DetailCode::StorageError => DetailKind::Disk,
            DetailCode::AlreadyActivated => DetailKind::Activation,
            DetailCode::PolicyInvalid
            | DetailCode::ConfigurationInvalid
            | DetailCode::DesiredPropertiesInvalid => DetailKind::Configuration,
            DetailCode::EdgeHubUnavailable
            | DetailCode::ReportedPropertiesRefused
            | DetailCode::TrustBundleUnavailable => DetailKind::IotEdge,
            DetailCode::SyncStopped
            | DetailCode::MessageExpired
            | DetailCode::TagConflict
            | DetailCode::DeleteUnsupported
            | DetailCode::DeleteDenied => DetailKind::Sync,
        }
    }
}

impl fmt::Display for DetailCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl DetailKind {
    /// The area as ACR writes it.
    pub const fn as_str(self) -> &'static str {
        match self {
            DetailKind::Disk => "Disk",
            DetailKind::Parent => "Parent",
            DetailKind::Sync => "Sync",
            DetailKind::Activation => "Activation",
            DetailKind::Configuration => "Configuration",
            DetailKind::IotEdge => "IotEdge",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every code with its string and area as shipped.
    const PINNED: [(DetailCode, &str, &str); 21] = [
        (DetailCode::ParentUnreachable, "ParentUnreachable", "Parent"),
        (
            DetailCode::ParentUnauthorized,
            "ParentUnauthorized",
            "Parent",
        ),
        (DetailCode::ParentDenied, "ParentDenied", "Parent"),
        (DetailCode::ParentNotFound, "ParentNotFound", "Parent"),
        (
            DetailCode::ParentProtocolError,
            "ParentProtocolError",
            "Parent",
        ),
        (DetailCode::ParentServerError, "ParentServerError", "Parent"),
        (DetailCode::ParentConfigError, "ParentConfigError", "Parent"),
        (DetailCode::DiskError, "DiskError", "Disk"),
        (DetailCode::StorageError, "StorageError", "Disk"),
        (DetailCode::SyncStopped, "SyncStopped", "Sync"),
        (DetailCode::MessageExpired, "MessageExpired", "Sync"),
        (DetailCode::TagConflict, "TagConflict", "Sync"),
        (DetailCode::DeleteUnsupported, "DeleteUnsupported", "Sync"),
        (DetailCode::DeleteDenied, "DeleteDenied", "Sync"),
        (
            DetailCode::ConfigurationInvalid,
            "ConfigurationInvalid",
            "Configuration",
        ),
        (
            DetailCode::AlreadyActivated,
            "ALREADY_ACTIVATED",
            "Activation",
        ),
        (DetailCode::PolicyInvalid, "PolicyInvalid", "Configuration"),
        (
            DetailCode::DesiredPropertiesInvalid,
            "DesiredPropertiesInvalid",
            "Configuration",
        ),
        (
            DetailCode::EdgeHubUnavailable,
            "EdgeHubUnavailable",
            "IotEdge",
        ),
        (
            DetailCode::ReportedPropertiesRefused,
            "ReportedPropertiesRefused",
            "IotEdge",
        ),
        (
            DetailCode::TrustBundleUnavailable,
            "TrustBundleUnavailable",
            "IotEdge",
        ),
    ];

    #[test]
    fn codes_keep_their_strings_and_areas() {
        for (code, text, kind) in PINNED {
            assert_eq!(code.as_str(), text);
            assert_eq!(code.to_string(), text);
            assert_eq!(code.kind().as_str(), kind, "{text}");
            assert_eq!(DetailCode::parse(text), Some(code));
        }
        let listed: Vec<DetailCode> = PINNED.iter().map(|p| p.0).collect();
        assert_eq!(listed, DetailCode::ALL);
        assert_eq!(DetailCode::parse("ParentSomethingNew"), None);
    }
}
