//! `ACR_REGISTRY_CONNECTION_STRING`: how a child finds and authenticates to its parent.

use std::fmt;

use super::ConfigError;

/// The keys ACR writes into a connected registry's connection string.
const KEYS: [&str; 5] = [
    "ConnectedRegistryName",
    "SyncTokenName",
    "SyncTokenPassword",
    "ParentGatewayEndpoint",
    "ParentEndpointProtocol",
];

/// How to reach the parent; the password never appears in `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectionString {
    /// This registry's name at the parent.
    pub registry_name: String,
    /// The sync token's name (Basic username at the parent).
    pub sync_token_name: String,
    /// The sync token's password.
    pub sync_token_password: String,
    /// Parent host[:port], after `$IOTEDGE_PARENTHOSTNAME` expansion and overrides.
    pub parent_endpoint: String,
    /// `http` or `https`.
    pub protocol: String,
}

impl fmt::Debug for ConnectionString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionString")
            .field("registry_name", &self.registry_name)
            .field("sync_token_name", &self.sync_token_name)
            .field("sync_token_password", &"<redacted>")
            .field("parent_endpoint", &self.parent_endpoint)
            .field("protocol", &self.protocol)
            .finish()
    }
}

fn bad(message: String) -> ConfigError {
    ConfigError::Value {
        key: "ACR_REGISTRY_CONNECTION_STRING",
        message,
    }
}

impl ConnectionString {
    /// Parses `Key=Value;…` (split at the first `=`), expanding `$IOTEDGE_PARENTHOSTNAME` with
    /// `parent_hostname` and replacing the endpoint with `endpoint_override` when given.
    pub fn parse(
        text: &str,
        parent_hostname: Option<&str>,
        endpoint_override: Option<&str>,
    ) -> Result<Self, ConfigError> {
        let mut values: [Option<String>; 5] = Default::default();
        for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| bad(format!("'{}' is not Key=Value", key_only(part))))?;
            let k = k.trim();
            let i = KEYS
                .iter()
                .position(|known| known.eq_ignore_ascii_case(k))
                .ok_or_else(|| bad(format!("unknown key '{}'", crate::registry::echo(k))))?;
            values[i] = Some(v.trim().to_owned());
        }
        let mut take = |i: usize| {
            values[i]
                .take()
                .filter(|v| !v.is_empty())
                .ok_or_else(|| bad(format!("missing key '{}'", KEYS[i])))
        };
        let registry_name = take(0)?;
        let sync_token_name = take(1)?;
        let sync_token_password = take(2)?;
        let mut parent_endpoint = take(3)?;
        let protocol = take(4)?.to_ascii_lowercase();
        if protocol != "http" && protocol != "https" {
            return Err(bad(format!(
                "ParentEndpointProtocol must be http or https, not '{}'",
                crate::registry::echo(&protocol)
            )));
        }
        if let Some(o) = endpoint_override.filter(|o| !o.is_empty()) {
            parent_endpoint = o.to_owned();
        }
        if parent_endpoint.contains("$IOTEDGE_PARENTHOSTNAME") {
            let host = parent_hostname.filter(|h| !h.is_empty()).ok_or_else(|| {
                bad("ParentGatewayEndpoint uses $IOTEDGE_PARENTHOSTNAME, which is not set".into())
            })?;
            parent_endpoint = parent_endpoint.replace("$IOTEDGE_PARENTHOSTNAME", host);
        }
        Ok(ConnectionString {
            registry_name,
            sync_token_name,
            sync_token_password,
            parent_endpoint,
            protocol,
        })
    }

    /// The parent's base URL, e.g. `https://parent.example:8443`.
    pub fn parent_url(&self) -> String {
        format!("{}://{}", self.protocol, self.parent_endpoint)
    }
}

/// The key of a malformed part, never its value (it may be the password).
fn key_only(part: &str) -> String {
    crate::registry::echo(part.split(['=', ' ']).next().unwrap_or(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "ConnectedRegistryName=edge;SyncTokenName=edge-sync-token;\
        SyncTokenPassword=abc=def==;ParentGatewayEndpoint=$IOTEDGE_PARENTHOSTNAME:8000;\
        ParentEndpointProtocol=https";

    #[test]
    fn parses_and_expands() {
        let c = ConnectionString::parse(GOOD, Some("gw.local"), None).unwrap();
        assert_eq!(c.sync_token_password, "abc=def==");
        assert_eq!(c.parent_url(), "https://gw.local:8000");
        assert!(!format!("{c:?}").contains("abc=def"));
        let c = ConnectionString::parse(GOOD, None, Some("10.0.0.5:443")).unwrap();
        assert_eq!(c.parent_endpoint, "10.0.0.5:443");
    }

    #[test]
    fn errors_name_the_key_and_hide_the_password() {
        let e = ConnectionString::parse(&format!("{GOOD};Color=blue"), Some("h"), None);
        assert!(e.unwrap_err().to_string().contains("Color"));
        let e = ConnectionString::parse(&GOOD.replace("SyncTokenName", "X"), Some("h"), None);
        assert!(e.unwrap_err().to_string().contains("'X'"));
        let no_name = GOOD.replace("SyncTokenName=edge-sync-token;", "");
        let e = ConnectionString::parse(&no_name, Some("h"), None).unwrap_err();
        assert!(e.to_string().contains("SyncTokenName"));
        let e = ConnectionString::parse(GOOD, None, None).unwrap_err();
        assert!(e.to_string().contains("IOTEDGE_PARENTHOSTNAME"));
        let e = ConnectionString::parse("SyncTokenPassword secret", None, None).unwrap_err();
        assert!(!e.to_string().contains("secret"));
    }
}
