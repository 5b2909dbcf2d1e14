//! `GET /acr/v1/<name>`: ACR's repository attributes, the counts and times of one repository.
//! Its `ETag` changes with every manifest or tag change, so a child can tell in one small
//! request whether anything it has not seen (a new signature on an old image) arrived.

use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use super::acr_tags::{repo_of, rfc3339};
use super::auth;
use super::error::{ApiError, ApiResult};
use super::query::Query;
use super::route::Route;
use super::{blocking, AppState};
use crate::registry::ErrorCode;
use crate::storage::metadata::RepoSummary;

/// `GET`/`HEAD /acr/v1/<name>`: the repository's attributes in ACR's shape, with an `ETag`.
pub async fn summary(req: HttpRequest, state: web::Data<AppState>) -> ApiResult<HttpResponse> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Err(ApiError::method_not_allowed());
    }
    let name = repo_of(req.path(), "")?;
    let q = Query::parse(req.query_string());
    // The need of `/v2/<name>/tags/list`: both tell the same facts about the repository.
    let need = auth::need(&Route::Tags(name.clone()), req.method(), &q);
    auth::authorize(&req, &state.auth, state.writable(), need.as_ref()).await?;
    let repo = name.clone();
    let found = blocking(&state.store, move |s| s.meta.repo_summary(&repo)).await?;
    let Some(s) = found else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NameUnknown,
            format!("repository {} is not known", name.as_str()),
        ));
    };
    let body = json!({
        "registry": auth::service(&req),
        "imageName": name.as_str(),
        "createdTime": rfc3339(s.created),
        "lastUpdateTime": rfc3339(s.updated),
        "manifestCount": s.manifests,
        "tagCount": s.tags,
        "changeableAttributes": {
            "deleteEnabled": true,
            "writeEnabled": true,
            "readEnabled": true,
            "listEnabled": true,
        },
    });
    Ok(HttpResponse::Ok()
        .insert_header(("ETag", etag(&s)))
        .content_type("application/json")
        .body(body.to_string()))
}

/// The strong validator of a summary: the newest event's sequence, which never repeats.
fn etag(s: &RepoSummary) -> String {
    format!("\"r{}\"", s.last_event)
}
