//! `GET /v2/<name>/referrers/<digest>`: an image index of the manifests whose subject it is.

use actix_web::{web, HttpResponse};
use serde_json::{json, Map, Value};

use super::super::error::ApiResult;
use super::super::query::Query;
use super::super::{blocking, AppState};
use crate::registry::{media_types, Digest, RepoName};

/// Lists referrers; never 404 (an unknown subject has an empty list), as the spec requires.
pub async fn list(
    state: &web::Data<AppState>,
    name: RepoName,
    subject: Digest,
    q: &Query,
) -> ApiResult<HttpResponse> {
    let filter = q
        .get("artifactType")
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    let f = filter.clone();
    let rows = blocking(&state.store, move |s| {
        s.meta.referrers(&name, &subject, f.as_deref())
    })
    .await?;
    let manifests: Vec<Value> = rows
        .into_iter()
        .map(|r| {
            let mut d = Map::new();
            d.insert("mediaType".into(), r.media_type.into());
            d.insert("digest".into(), r.digest.into());
            d.insert("size".into(), r.size.into());
            if let Some(a) = r.artifact_type {
                d.insert("artifactType".into(), a.into());
            }
            if let Some(a) = r
                .annotations
                .and_then(|a| serde_json::from_str::<Value>(&a).ok())
            {
                d.insert("annotations".into(), a);
            }
            Value::Object(d)
        })
        .collect();
    let body = json!({
        "schemaVersion": 2,
        "mediaType": media_types::OCI_INDEX,
        "manifests": manifests,
    });
    let mut r = HttpResponse::Ok();
    if filter.is_some() {
        r.insert_header(("OCI-Filters-Applied", "artifactType"));
    }
    Ok(r.content_type(media_types::OCI_INDEX)
        .body(body.to_string()))
}
