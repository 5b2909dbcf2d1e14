//! IoT Edge deployment manifests for one layer of connected registries: the registry module, the
//! API proxy in front of it, edgeAgent and edgeHub, built as JSON from checked inputs.

mod checks;
mod create_options;
mod credentials;
mod modules;
#[cfg(test)]
mod tests;

use std::fmt;
use std::str::FromStr;

use serde_json::{json, Value};

use crate::config::ConfigError;

pub use create_options::{chunk_key, split, CHUNK_MAX};
pub use credentials::RegistryCredential;

/// The registry's module name; the API proxy's route names it, so the two must agree.
pub const REGISTRY_MODULE: &str = "connected-registry";
/// The API proxy's module name, the same on every layer: the proxy checks its parent's
/// certificate against its own module id.
pub const PROXY_MODULE: &str = "IoTEdgeAPIProxy";
/// Port the API proxy serves TLS on and publishes on the host.
pub const PROXY_PORT: u16 = 8000;
/// Port the registry serves plain HTTP on inside the module network.
pub const REGISTRY_PORT: u16 = 8080;
/// Host directory bound to the registry's data volume when none is given.
pub const DEFAULT_HOST_DATA_DIR: &str = "/var/lib/connected-registry";
/// Where a parent CA from the host is mounted in the registry container.
pub const PARENT_CA_IN_CONTAINER: &str = "/etc/connected-registry/parent-ca.pem";
/// The variable a nested registry expands to its parent device's hostname.
pub const PARENT_HOSTNAME_VAR: &str = "$IOTEDGE_PARENTHOSTNAME";

/// IoT Edge runtime images (edgeAgent, edgeHub): the 1.5 LTS line.
const EDGE_RUNTIME_TAG: &str = "1.5";
/// API proxy image tag.
const PROXY_TAG: &str = "1.1";

/// Where in the network the device sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    /// Syncs with a parent outside IoT Edge: ACR, any OCI registry, a connected-registry root.
    Top,
    /// Syncs with, and pulls its images from, the layer above through its API proxy.
    Nested,
}

impl FromStr for Layer {
    type Err = ManifestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "top" => Ok(Layer::Top),
            "nested" => Ok(Layer::Nested),
            other => Err(ManifestError::UnknownLayer(crate::registry::echo(other))),
        }
    }
}

impl Layer {
    /// Registry the IoT Edge images come from: Microsoft's, or the parent's API proxy.
    fn image_source(self) -> String {
        match self {
            Layer::Top => "mcr.microsoft.com".to_owned(),
            Layer::Nested => format!("$upstream:{PROXY_PORT}"),
        }
    }

    /// The API proxy image used when none is given.
    pub fn default_proxy_image(self) -> String {
        format!("{}/azureiotedge-api-proxy:{PROXY_TAG}", self.image_source())
    }

    /// The edgeAgent image.
    pub fn agent_image(self) -> String {
        format!(
            "{}/azureiotedge-agent:{EDGE_RUNTIME_TAG}",
            self.image_source()
        )
    }

    /// The edgeHub image.
    pub fn hub_image(self) -> String {
        format!(
            "{}/azureiotedge-hub:{EDGE_RUNTIME_TAG}",
            self.image_source()
        )
    }
}

/// What a manifest is built from. No `Debug`: it holds passwords.
#[derive(Clone)]
pub struct ManifestInputs {
    /// The device's layer.
    pub layer: Layer,
    /// The connected-registry image.
    pub image: String,
    /// The registry's `ACR_REGISTRY_CONNECTION_STRING`, copied verbatim once checked.
    pub connection_string: String,
    /// The API proxy image; the layer's default when absent.
    pub proxy_image: Option<String>,
    /// Host directory bound to the registry's data volume.
    pub data_dir: String,
    /// Credentials edgeAgent pulls module images with.
    pub credentials: Vec<RegistryCredential>,
    /// A CA certificate file on the host that the registry trusts for its parent's HTTPS.
    pub parent_ca: Option<String>,
}

/// A filled manifest, and what looked wrong without being fatal.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The deployment manifest (`{"modulesContent": …}`).
    pub json: Value,
    /// Doubts about the inputs, for stderr.
    pub warnings: Vec<Warning>,
}

impl Manifest {
    /// The manifest as pretty JSON with a final newline.
    pub fn to_pretty(&self) -> Result<String, ManifestError> {
        Ok(serde_json::to_string_pretty(&self.json)? + "\n")
    }
}

