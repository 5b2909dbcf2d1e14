//! Connected-registry records as stored rows (definitions, activation, reported status); their
//! meaning lives in `hierarchy`. Every definition change bumps a generation counter in the same
//! transaction, which children long-poll on.

use crate::storage::error::Result;

use super::{RecordSource, ScopeMapRow, TokenRow};

/// One connected registry as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryRow {
    /// Its name (unique, case-insensitively).
    pub name: String,
    /// Its definition, JSON owned by `hierarchy`.
    pub definition: String,
    /// Defined here (at the root) or received from the parent.
    pub source: RecordSource,
    /// Which instance is active, JSON owned by `hierarchy`.
    pub activation: String,
    /// The status it last reported, JSON owned by `hierarchy`.
    pub status: Option<String>,
    /// When it (or the child relaying for it) was last heard from, Unix seconds.
    pub heard: Option<i64>,
    /// Unix seconds.
    pub created: i64,
}

/// Definitions and access records to change together, in one transaction.
#[derive(Debug, Clone, Default)]
pub struct HierarchyChange {
    /// Definitions to insert or replace (activation and status are kept).
    pub registries: Vec<RegistryRow>,
    /// Definitions to delete, by name.
    pub delete_registries: Vec<String>,
    /// Scope maps to insert or replace.
    pub scope_maps: Vec<ScopeMapRow>,
    /// Tokens to insert or replace.
    pub tokens: Vec<TokenRow>,
    /// Tokens to delete, by name.
    pub delete_tokens: Vec<String>,
    /// Scope maps to delete, by name (after the tokens).
    pub delete_scope_maps: Vec<String>,
}

impl HierarchyChange {
    /// Whether nothing would change.
    pub fn is_empty(&self) -> bool {
        self.registries.is_empty()
            && self.delete_registries.is_empty()
            && self.scope_maps.is_empty()
            && self.tokens.is_empty()
            && self.delete_tokens.is_empty()
            && self.delete_scope_maps.is_empty()
    }
}

/// Storing the tree of connected registries.
pub trait Hierarchy {
    /// The definition change counter.
    fn hierarchy_generation(&self) -> Result<i64>;

    /// The counters a long-polling child waits on, read together: definitions, access records
    /// and the newest event.
    fn change_counters(&self) -> Result<(i64, i64, i64)>;

    /// Every connected registry, by name.
    fn connected_registries(&self) -> Result<Vec<RegistryRow>>;

    /// One connected registry (names compare case-insensitively).
    fn connected_registry(&self, name: &str) -> Result<Option<RegistryRow>>;

    /// Applies definition and access changes in one transaction, bumping both counters.
    fn apply_hierarchy(&self, change: &HierarchyChange) -> Result<()>;

    /// Records which instance is active (or none), bumping the definition counter when
    /// `announce` (a deactivation children must hear about).
    fn set_activation(&self, name: &str, activation: &str, announce: bool) -> Result<()>;

    /// Stores the status a registry reported and when it was heard from (kept when older than
    /// what is stored, so a late relay never hides a fresher report); whether it was stored.
    fn set_registry_status(&self, name: &str, status: &str, heard: i64) -> Result<bool>;
}
