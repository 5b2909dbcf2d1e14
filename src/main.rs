//! Command line: `connected-registry serve` and, later, administration subcommands.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use connected_registry::api::server;
use connected_registry::config::{self, logging, Overrides, Settings};

/// A connected container registry for the edge.
#[derive(Parser, Debug)]
#[command(name = "connected-registry", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the registry.
    Serve(ServeArgs),
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// Address to listen on [default: 0.0.0.0:8080].
    #[arg(long, env = "CONNECTED_REGISTRY_LISTEN")]
    listen: Option<String>,
    /// Data directory [default: $ACR_REGISTRY_DATA_VOLUME, else /var/acr/data, else ./data].
    #[arg(long, env = "ACR_REGISTRY_DATA_VOLUME")]
    data_dir: Option<PathBuf>,
    /// Optional TOML configuration file.
    #[arg(long, env = "CONNECTED_REGISTRY_CONFIG")]
    config: Option<PathBuf>,
    /// Debug, Information, Warning, Error or None (RUST_LOG is used when unset).
    #[arg(long, env = "CONNECTED_REGISTRY_LOG_LEVEL")]
    log_level: Option<String>,
    /// Idle upload sessions older than this are deleted (e.g. 24h, 30m, PT1H) [default: 24h].
    #[arg(long, env = "CONNECTED_REGISTRY_UPLOAD_MAX_AGE")]
    upload_max_age: Option<String>,
    /// Time in-flight requests get to finish after SIGTERM [default: 10s].
    #[arg(long, env = "CONNECTED_REGISTRY_SHUTDOWN_TIMEOUT")]
    shutdown_timeout: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(args),
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    let mut settings = match Settings::resolve(Overrides {
        listen: args.listen,
        data_dir: args.data_dir,
        config_file: args.config,
        log_level: args.log_level,
        upload_max_age: args.upload_max_age,
        shutdown_timeout: args.shutdown_timeout,
    }) {
        Ok(s) => s,
        Err(e) => return fail(&e.to_string()),
    };
    if let Err(e) = logging::init(settings.log_level.as_deref()) {
        return fail(&e);
    }
    if settings.data_dir_is_default {
        settings.data_dir = config::default_data_dir_for_this_user();
        tracing::info!(data_dir = %settings.data_dir.display(), "no data directory configured; using the default");
    }
    match actix_web::rt::System::new().block_on(server::run(settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e.to_string()),
    }
}

/// Startup errors are one clear line on stderr and a non-zero exit.
fn fail(msg: &str) -> ExitCode {
    eprintln!("connected-registry: error: {msg}");
    ExitCode::FAILURE
}
