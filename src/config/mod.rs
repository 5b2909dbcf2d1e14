//! Process settings: command-line flags > environment > the optional TOML file > defaults.
//!
//! The TOML file's `[server]` table holds process settings; later sections (`mode`, `[sync]`)
//! belong to the sync policy and are read by their own modules.

pub mod connection;
pub mod duration;
pub mod iot_edge;
pub mod limits;
pub mod logging;
mod mode;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::storage::Backends;

pub use connection::ConnectionString;
pub use duration::parse_duration;
pub use limits::Limits;
pub use mode::Mode;

/// Listen address when none is configured (the IoT Edge API proxy forwards here).
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8080";
/// Data directory when neither a flag nor `ACR_REGISTRY_DATA_VOLUME` names one.
pub const DEFAULT_DATA_DIR: &str = "/var/acr/data";
/// Age after which an idle upload session is deleted.
pub const DEFAULT_UPLOAD_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// Lifetime of the module's edgeHub tokens (the IoT SDKs' hour).
pub const DEFAULT_TWIN_TOKEN_TTL: Duration = Duration::from_secs(3600);
/// Time in-flight requests get to finish after SIGTERM.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// A configuration problem, naming the setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The config file is not valid TOML or has unknown keys.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// A configuration document other than a file (the module twin's desired properties) is
    /// invalid.
    #[error("invalid {origin}: {message}")]
    Document {
        /// What the document is.
        origin: String,
        /// What was wrong.
        message: String,
    },
    /// One setting has a bad value.
    #[error("invalid value for {key}: {message}")]
    Value {
        /// The setting's name.
        key: &'static str,
        /// What was wrong.
        message: String,
    },
}

/// Settings given on the command line or in the environment (absent = not given).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--listen`.
    pub listen: Option<String>,
    /// `--data-dir` or `ACR_REGISTRY_DATA_VOLUME`.
    pub data_dir: Option<PathBuf>,
    /// `--blob-store` or `CONNECTED_REGISTRY_BLOB_STORE`.
    pub blob_store: Option<String>,
    /// `--metadata` or `CONNECTED_REGISTRY_METADATA`.
    pub metadata: Option<String>,
    /// `--config`.
    pub config_file: Option<PathBuf>,
    /// `--log-level`.
    pub log_level: Option<String>,
    /// `--upload-max-age`.
    pub upload_max_age: Option<String>,
    /// `--shutdown-timeout`.
    pub shutdown_timeout: Option<String>,
    /// `--anonymous-pull`.
    pub anonymous_pull: bool,
    /// `--metrics-anonymous`.
    pub metrics_anonymous: bool,
    /// `--insecure-no-auth`.
    pub insecure_no_auth: bool,
    /// `ACR_REGISTRY_LOGIN_SERVER`.
    pub login_server: Option<String>,
    /// `--mode`.
    pub mode: Option<String>,
    /// `--tls-cert`.
    pub tls_cert: Option<PathBuf>,
    /// `--tls-key`.
    pub tls_key: Option<PathBuf>,
    /// `ACR_REGISTRY_CERTIFICATE_VOLUME` (default `/var/acr/certs`).
    pub certificate_volume: Option<PathBuf>,
    /// `--tls-listen`.
    pub tls_listen: Option<String>,
    /// `--http-enabled`.
    pub http_enabled: bool,
    /// `ACR_REGISTRY_CONNECTION_STRING`.
    pub connection_string: Option<String>,
    /// `IOTEDGE_PARENTHOSTNAME`.
    pub parent_hostname: Option<String>,
    /// `ACR_PARENT_GATEWAY_ENDPOINT`.
    pub parent_endpoint_override: Option<String>,
    /// `--parent-ca`.
    pub parent_ca: Option<PathBuf>,
    /// The IoT Edge module environment, when running as a module.
    pub iot_edge: Option<iot_edge::ModuleEnv>,
    /// `CONNECTED_REGISTRY_TWIN_TOKEN_TTL`.
    pub twin_token_ttl: Option<String>,
    /// `--tls-from-workload`.
    pub tls_from_workload: bool,
}

