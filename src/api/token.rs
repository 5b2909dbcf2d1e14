//! The Docker token service at `/acr/oauth2/token` (alias `/oauth2/token`): `GET` with Basic
//! credentials, `POST` OAuth2 grants (`password`, `refresh_token`).

use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use super::auth::{basic_credentials, password_login, service};
use super::error::{ApiError, ApiResult};
use super::payload::{ends_body, read_limited, refused};
use super::query::Query;
use super::AppState;
use crate::auth::admin::rfc3339;
use crate::auth::scope::{self, ScopeEntry};
use crate::auth::Principal;
use crate::registry::ErrorCode;

/// Largest form body accepted.
const FORM_MAX: usize = 64 * 1024;

fn scopes(q: &Query) -> Vec<ScopeEntry> {
    q.all("scope").flat_map(scope::parse).take(32).collect()
}

fn unauthorized(msg: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, msg)
}

/// Handles both methods.
pub async fn token(
    req: HttpRequest,
    mut payload: web::Payload,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let auth = &state.auth;
    let (principal, q) = if req.method() == Method::POST {
        let body = match read_limited(&mut payload, FORM_MAX, state.body.idle).await {
            Ok(b) => b,
            Err(e) if ends_body(&e) => return Ok(refused(e, payload)),
            Err(e) => return Err(e),
        };
        let q = Query::parse(&String::from_utf8_lossy(&body));
        let p = match q.get("grant_type") {
            Some("password") => {
                let (u, p) = (
                    q.get("username").unwrap_or(""),
                    q.get("password").unwrap_or(""),
                );
                password_login(&req, auth, u.to_owned(), p.to_owned()).await?
            }
            Some("refresh_token") => {
                let t = q.get("refresh_token").unwrap_or("");
                auth.check_refresh(t, &service(&req)).map_err(|e| {
                    tracing::warn!(reason = %e, "refresh token refused");
                    unauthorized("invalid refresh token")
                })?
            }
            _ => {
                return Err(ApiError::bad_request(
                    ErrorCode::Unsupported,
                    "grant_type must be password or refresh_token",
                ))
            }
        };
        (p, q)
    } else if req.method() == Method::GET {
        let q = Query::parse(req.query_string());
        let creds = req
            .headers()
            .get("authorization")
            .filter(|h| h.len() <= 8192)
            .and_then(|h| h.to_str().ok())
            .and_then(basic_credentials);
        let p = match creds {
            Some((u, p)) => password_login(&req, auth, u, p).await?,
            None if auth.access.anonymous_pull => Principal::Anonymous,
            None => return Err(unauthorized("credentials required")),
        };
        (p, q)
    } else {
        return Err(ApiError::method_not_allowed());
    };
    let offline = q.get("offline_token") == Some("true") || q.get("access_type") == Some("offline");
    let asked = scopes(&q);
    let issued = auth.issue(&principal, &service(&req), &asked, offline)?;
    if let Principal::Token { name, .. } = &principal {
        tracing::debug!(token = %name, scopes = asked.len(), "bearer token issued");
    }
    let mut body = json!({
        "token": issued.token,
        "access_token": issued.token,
        "expires_in": issued.expires_in,
        "issued_at": rfc3339(issued.issued_at),
    });
    if let Some(r) = issued.refresh_token {
        body["refresh_token"] = json!(r);
    }
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .insert_header(("Cache-Control", "no-store"))
        .body(body.to_string()))
}
