//! The registry's mode towards its parent.

use std::str::FromStr;

use super::ConfigError;

/// ACR's connected-registry modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Clients only pull; content mirrors the parent (the default).
    #[default]
    ReadOnly,
    /// Clients may push and delete; changes travel up to the parent.
    ReadWrite,
}

impl FromStr for Mode {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // ACR has used both spellings over time ("ReadOnly" and "Mirror", "ReadWrite" and "Registry").
        match s.to_ascii_lowercase().as_str() {
            "readonly" | "mirror" => Ok(Mode::ReadOnly),
            "readwrite" | "registry" => Ok(Mode::ReadWrite),
            _ => Err(ConfigError::Value {
                key: "mode",
                message: format!(
                    "'{}' is not ReadOnly or ReadWrite",
                    crate::registry::echo(s)
                ),
            }),
        }
    }
}

impl Mode {
    /// ACR's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::ReadOnly => "ReadOnly",
            Mode::ReadWrite => "ReadWrite",
        }
    }
}