/// The `[server]` table of the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerSection {
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    blob_store: Option<String>,
    metadata: Option<String>,
    log_level: Option<String>,
    upload_max_age: Option<String>,
    shutdown_timeout: Option<String>,
    anonymous_pull: Option<bool>,
    metrics_anonymous: Option<bool>,
    insecure_no_auth: Option<bool>,
    login_server: Option<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_listen: Option<String>,
    http_enabled: Option<bool>,
    parent_ca: Option<PathBuf>,
}

/// The parts of the file this module reads; `[sync]` and others belong to their own modules.
#[derive(Debug, Default, Deserialize)]
struct FileRoot {
    #[serde(default)]
    server: ServerSection,
    #[serde(default)]
    limits: limits::LimitsSection,
    mode: Option<String>,
}

/// Resolved settings for `serve`.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Where blobs and metadata are kept (the data directory unless `blob_store` or `metadata`
    /// says otherwise).
    pub backends: Backends,
    /// Log level, if set anywhere (else `RUST_LOG` or Information).
    pub log_level: Option<String>,
    /// Log level given on the command line or in the environment: it wins over the module twin
    /// and the file.
    pub log_level_flag: Option<String>,
    /// Idle upload sessions older than this are removed.
    pub upload_max_age: Duration,
    /// Grace period for in-flight requests at shutdown.
    pub shutdown_timeout: Duration,
    /// The config file, for modules that read their own sections of it.
    pub config_file: Option<PathBuf>,
    /// True when no data directory was configured and the built-in default applies.
    pub data_dir_is_default: bool,
    /// Who may do what without credentials, and which host name is ours.
    pub access: Access,
    /// ReadOnly or ReadWrite (meaningful only with a parent).
    pub mode: Mode,
    /// True when `--mode` was given: it then wins over the policy file's `mode`.
    pub mode_from_flag: bool,
    /// Extra CA certificate (PEM) trusted for the parent's HTTPS.
    pub parent_ca: Option<PathBuf>,
    /// The parent, when this registry is a child.
    pub parent: Option<ConnectionString>,
    /// `IOTEDGE_PARENTHOSTNAME`, for connection strings that arrive later (module twin).
    pub parent_hostname: Option<String>,
    /// `ACR_PARENT_GATEWAY_ENDPOINT`, likewise.
    pub parent_endpoint_override: Option<String>,
    /// The IoT Edge module environment, when running as a module.
    pub iot_edge: Option<iot_edge::ModuleEnv>,
    /// Lifetime of the SAS tokens the module connects to edgeHub with.
    pub twin_token_ttl: Duration,
    /// Serve HTTPS with a certificate issued by the workload API (on `tls_listen`).
    pub tls_from_workload: Option<SocketAddr>,
    /// HTTPS listener, when a certificate is configured.
    pub tls: Option<TlsSettings>,
    /// Whether the plain HTTP listener runs (always without TLS; with TLS only when enabled).
    pub serve_http: bool,
    /// Caps on connections, uploads and request timing (`[limits]`).
    pub limits: Limits,
}

/// Authentication switches.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// Unauthenticated clients may pull (ACR's anonymous pull).
    pub anonymous_pull: bool,
    /// `/acr/v1/metrics` answers without credentials (for a scraper on a trusted network).
    pub metrics_anonymous: bool,
    /// No authentication at all (trusted labs, benchmarks).
    pub insecure_no_auth: bool,
    /// When set, requests addressed to another host are refused.
    pub login_server: Option<String>,
}

/// Certificate files and the HTTPS address.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// Address the HTTPS listener binds.
    pub listen: SocketAddr,
}

impl Settings {
    /// Whether clients may push and delete here: a root always, a child only in ReadWrite.
    pub fn writable(&self) -> bool {
        self.parent.is_none() || self.mode == Mode::ReadWrite
    }
}

