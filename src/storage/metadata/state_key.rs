//! The keys of the sync state table. Their strings are what existing data directories hold, so
//! they never change; the test below pins every one.

use std::borrow::Cow;

/// A key of the sync state table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateKey<'a> {
    /// The last sync status report (JSON), for `connected-registry status`.
    Status,
    /// The counter `connected-registry sync now` bumps and a running server watches.
    SyncRequest,
    /// The last configuration the parent applied (JSON), reused after a restart.
    HierarchyTree,
    /// The parent's change feed cursor.
    HierarchyCursor,
    /// This data directory's instance id.
    HierarchyInstance,
    /// The last applied module twin desired properties and their version (JSON).
    EdgeTwin,
    /// The last trust bundle the IoT Edge workload API gave.
    EdgeTrustBundle,
    /// The last garbage-collection pass's report (JSON).
    GcLastPass,
    /// What every garbage-collection pass freed, added up (JSON), for the metrics.
    GcTotals,
    /// A repository's push-up cursor (last event sequence sent).
    PushCursor(&'a str),
    /// An upload to the parent in progress (JSON session), by repository and blob digest.
    Upload {
        /// The repository uploaded to.
        repo: &'a str,
        /// The blob's digest.
        digest: &'a str,
    },
    /// A repository sync populated, with its tags and time (JSON).
    SyncedRepo(&'a str),
    /// A notification endpoint's delivery cursor (last event sequence delivered), by name.
    NotifyCursor(&'a str),
}

/// A family of per-repository keys, scanned together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatePrefix {
    /// Every [`StateKey::PushCursor`].
    PushCursor,
    /// Every [`StateKey::Upload`].
    Upload,
    /// Every [`StateKey::SyncedRepo`].
    SyncedRepo,
    /// Every [`StateKey::NotifyCursor`].
    NotifyCursor,
}

impl StatePrefix {
    /// The text every key of the family starts with.
    pub const fn as_str(self) -> &'static str {
        match self {
            StatePrefix::PushCursor => "pushed:",
            StatePrefix::Upload => "upload:",
            StatePrefix::SyncedRepo => "repo:",
            StatePrefix::NotifyCursor => "notify:",
        }
    }
}

impl StateKey<'_> {
    /// The key as stored in the table.
    pub fn as_key(&self) -> Cow<'static, str> {
        let fixed = match self {
            StateKey::Status => "status",
            StateKey::SyncRequest => "sync_request",
            StateKey::HierarchyTree => "hierarchy:tree",
            StateKey::HierarchyCursor => "hierarchy:cursor",
            StateKey::HierarchyInstance => "hierarchy:instance",
            StateKey::EdgeTwin => "edge:twin",
            StateKey::EdgeTrustBundle => "edge:trust-bundle",
            StateKey::GcLastPass => "gc:last-pass",
            StateKey::GcTotals => "gc:totals",
            StateKey::PushCursor(repo) => return prefixed(StatePrefix::PushCursor, repo),
            StateKey::Upload { repo, digest } => {
                return prefixed(StatePrefix::Upload, &format!("{repo}@{digest}"))
            }
            StateKey::SyncedRepo(repo) => return prefixed(StatePrefix::SyncedRepo, repo),
            StateKey::NotifyCursor(name) => return prefixed(StatePrefix::NotifyCursor, name),
        };
        Cow::Borrowed(fixed)
    }
}

fn prefixed(prefix: StatePrefix, rest: &str) -> Cow<'static, str> {
    Cow::Owned(format!("{}{rest}", prefix.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_keep_the_strings_existing_databases_hold() {
        let digest = "sha256:0123";
        let pinned = [
            (StateKey::Status, "status"),
            (StateKey::SyncRequest, "sync_request"),
            (StateKey::HierarchyTree, "hierarchy:tree"),
            (StateKey::HierarchyCursor, "hierarchy:cursor"),
            (StateKey::HierarchyInstance, "hierarchy:instance"),
            (StateKey::EdgeTwin, "edge:twin"),
            (StateKey::EdgeTrustBundle, "edge:trust-bundle"),
            (StateKey::GcLastPass, "gc:last-pass"),
            (StateKey::GcTotals, "gc:totals"),
            (StateKey::PushCursor("a/b"), "pushed:a/b"),
            (
                StateKey::Upload {
                    repo: "a/b",
                    digest,
                },
                "upload:a/b@sha256:0123",
            ),
            (StateKey::SyncedRepo("a/b"), "repo:a/b"),
            (StateKey::NotifyCursor("hooks"), "notify:hooks"),
        ];
        for (key, text) in pinned {
            assert_eq!(key.as_key(), text, "{key:?}");
        }
        assert_eq!(StatePrefix::PushCursor.as_str(), "pushed:");
        assert_eq!(StatePrefix::Upload.as_str(), "upload:");
        assert_eq!(StatePrefix::SyncedRepo.as_str(), "repo:");
        assert_eq!(StatePrefix::NotifyCursor.as_str(), "notify:");
    }
}
