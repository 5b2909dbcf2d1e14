//! `scope-map …` and `token …`: manage access records in the data directory, also while `serve`
//! runs (it notices within seconds).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{ArgGroup, Args, Subcommand};

use connected_registry::auth::{admin, AuthError};
use connected_registry::config;
use connected_registry::storage::metadata::MetadataStore;

use super::backends::BackendArgs;

use super::fail;

/// Where the records live (same default as `serve`).
#[derive(Args, Debug, Clone)]
pub struct DataDir {
    /// Data directory [default: $ACR_REGISTRY_DATA_VOLUME, else /var/acr/data, else ./data].
    #[arg(long, env = "ACR_REGISTRY_DATA_VOLUME", global = true)]
    data_dir: Option<PathBuf>,
    /// Output format: json; `connected-registry` also prints table and tsv.
    #[arg(long, short = 'o', default_value = "json", global = true)]
    pub(crate) output: String,
    #[command(flatten)]
    backends: BackendArgs,
}

/// `scope-map` subcommands.
#[derive(Subcommand, Debug)]
pub enum ScopeMapCmd {
    /// Create a scope map.
    Create {
        /// Name.
        #[arg(long, short = 'n')]
        name: String,
        /// REPO ACTION [ACTION…]; REPO is a name, prefix/* or *.
        #[arg(long = "repository", num_args = 2.., action = clap::ArgAction::Append, value_names = ["REPO", "ACTION"], required = true)]
        repository: Vec<Vec<String>>,
        /// Free text.
        #[arg(long)]
        description: Option<String>,
    },
    /// Add or remove repository actions.
    Update {
        /// Name.
        #[arg(long, short = 'n')]
        name: String,
        /// REPO ACTION [ACTION…] to add.
        #[arg(long = "add-repository", num_args = 2.., action = clap::ArgAction::Append, value_names = ["REPO", "ACTION"])]
        add: Vec<Vec<String>>,
        /// REPO ACTION [ACTION…] to remove.
        #[arg(long = "remove-repository", num_args = 2.., action = clap::ArgAction::Append, value_names = ["REPO", "ACTION"])]
        remove: Vec<Vec<String>>,
        /// Free text.
        #[arg(long)]
        description: Option<String>,
    },
    /// Show one scope map.
    Show {
        /// Name.
        #[arg(long, short = 'n')]
        name: String,
    },
    /// List scope maps.
    List,
    /// Delete a scope map no token uses.
    Delete {
        /// Name.
        #[arg(long, short = 'n')]
        name: String,
        /// Accepted for `az` compatibility; deletion never prompts.
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

/// `token credential` subcommands.
#[derive(Subcommand, Debug)]
pub enum CredentialCmd {
    /// Generate (rotate) password1 and/or password2.
    #[command(group(ArgGroup::new("which").required(true).multiple(true).args(["password1", "password2"])))]
    Generate {
        /// Token name.
        #[arg(long, short = 'n')]
        name: String,
        /// Regenerate password1.
        #[arg(long)]
        password1: bool,
        /// Regenerate password2.
        #[arg(long)]
        password2: bool,
        /// Days until the new password expires.
        #[arg(long)]
        expiration_in_days: Option<u32>,
    },
}

/// `token` subcommands.
#[derive(Subcommand, Debug)]
pub enum TokenCmd {
    /// Create a token with two generated passwords (printed once).
    Create {
        /// Name (the username clients log in with).
        #[arg(long, short = 'n')]
        name: String,
        /// Scope map granting its permissions.
        #[arg(long)]
        scope_map: String,
        /// Days until the passwords expire.
        #[arg(long)]
        expiration_in_days: Option<u32>,
        /// enabled or disabled.
        #[arg(long)]
        status: Option<String>,
    },
    /// Change a token's scope map or status.
    Update {
        /// Name.
        #[arg(long, short = 'n')]
        name: String,
        /// New scope map.
        #[arg(long)]
        scope_map: Option<String>,
        /// enabled or disabled.
        #[arg(long)]
        status: Option<String>,
    },
    /// Show one token (never its passwords).
    Show {
        /// Name.
        #[arg(long, short = 'n')]
        name: String,
    },
    /// List tokens.
    List,
    /// Delete a token.
    Delete {
        /// Name.
        #[arg(long, short = 'n')]
        name: String,
        /// Accepted for `az` compatibility; deletion never prompts.
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Password management.
    #[command(subcommand)]
    Credential(CredentialCmd),
}

pub(crate) fn open(d: &DataDir) -> Result<Box<dyn MetadataStore>, AuthError> {
    if d.output != "json" {
        return Err(AuthError::Invalid(format!(
            "unsupported --output '{}' (use json)",
            d.output
        )));
    }
    open_any(d)
}

/// Opens the records whatever the output format (commands that print tables check it).
pub(crate) fn open_any(d: &DataDir) -> Result<Box<dyn MetadataStore>, AuthError> {
    let dir = d
        .data_dir
        .clone()
        .unwrap_or_else(config::default_data_dir_for_this_user);
    let b = &d.backends;
    let backends = config::resolve_backends(b.blob_store.clone(), b.metadata.clone())
        .map_err(|e| AuthError::Invalid(e.to_string()))?;
    if !backends.metadata.is_shared() {
        std::fs::create_dir_all(&dir)
            .map_err(|e| AuthError::Internal(format!("{}: {e}", dir.display())))?;
    }
    Ok(backends.metadata.open(&dir)?)
}

pub(crate) fn finish(r: Result<serde_json::Value, AuthError>, what: &str) -> ExitCode {
    match r {
        Ok(v) => {
            if !v.is_null() {
                use std::io::Write as _;
                // A closed pipe (`| head`) is not an error worth a panic.
                let _ = writeln!(
                    std::io::stdout(),
                    "{}",
                    serde_json::to_string_pretty(&v).unwrap_or_default()
                );
            }
            eprintln!("connected-registry: {what}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e.to_string()),
    }
}

/// Runs a `scope-map` command.
pub fn scope_map(d: DataDir, cmd: ScopeMapCmd) -> ExitCode {
    let meta = match open(&d) {
        Ok(m) => m,
        Err(e) => return fail(&e.to_string()),
    };
    match cmd {
        ScopeMapCmd::Create {
            name,
            repository,
            description,
        } => finish(
            admin::create_scope_map(&*meta, &name, &repository, description),
            &format!("scope map '{name}' created"),
        ),
        ScopeMapCmd::Update {
            name,
            add,
            remove,
            description,
        } => finish(
            admin::update_scope_map(&*meta, &name, &add, &remove, description),
            &format!("scope map '{name}' updated"),
        ),
        ScopeMapCmd::Show { name } => finish(admin::show_scope_map(&*meta, &name), "ok"),
        ScopeMapCmd::List => finish(admin::list_scope_maps(&*meta), "ok"),
        ScopeMapCmd::Delete { name, .. } => finish(
            admin::delete_scope_map(&*meta, &name),
            &format!("scope map '{name}' deleted"),
        ),
    }
}

/// Runs a `token` command.
pub fn token(d: DataDir, cmd: TokenCmd) -> ExitCode {
    let meta = match open(&d) {
        Ok(m) => m,
        Err(e) => return fail(&e.to_string()),
    };
    match cmd {
        TokenCmd::Create {
            name,
            scope_map,
            expiration_in_days,
            status,
        } => finish(
            admin::create_token(
                &*meta,
                &name,
                &scope_map,
                expiration_in_days,
                status.as_deref(),
            ),
            &format!("token '{name}' created; its passwords are shown only now"),
        ),
        TokenCmd::Update {
            name,
            scope_map,
            status,
        } => finish(
            admin::update_token(&*meta, &name, scope_map.as_deref(), status.as_deref()),
            &format!("token '{name}' updated"),
        ),
        TokenCmd::Show { name } => finish(admin::show_token(&*meta, &name), "ok"),
        TokenCmd::List => finish(admin::list_tokens(&*meta), "ok"),
        TokenCmd::Delete { name, .. } => finish(
            admin::delete_token(&*meta, &name),
            &format!("token '{name}' deleted"),
        ),
        TokenCmd::Credential(CredentialCmd::Generate {
            name,
            password1,
            password2,
            expiration_in_days,
        }) => {
            let slots: Vec<&str> = [(password1, "password1"), (password2, "password2")]
                .into_iter()
                .filter_map(|(on, s)| on.then_some(s))
                .collect();
            finish(
                admin::generate_credential(&*meta, &name, &slots, expiration_in_days),
                &format!("new password(s) for token '{name}': {}", slots.join(", ")),
            )
        }
    }
}
