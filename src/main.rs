//! Command line: `connected-registry serve` and the administration subcommands.

mod cli;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    Serve(cli::serve::ServeArgs),
    /// Manage scope maps (repository permissions), like `az acr scope-map`.
    ScopeMap {
        #[command(flatten)]
        data: cli::admin::DataDir,
        #[command(subcommand)]
        cmd: cli::admin::ScopeMapCmd,
    },
    /// Manage tokens (client credentials), like `az acr token`.
    Token {
        #[command(flatten)]
        data: cli::admin::DataDir,
        #[command(subcommand)]
        cmd: cli::admin::TokenCmd,
    },
    /// Define and watch the tree of connected registries below this one, like
    /// `az acr connected-registry` (alias `cr`).
    #[command(name = "connected-registry", visible_alias = "cr")]
    ConnectedRegistry {
        #[command(flatten)]
        data: cli::admin::DataDir,
        #[command(flatten)]
        common: cli::hierarchy::Common,
        #[command(subcommand)]
        cmd: cli::hierarchy::CrCmd,
    },
    /// Sync with the parent (`sync now`).
    Sync {
        #[command(flatten)]
        data: cli::admin::DataDir,
        #[command(subcommand)]
        cmd: cli::sync::SyncCmd,
    },
    /// Show the sync status the running registry last saved.
    Status {
        #[command(flatten)]
        data: cli::admin::DataDir,
    },
    /// Garbage collection (`gc run [--dry-run]`), also while `serve` runs.
    #[command(subcommand)]
    Gc(cli::gc::GcCmd),
    /// Check that the registry answers healthy (the container image's HEALTHCHECK).
    Health(cli::health::HealthArgs),
    /// Azure IoT Edge deployment: print a filled deployment manifest (`iot-edge manifest`).
    #[command(name = "iot-edge", subcommand)]
    IotEdge(cli::edge::EdgeCmd),
    /// Kubernetes nodes: keep containerd's hosts.toml for this registry (the DaemonSet's command).
    TrustDistribution(cli::trust::TrustArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => cli::serve::run(args),
        Command::ScopeMap { data, cmd } => cli::admin::scope_map(data, cmd),
        Command::Token { data, cmd } => cli::admin::token(data, cmd),
        Command::ConnectedRegistry { data, common, cmd } => cli::hierarchy::run(data, common, cmd),
        Command::Sync { data, cmd } => cli::sync::sync(data, cmd),
        Command::Status { data } => cli::sync::status(data),
        Command::Gc(cmd) => cli::gc::run(cmd),
        Command::Health(args) => cli::health::run(args),
        Command::IotEdge(cmd) => cli::edge::run(cmd),
        Command::TrustDistribution(args) => cli::trust::run(args),
    }
}
