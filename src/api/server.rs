//! Starts the HTTP server on an opened store and runs it until SIGTERM/SIGINT.

use std::sync::Arc;
use std::time::Duration;

use actix_web::{middleware, web, App, HttpServer};

use super::limits::{self, Counter, UploadGate};
use super::payload::BodyLimits;
use super::{configure, tls, AppState};
use crate::auth::{admin, Authenticator};
use crate::config::{Settings, TlsSettings};
use crate::hierarchy::control::ControlPlane;
use crate::hierarchy::link;
use crate::metrics::Metrics;
use crate::node::module::Module;
use crate::node::tls::WorkloadTls;
use crate::node::{policy, Node};
use crate::sync::policy::{FilePolicy, PolicyFile};

/// Blocking threads per HTTP worker (file reads, fsync, SQLite).
const BLOCKING_THREADS: usize = 12;
/// How often the server checks for access-control changes (made by a management command or
/// another replica): often enough that a change is in force everywhere within two seconds.
const ACCESS_POLL: Duration = Duration::from_secs(1);
use crate::storage::uploads::SessionCaps;
use crate::storage::Store;

/// Why the server could not start or stopped abnormally; printed as one line by `main`.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The data directory or database is unusable.
    #[error("cannot open data directory {dir}: {source}")]
    Store {
        /// The data directory.
        dir: String,
        /// Why.
        source: crate::storage::StorageError,
    },
    /// The listen address is taken or not ours.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The HTTPS certificate or key is unusable (the message names the file and the problem).
    #[error("HTTPS: {0}")]
    Tls(#[from] tls::TlsError),
    /// Sync could not start (policy file, parent client).
    #[error("sync: {0}")]
    Sync(String),
    /// Access control could not be loaded.
    #[error("access control: {0}")]
    Auth(String),
    /// The server failed while running.
    #[error("server error: {0}")]
    Run(std::io::Error),
}

/// Opens the store, serves until a shutdown signal, then closes the database cleanly.
pub async fn run(mut settings: Settings) -> Result<(), ServeError> {
    let workload_tls = workload_tls(&mut settings).await?;
    let tls_config = match &settings.tls {
        Some(t) => Some((t.listen, tls::server_config(&t.cert, &t.key)?)),
        None => None,
    };
    let (dir, backends) = (settings.data_dir.clone(), settings.backends.clone());
    let store = tokio::task::spawn_blocking(move || Store::open_with(&dir, &backends))
        .await
        .map_err(|e| ServeError::Run(std::io::Error::other(e.to_string())))?
        .map_err(|source| ServeError::Store {
            dir: settings.data_dir.display().to_string(),
            source,
        })?;
    let store = Arc::new(store);
    let auth = start_auth(&store, &settings).await?;
    let node = start_node(&store, &settings).await?;
    let control = ControlPlane::new(store.clone());
    let lim = settings.limits.clone();
    let state = web::Data::new(AppState {
        store: store.clone(),
        auth: auth.clone(),
        writable: node.slot.writable.clone(),
        sync: node.slot.clone(),
        status: node.status.clone(),
        metrics: Arc::new(Metrics::default()),
        metrics_anonymous: settings.access.metrics_anonymous,
        control: control.clone(),
        upload_gate: UploadGate::new(lim.uploads, lim.uploads_per_client),
        session_caps: SessionCaps {
            total: lim.upload_sessions,
            per_client: lim.upload_sessions_per_client,
            per_repository: lim.upload_sessions_per_repository,
        },
        body: BodyLimits {
            idle: lim.body_timeout,
            blob_max: lim.blob_size,
        },
    });
    let connections = Counter::new(lim.connections, lim.connections_per_client);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .wrap_fn(limits::admit)
            .wrap(middleware::Logger::new("%a \"%r\" %s %b %Dms").log_target("http"))
            .wrap_fn(super::metrics::measure)
            .configure(configure)
    })
    .on_connect(limits::on_connect(connections))
    // Connections past the cap are answered 429 and closed; actix stops accepting only at
    // the cap per worker, a hard stop well past the answering one.
    .max_connections(lim.connections)
    .client_request_timeout(lim.header_timeout)
    .keep_alive(lim.keep_alive)
    // Responses are written in pieces; Nagle would hold the tail for a delayed ACK.
    .tcp_nodelay(true)
    // File reads and SQLite run on the blocking pool; a small cap keeps a burst of pulls from
    // growing dozens of threads (each with its own stack and malloc arena) on a small gateway.
    .worker_max_blocking_threads(BLOCKING_THREADS)
    .shutdown_timeout(settings.shutdown_timeout.as_secs().max(1));
    let bind_err = |addr: std::net::SocketAddr| {
        move |source| ServeError::Bind {
            addr: addr.to_string(),
            source,
        }
    };
    let mut listeners = Vec::new();
    let server = if settings.serve_http {
        listeners.push(format!("http://{}", settings.listen));
        server
            .bind(settings.listen)
            .map_err(bind_err(settings.listen))?
    } else {
        server
    };
    let server = match tls_config {
        Some((addr, config)) => {
            listeners.push(format!("https://{addr}"));
            server
                .bind_rustls_0_23(addr, config)
                .map_err(bind_err(addr))?
        }
        None => server,
    };
    let server = server.run();
    tracing::info!(
        listeners = %listeners.join(" "),
        data_dir = %settings.data_dir.display(),
        blob_store = %settings.backends.blobs,
        metadata = %settings.backends.metadata,
        version = env!("CARGO_PKG_VERSION"),
        "connected-registry serving"
    );
    if let Some(t) = workload_tls {
        actix_web::rt::spawn(t.renew());
    }
    let cleaner = actix_web::rt::spawn(clean_uploads(store.clone(), settings.upload_max_age));
    let watcher = actix_web::rt::spawn(watch_access(auth));
    let changes = actix_web::rt::spawn(control.watch());
    let result = server.await;
    cleaner.abort();
    watcher.abort();
    changes.abort();
    node.slot.replace(None);
    let s = store.clone();
    let _ = tokio::task::spawn_blocking(move || s.meta.checkpoint()).await;
    tracing::info!("connected-registry stopped");
    result.map_err(ServeError::Run)
}

