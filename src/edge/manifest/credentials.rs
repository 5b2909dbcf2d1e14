//! `runtime.settings.registryCredentials`: the registries edgeAgent pulls module images from.

use std::fmt;
use std::str::FromStr;

use serde_json::{json, Map, Value};

use crate::config::ConnectionString;

use super::{checks, Layer, ManifestError, PROXY_PORT};

/// One registry login for edgeAgent; the password never appears in `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryCredential {
    /// Registry host[:port], e.g. `myregistry.azurecr.io` or `$upstream:8000`.
    pub address: String,
    /// User (or token) name.
    pub username: String,
    /// Password.
    pub password: String,
}

impl fmt::Debug for RegistryCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryCredential")
            .field("address", &self.address)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl FromStr for RegistryCredential {
    type Err = ManifestError;

    /// `HOST,USER,PASSWORD`; the password may itself contain commas.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.splitn(3, ',');
        let mut next = || {
            parts
                .next()
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .ok_or(ManifestError::BadCredentials)
        };
        Ok(RegistryCredential {
            address: next()?,
            username: next()?,
            password: next()?,
        })
    }
}

/// The credentials object: a nested layer logs in to its parent with the sync token (the
/// documented setup), unless `given` names that address itself; later entries for one address
/// replace earlier ones.
pub(super) fn entries(
    layer: Layer,
    cs: &ConnectionString,
    given: &[RegistryCredential],
) -> Result<Value, ManifestError> {
    let mut all: Vec<RegistryCredential> = Vec::new();
    if layer == Layer::Nested {
        all.push(RegistryCredential {
            address: format!("$upstream:{PROXY_PORT}"),
            username: cs.sync_token_name.clone(),
            password: cs.sync_token_password.clone(),
        });
    }
    for c in given {
        checks::reference(layer, "registry address", &c.address)?;
        all.retain(|known| known.address != c.address);
        all.push(c.clone());
    }
    let mut map = Map::new();
    for c in all {
        let entry = json!({ "address": c.address, "username": c.username, "password": c.password });
        map.insert(unique(&map, key(&c.address)), entry);
    }
    Ok(Value::Object(map))
}

/// An entry name from the address that satisfies the schema's `^[^\.\$# ]+$`:
/// `myregistry.azurecr.io` → `myregistry-azurecr-io`, `$upstream:8000` → `upstream-8000`.
pub(super) fn key(address: &str) -> String {
    let mut out = String::new();
    for c in address.chars().map(|c| c.to_ascii_lowercase()) {
        let keep = c.is_ascii_alphanumeric() || c == '_';
        if keep {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    let trimmed = out.trim_end_matches('-');
    if trimmed.is_empty() {
        "registry".to_owned()
    } else {
        trimmed.to_owned()
    }
}

/// `name`, or `name-2`, `name-3`… when two addresses map to one key.
fn unique(map: &Map<String, Value>, name: String) -> String {
    if !map.contains_key(&name) {
        return name;
    }
    let mut i = 2;
    loop {
        let candidate = format!("{name}-{i}");
        if !map.contains_key(&candidate) {
            return candidate;
        }
        i += 1;
    }
}
