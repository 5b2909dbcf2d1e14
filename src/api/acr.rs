//! `/acr/v1/...`: liveness/readiness now; status and the control plane later.

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::error::ApiResult;
use super::{blocking, AppState};

/// `GET /acr/v1/_health`: 200 with the version and free disk space while the store is usable.
pub async fn health(state: web::Data<AppState>) -> ApiResult<HttpResponse> {
    let free = blocking(&state.store, |s| s.free_bytes()).await?;
    Ok(HttpResponse::Ok().json(json!({
        "status": "Healthy",
        "version": env!("CARGO_PKG_VERSION"),
        "freeDiskBytes": free,
    })))
}
