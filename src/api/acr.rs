//! `/acr/v1/...`: liveness/readiness, sync status and the manual sync trigger.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use super::auth::{self, Need};
use super::error::{ApiError, ApiResult};
use super::{blocking, AppState};
use crate::metrics::{Snapshot, CONTENT_TYPE};
use crate::registry::ErrorCode;

/// `GET /acr/v1/_health`: 200 with the version and free disk space while the store is usable.
pub async fn health(state: web::Data<AppState>) -> ApiResult<HttpResponse> {
    let free = blocking(&state.store, |s| s.free_bytes()).await?;
    Ok(HttpResponse::Ok().json(json!({
        "status": "Healthy",
        "version": env!("CARGO_PKG_VERSION"),
        "freeDiskBytes": free,
    })))
}

/// `GET /acr/v1/status`: connection state, last sync, details and per-repository progress.
pub async fn status(req: HttpRequest, state: web::Data<AppState>) -> ApiResult<HttpResponse> {
    auth::authorize(&req, &state.auth, true, Some(&Need::Login)).await?;
    let last_gc = blocking(&state.store, crate::gc::last_pass).await?;
    let mut body = match state.sync.get() {
        Some(s) => {
            // The outbox grows with every client push: count it now, not at the last pass.
            let svc = s.clone();
            let _ = web::block(move || svc.refresh_outbox(None)).await;
            serde_json::to_value(s.status.report()).unwrap_or_default()
        }
        None => json!({
            "connectionState": "Online",
            "mode": "ReadWrite",
            "parent": null,
            "lastSyncTime": null,
            "statusDetails": state.status.report().status_details,
            "repositories": [],
        }),
    };
    if let Some(obj) = body.as_object_mut() {
        obj.insert("garbageCollection".into(), json!({ "lastPass": last_gc }));
    }
    Ok(HttpResponse::Ok().json(body))
}

/// `GET /acr/v1/metrics`: the Prometheus text format; authenticated like the status unless
/// `--metrics-anonymous`.
pub async fn metrics(req: HttpRequest, state: web::Data<AppState>) -> ApiResult<HttpResponse> {
    if !state.metrics_anonymous {
        auth::authorize(&req, &state.auth, true, Some(&Need::Login)).await?;
    }
    let sync = state.sync.get();
    let status = state.status.clone();
    let snapshot = blocking(&state.store, move |s| {
        let sync = sync.map(|svc| {
            svc.refresh_outbox(None);
            status.report()
        });
        Ok(Snapshot {
            used_bytes: s.meta.content_bytes()?,
            free_bytes: s.free_bytes()?,
            counts: s.meta.content_counts()?,
            sync,
            gc: crate::gc::totals(s)?,
            gc_last: crate::gc::last_pass(s)?.and_then(|p| {
                let started = parse_time(&p.started)?;
                Some((started.timestamp(), p.seconds))
            }),
        })
    })
    .await?;
    Ok(HttpResponse::Ok()
        .content_type(CONTENT_TYPE)
        .body(state.metrics.encode(&snapshot)))
}

fn parse_time(s: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc))
}

/// `POST /acr/v1/sync`: start a sync now (202); a root has nothing to sync from (400).
pub async fn sync(req: HttpRequest, state: web::Data<AppState>) -> ApiResult<HttpResponse> {
    if req.method() != actix_web::http::Method::POST {
        return Err(ApiError::method_not_allowed());
    }
    auth::authorize(&req, &state.auth, true, Some(&Need::Login)).await?;
    match state.sync.get() {
        Some(s) => {
            s.request_sync();
            Ok(HttpResponse::build(StatusCode::ACCEPTED).json(json!({"sync": "requested"})))
        }
        None => Err(ApiError::bad_request(
            ErrorCode::Unsupported,
            "this registry has no parent to sync from",
        )),
    }
}
