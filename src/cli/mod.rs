//! Subcommands of the `connected-registry` binary.

pub mod admin;
pub mod backends;
pub mod edge;
pub mod gc;
pub mod health;
pub mod hierarchy;
pub mod serve;
pub mod sync;
pub mod trust;

/// Startup and command errors are one clear line on stderr and a non-zero exit.
pub fn fail(msg: &str) -> std::process::ExitCode {
    eprintln!("connected-registry: error: {msg}");
    std::process::ExitCode::FAILURE
}
