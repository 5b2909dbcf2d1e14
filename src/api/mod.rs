//! The HTTP edge (actix-web): `/v2` (OCI distribution) and `/acr` (health, status, tokens).
//!
//! Handlers parse and validate, run storage work on the blocking pool, and turn every failure
//! into a spec-shaped error. Absolute URLs follow the API proxy's forwarded headers.

mod acr;
mod acr_repo;
mod acr_tags;
mod audit;
pub mod auth;
pub mod error;
mod hierarchy;
pub mod limits;
mod metrics;
mod payload;
pub mod query;
pub mod route;
pub mod server;
pub mod tls;
mod token;
mod urls;
pub(crate) mod v2;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use actix_web::web;

use crate::storage::{self, Store};
use error::{ApiError, ApiResult};

/// Shared state of every worker.
pub struct AppState {
    /// The content store.
    pub store: Arc<Store>,
    /// Access control.
    pub auth: Arc<crate::auth::Authenticator>,
    /// Whether clients may write (a root, or a ReadWrite child); follows policy changes.
    pub writable: Arc<AtomicBool>,
    /// Sync with the parent, when this registry is a child (it may become one while running).
    pub sync: Arc<crate::sync::SyncSlot>,
    /// What the registry reports: sync and configuration conditions.
    pub status: Arc<crate::sync::status::Status>,
    /// Request counters and the scrape-time state.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Whether metrics are served without credentials.
    pub metrics_anonymous: bool,
    /// The control plane this registry offers the connected registries below it.
    pub control: Arc<crate::hierarchy::control::ControlPlane>,
    /// The cap on requests sending blob bytes at once.
    pub upload_gate: limits::UploadGate,
    /// Caps on open upload sessions.
    pub session_caps: crate::storage::uploads::SessionCaps,
    /// How long a body may stall and how large a blob may grow.
    pub body: payload::BodyLimits,
}

impl AppState {
    /// Whether clients may write now.
    pub fn writable(&self) -> bool {
        self.writable.load(Ordering::Relaxed)
    }
}

/// Runs storage work on the blocking thread pool so workers keep serving other requests.
pub(crate) async fn blocking<T, F>(store: &Arc<Store>, f: F) -> ApiResult<T>
where
    T: Send + 'static,
    F: FnOnce(&Store) -> storage::Result<T> + Send + 'static,
{
    let s = store.clone();
    web::block(move || f(&s))
        .await
        .map_err(|e| ApiError::internal(format!("internal error: {e}")))?
        .map_err(ApiError::from)
}

/// Registers every route on an actix app.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/acr/v1/_health").to(acr::health))
        .service(web::resource("/acr/v1/status").route(web::get().to(acr::status)))
        .service(web::resource("/acr/v1/sync").to(acr::sync))
        .service(web::resource("/acr/v1/metrics").route(web::get().to(acr::metrics)))
        .service(web::resource("/acr/v1/{name:.+}/_tags").to(acr_tags::list))
        .service(
            web::resource("/acr/v1/connectedRegistries/{name}/exchange").to(hierarchy::exchange),
        )
        .service(web::resource("/acr/oauth2/token").to(token::token))
        .service(web::resource("/oauth2/token").to(token::token))
        // Last of the /acr/v1 routes: every fixed path above wins over a repository's name.
        .service(web::resource("/acr/v1/{name:.+}").to(acr_repo::summary))
        .default_service(web::to(v2::dispatch));
}
