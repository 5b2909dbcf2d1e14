//! The IoT Edge environment a module is started with: who it is, where edgeHub and the workload
//! API are (`IOTEDGE_*`, set by edgeAgent), or, for local development, a module connection
//! string and a CA file (`EdgeHubConnectionString`, `EdgeModuleCACertificateFile`), as the IoT
//! SDKs accept.

use std::path::PathBuf;

use base64::Engine as _;

use super::ConfigError;

/// The variables edgeAgent sets for every module (reference §2.1).
const WORKLOAD_VARS: [&str; 6] = [
    "IOTEDGE_MODULEID",
    "IOTEDGE_DEVICEID",
    "IOTEDGE_IOTHUBHOSTNAME",
    "IOTEDGE_GATEWAYHOSTNAME",
    "IOTEDGE_MODULEGENERATIONID",
    "IOTEDGE_AUTHSCHEME",
];
/// The workload API version asked for when edgeAgent passes none (what edgeHub itself uses).
pub const DEFAULT_WORKLOAD_API_VERSION: &str = "2019-01-30";
/// edgeHub's MQTT-over-TLS port.
pub const EDGEHUB_MQTT_PORT: u16 = 8883;

/// Who the module is and where its IoT Edge peers are.
#[derive(Clone, PartialEq, Eq)]
pub struct ModuleEnv {
    /// IoT Hub host name (`IOTEDGE_IOTHUBHOSTNAME`): the SAS token's audience.
    pub hub_host: String,
    /// edgeHub's host name (`IOTEDGE_GATEWAYHOSTNAME`): where MQTT connects, the name its
    /// certificate is checked for.
    pub gateway_host: String,
    /// edgeHub's MQTT port (8883; `CONNECTED_REGISTRY_EDGEHUB_PORT` for tests and odd setups).
    pub mqtt_port: u16,
    /// The device id.
    pub device_id: String,
    /// The module id.
    pub module_id: String,
    /// How the module proves who it is.
    pub credentials: ModuleCredentials,
}

/// How the module signs its SAS tokens and whom it trusts.
#[derive(Clone, PartialEq, Eq)]
pub enum ModuleCredentials {
    /// The workload API signs and gives the trust bundle (the key never leaves the daemon).
    Workload {
        /// Path of the workload API's Unix socket.
        socket: PathBuf,
        /// `IOTEDGE_MODULEGENERATIONID`.
        generation_id: String,
        /// `IOTEDGE_APIVERSION` or the default.
        api_version: String,
    },
    /// Local development: the module's key from its connection string, and a CA file.
    Key {
        /// The module's shared access key.
        key: Vec<u8>,
        /// `EdgeModuleCACertificateFile`: the CA edgeHub's certificate chains to.
        ca_file: Option<PathBuf>,
    },
}

impl std::fmt::Debug for ModuleEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModuleEnv")
            .field("gateway_host", &self.gateway_host)
            .field("device_id", &self.device_id)
            .field("module_id", &self.module_id)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for ModuleCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModuleCredentials::Workload { socket, .. } => {
                f.debug_struct("Workload").field("socket", socket).finish()
            }
            ModuleCredentials::Key { ca_file, .. } => f
                .debug_struct("Key")
                .field("key", &"<redacted>")
                .field("ca_file", ca_file)
                .finish(),
        }
    }
}

fn bad(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Value {
        key,
        message: message.into(),
    }
}

impl ModuleEnv {
    /// The module's environment, read through `var`; `None` when the registry does not run as
    /// an IoT Edge module. A partial environment is an error naming what is missing.
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, ConfigError> {
        let get = |k: &str| var(k).filter(|v| !v.trim().is_empty());
        let port = match get("CONNECTED_REGISTRY_EDGEHUB_PORT") {
            Some(p) => p
                .trim()
                .parse()
                .map_err(|_| bad("CONNECTED_REGISTRY_EDGEHUB_PORT", "is not a port number"))?,
            None => EDGEHUB_MQTT_PORT,
        };
        if let Some(uri) = get("IOTEDGE_WORKLOADURI") {
            let missing: Vec<&str> = WORKLOAD_VARS
                .into_iter()
                .filter(|k| get(k).is_none())
                .collect();
            if !missing.is_empty() {
                return Err(bad(
                    "IOTEDGE_WORKLOADURI",
                    format!(
                        "is set but {} are not: the module's environment is incomplete",
                        missing.join(", ")
                    ),
                ));
            }
            let scheme = get("IOTEDGE_AUTHSCHEME").unwrap_or_default();
            if !scheme.eq_ignore_ascii_case("sasToken") {
                return Err(bad(
                    "IOTEDGE_AUTHSCHEME",
                    format!(
                        "'{}' is not supported; only sasToken is",
                        crate::registry::echo(&scheme)
                    ),
                ));
            }
            let socket = uri
                .strip_prefix("unix://")
                .ok_or_else(|| bad("IOTEDGE_WORKLOADURI", "must be a unix:// socket path"))?;
            let v = |k: &str| get(k).unwrap_or_default();
            return Ok(Some(ModuleEnv {
                hub_host: v("IOTEDGE_IOTHUBHOSTNAME"),
                gateway_host: v("IOTEDGE_GATEWAYHOSTNAME"),
                mqtt_port: port,
                device_id: v("IOTEDGE_DEVICEID"),
                module_id: v("IOTEDGE_MODULEID"),
                credentials: ModuleCredentials::Workload {
                    socket: PathBuf::from(socket),
                    generation_id: v("IOTEDGE_MODULEGENERATIONID"),
                    api_version: get("IOTEDGE_APIVERSION")
                        .unwrap_or_else(|| DEFAULT_WORKLOAD_API_VERSION.to_owned()),
                },
            }));
        }
        let Some(cs) = get("EdgeHubConnectionString") else {
            return Ok(None);
        };
        Self::from_connection_string(
            &cs,
            get("EdgeModuleCACertificateFile").map(PathBuf::from),
            port,
        )
        .map(Some)
    }

