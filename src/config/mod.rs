//! Process settings: command-line flags > environment > the optional TOML file > defaults.
//!
//! The TOML file's `[server]` table holds process settings; later sections (`mode`, `[sync]`)
//! belong to the sync policy and are read by their own modules.

pub mod duration;
pub mod logging;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use duration::parse_duration;

/// Listen address when none is configured (the IoT Edge API proxy forwards here).
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8080";
/// Data directory when neither a flag nor `ACR_REGISTRY_DATA_VOLUME` names one.
pub const DEFAULT_DATA_DIR: &str = "/var/acr/data";
/// Age after which an idle upload session is deleted.
pub const DEFAULT_UPLOAD_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
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
    /// `--config`.
    pub config_file: Option<PathBuf>,
    /// `--log-level`.
    pub log_level: Option<String>,
    /// `--upload-max-age`.
    pub upload_max_age: Option<String>,
    /// `--shutdown-timeout`.
    pub shutdown_timeout: Option<String>,
}

/// The `[server]` table of the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerSection {
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    log_level: Option<String>,
    upload_max_age: Option<String>,
    shutdown_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct FileRoot {
    #[serde(default)]
    server: ServerSection,
}

/// Resolved settings for `serve`.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Log level, if set anywhere (else `RUST_LOG` or Information).
    pub log_level: Option<String>,
    /// Idle upload sessions older than this are removed.
    pub upload_max_age: Duration,
    /// Grace period for in-flight requests at shutdown.
    pub shutdown_timeout: Duration,
    /// The config file, for modules that read their own sections of it.
    pub config_file: Option<PathBuf>,
    /// True when no data directory was configured and the built-in default applies.
    pub data_dir_is_default: bool,
}

impl Settings {
    /// Merges overrides, the config file and defaults.
    pub fn resolve(o: Overrides) -> Result<Settings, ConfigError> {
        let file = match &o.config_file {
            Some(p) => read_file(p)?.server,
            None => ServerSection::default(),
        };
        let listen_s = o
            .listen
            .or(file.listen)
            .unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
        let listen = listen_s.parse().map_err(|_| ConfigError::Value {
            key: "listen",
            message: format!("'{listen_s}' is not an address like 0.0.0.0:8080"),
        })?;
        let log_level = o.log_level.or(file.log_level);
        if let Some(l) = &log_level {
            logging::level_directive(l).map_err(|message| ConfigError::Value {
                key: "log_level",
                message,
            })?;
        }
        let configured_dir = o.data_dir.or(file.data_dir);
        let data_dir_is_default = configured_dir.is_none();
        Ok(Settings {
            listen,
            data_dir: configured_dir.unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            data_dir_is_default,
            log_level,
            upload_max_age: duration_setting(
                "upload_max_age",
                o.upload_max_age.or(file.upload_max_age),
                DEFAULT_UPLOAD_MAX_AGE,
            )?,
            shutdown_timeout: duration_setting(
                "shutdown_timeout",
                o.shutdown_timeout.or(file.shutdown_timeout),
                DEFAULT_SHUTDOWN_TIMEOUT,
            )?,
            config_file: o.config_file,
        })
    }
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
