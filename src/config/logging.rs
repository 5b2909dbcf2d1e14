//! Log levels with ACR's names (`Debug`, `Information`, `Warning`, `Error`, `None`) or `RUST_LOG`.

use std::io::IsTerminal;
use std::sync::{Mutex, OnceLock};

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::reload;
use tracing_subscriber::util::SubscriberInitExt;

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

/// Parses `level[,target=level…]` directives, the `RUST_LOG` syntax without span and field
/// filters. A plain target filter needs no regular expressions, which keeps the regex engine's
/// code off a gateway's resident pages.
fn targets(directives: &str) -> Result<Targets, String> {
    directives
        .parse()
        .map_err(|e| format!("invalid log filter '{directives}': {e}"))
}

/// The running logger's filter, replaceable while the process runs (a level set at the root).
struct Reloader {
    handle: reload::Handle<Targets, tracing_subscriber::Registry>,
    level: Mutex<Option<String>>,
}

static RELOAD: OnceLock<Reloader> = OnceLock::new();

/// Changes the log level of the running logger (no-op before `init` or when unchanged).
pub fn set_level(level: &str) -> Result<(), String> {
    let filter = targets(&with_quiet_deps(level_directive(level)?))?;
    let Some(r) = RELOAD.get() else {
        return Ok(());
    };
    let mut current = r
        .level
        .lock()
        .map_err(|_| "logger lock poisoned".to_owned())?;
    if current
        .as_deref()
        .is_some_and(|c| c.eq_ignore_ascii_case(level))
    {
        return Ok(());
    }
    r.handle
        .reload(filter)
        .map_err(|e| format!("could not change the log level: {e}"))?;
    tracing::info!(level, "log level changed");
    *current = Some(level.to_owned());
    Ok(())
}

/// Installs the global logger: an explicit level wins, else `RUST_LOG`, else Information.
pub fn init(level: Option<&str>) -> Result<(), String> {
    let filter = match level {
        Some(l) => targets(&with_quiet_deps(level_directive(l)?))?,
        None => match std::env::var("RUST_LOG") {
            Ok(env) if !env.trim().is_empty() => targets(&env)?,
            _ => targets(&with_quiet_deps("info"))?,
        },
    };
    let (filter, handle) = reload::Layer::new(filter);
    let _ = RELOAD.set(Reloader {
        handle,
        level: Mutex::new(level.map(str::to_owned)),
    });
    let output = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .with_target(false);
    tracing_subscriber::registry()
        .with(filter)
        .with(output)
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

    #[test]
    fn rust_log_syntax() {
        let t = targets("warn,connected_registry=debug").unwrap();
        assert_eq!(
            t.default_level(),
            Some(tracing::level_filters::LevelFilter::WARN)
        );
        assert!(t.would_enable("connected_registry::sync", &tracing::Level::DEBUG));
        assert!(!t.would_enable("actix_server", &tracing::Level::INFO));
        let quiet = targets(&with_quiet_deps("info")).unwrap();
        assert!(!quiet.would_enable("actix_http::h1::dispatcher", &tracing::Level::ERROR));
        assert!(targets("info,=[").is_err());
    }
}
