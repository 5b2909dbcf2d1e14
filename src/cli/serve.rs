//! `connected-registry serve`: flags and environment for the registry process.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use connected_registry::api::server;
use connected_registry::config::iot_edge::ModuleEnv;
use connected_registry::config::{self, logging, Overrides, Settings};

use super::backends::BackendArgs;
use super::fail;

/// Flags of `serve`; each also reads the environment variable named.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Plain-HTTP address to listen on [default: 0.0.0.0:8080].
    #[arg(long, env = "CONNECTED_REGISTRY_LISTEN")]
    listen: Option<String>,
    /// Data directory [default: $ACR_REGISTRY_DATA_VOLUME, else /var/acr/data, else ./data].
    #[arg(long, env = "ACR_REGISTRY_DATA_VOLUME")]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    backends: BackendArgs,
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
    /// Let unauthenticated clients pull (ACR's anonymous pull).
    #[arg(long, env = "CONNECTED_REGISTRY_ANONYMOUS_PULL")]
    anonymous_pull: bool,
    /// Let `/acr/v1/metrics` answer without credentials (a scraper on a trusted network).
    #[arg(long, env = "CONNECTED_REGISTRY_METRICS_ANONYMOUS")]
    metrics_anonymous: bool,
    /// Turn authentication off entirely (trusted labs and benchmarks only).
    #[arg(long, env = "CONNECTED_REGISTRY_INSECURE_NO_AUTH")]
    insecure_no_auth: bool,
    /// ReadOnly or ReadWrite; applies when a parent is configured [default: ReadOnly].
    #[arg(long, env = "CONNECTED_REGISTRY_MODE")]
    mode: Option<String>,
    /// PEM certificate chain for HTTPS [default: $ACR_REGISTRY_CERTIFICATE_VOLUME/tls.crt].
    #[arg(long, env = "CONNECTED_REGISTRY_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for HTTPS [default: $ACR_REGISTRY_CERTIFICATE_VOLUME/tls.key].
    #[arg(long, env = "CONNECTED_REGISTRY_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// HTTPS address to listen on when TLS is configured [default: 0.0.0.0:8443].
    #[arg(long, env = "CONNECTED_REGISTRY_TLS_LISTEN")]
    tls_listen: Option<String>,
    /// Keep serving plain HTTP on --listen when TLS is configured.
    #[arg(long, env = "CONNECTED_REGISTRY_HTTP_ENABLED")]
    http_enabled: bool,
    /// Serve HTTPS on --tls-listen with a certificate issued (and renewed) by the IoT Edge
    /// workload API.
    #[arg(long, env = "CONNECTED_REGISTRY_TLS_FROM_WORKLOAD")]
    tls_from_workload: bool,
    /// Extra CA certificate (PEM) to trust for the parent's HTTPS.
    #[arg(long, env = "CONNECTED_REGISTRY_PARENT_CA")]
    parent_ca: Option<PathBuf>,
}

/// Resolves settings, starts logging and runs the server until a shutdown signal.
pub fn run(args: ServeArgs) -> ExitCode {
    let env = |k: &str| std::env::var(k).ok();
    let iot_edge = match ModuleEnv::from_env(env) {
        Ok(m) => m,
        Err(e) => return fail(&e.to_string()),
    };
    let mut settings = match Settings::resolve(Overrides {
        listen: args.listen,
        data_dir: args.data_dir,
        blob_store: args.backends.blob_store,
        metadata: args.backends.metadata,
        config_file: args.config,
        log_level: args.log_level,
        upload_max_age: args.upload_max_age,
        shutdown_timeout: args.shutdown_timeout,
        anonymous_pull: args.anonymous_pull,
        metrics_anonymous: args.metrics_anonymous,
        insecure_no_auth: args.insecure_no_auth,
        login_server: env("ACR_REGISTRY_LOGIN_SERVER"),
        mode: args.mode,
        tls_cert: args.tls_cert,
        tls_key: args.tls_key,
        certificate_volume: env("ACR_REGISTRY_CERTIFICATE_VOLUME").map(PathBuf::from),
        tls_listen: args.tls_listen,
        http_enabled: args.http_enabled,
        connection_string: env("ACR_REGISTRY_CONNECTION_STRING"),
        parent_hostname: env("IOTEDGE_PARENTHOSTNAME"),
        parent_endpoint_override: env("ACR_PARENT_GATEWAY_ENDPOINT"),
        parent_ca: args.parent_ca,
        iot_edge,
        twin_token_ttl: env("CONNECTED_REGISTRY_TWIN_TOKEN_TTL"),
        tls_from_workload: args.tls_from_workload,
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
    // A relative directory is taken from where the command was started, and named in full in
    // the log and in the admin password's path.
    if let Ok(abs) = std::path::absolute(&settings.data_dir) {
        settings.data_dir = abs;
    }
    limit_malloc_arenas();
    match actix_web::rt::System::new().block_on(server::run(settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e.to_string()),
    }
}

/// glibc gives every thread that allocates its own heap arena (up to 8 per core), which on a
/// gateway turns a burst of concurrent pulls into tens of MiB of resident memory that is never
/// returned; four arenas are plenty for this workload. A fixed mmap threshold of 1 MiB makes
/// rare large allocations (an argon2 check's 7 MiB) go back to the system when freed, while
/// the 256 KiB I/O buffers stay on the heap; fixing it also fixes the trim threshold, raised
/// to 8 MiB so the heap is not shrunk and regrown under a stream of pulls.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_malloc_arenas() {
    // SAFETY: mallopt only changes allocator tuning; called once before any worker thread starts.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 4);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 8 << 20);
    }
}

/// Other C libraries have no per-thread arenas to limit.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}
