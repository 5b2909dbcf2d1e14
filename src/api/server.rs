//! Starts the HTTP server on an opened store and runs it until SIGTERM/SIGINT.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use actix_web::{middleware, web, App, HttpServer};

use super::{configure, tls, AppState};
use crate::auth::{admin, Authenticator};
use crate::config::Settings;
use crate::hierarchy::control::ControlPlane;
use crate::hierarchy::link;
use crate::sync::SyncService;

/// Blocking threads per HTTP worker (file reads, fsync, SQLite).
const BLOCKING_THREADS: usize = 12;
/// How often the server checks for access-control changes.
const ACCESS_POLL: Duration = Duration::from_secs(2);
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
pub async fn run(settings: Settings) -> Result<(), ServeError> {
    let tls_config = match &settings.tls {
        Some(t) => Some((t.listen, tls::server_config(&t.cert, &t.key)?)),
        None => None,
    };
    let dir = settings.data_dir.clone();
    let store = tokio::task::spawn_blocking(move || Store::open(&dir))
        .await
        .map_err(|e| ServeError::Run(std::io::Error::other(e.to_string())))?
        .map_err(|source| ServeError::Store {
            dir: settings.data_dir.display().to_string(),
            source,
        })?;
    let store = Arc::new(store);
    let auth = start_auth(&store, &settings).await?;
    let sync = match &settings.parent {
        Some(conn) => {
            let mode = settings.mode_from_flag.then_some(settings.mode);
            let s = store.clone();
            let cached = tokio::task::spawn_blocking(move || link::cached_overlay(&s))
                .await
                .ok()
                .flatten();
            let svc = SyncService::start(
                store.clone(),
                conn,
                settings.config_file.clone(),
                settings.parent_ca.clone(),
                mode,
                cached,
            )
            .map_err(|e| ServeError::Sync(e.to_string()))?;
            svc.spawn(
                link::Link {
                    svc: svc.clone(),
                    login_server: settings.access.login_server.clone(),
                }
                .run(),
            );
            Some(svc)
        }
        None => None,
    };
    let writable = match &sync {
        Some(s) => s.writable.clone(),
        None => Arc::new(AtomicBool::new(true)),
    };
    let control = ControlPlane::new(store.clone());
    let state = web::Data::new(AppState {
        store: store.clone(),
        auth: auth.clone(),
        writable,
        sync: sync.clone(),
        control: control.clone(),
    });
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .wrap(middleware::Logger::new("%a \"%r\" %s %b %Dms").log_target("http"))
            .configure(configure)
    })
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
        version = env!("CARGO_PKG_VERSION"),
        "connected-registry serving"
    );
    let cleaner = actix_web::rt::spawn(clean_uploads(store.clone(), settings.upload_max_age));
    let watcher = actix_web::rt::spawn(watch_access(auth));
    let changes = actix_web::rt::spawn(control.watch());
    let result = server.await;
    cleaner.abort();
    watcher.abort();
    changes.abort();
    if let Some(s) = &sync {
        s.shutdown();
    }
    let s = store.clone();
    let _ = tokio::task::spawn_blocking(move || s.meta.checkpoint()).await;
    tracing::info!("connected-registry stopped");
    result.map_err(ServeError::Run)
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
            if let Some(path) = admin::bootstrap_admin(&s.meta, &data_dir)? {
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
        match tokio::task::spawn_blocking(move || s.uploads.expire(&s.meta, secs)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::info!(expired = n, "removed abandoned upload sessions"),
            Ok(Err(e)) => tracing::warn!(error = %e, "could not clean upload sessions"),
            Err(e) => tracing::warn!(error = %e, "upload cleaner failed"),
        }
    }
}
