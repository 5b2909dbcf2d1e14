//! `/acr/v1/connectedRegistries/{name}/exchange`: the control plane a connected registry offers
//! its children (status up, configuration and change feed down), authorised by the caller's
//! gateway permissions on `name`.

use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};

use super::auth::{self, Need};
use super::error::{ApiError, ApiResult};
use super::{payload, AppState};
use crate::auth::{GatewayAction, Principal};
use crate::hierarchy::wire::{ExchangeRequest, API_HEADER, API_VERSION};
use crate::hierarchy::HierarchyError;
use crate::registry::ErrorCode;

/// Largest exchange body accepted (statuses of a big subtree are still small).
const BODY_MAX: usize = 4 * 1024 * 1024;

/// `POST …/exchange`.
pub async fn exchange(
    req: HttpRequest,
    name: web::Path<String>,
    body: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let result = handle(&req, name.into_inner(), body, &state).await;
    let mut resp = match result {
        Ok(r) => r,
        Err(e) => actix_web::ResponseError::error_response(&e),
    };
    // Every answer says it comes from a connected registry, errors included: that is how a
    // child tells "a parent that does not define me" from "a generic registry".
    resp.headers_mut().insert(
        actix_web::http::header::HeaderName::from_static(API_HEADER),
        actix_web::http::header::HeaderValue::from_static(API_VERSION),
    );
    resp
}

async fn handle(
    req: &HttpRequest,
    name: String,
    mut body: web::Payload,
    state: &AppState,
) -> ApiResult<HttpResponse> {
    if req.method() != Method::POST {
        return Err(ApiError::method_not_allowed());
    }
    let p = auth::authorize(req, &state.auth, true, Some(&Need::Login)).await?;
    let allowed = |p: &Principal, n: &str, a| state.auth.gateway_allowed(p, n, a);
    if !(allowed(&p, &name, GatewayAction::ConfigRead)
        && allowed(&p, &name, GatewayAction::MessageWrite))
    {
        return Err(auth::denied());
    }
    let bytes = match payload::read_limited(&mut body, BODY_MAX, state.body.idle).await {
        Ok(b) => b,
        Err(e) if payload::ends_body(&e) => return Ok(payload::refused(e, body)),
        Err(e) => return Err(e),
    };
    let msg: ExchangeRequest = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad_request(
            ErrorCode::Unsupported,
            format!("invalid exchange message: {e}"),
        )
    })?;
    let auth = state.auth.clone();
    let caller = p.clone();
    let may_relay = move |d: &str| auth.gateway_allowed(&caller, d, GatewayAction::MessageWrite);
    match state.control.exchange(&name, msg, may_relay).await {
        Ok(answer) => Ok(HttpResponse::Ok().json(answer)),
        Err(e) => Err(error(e)),
    }
}

/// The control plane's errors in the spec's shape.
fn error(e: HierarchyError) -> ApiError {
    match e {
        HierarchyError::NotFound(m) => ApiError::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, m),
        HierarchyError::AlreadyActivated => ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::AlreadyActivated,
            e.to_string(),
        ),
        HierarchyError::Invalid(m) => ApiError::bad_request(ErrorCode::Unsupported, m),
        other => ApiError::internal(other.to_string()),
    }
}