impl Settings {
    /// Merges overrides, the config file and defaults.
    pub fn resolve(o: Overrides) -> Result<Settings, ConfigError> {
        let root = match &o.config_file {
            Some(p) => read_file(p)?,
            None => FileRoot::default(),
        };
        let file = &root.server;
        let tls = tls_settings(&o, file)?;
        let listen_s = o
            .listen
            .or(file.listen.clone())
            .unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
        let listen = address("listen", &listen_s)?;
        let log_level_flag = o.log_level.clone();
        let log_level = o.log_level.or(file.log_level.clone());
        if let Some(l) = &log_level {
            logging::level_directive(l).map_err(|message| ConfigError::Value {
                key: "log_level",
                message,
            })?;
        }

        let serve_http = (tls.is_none() && !o.tls_from_workload)
            || o.http_enabled
            || file.http_enabled.unwrap_or(false);
        let tls_from_workload = match o.tls_from_workload {
            true if o.iot_edge.is_none() => {
                return Err(ConfigError::Value {
                    key: "tls_from_workload",
                    message: "needs the IoT Edge workload API (IOTEDGE_WORKLOADURI)".into(),
                })
            }
            true => Some(address(
                "tls_listen",
                &o.tls_listen
                    .clone()
                    .or(file.tls_listen.clone())
                    .unwrap_or_else(|| DEFAULT_TLS_LISTEN.to_owned()),
            )?),
            false => None,
        };
        let parent = match o
            .connection_string
            .as_deref()
            .filter(|s| !s.trim().is_empty())
        {
            Some(cs) => Some(ConnectionString::parse(
                cs,
                o.parent_hostname.as_deref(),
                o.parent_endpoint_override.as_deref(),
            )?),
            None => None,
        };
        let mode_from_flag = o.mode.is_some();
        let mode = match o.mode.or(root.mode) {
            Some(m) => m.parse()?,
            None => Mode::ReadOnly,
        };
        let access = Access {
            anonymous_pull: o.anonymous_pull || file.anonymous_pull.unwrap_or(false),
            metrics_anonymous: o.metrics_anonymous || file.metrics_anonymous.unwrap_or(false),
            insecure_no_auth: o.insecure_no_auth || file.insecure_no_auth.unwrap_or(false),
            login_server: o
                .login_server
                .or(file.login_server.clone())
                .filter(|s| !s.trim().is_empty()),
        };
        let backends = backends(o.blob_store, o.metadata, file)?;
        let configured_dir = o.data_dir.or(file.data_dir.clone());
        let data_dir_is_default = configured_dir.is_none();
        Ok(Settings {
            listen,
            data_dir: configured_dir.unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            data_dir_is_default,
            backends,
            log_level,
            log_level_flag,
            upload_max_age: duration_setting(
                "upload_max_age",
                o.upload_max_age.or(file.upload_max_age.clone()),
                DEFAULT_UPLOAD_MAX_AGE,
            )?,
            shutdown_timeout: duration_setting(
                "shutdown_timeout",
                o.shutdown_timeout.or(file.shutdown_timeout.clone()),
                DEFAULT_SHUTDOWN_TIMEOUT,
            )?,
            config_file: o.config_file,
            access,
            mode,
            mode_from_flag,
            parent_ca: o.parent_ca.or(file.parent_ca.clone()),
            parent,
            parent_hostname: o.parent_hostname,
            parent_endpoint_override: o.parent_endpoint_override,
            iot_edge: o.iot_edge,
            tls_from_workload,
            twin_token_ttl: duration_setting(
                "CONNECTED_REGISTRY_TWIN_TOKEN_TTL",
                o.twin_token_ttl,
                DEFAULT_TWIN_TOKEN_TTL,
            )?,
            tls,
            serve_http,
            limits: root.limits.resolve()?,
        })
    }
}

/// Default directory holding `tls.crt` and `tls.key` (ACR's certificate volume).
pub const DEFAULT_CERTIFICATE_VOLUME: &str = "/var/acr/certs";
/// HTTPS address when TLS is on and none is configured.
pub const DEFAULT_TLS_LISTEN: &str = "0.0.0.0:8443";

fn address(key: &'static str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|_| ConfigError::Value {
        key,
        message: format!(
            "'{}' is not an address like 0.0.0.0:8080",
            crate::registry::echo(value)
        ),
    })
}

