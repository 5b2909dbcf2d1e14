//! Log levels with ACR's names (`Debug`, `Information`, `Warning`, `Error`, `None`) or `RUST_LOG`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Maps a user-facing level to a tracing filter directive.
pub fn level_directive(level: &str) -> Result<&'static str, String> {
    Ok(match level.to_ascii_lowercase().as_str() {
        "trace" => "trace",
        "debug" => "debug",
        "information" | "info" => "info",
        "warning" | "warn" => "warn",
        "error" => "error",
        "none" | "off" => "off",
        _ => {
            return Err(format!(
                "unknown log level '{level}' (use Debug, Information, Warning, Error or None)"
            ))
        }
    })
}

/// Adds directives that keep library chatter out of normal logs: clients probing HTTPS on a
/// plain port make actix log every garbled handshake as an error, which is noise, not a fault.
/// The per-request access log (target `http`) is shown at Debug only, to keep it off the hot path.
fn with_quiet_deps(level: &str) -> String {
    if matches!(level, "debug" | "trace") {
        level.to_owned()
    } else {
        format!("{level},actix_http::h1=off,actix_server=warn,http=warn")
    }
}

/// Installs the global logger: an explicit level wins, else `RUST_LOG`, else Information.
pub fn init(level: Option<&str>) -> Result<(), String> {
    let filter = match level {
        Some(l) => EnvFilter::new(with_quiet_deps(level_directive(l)?)),
        None => EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| EnvFilter::new(with_quiet_deps("info"))),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init()
        .map_err(|e| format!("could not start logging: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acr_names() {
        assert_eq!(level_directive("Information").unwrap(), "info");
        assert_eq!(level_directive("Warning").unwrap(), "warn");
        assert_eq!(level_directive("None").unwrap(), "off");
        assert_eq!(level_directive("debug").unwrap(), "debug");
        assert!(level_directive("Verbose").is_err());
    }
}
