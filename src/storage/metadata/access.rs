//! Access-control records (scope maps, tokens) as stored rows; their meaning lives in `auth`.
//! Every change bumps a generation counter in the same transaction, so every server (another
//! process, another replica) polling the counter sees changes within seconds.

use serde::{Deserialize, Serialize};

use crate::storage::error::Result;

/// Where an access record comes from: made here, or received from the parent registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordSource {
    /// Made here by a management command (or the first-start bootstrap).
    #[default]
    Local,
    /// Defined at the root for this registry: in force here, replaced by every configuration
    /// the parent sends.
    Parent,
    /// Defined at the root for a descendant: kept only to hand on to this registry's children,
    /// never in force here.
    Relay,
}

impl RecordSource {
    /// The value stored in the `source` column.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordSource::Local => "local",
            RecordSource::Parent => "parent",
            RecordSource::Relay => "relay",
        }
    }

    /// Reads a stored value (anything unknown is local, the safe side: sync never deletes it).
    pub fn parse(s: &str) -> Self {
        match s {
            "parent" => RecordSource::Parent,
            "relay" => RecordSource::Relay,
            _ => RecordSource::Local,
        }
    }
}

/// A scope map row; `actions` and `gateways` are JSON owned by the auth module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeMapRow {
    /// Unique name.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// JSON list of repository patterns and their actions.
    pub actions: String,
    /// JSON list of gateways (connected registries) and their actions.
    pub gateways: String,
    /// Made here or received from the parent.
    pub source: RecordSource,
    /// Unix seconds.
    pub created: i64,
    /// Unix seconds.
    pub updated: i64,
}

/// A token row; `passwords` is JSON (hashes only) owned by the auth module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    /// Unique name, also the Basic username.
    pub name: String,
    /// Name of its scope map.
    pub scope_map: String,
    /// `enabled` or `disabled`.
    pub status: String,
    /// JSON list of password slots (hashes, expiry, creation).
    pub passwords: String,
    /// Made here or received from the parent.
    pub source: RecordSource,
    /// Unix seconds.
    pub created: i64,
    /// Unix seconds.
    pub updated: i64,
}

/// Everything the server needs to authorise requests, read consistently.
#[derive(Debug, Clone, Default)]
pub struct AccessRows {
    /// Value of the change counter when read.
    pub generation: i64,
    /// All scope maps.
    pub scope_maps: Vec<ScopeMapRow>,
    /// All tokens.
    pub tokens: Vec<TokenRow>,
}

/// Storing access records.
pub trait AccessRecords {
    /// The change counter alone (cheap enough to poll).
    fn access_generation(&self) -> Result<i64>;

    /// The access records in force here (relayed ones excluded), in one read transaction.
    fn access_rows(&self) -> Result<AccessRows>;

    /// Every access record, relayed ones included (what this registry can hand on).
    fn all_access_rows(&self) -> Result<AccessRows>;

    /// One scope map by name.
    fn scope_map(&self, name: &str) -> Result<Option<ScopeMapRow>>;

    /// Creates (`create = true`, must not exist) or replaces (must exist) a scope map.
    fn put_scope_map(&self, row: &ScopeMapRow, create: bool) -> Result<()>;

    /// Deletes a scope map no token uses.
    fn delete_scope_map(&self, name: &str) -> Result<()>;

    /// One token by name.
    fn token(&self, name: &str) -> Result<Option<TokenRow>>;

    /// Creates (`create = true`, must not exist) or replaces (must exist) a token; its scope map
    /// must exist.
    fn put_token(&self, row: &TokenRow, create: bool) -> Result<()>;

    /// Deletes a token.
    fn delete_token(&self, name: &str) -> Result<()>;
}
