//! `connected-registry gc run`: one garbage-collection pass now, with the settings `serve`
//! reads (flags, environment, the config file, and what the module twin and the root last
//! set), also while `serve` runs on the same data directory.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use connected_registry::config::{self, Overrides, Settings};
use connected_registry::gc::{self, PassError};
use connected_registry::hierarchy::link;
use connected_registry::node::module::saved_desired;
use connected_registry::storage::Store;
use connected_registry::sync::policy::hub::Flags;
use connected_registry::sync::policy::{FilePolicy, PolicyFile, PolicyHub, SyncPolicy};

use super::backends::BackendArgs;
use super::fail;

/// `gc` subcommands.
#[derive(Subcommand, Debug)]
pub enum GcCmd {
    /// Run a pass at once and print what it freed as JSON (a running pass is waited for).
    Run(RunArgs),
}

/// Flags of `gc run`; each also reads the environment variable `serve` reads.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// Count what a pass would free without removing anything.
    #[arg(long)]
    dry_run: bool,
    /// Data directory [default: $ACR_REGISTRY_DATA_VOLUME, else /var/acr/data, else ./data].
    #[arg(long, env = "ACR_REGISTRY_DATA_VOLUME")]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    backends: BackendArgs,
    /// The TOML configuration file `serve` uses (its `[gc]` table).
    #[arg(long, env = "CONNECTED_REGISTRY_CONFIG")]
    config: Option<PathBuf>,
    /// Idle upload sessions older than this are removed [default: 24h].
    #[arg(long, env = "CONNECTED_REGISTRY_UPLOAD_MAX_AGE")]
    upload_max_age: Option<String>,
    /// ReadOnly or ReadWrite, as `serve --mode`.
    #[arg(long, env = "CONNECTED_REGISTRY_MODE")]
    mode: Option<String>,
}

/// Runs a `gc` subcommand.
pub fn run(cmd: GcCmd) -> ExitCode {
    let GcCmd::Run(args) = cmd;
    match pass(args) {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

fn pass(args: RunArgs) -> Result<String, String> {
    let env = |k: &str| std::env::var(k).ok();
    let settings = Settings::resolve(Overrides {
        data_dir: args.data_dir,
        blob_store: args.backends.blob_store,
        metadata: args.backends.metadata,
        config_file: args.config,
        upload_max_age: args.upload_max_age,
        mode: args.mode,
        connection_string: env("ACR_REGISTRY_CONNECTION_STRING"),
        ..Overrides::default()
    })
    .map_err(|e| e.to_string())?;
    let data_dir = if settings.data_dir_is_default {
        config::default_data_dir_for_this_user()
    } else {
        settings.data_dir.clone()
    };
    let store =
        Store::open_beside_with(&data_dir, &settings.backends).map_err(|e| e.to_string())?;
    let (policy, has_parent) = policy_in_force(&store, &settings)?;
    let options = gc::options(&policy, settings.upload_max_age, has_parent, args.dry_run);
    let report = match gc::run_pass(&store, &options, false) {
        Err(PassError::Busy) => {
            eprintln!("connected-registry: a garbage collection pass is running; waiting for it");
            gc::run_pass(&store, &options, true)
        }
        other => other,
    }
    .map_err(|e| e.to_string())?;
    serde_json::to_string_pretty(&report).map_err(|e| e.to_string())
}

/// The policy `serve` would have in force: the file, the flags, the twin's last desired
/// properties and the root's last configuration; and whether a parent is configured.
fn policy_in_force(store: &Store, settings: &Settings) -> Result<(SyncPolicy, bool), String> {
    let file = match PolicyFile::new(settings.config_file.clone()).poll() {
        Some(r) => r.map_err(|e| e.to_string())?,
        None => FilePolicy::default(),
    };
    let flags = Flags {
        mode: settings.mode_from_flag.then_some(settings.mode),
        log_level: None,
    };
    let hub = PolicyHub::new(file, flags);
    let twin = saved_desired(store);
    let twin_parent = twin.as_ref().is_some_and(|t| t.connection_string.is_some());
    if let Some(t) = twin {
        hub.set_twin(Some(t.policy)).map_err(|e| e.to_string())?;
    }
    let overlay = link::cached_overlay(store);
    let has_parent = settings.parent.is_some() || twin_parent || overlay.is_some();
    hub.set_parent(overlay);
    Ok(((*hub.current()).clone(), has_parent))
}
