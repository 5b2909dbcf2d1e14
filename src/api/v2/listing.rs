//! Tags list and catalog, with `n`/`last` pagination and `Link` headers.

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use super::super::error::{ApiError, ApiResult};
use super::super::query::Query;
use super::super::{blocking, AppState};
use crate::registry::{ErrorCode, RepoName};

/// Largest page a client may ask for.
const MAX_PAGE: usize = 10_000;

/// `n` and `last` from the query; `n` is capped so one request cannot dump everything.
fn page(q: &Query) -> ApiResult<(Option<usize>, Option<String>)> {
    let n = match q.get("n") {
        None | Some("") => None,
        Some(s) => Some(s.parse::<usize>().map_err(|_| {
            ApiError::bad_request(
                ErrorCode::PaginationNumberInvalid,
                format!(
                    "n must be a non-negative number, not '{}'",
                    crate::registry::echo(s)
                ),
            )
        })?),
    };
    Ok((n.map(|n| n.min(MAX_PAGE)), q.get("last").map(str::to_owned)))
}

/// Trims one look-ahead row and builds the `Link` header when more follow.
fn paginate(mut items: Vec<String>, n: Option<usize>, path: &str) -> (Vec<String>, Option<String>) {
    let mut link = None;
    if let Some(n) = n {
        if items.len() > n {
            items.truncate(n);
            if let Some(last) = items.last() {
                link = Some(format!("<{path}?n={n}&last={last}>; rel=\"next\""));
            }
        }
    }
    (items, link)
}

fn respond(body: serde_json::Value, link: Option<String>) -> HttpResponse {
    let mut r = HttpResponse::Ok();
    if let Some(l) = link {
        r.insert_header(("Link", l));
    }
    r.content_type("application/json").body(body.to_string())
}

/// `GET /v2/<name>/tags/list`
pub async fn tags(
    _req: &HttpRequest,
    state: &web::Data<AppState>,
    name: RepoName,
    q: &Query,
) -> ApiResult<HttpResponse> {
    let (n, last) = page(q)?;
    let repo = name.clone();
    let items = blocking(&state.store, move |s| {
        s.meta.tags(&repo, n.map(|n| n + 1), last.as_deref())
    })
    .await?;
    let (tags, link) = paginate(items, n, &format!("/v2/{name}/tags/list"));
    Ok(respond(json!({"name": name.as_str(), "tags": tags}), link))
}

/// `GET /v2/_catalog`
pub async fn catalog(
    _req: &HttpRequest,
    state: &web::Data<AppState>,
    q: &Query,
    visible: impl Fn(&str) -> bool + Send + 'static,
) -> ApiResult<HttpResponse> {
    let (n, last) = page(q)?;
    // Filtering happens before paging, so a page is never short because of hidden names.
    let items = blocking(&state.store, move |s| {
        let all = s.meta.catalog(None, last.as_deref())?;
        let mut shown: Vec<String> = all.into_iter().filter(|r| visible(r)).collect();
        if let Some(n) = n {
            shown.truncate(n + 1);
        }
        Ok(shown)
    })
    .await?;
    let (repos, link) = paginate(items, n, "/v2/_catalog");
    Ok(respond(json!({ "repositories": repos }), link))
}
