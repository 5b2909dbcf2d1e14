//! `GET /acr/v1/<name>`: ACR's repository attributes, the counts and times of one repository.
//! Its `ETag` changes with every manifest or tag change, so a child can tell in one small
//! request whether anything it has not seen (a new signature on an old image) arrived.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use super::acr_tags::{authorized_repo, rfc3339};
use super::auth;
use super::error::{ApiError, ApiResult};
use super::{blocking, AppState};
use crate::registry::ErrorCode;
use crate::storage::metadata::RepoSummary;

/// `GET`/`HEAD /acr/v1/<name>`: the repository's attributes in ACR's shape, with an `ETag`.
pub async fn summary(req: HttpRequest, state: web::Data<AppState>) -> ApiResult<HttpResponse> {
    let name = authorized_repo(&req, &state, "").await?;
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
