//! Input checks: what edgeAgent, Docker and the registry itself would reject or misread at
//! deployment time is refused (or warned about) here, before anyone deploys it.

use crate::config::ConnectionString;
use crate::registry::echo;

use super::{Layer, ManifestError, Warning, PARENT_HOSTNAME_VAR, PROXY_PORT};

/// Parses the connection string with the project's parser and checks it suits the layer.
pub(super) fn connection_string(
    layer: Layer,
    text: &str,
    warnings: &mut Vec<Warning>,
) -> Result<ConnectionString, ManifestError> {
    // Expanding the variable to itself keeps it visible in the parsed endpoint.
    let cs = ConnectionString::parse(text, Some(PARENT_HOSTNAME_VAR), None)?;
    let endpoint = cs.parent_endpoint.as_str();
    match layer {
        Layer::Top if endpoint.contains(PARENT_HOSTNAME_VAR) => {
            Err(ManifestError::ParentHostnameOnTop)
        }
        Layer::Top => Ok(cs),
        Layer::Nested => {
            if cs.protocol != "https" {
                return Err(ManifestError::NestedNeedsHttps);
            }
            let proxy_port = format!(":{PROXY_PORT}");
            match endpoint.strip_prefix(PARENT_HOSTNAME_VAR) {
                Some("") => return Err(ManifestError::NestedEndpointWithoutPort),
                Some(rest) if rest == proxy_port => {}
                Some(rest) => {
                    let port = rest.trim_start_matches(':');
                    warnings.push(Warning::ParentPort(echo(port)));
                }
                None => warnings.push(Warning::FixedParentEndpoint),
            }
            Ok(cs)
        }
    }
}

/// An image reference: no whitespace, `$upstream` only where edgeAgent substitutes it.
pub(super) fn image(
    layer: Layer,
    what: &'static str,
    value: &str,
    warnings: &mut Vec<Warning>,
) -> Result<(), ManifestError> {
    reference(layer, what, value)?;
    if layer == Layer::Nested && !value.starts_with("$upstream:") {
        warnings.push(Warning::ImageNotFromParent(echo(value)));
    }
    Ok(())
}

/// An image or registry address as edgeAgent reads it.
pub(super) fn reference(
    layer: Layer,
    what: &'static str,
    value: &str,
) -> Result<(), ManifestError> {
    if value.is_empty() || value.chars().any(char::is_whitespace) {
        let value = echo(value);
        return Err(ManifestError::BadReference { what, value });
    }
    if value.contains("$upstream") && layer == Layer::Top {
        let value = echo(value);
        return Err(ManifestError::UpstreamOnTop { what, value });
    }
    if !upstream_has_port(value) {
        let value = echo(value);
        return Err(ManifestError::UpstreamWithoutPort { what, value });
    }
    Ok(())
}

/// edgeAgent's rule (`NestedEdgeParentUrlParser`): `$upstream` followed by `:` and a digit 1-9.
pub(super) fn upstream_has_port(value: &str) -> bool {
    value.match_indices("$upstream").all(|(i, m)| {
        let mut rest = value[i + m.len()..].chars();
        rest.next() == Some(':') && rest.next().is_some_and(|c| ('1'..='9').contains(&c))
    })
}

/// A host path for a Docker bind: absolute, and no `:` (the bind syntax's separator).
pub(super) fn host_path(what: &'static str, value: &str) -> Result<(), ManifestError> {
    let ok = value.starts_with('/') && !value.contains(':') && !value.chars().any(char::is_control);
    if ok {
        Ok(())
    } else {
        Err(ManifestError::BadHostPath {
            what,
            value: echo(value),
        })
    }
}
