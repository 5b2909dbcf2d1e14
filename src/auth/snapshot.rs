//! An in-memory copy of tokens and scope maps, reloaded when the database's change counter moves.

use std::collections::HashMap;

use super::model::{GatewayGrant, Grant, ScopeMap};
use super::token::Token;
use super::AuthError;
use crate::storage::metadata::{AccessRows, ScopeMapRow};

/// Tokens and scope maps as of one generation.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// The counter value this copy reflects.
    pub generation: i64,
    /// Tokens by name.
    pub tokens: HashMap<String, Token>,
    /// Scope maps by name.
    pub maps: HashMap<String, ScopeMap>,
}

/// Parses a stored scope map.
pub fn scope_map_from_row(row: &ScopeMapRow) -> Result<ScopeMap, AuthError> {
    let grants: Vec<Grant> = serde_json::from_str(&row.actions)
        .map_err(|e| AuthError::Internal(format!("scope map '{}' is unreadable: {e}", row.name)))?;
    let gateways: Vec<GatewayGrant> = serde_json::from_str(&row.gateways).map_err(|e| {
        AuthError::Internal(format!(
            "scope map '{}' has unreadable gateways: {e}",
            row.name
        ))
    })?;
    Ok(ScopeMap::new(&row.name, row.description.clone(), grants)?.with_gateways(gateways))
}

impl Snapshot {
    /// Builds a snapshot; an unreadable record is skipped (and logged) rather than locking
    /// everybody out.
    pub fn from_rows(rows: &AccessRows) -> Snapshot {
        let mut s = Snapshot {
            generation: rows.generation,
            ..Snapshot::default()
        };
        for r in &rows.scope_maps {
            match scope_map_from_row(r) {
                Ok(m) => {
                    s.maps.insert(m.name.clone(), m);
                }
                Err(e) => tracing::error!(error = %e, "skipping scope map"),
            }
        }
        for r in &rows.tokens {
            match Token::from_row(r) {
                Ok(t) => {
                    s.tokens.insert(t.name.clone(), t);
                }
                Err(e) => tracing::error!(error = %e, "skipping token"),
            }
        }
        s
    }

    /// The scope map of an enabled token.
    pub fn map_of(&self, token: &str) -> Option<&ScopeMap> {
        let t = self.tokens.get(token).filter(|t| t.enabled)?;
        self.maps.get(&t.scope_map)
    }
}
