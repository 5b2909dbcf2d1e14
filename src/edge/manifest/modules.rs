//! The module entries of a layer: the registry, the API proxy in front of it, edgeAgent and
//! edgeHub, and edgeHub's own desired properties.

use serde_json::{json, Map, Value};

use crate::config::DEFAULT_DATA_DIR;

use super::create_options::settings;
use super::{
    Layer, ManifestError, ManifestInputs, PARENT_CA_IN_CONTAINER, PROXY_MODULE, PROXY_PORT,
    REGISTRY_MODULE, REGISTRY_PORT,
};

/// The registry starts first: the proxy resolves its name when nginx loads the configuration.
const REGISTRY_STARTUP_ORDER: u32 = 1;
/// The proxy starts once the registry exists.
const PROXY_STARTUP_ORDER: u32 = 2;
/// How long edgeHub keeps messages it cannot send upstream.
const STORE_AND_FORWARD_SECS: u32 = 7200;

/// The connected-registry module: data on the host, the connection string, optionally a
/// parent CA from the host.
pub(super) fn registry(inputs: &ManifestInputs) -> Result<Value, ManifestError> {
    let mut binds = vec![format!("{}:{DEFAULT_DATA_DIR}", inputs.data_dir)];
    let mut env = Map::new();
    env.insert(
        "ACR_REGISTRY_CONNECTION_STRING".into(),
        json!({ "value": inputs.connection_string.trim() }),
    );
    if let Some(ca) = &inputs.parent_ca {
        binds.push(format!("{ca}:{PARENT_CA_IN_CONTAINER}:ro"));
        env.insert(
            "CONNECTED_REGISTRY_PARENT_CA".into(),
            json!({ "value": PARENT_CA_IN_CONTAINER }),
        );
    }
    let create = json!({ "HostConfig": { "Binds": binds } });
    Ok(json!({
        "type": "docker",
        "version": "1.0",
        "status": "running",
        "restartPolicy": "always",
        "startupOrder": REGISTRY_STARTUP_ORDER,
        "settings": settings(REGISTRY_MODULE, &inputs.image, Some(&create))?,
        "env": Value::Object(env),
    }))
}

/// The IoT Edge API proxy: TLS on the host's port 8000, `/v2` and `/acr` to the registry.
pub(super) fn proxy(image: &str) -> Result<Value, ManifestError> {
    let create = json!({ "HostConfig": { "PortBindings": port_bindings(&[PROXY_PORT]) } });
    Ok(json!({
        "type": "docker",
        "version": "1.0",
        "status": "running",
        "restartPolicy": "always",
        "startupOrder": PROXY_STARTUP_ORDER,
        "settings": settings(PROXY_MODULE, image, Some(&create))?,
        "env": {
            "NGINX_DEFAULT_PORT": { "value": PROXY_PORT.to_string() },
            "CONNECTED_ACR_ROUTE_ADDRESS": { "value": format!("{REGISTRY_MODULE}:{REGISTRY_PORT}") },
        },
    }))
}

/// edgeAgent and edgeHub.
pub(super) fn system(layer: Layer) -> Result<Value, ManifestError> {
    let hub_create = json!({ "HostConfig": { "PortBindings": port_bindings(&[443, 5671, 8883]) } });
    Ok(json!({
        "edgeAgent": {
            "type": "docker",
            "settings": settings("edgeAgent", &layer.agent_image(), None)?,
            "env": { "SendRuntimeQualityTelemetry": { "value": "false" } },
        },
        "edgeHub": {
            "type": "docker",
            "status": "running",
            "restartPolicy": "always",
            "settings": settings("edgeHub", &layer.hub_image(), Some(&hub_create))?,
        },
    }))
}

/// edgeHub's desired properties: device messages go upstream, kept two hours when offline.
pub(super) fn edge_hub_desired() -> Value {
    json!({
        "schemaVersion": "1.1",
        "routes": { "upstream": "FROM /messages/* INTO $upstream" },
        "storeAndForwardConfiguration": { "timeToLiveSecs": STORE_AND_FORWARD_SECS },
    })
}

/// Docker `PortBindings` publishing each TCP port on the same host port.
fn port_bindings(ports: &[u16]) -> Value {
    let mut map = Map::new();
    for port in ports {
        map.insert(
            format!("{port}/tcp"),
            json!([{ "HostPort": port.to_string() }]),
        );
    }
    Value::Object(map)
}
