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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => cli::serve::run(args),
    }
}
