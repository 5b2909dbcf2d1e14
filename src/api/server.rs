//! Starts the HTTP server on an opened store and runs it until SIGTERM/SIGINT.

use std::sync::Arc;
use std::time::Duration;

use actix_web::{middleware, web, App, HttpServer};

use super::{configure, AppState};
use crate::config::Settings;
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
    /// The server failed while running.
    #[error("server error: {0}")]
    Run(std::io::Error),
}

/// Opens the store, serves until a shutdown signal, then closes the database cleanly.
pub async fn run(settings: Settings) -> Result<(), ServeError> {
    let dir = settings.data_dir.clone();
    let store = tokio::task::spawn_blocking(move || Store::open(&dir))
        .await
        .map_err(|e| ServeError::Run(std::io::Error::other(e.to_string())))?
        .map_err(|source| ServeError::Store {
            dir: settings.data_dir.display().to_string(),
            source,
        })?;
    let store = Arc::new(store);
    let state = web::Data::new(AppState {
        store: store.clone(),
    });
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .wrap(middleware::Logger::new("%a \"%r\" %s %b %Dms").log_target("http"))
            .configure(configure)
    })
    // Responses are written in pieces; Nagle would hold the tail for a delayed ACK.
    .tcp_nodelay(true)
    .shutdown_timeout(settings.shutdown_timeout.as_secs().max(1))
    .bind(settings.listen)
    .map_err(|source| ServeError::Bind {
        addr: settings.listen.to_string(),
        source,
    })?
    .run();
    tracing::info!(
        listen = %settings.listen,
        data_dir = %settings.data_dir.display(),
        version = env!("CARGO_PKG_VERSION"),
        "connected-registry serving"
    );
    let cleaner = actix_web::rt::spawn(clean_uploads(store.clone(), settings.upload_max_age));
    let result = server.await;
    cleaner.abort();
    let s = store.clone();
    let _ = tokio::task::spawn_blocking(move || s.meta.checkpoint()).await;
    tracing::info!("connected-registry stopped");
    result.map_err(ServeError::Run)
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