    /// A module connection string: `HostName=…;GatewayHostName=…;DeviceId=…;ModuleId=…;
    /// SharedAccessKey=…`.
    fn from_connection_string(
        cs: &str,
        ca_file: Option<PathBuf>,
        mqtt_port: u16,
    ) -> Result<Self, ConfigError> {
        const KEY: &str = "EdgeHubConnectionString";
        let field = |name: &str| -> Option<String> {
            cs.split(';')
                .filter_map(|p| p.trim().split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
                .map(|(_, v)| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let need =
            |v: Option<String>, name: &str| v.ok_or_else(|| bad(KEY, format!("has no {name}")));
        let hub_host = need(field("HostName"), "HostName")?;
        let gateway_host = need(field("GatewayHostName"), "GatewayHostName")?;
        let device_id = need(field("DeviceId"), "DeviceId")?;
        let module_id = need(field("ModuleId"), "ModuleId")?;
        let key = need(field("SharedAccessKey"), "SharedAccessKey")?;
        let key = base64::engine::general_purpose::STANDARD
            .decode(key.as_bytes())
            .map_err(|_| bad(KEY, "SharedAccessKey is not base64"))?;
        Ok(ModuleEnv {
            hub_host,
            gateway_host,
            mqtt_port,
            device_id,
            module_id,
            credentials: ModuleCredentials::Key { key, ca_file },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    const FULL: [(&str, &str); 8] = [
        (
            "IOTEDGE_WORKLOADURI",
            "unix:///var/run/iotedge/workload.sock",
        ),
        ("IOTEDGE_MODULEID", "connected-registry"),
        ("IOTEDGE_DEVICEID", "dev1"),
        ("IOTEDGE_IOTHUBHOSTNAME", "hub.azure-devices.net"),
        ("IOTEDGE_GATEWAYHOSTNAME", "gateway.local"),
        ("IOTEDGE_MODULEGENERATIONID", "637"),
        ("IOTEDGE_APIVERSION", "2022-08-03"),
        ("IOTEDGE_AUTHSCHEME", "sasToken"),
    ];

    #[test]
    fn reads_the_workload_environment() {
        let m = ModuleEnv::from_env(env(&FULL)).unwrap().unwrap();
        assert_eq!(m.gateway_host, "gateway.local");
        assert_eq!(m.mqtt_port, 8883);
        match m.credentials {
            ModuleCredentials::Workload {
                socket,
                api_version,
                ..
            } => {
                assert_eq!(socket, PathBuf::from("/var/run/iotedge/workload.sock"));
                assert_eq!(api_version, "2022-08-03");
            }
            ModuleCredentials::Key { .. } => panic!("workload expected"),
        }
        assert!(ModuleEnv::from_env(env(&[])).unwrap().is_none());
    }

    #[test]
    fn a_partial_environment_or_another_scheme_is_an_error() {
        let e = ModuleEnv::from_env(env(&FULL[..3]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("IOTEDGE_IOTHUBHOSTNAME"), "{e}");
        let mut x509 = FULL;
        x509[7] = ("IOTEDGE_AUTHSCHEME", "x509");
        let e = ModuleEnv::from_env(env(&x509)).unwrap_err().to_string();
        assert!(e.contains("sasToken"), "{e}");
    }

    #[test]
    fn local_development_takes_a_module_connection_string() {
        let cs = "HostName=hub.azure-devices.net;GatewayHostName=localhost;DeviceId=d;ModuleId=m;SharedAccessKey=a2V5";
        let pairs = [
            ("EdgeHubConnectionString", cs),
            ("EdgeModuleCACertificateFile", "/ca.pem"),
        ];
        let m = ModuleEnv::from_env(env(&pairs)).unwrap().unwrap();
        assert_eq!((m.device_id.as_str(), m.module_id.as_str()), ("d", "m"));
        assert_eq!(
            m.credentials,
            ModuleCredentials::Key {
                key: b"key".to_vec(),
                ca_file: Some(PathBuf::from("/ca.pem"))
            }
        );
        let pairs = [("EdgeHubConnectionString", "HostName=h;DeviceId=d")];
        assert!(ModuleEnv::from_env(env(&pairs)).is_err());
    }
}