/// Explicit `--tls-cert`/`--tls-key`, else `tls.crt`/`tls.key` in the certificate volume when both
/// exist, else no TLS.
fn tls_settings(o: &Overrides, file: &ServerSection) -> Result<Option<TlsSettings>, ConfigError> {
    let listen_s = o
        .tls_listen
        .clone()
        .or(file.tls_listen.clone())
        .unwrap_or_else(|| DEFAULT_TLS_LISTEN.to_owned());
    let cert = o.tls_cert.clone().or(file.tls_cert.clone());
    let key = o.tls_key.clone().or(file.tls_key.clone());
    let (cert, key) = match (cert, key) {
        (Some(c), Some(k)) => (c, k),
        (Some(_), None) | (None, Some(_)) => {
            return Err(ConfigError::Value {
                key: "tls_cert",
                message: "--tls-cert and --tls-key go together".into(),
            })
        }
        (None, None) => {
            let dir = o
                .certificate_volume
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_CERTIFICATE_VOLUME));
            let (c, k) = (dir.join("tls.crt"), dir.join("tls.key"));
            if !(c.is_file() && k.is_file()) {
                return Ok(None);
            }
            (c, k)
        }
    };
    Ok(Some(TlsSettings {
        cert,
        key,
        listen: address("tls_listen", &listen_s)?,
    }))
}

/// Where blobs and metadata are kept: the flag or environment, else the `[server]` table, else
/// the data directory.
fn backends(
    blob_store: Option<String>,
    metadata: Option<String>,
    file: &ServerSection,
) -> Result<Backends, ConfigError> {
    resolve_backends(
        blob_store.or(file.blob_store.clone()),
        metadata.or(file.metadata.clone()),
    )
}

/// Parses `--blob-store` and `--metadata` (absent: the data directory), for commands that
/// read no config file.
pub fn resolve_backends(
    blob_store: Option<String>,
    metadata: Option<String>,
) -> Result<Backends, ConfigError> {
    let mut b = Backends::default();
    if let Some(s) = blob_store {
        b.blobs = s.parse().map_err(|message| ConfigError::Value {
            key: "blob_store",
            message,
        })?;
    }
    if let Some(s) = metadata {
        b.metadata = s.parse().map_err(|message| ConfigError::Value {
            key: "metadata",
            message,
        })?;
    }
    Ok(b)
}

fn duration_setting(
    key: &'static str,
    value: Option<String>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    match value {
        Some(v) => parse_duration(&v).map_err(|message| ConfigError::Value { key, message }),
        None => Ok(default),
    }
}

fn read_file(path: &Path) -> Result<FileRoot, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: locate(&text, &e),
    })
}

/// The data directory to use when none was configured: `/var/acr/data` where it can be created
/// (a module or a root service), else `./data` for someone trying the registry by hand.
pub fn default_data_dir_for_this_user() -> PathBuf {
    let system = PathBuf::from(DEFAULT_DATA_DIR);
    if std::fs::create_dir_all(&system).is_ok() {
        system
    } else {
        PathBuf::from("data")
    }
}

/// One line saying where a TOML error is: `line N (`the line`): message`.
fn locate(text: &str, e: &toml::de::Error) -> String {
    let Some(span) = e.span() else {
        return e.message().to_owned();
    };
    let start = span.start.min(text.len());
    let line_no = text[..start].matches('\n').count() + 1;
    let line = text.lines().nth(line_no - 1).unwrap_or("").trim();
    format!("line {line_no} (`{line}`): {}", e.message())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_file_beat_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(
            &f,
            "mode = \"ReadOnly\"\n[server]\nlisten = \"127.0.0.1:9000\"\nupload_max_age = \"PT2H\"\n",
        )
        .unwrap();
        let s = Settings::resolve(Overrides {
            config_file: Some(f.clone()),
            upload_max_age: Some("30m".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(s.listen.to_string(), "127.0.0.1:9000");
        assert_eq!(s.upload_max_age.as_secs(), 1800);
        assert_eq!(s.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
    }

    #[test]
    fn bad_values_name_the_key() {
        let e = Settings::resolve(Overrides {
            listen: Some("nowhere".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("listen"));
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "[server]\nlisten_port = 5\n").unwrap();
        let e = Settings::resolve(Overrides {
            config_file: Some(f),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("listen_port"), "{e}");
    }
}
