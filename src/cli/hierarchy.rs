//! `connected-registry connected-registry …` (alias `cr`): define and watch the tree of
//! connected registries at its root, with the commands and flags of `az acr connected-registry`,
//! on the data directory (also while `serve` runs).

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use connected_registry::config::parse_duration;
use connected_registry::hierarchy::admin::{self, Changes, Spec, SyncFlags};
use connected_registry::hierarchy::report::DEFAULT_OFFLINE_AFTER;
use connected_registry::hierarchy::HierarchyError;

use super::admin::{open_any, DataDir};
use super::fail;

/// Flags every subcommand accepts.
#[derive(Args, Debug)]
pub struct Common {
    /// Accepted for `az` compatibility (this registry is the one in the data directory).
    #[arg(long, short = 'r', global = true, hide = true)]
    registry: Option<String>,
    /// Accepted for `az` compatibility; nothing prompts.
    #[arg(long, short = 'y', global = true)]
    yes: bool,
    /// A registry not heard from for this long shows as Offline [default: PT2M].
    #[arg(long, env = "CONNECTED_REGISTRY_OFFLINE_AFTER", global = true)]
    offline_after: Option<String>,
}

/// The sync flags of `create` and `update`.
#[derive(Args, Debug, Default)]
pub struct SyncArgs {
    /// Cron schedule of sync windows [default: "* * * * *", always online].
    #[arg(long, short = 's')]
    sync_schedule: Option<String>,
    /// ISO 8601 duration each window stays open; required with --sync-schedule.
    #[arg(long, short = 'w')]
    sync_window: Option<String>,
    /// ISO 8601 age at which an undelivered push-up expires [default: P2D].
    #[arg(long)]
    sync_message_ttl: Option<String>,
    /// ISO 8601 pause between checks with the parent when always online [default: PT1M].
    #[arg(long)]
    sync_interval: Option<String>,
    /// Debug, Information, Warning, Error or None [default: Information].
    #[arg(long)]
    log_level: Option<String>,
    /// Whether scheduled garbage collection runs there [default: true].
    #[arg(long)]
    gc_enabled: Option<bool>,
    /// Cron schedule of its garbage collection, UTC [default: "0 0 * * *"].
    #[arg(long)]
    gc_schedule: Option<String>,
}

impl From<SyncArgs> for SyncFlags {
    fn from(a: SyncArgs) -> Self {
        SyncFlags {
            schedule: a.sync_schedule,
            window: a.sync_window,
            message_ttl: a.sync_message_ttl,
            interval: a.sync_interval,
            log_level: a.log_level,
            gc_enabled: a.gc_enabled,
            gc_schedule: a.gc_schedule,
        }
    }
}

/// `connected-registry` subcommands.
#[derive(Subcommand, Debug)]
pub enum CrCmd {
    /// Define a connected registry (and its sync token and scope map).
    Create {
        /// Name: 5–40 letters and digits, starting with a letter.
        #[arg(long, short = 'n')]
        name: String,
        /// Its parent connected registry (none: this registry is its parent).
        #[arg(long, short = 'p')]
        parent: Option<String>,
        /// ReadOnly or ReadWrite.
        #[arg(long, short = 'm', default_value = "ReadWrite")]
        mode: String,
        /// Repositories it syncs.
        #[arg(long, num_args = 1.., required = true)]
        repository: Vec<String>,
        #[command(flatten)]
        sync: SyncArgs,
        /// Client tokens that work there.
        #[arg(long, num_args = 1..)]
        client_tokens: Vec<String>,
        /// Notification patterns (artifact:action).
        #[arg(long, num_args = 1..)]
        notifications: Vec<String>,
    },
    /// Change a connected registry.
    Update {
        /// Name.
        #[arg(long, short = 'n')]
        name: String,
        #[command(flatten)]
        sync: SyncArgs,
        /// Repositories to add (also to its ancestors).
        #[arg(long, num_args = 1..)]
        add_repository: Vec<String>,
        /// Repositories to remove (also from its descendants).
        #[arg(long, num_args = 1..)]
        remove_repository: Vec<String>,
        /// Client tokens to add.
        #[arg(long, num_args = 1..)]
        add_client_tokens: Vec<String>,
        /// Client tokens to remove.
        #[arg(long, num_args = 1..)]
        remove_client_tokens: Vec<String>,
        /// Notification patterns to add.
        #[arg(long, num_args = 1..)]
        add_notifications: Vec<String>,
        /// Notification patterns to remove.
        #[arg(long, num_args = 1..)]
        remove_notifications: Vec<String>,
    },
    /// Show one connected registry.
    Show {
        /// Name.
        #[arg(long, short = 'n')]
        name: String,
    },
    /// List the connected registries, parents before children.
    List,
    /// Delete a connected registry without children.
    Delete {
        /// Name.
        #[arg(long, short = 'n')]
        name: String,
        /// Also delete its sync token and scope map.
        #[arg(long)]
        cleanup: bool,
    },
    /// Forget its active instance, so another one may activate.
    Deactivate {
        /// Name.
        #[arg(long, short = 'n')]
        name: String,
    },
    /// Add repositories (to it and its ancestors) or remove them (from it and its descendants).
    Repo {
        /// Name.
        #[arg(long, short = 'n')]
        name: String,
        /// Repositories to add.
        #[arg(long, num_args = 1..)]
        add: Vec<String>,
        /// Repositories to remove.
        #[arg(long, num_args = 1..)]
        remove: Vec<String>,
    },
    /// Print its connection string (ACR_REGISTRY_CONNECTION_STRING).
    GetSettings {
        /// Name.
        #[arg(long, short = 'n')]
        name: String,
        /// Generate a new sync token password in slot 1 or 2 (shown only now).
        #[arg(long, value_parser = ["1", "2"])]
        generate_password: Option<String>,
        /// http or https: how it reaches its parent.
        #[arg(long, value_parser = ["http", "https"])]
        parent_protocol: String,
        /// HOST:PORT where it reaches its parent [default: the parent's reported login server].
        #[arg(long)]
        parent_endpoint: Option<String>,
    },
}

