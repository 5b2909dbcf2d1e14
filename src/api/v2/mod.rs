//! The OCI distribution API under `/v2`.

pub(crate) mod blobs;
mod fetch;
mod filestream;
pub(crate) mod listing;
mod manifests;
mod referrers;
pub(crate) mod uploads;

use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};

use super::auth;
use super::error::{ApiError, ApiResult};
use super::payload;
use super::query::Query;
use super::route::{self, Route};
use super::AppState;
use crate::auth::Action;

/// Header every distribution API response carries.
pub const API_VERSION_HEADER: (&str, &str) = ("Docker-Distribution-API-Version", "registry/2.0");

/// Routes a request to its handler by path and method.
pub async fn dispatch(
    req: HttpRequest,
    mut payload: web::Payload,
    state: web::Data<AppState>,
) -> ApiResult<HttpResponse> {
    let route = route::parse(req.path())?;
    let q = Query::parse(req.query_string());
    let m = req.method().clone();
    let st = &state;
    let need = auth::need(&route, &m, &q);
    let principal = auth::authorize(&req, &state.auth, state.writable(), need.as_ref()).await?;
    let gate = state.auth.clone();
    let resp = match route {
        Route::Base if is_get(&m) => Ok(HttpResponse::Ok()
            .content_type("application/json")
            .body("{}")),
        Route::Catalog if is_get(&m) => {
            let p = principal.clone();
            let visible = move |r: &str| gate.allowed(&p, r).has(Action::MetadataRead);
            listing::catalog(&req, st, &q, visible).await
        }
        Route::Tags(name) if is_get(&m) => listing::tags(&req, st, name, &q).await,
        Route::Manifest(name, r) => match (m.clone(), r) {
            (Method::PUT, r) => manifests::put(&req, &mut payload, st, name, r?, &q).await,
            // No manifest can have a reference outside the grammar: reads find nothing.
            (Method::GET | Method::HEAD | Method::DELETE, Err(e)) => Err(manifests::unknown(e)),
            (Method::GET | Method::HEAD, Ok(r)) => {
                manifests::get(st, name, r, m == Method::GET).await
            }
            (Method::DELETE, Ok(r)) => manifests::delete(st, name, r).await,
            _ => Err(ApiError::method_not_allowed()),
        },
        Route::Blob(name, d) => match m {
            Method::GET | Method::HEAD => blobs::get(&req, st, name, d, m == Method::GET).await,
            Method::DELETE => blobs::delete(st, name, d).await,
            _ => Err(ApiError::method_not_allowed()),
        },
        Route::UploadStart(name) if m == Method::POST => {
            let from = auth::mount_from(&gate, &principal, need.as_ref(), &q);
            uploads::start(&req, &mut payload, st, name, &q, from).await
        }
        Route::Upload(name, id) => match m {
            Method::GET => uploads::status(&req, st, name, id).await,
            Method::PATCH => uploads::patch(&req, &mut payload, st, name, id).await,
            Method::PUT => uploads::finish(&req, &mut payload, st, name, id, &q).await,
            Method::DELETE => uploads::cancel(st, name, id).await,
            _ => Err(ApiError::method_not_allowed()),
        },
        Route::Referrers(name, d) if is_get(&m) => referrers::list(st, name, d, &q).await,
        _ => Err(ApiError::method_not_allowed()),
    };
    let mut resp = match resp {
        Err(e) if payload::ends_body(&e) => return Ok(payload::refused(e, payload)),
        r => r?,
    };
    resp.headers_mut().insert(
        actix_web::http::header::HeaderName::from_static("docker-distribution-api-version"),
        actix_web::http::header::HeaderValue::from_static(API_VERSION_HEADER.1),
    );
    Ok(resp)
}

fn is_get(m: &Method) -> bool {
    m == Method::GET || m == Method::HEAD
}

/// `Range: 0-<end>` as the upload protocol reports progress (`0-0` before any byte).
fn upload_range(offset: u64) -> String {
    format!("0-{}", offset.saturating_sub(1))
}