/// Inputs the manifest accepts but that are probably not what was meant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Warning {
    /// A nested registry syncs with a fixed address instead of its parent device.
    FixedParentEndpoint,
    /// A nested registry syncs with its parent device on another port than the API proxy's.
    ParentPort(String),
    /// A nested layer's image does not come from the parent, the only registry it reaches.
    ImageNotFromParent(String),
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Warning::FixedParentEndpoint => write!(
                f,
                "ParentGatewayEndpoint does not use {PARENT_HOSTNAME_VAR}:{PROXY_PORT}: this \
                 registry will sync with that fixed address, not with its parent device"
            ),
            Warning::ParentPort(port) => write!(
                f,
                "ParentGatewayEndpoint port '{port}' is not the API proxy's ({PROXY_PORT})"
            ),
            Warning::ImageNotFromParent(image) => write!(
                f,
                "image '{image}' is not pulled through the parent ($upstream:{PROXY_PORT}/…); \
                 a nested device usually reaches no other registry"
            ),
        }
    }
}

/// Why no manifest was built.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The layer is neither `top` nor `nested`.
    #[error("unknown layer '{0}': use top or nested")]
    UnknownLayer(String),
    /// The connection string does not parse.
    #[error(transparent)]
    ConnectionString(#[from] ConfigError),
    /// The top layer's connection string names a parent device it does not have.
    #[error(
        "the top layer has no parent device: ParentGatewayEndpoint cannot use \
         $IOTEDGE_PARENTHOSTNAME"
    )]
    ParentHostnameOnTop,
    /// A nested registry asks for plain HTTP from a proxy that only speaks TLS.
    #[error("a nested layer syncs through its parent's API proxy, which speaks only TLS: use ParentEndpointProtocol=https")]
    NestedNeedsHttps,
    /// `$IOTEDGE_PARENTHOSTNAME` without a port reaches the parent's edgeHub on 443.
    #[error("ParentGatewayEndpoint=$IOTEDGE_PARENTHOSTNAME needs the API proxy's port ($IOTEDGE_PARENTHOSTNAME:8000); without it https reaches the parent's edgeHub on 443")]
    NestedEndpointWithoutPort,
    /// edgeAgent substitutes `$upstream` only when a port follows it.
    #[error("{what} '{value}': edgeAgent replaces $upstream only when a port follows it ($upstream:8000/…)")]
    UpstreamWithoutPort {
        /// Which input.
        what: &'static str,
        /// Its value.
        value: String,
    },
    /// `$upstream` on the top layer, which has no parent device.
    #[error("{what} '{value}': $upstream names the parent device, and the top layer has none")]
    UpstreamOnTop {
        /// Which input.
        what: &'static str,
        /// Its value.
        value: String,
    },
    /// An image reference or registry address that is empty or has whitespace.
    #[error("{what} '{value}' is empty or contains whitespace")]
    BadReference {
        /// Which input.
        what: &'static str,
        /// Its value.
        value: String,
    },
    /// A registry credential not written `HOST,USER,PASSWORD`.
    #[error("registry credentials must be HOST,USER,PASSWORD, none of them empty")]
    BadCredentials,
    /// A host path Docker cannot bind.
    #[error("{what} '{value}' must be an absolute path on the host, without ':'")]
    BadHostPath {
        /// Which input.
        what: &'static str,
        /// Its value.
        value: String,
    },
    /// createOptions longer than edgeAgent reassembles.
    #[error("createOptions of {module} is {len} characters; edgeAgent takes at most {max}")]
    CreateOptionsTooLong {
        /// The module.
        module: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// JSON serialisation failed.
    #[error("cannot write JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// Builds the deployment manifest for `inputs`, or says which input is wrong.
pub fn build(inputs: &ManifestInputs) -> Result<Manifest, ManifestError> {
    let layer = inputs.layer;
    let mut warnings = Vec::new();
    let cs = checks::connection_string(layer, &inputs.connection_string, &mut warnings)?;
    let proxy_image = inputs
        .proxy_image
        .clone()
        .unwrap_or_else(|| layer.default_proxy_image());
    checks::image(layer, "image", &inputs.image, &mut warnings)?;
    checks::image(layer, "proxy image", &proxy_image, &mut warnings)?;
    checks::host_path("data directory", &inputs.data_dir)?;
    if let Some(ca) = &inputs.parent_ca {
        checks::host_path("parent CA", ca)?;
    }
    let credentials = credentials::entries(layer, &cs, &inputs.credentials)?;
    let agent = json!({
        "schemaVersion": "1.1",
        "runtime": {
            "type": "docker",
            "settings": { "minDockerVersion": "v1.25", "registryCredentials": credentials },
        },
        "systemModules": modules::system(layer)?,
        "modules": {
            REGISTRY_MODULE: modules::registry(inputs)?,
            PROXY_MODULE: modules::proxy(&proxy_image)?,
        },
    });
    let json = json!({
        "modulesContent": {
            "$edgeAgent": { "properties.desired": agent },
            "$edgeHub": { "properties.desired": modules::edge_hub_desired() },
        }
    });
    Ok(Manifest { json, warnings })
}
