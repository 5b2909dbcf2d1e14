//! The messages of the exchange between a child and its connected-registry parent:
//! `POST /acr/v1/connectedRegistries/{name}/exchange` carries the child's status (and what it
//! relays for its descendants) up, and answers, when something changed or the wait ran out,
//! with the configuration (when it changed) and the repositories changed since the cursor.

use serde::{Deserialize, Serialize};

use super::family::Activation;
use super::report::Report;
use super::tree::Tree;

/// The path of the exchange for registry `name`.
pub fn exchange_path(name: &str) -> String {
    format!("/acr/v1/connectedRegistries/{name}/exchange")
}

/// Response header every control-plane answer carries, so a child tells a connected-registry
/// parent (even one that does not know it) from a generic registry without configuration.
pub const API_HEADER: &str = "x-connected-registry-api";
/// The value of [`API_HEADER`] (the protocol's version).
pub const API_VERSION: &str = "1";
/// Longest a parent holds an exchange open.
pub const MAX_WAIT_SECONDS: u64 = 300;

/// What the child sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExchangeRequest {
    /// The sending instance's id (one active instance per name).
    pub instance: String,
    /// Events after this are news to the child.
    pub cursor: i64,
    /// The configuration generation the child holds; `None` asks for it.
    #[serde(default)]
    pub generation: Option<String>,
    /// How long the parent may hold the request open when nothing changed.
    pub wait_seconds: u64,
    /// The child's own status.
    pub status: Report,
    /// What the child knows of its descendants.
    #[serde(default)]
    pub descendants: Vec<Relayed>,
}

/// A descendant's status as relayed by the registry between it and the root.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Relayed {
    /// Its name.
    pub name: String,
    /// What it last reported.
    #[serde(default)]
    pub status: Option<Report>,
    /// How long ago it was last heard from (ages travel, clocks do not).
    #[serde(default)]
    pub heard_seconds_ago: Option<u64>,
    /// Its active instance, as its parent records it.
    #[serde(default)]
    pub activation: Activation,
}

/// What the parent answers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExchangeResponse {
    /// The newest event at the parent: the cursor of the next exchange.
    pub cursor: i64,
    /// The configuration generation now.
    pub generation: String,
    /// The configuration, when the child's generation is not the current one.
    #[serde(default)]
    pub config: Option<Tree>,
    /// The child's repositories with changes after its cursor.
    #[serde(default)]
    pub changed: Vec<String>,
    /// The parent's event log restarted (its cursor went back): resync everything.
    #[serde(default)]
    pub reset: bool,
}