/// Runs a `connected-registry` subcommand.
pub fn run(data: DataDir, common: Common, cmd: CrCmd) -> ExitCode {
    let output = data.output.clone();
    if !matches!(output.as_str(), "json" | "table" | "tsv") {
        return fail(&format!(
            "unsupported --output '{}' (use json, table or tsv)",
            output
        ));
    }
    let offline_after = match common.offline_after.as_deref().map(parse_duration) {
        None => DEFAULT_OFFLINE_AFTER,
        Some(Ok(d)) if !d.is_zero() => d,
        Some(_) => return fail("--offline-after must be a duration like PT2M or 120s"),
    };
    let meta = match open_any(&data) {
        Ok(m) => m,
        Err(e) => return fail(&e.to_string()),
    };
    let _ = (common.registry, common.yes);
    let result = dispatch(&*meta, cmd, offline_after);
    match result {
        Ok(Printed::Resources(v)) => print(&output, &v),
        Ok(Printed::Settings(cs)) => {
            if output == "tsv" {
                println!("{cs}");
            } else {
                let v = json!({"ACR_REGISTRY_CONNECTION_STRING": cs});
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            }
            ExitCode::SUCCESS
        }
        Ok(Printed::Warning(w)) => {
            if let Some(w) = w {
                eprintln!("connected-registry: warning: {w}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e.to_string()),
    }
}

/// What a command prints.
enum Printed {
    /// Registries as ACR resources (one for most commands, several for `list`).
    Resources(Value),
    /// A connection string.
    Settings(String),
    /// Nothing but an optional warning.
    Warning(Option<String>),
}

fn dispatch(
    meta: &dyn connected_registry::storage::MetadataStore,
    cmd: CrCmd,
    offline_after: Duration,
) -> Result<Printed, HierarchyError> {
    use Printed::*;
    Ok(match cmd {
        CrCmd::Create {
            name,
            parent,
            mode,
            repository,
            sync,
            client_tokens,
            notifications,
        } => Resources(admin::create(
            meta,
            &Spec {
                name,
                parent,
                mode,
                repositories: repository,
                sync: sync.into(),
                client_tokens,
                notifications,
            },
        )?),
        CrCmd::Update {
            name,
            sync,
            add_repository,
            remove_repository,
            add_client_tokens,
            remove_client_tokens,
            add_notifications,
            remove_notifications,
        } => Resources(admin::update(
            meta,
            &name,
            &Changes {
                sync: sync.into(),
                add_client_tokens,
                remove_client_tokens,
                add_notifications,
                remove_notifications,
                add_repositories: add_repository,
                remove_repositories: remove_repository,
            },
        )?),
        CrCmd::Show { name } => Resources(admin::show(meta, &name, offline_after)?),
        CrCmd::List => Resources(Value::Array(admin::list(meta, offline_after)?)),
        CrCmd::Delete { name, cleanup } => Warning(admin::delete(meta, &name, cleanup)?),
        CrCmd::Deactivate { name } => Resources(admin::deactivate(meta, &name)?),
        CrCmd::Repo { name, add, remove } => Resources(admin::repo(meta, &name, &add, &remove)?),
        CrCmd::GetSettings {
            name,
            generate_password,
            parent_protocol,
            parent_endpoint,
        } => {
            let slot = generate_password.as_deref().and_then(|s| s.parse().ok());
            let own = std::env::var("ACR_REGISTRY_LOGIN_SERVER").ok();
            Settings(admin::get_settings(
                meta,
                &name,
                slot,
                &parent_protocol,
                parent_endpoint.as_deref(),
                own.as_deref().filter(|s| !s.is_empty()),
            )?)
        }
    })
}

fn print(output: &str, v: &Value) -> ExitCode {
    let rows: Vec<Value> = match v {
        Value::Array(a) => a.clone(),
        other => vec![other.clone()],
    };
    match output {
        "table" => println!("{}", admin::table(&rows)),
        "tsv" => {
            for r in &rows {
                println!(
                    "{}\t{}\t{}",
                    r["name"].as_str().unwrap_or_default(),
                    r["mode"].as_str().unwrap_or_default(),
                    r["connectionState"].as_str().unwrap_or_default()
                );
            }
        }
        _ => println!("{}", serde_json::to_string_pretty(v).unwrap_or_default()),
    }
    ExitCode::SUCCESS
}
