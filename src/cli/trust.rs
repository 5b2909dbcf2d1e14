//! `connected-registry trust-distribution`: what the Kubernetes DaemonSet runs on every node.
//! It writes containerd's host configuration for the registry (`<certs-dir>/<HOST:PORT>/
//! hosts.toml`, with the CA copied beside it), rewrites it when the mounted CA changes, and
//! removes what it wrote on SIGTERM/SIGINT, so deleting the DaemonSet withdraws the trust.
//! Node prerequisite: containerd's CRI `registry.config_path` names `--certs-dir`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use tokio::signal::unix::{signal, Signal, SignalKind};

use connected_registry::deploy::containerd_hosts::{
    self, Access, RegistryHost, CA_FILE, HOSTS_FILE, MARKER,
};
use connected_registry::deploy::marked_files::MarkedDir;

use super::fail;

/// How often the CA file (a mounted Secret, renewed in place) and the written files are checked.
const POLL: Duration = Duration::from_secs(3);

/// Writes containerd's hosts.toml (and CA) for the registry on this node, keeps it current and
/// removes it on SIGTERM. The flags are checked by `run`: bad input is one line and exit 1.
#[derive(Args, Debug)]
pub struct TrustArgs {
    /// containerd's host configuration directory (its `config_path`), e.g. /etc/containerd/certs.d.
    #[arg(long, env = "CONNECTED_REGISTRY_TRUST_CERTS_DIR", value_name = "DIR")]
    certs_dir: Option<PathBuf>,
    /// The registry as image references name it.
    #[arg(
        long,
        env = "CONNECTED_REGISTRY_TRUST_REGISTRY",
        value_name = "HOST:PORT"
    )]
    registry: Option<String>,
    /// CA certificate (PEM) the registry's HTTPS certificate chains to; watched for renewal.
    #[arg(long, env = "CONNECTED_REGISTRY_TRUST_CA_FILE", value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// The registry serves plain HTTP (instead of --ca-file).
    #[arg(long, env = "CONNECTED_REGISTRY_TRUST_PLAIN_HTTP")]
    plain_http: bool,
    /// Write the files and exit, instead of keeping them current until SIGTERM and then
    /// removing them.
    #[arg(long)]
    once: bool,
}

/// The checked flags.
struct Plan {
    registry: RegistryHost,
    files: MarkedDir,
    /// `None` for plain HTTP.
    ca_source: Option<PathBuf>,
}

/// Runs `trust-distribution`.
pub fn run(args: TrustArgs) -> ExitCode {
    let once = args.once;
    let plan = match plan(args) {
        Ok(p) => p,
        Err(e) => return fail(&e),
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("cannot start the runtime: {e}")),
    };
    rt.block_on(async {
        // Listening before the first write: a SIGTERM from then on still removes the files.
        let signals = match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(term), Ok(int)) => (term, int),
            (Err(e), _) | (_, Err(e)) => return fail(&format!("cannot watch signals: {e}")),
        };
        if let Err(e) = apply(&plan) {
            return fail(&e);
        }
        if once {
            return ExitCode::SUCCESS;
        }
        watch(&plan, signals).await;
        withdraw(&plan)
    })
}

/// Checks the flags: the registry, exactly one of CA file and plain HTTP, an absolute directory.
fn plan(args: TrustArgs) -> Result<Plan, String> {
    let certs_dir = args
        .certs_dir
        .ok_or("--certs-dir (CONNECTED_REGISTRY_TRUST_CERTS_DIR) is required")?;
    let registry = args
        .registry
        .ok_or("--registry (CONNECTED_REGISTRY_TRUST_REGISTRY) is required")?;
    let registry = RegistryHost::parse(&registry).map_err(|e| e.to_string())?;
    let ca_source = match (args.ca_file, args.plain_http) {
        (Some(_), true) => return Err("give either --ca-file or --plain-http, not both".into()),
        (None, false) => return Err("give --ca-file FILE (HTTPS) or --plain-http".into()),
        (ca, _) => ca,
    };
    // containerd resolves the `ca` path itself: it must be absolute, as on the node.
    let certs_dir = std::path::absolute(&certs_dir)
        .map_err(|e| format!("--certs-dir {}: {e}", certs_dir.display()))?;
    let files = MarkedDir::new(certs_dir.join(registry.to_string()), MARKER);
    Ok(Plan {
        registry,
        files,
        ca_source,
    })
}

/// The files the host directory must hold now: the CA (read afresh) first, then `hosts.toml`.
fn desired(plan: &Plan) -> Result<Vec<(&'static str, Vec<u8>)>, String> {
    let Some(source) = &plan.ca_source else {
        let hosts = containerd_hosts::render(&plan.registry, Access::PlainHttp);
        return Ok(vec![(
            HOSTS_FILE,
            hosts.map_err(|e| e.to_string())?.into_bytes(),
        )]);
    };
    let pem = std::fs::read(source).map_err(|e| format!("CA file {}: {e}", source.display()))?;
    let ca = containerd_hosts::ca_file(&pem)
        .map_err(|e| format!("CA file {}: {e}", source.display()))?;
    // Relative: containerd resolves it against the host directory, so the file is right
    // wherever the node's certs.d is mounted in this container.
    let ca_path = std::path::Path::new(CA_FILE);
    let hosts = containerd_hosts::render(&plan.registry, Access::Tls { ca: ca_path })
        .map_err(|e| e.to_string())?;
    Ok(vec![(CA_FILE, ca), (HOSTS_FILE, hosts.into_bytes())])
}

/// Brings the host directory up to date; prints what changed.
fn apply(plan: &Plan) -> Result<(), String> {
    let files = desired(plan)?;
    let refs: Vec<(&str, &[u8])> = files.iter().map(|(n, c)| (*n, c.as_slice())).collect();
    let written = plan.files.sync(&refs).map_err(|e| e.to_string())?;
    if plan.ca_source.is_none() && plan.files.remove_file(CA_FILE).map_err(|e| e.to_string())? {
        // Switched from HTTPS to plain HTTP: the old CA is no longer named by hosts.toml.
        println!("removed {}", plan.files.path().join(CA_FILE).display());
    }
    for name in written {
        println!("wrote {}", plan.files.path().join(name).display());
    }
    Ok(())
}

/// Keeps the files current until SIGTERM or SIGINT; a failed check is reported and retried,
/// leaving the last good files in place (a Secret being renewed may be briefly unreadable).
async fn watch(plan: &Plan, (mut term, mut int): (Signal, Signal)) {
    loop {
        tokio::select! {
            _ = term.recv() => return,
            _ = int.recv() => return,
            () = tokio::time::sleep(POLL) => {
                if let Err(e) = apply(plan) {
                    eprintln!("connected-registry: warning: {e}; keeping the files as they are");
                }
            }
        }
    }
}

/// Removes what this program wrote (never a file without the marker); exit 0 unless the file
/// system refused.
fn withdraw(plan: &Plan) -> ExitCode {
    match plan.files.remove(&[HOSTS_FILE, CA_FILE]) {
        Ok(r) => {
            let dir = plan.files.path();
            for name in &r.removed {
                println!("removed {}", dir.join(name).display());
            }
            for name in &r.foreign {
                let path = dir.join(name);
                println!(
                    "left {} (not written by trust-distribution)",
                    path.display()
                );
            }
            if r.dir_removed {
                println!("removed {}", dir.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e.to_string()),
    }
}
