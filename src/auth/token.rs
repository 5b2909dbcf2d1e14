//! Tokens: a name, a scope map, a status and up to two passwords (hashes) with expiries.

use serde::{Deserialize, Serialize};

use super::model::validate_name;
use super::AuthError;
use crate::storage::metadata::TokenRow;

/// The two password slots ACR gives every token.
pub const SLOTS: [&str; 2] = ["password1", "password2"];

/// One stored password: its slot, hash, creation and optional expiry (Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasswordSlot {
    /// `password1` or `password2`.
    pub name: String,
    /// argon2id PHC string.
    pub hash: String,
    /// When it was generated; also identifies this password in bearer tokens.
    pub created: i64,
    /// When it stops working.
    pub expiry: Option<i64>,
}

impl PasswordSlot {
    /// Whether the password is still valid at `now`.
    pub fn valid_at(&self, now: i64) -> bool {
        self.expiry.is_none_or(|e| now < e)
    }

    /// A stamp that changes whenever the slot's password is regenerated.
    pub fn stamp(&self) -> String {
        format!("{}@{}", self.name, self.created)
    }
}

/// A token as the auth module uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// Name (Basic username).
    pub name: String,
    /// Its scope map.
    pub scope_map: String,
    /// Disabled tokens cannot authenticate.
    pub enabled: bool,
    /// Password slots that are set.
    pub passwords: Vec<PasswordSlot>,
    /// Unix seconds.
    pub created: i64,
}

impl Token {
    /// Reads a stored row.
    pub fn from_row(row: &TokenRow) -> Result<Self, AuthError> {
        let passwords: Vec<PasswordSlot> = serde_json::from_str(&row.passwords)
            .map_err(|e| AuthError::Internal(format!("token '{}' is unreadable: {e}", row.name)))?;
        Ok(Token {
            name: row.name.clone(),
            scope_map: row.scope_map.clone(),
            enabled: row.status == "enabled",
            passwords,
            created: row.created,
        })
    }

    /// The row to store.
    pub fn to_row(&self) -> Result<TokenRow, AuthError> {
        validate_name("token", &self.name)?;
        Ok(TokenRow {
            name: self.name.clone(),
            scope_map: self.scope_map.clone(),
            status: status_str(self.enabled).to_owned(),
            passwords: serde_json::to_string(&self.passwords)
                .map_err(|e| AuthError::Internal(e.to_string()))?,
            created: self.created,
            updated: self.created,
            source: crate::storage::metadata::RecordSource::Local,
        })
    }

    /// The slot with this name, if set.
    pub fn slot(&self, name: &str) -> Option<&PasswordSlot> {
        self.passwords.iter().find(|p| p.name == name)
    }

    /// Replaces (or adds) a slot.
    pub fn set_slot(&mut self, slot: PasswordSlot) {
        self.passwords.retain(|p| p.name != slot.name);
        self.passwords.push(slot);
        self.passwords.sort_by(|a, b| a.name.cmp(&b.name));
    }
}

/// ACR's status words.
pub fn status_str(enabled: bool) -> &'static str {
    if enabled {
        "enabled"
    } else {
        "disabled"
    }
}

/// Parses `enabled` / `disabled`.
pub fn parse_status(s: &str) -> Result<bool, AuthError> {
    match s.to_ascii_lowercase().as_str() {
        "enabled" => Ok(true),
        "disabled" => Ok(false),
        _ => Err(AuthError::Invalid(format!(
            "status must be enabled or disabled, not '{}'",
            crate::registry::echo(s)
        ))),
    }
}