/// With `--tls-from-workload`, the certificate the workload API issues, in place of files.
async fn workload_tls(settings: &mut Settings) -> Result<Option<WorkloadTls>, ServeError> {
    let (Some(listen), Some(env)) = (settings.tls_from_workload, settings.iot_edge.as_ref()) else {
        return Ok(None);
    };
    // The name clients reach the registry by: its login server, else the device's host name.
    let name = settings
        .access
        .login_server
        .as_deref()
        .map(|s| s.rsplit_once(':').map_or(s, |(h, _)| h).to_owned())
        .unwrap_or_else(|| env.gateway_host.clone());
    let t = WorkloadTls::obtain(env, &settings.data_dir, &name)
        .await
        .map_err(ServeError::Sync)?;
    settings.tls = Some(TlsSettings {
        cert: t.cert.clone(),
        key: t.key.clone(),
        listen,
    });
    Ok(Some(t))
}

/// Wires the policy sources, the IoT Edge module (when running as one) and sync: an invalid
/// policy file is a startup error; sync starts when a connection string is known.
async fn start_node(store: &Arc<Store>, settings: &Settings) -> Result<Arc<Node>, ServeError> {
    let mut file = PolicyFile::new(settings.config_file.clone());
    let first = match file.poll() {
        Some(r) => r.map_err(|e| ServeError::Sync(e.to_string()))?,
        None => FilePolicy::default(),
    };
    let node = Node::new(store.clone(), settings, first);
    let s = store.clone();
    // What the parent's control plane defined last time, so a restart while offline keeps
    // syncing (and keeping) the same repositories.
    let cached = tokio::task::spawn_blocking(move || link::cached_overlay(&s))
        .await
        .ok()
        .flatten();
    node.hub.set_parent(cached);
    if let Some(env) = settings.iot_edge.clone() {
        tracing::info!(
            device = %env.device_id,
            module = %env.module_id,
            edgehub = %env.gateway_host,
            "running as an IoT Edge module: configured through the module twin"
        );
        Module::start(
            node.clone(),
            env,
            &settings.data_dir,
            settings.twin_token_ttl,
        )
        .await;
    }
    node.refresh_sync().map_err(ServeError::Sync)?;
    if let Some(svc) = node.slot.get() {
        let policy = svc.policy();
        tracing::info!(
            parent = %svc.parent.base_url(),
            repositories = ?policy.repositories.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
            mode = ?policy.mode,
            "sync enabled"
        );
    }
    actix_web::rt::spawn(policy::watch_file(
        file,
        node.hub.clone(),
        node.status.clone(),
    ));
    actix_web::rt::spawn(policy::apply_log_level(node.hub.subscribe()));
    actix_web::rt::spawn(crate::gc::worker::run(
        node.clone(),
        settings.upload_max_age,
    ));
    Ok(node)
}

/// Loads access control, creating the first admin token on a fresh root that requires auth.
async fn start_auth(
    store: &Arc<Store>,
    settings: &Settings,
) -> Result<Arc<Authenticator>, ServeError> {
    let s = store.clone();
    let access = settings.access.clone();
    let data_dir = settings.data_dir.clone();
    let make = move || -> Result<Authenticator, crate::auth::AuthError> {
        let a = Authenticator::new(s.clone(), access.clone())?;
        if !access.insecure_no_auth && a.token_count() == 0 {
            if let Some(path) = admin::bootstrap_admin(&*s.meta, &data_dir)? {
                tracing::warn!(
                    token = "admin",
                    password_file = %path.display(),
                    "no tokens existed: created token 'admin' (all actions on all repositories); \
                     its password was written once to the file named here"
                );
                a.reload_if_changed()?;
            }
        }
        Ok(a)
    };
    let auth = tokio::task::spawn_blocking(make)
        .await
        .map_err(|e| ServeError::Run(std::io::Error::other(e.to_string())))?
        .map_err(|e| ServeError::Auth(e.to_string()))?;
    if settings.access.insecure_no_auth {
        tracing::warn!("--insecure-no-auth: authentication is OFF, anyone who can connect may push, pull and delete");
    }
    Ok(Arc::new(auth))
}

/// Notices token and scope-map changes made by management commands (also in other processes).
async fn watch_access(auth: Arc<Authenticator>) {
    let mut tick = tokio::time::interval(ACCESS_POLL);
    loop {
        tick.tick().await;
        let a = auth.clone();
        match tokio::task::spawn_blocking(move || a.reload_if_changed()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "could not reload access control"),
            Err(e) => tracing::warn!(error = %e, "access watcher failed"),
        }
    }
}

/// Periodically removes upload sessions idle for longer than `max_age`.
async fn clean_uploads(store: Arc<Store>, max_age: Duration) {
    let every = (max_age / 4).clamp(Duration::from_secs(1), Duration::from_secs(600));
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let s = store.clone();
        let secs = max_age.as_secs();
        match tokio::task::spawn_blocking(move || s.expire_uploads(secs)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::info!(expired = n, "removed abandoned upload sessions"),
            Ok(Err(e)) => tracing::warn!(error = %e, "could not clean upload sessions"),
            Err(e) => tracing::warn!(error = %e, "upload cleaner failed"),
        }
    }
}
