//! Tags list and catalog, with `n`/`last` pagination and `Link` headers.

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use super::super::error::{ApiError, ApiResult};
use super::super::query::Query;
use super::super::{blocking, AppState};
use crate::registry::{ErrorCode, RepoName};
use crate::storage::MetadataStore;

/// Largest page a client may ask for.
const MAX_PAGE: usize = 10_000;

/// `n` and `last` from the query; `n` is capped so one request cannot dump everything.
pub(crate) fn page(q: &Query) -> ApiResult<(Option<usize>, Option<String>)> {
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

/// Up to `want` repository names after `last` that `visible` lets through (all without `want`).
/// Filtering happens before paging, so a page is never short because of hidden names; names are
/// read in batches of the page size, so a page costs about its own size wherever it starts, not
/// the rest of the catalog after it.
fn visible_names(
    meta: &dyn MetadataStore,
    want: Option<usize>,
    mut last: Option<String>,
    visible: impl Fn(&str) -> bool,
) -> crate::storage::Result<Vec<String>> {
    let mut shown = Vec::new();
    loop {
        let batch = meta.catalog(want, last.as_deref())?;
        let ended = want.is_none_or(|w| batch.len() < w);
        last = batch.last().cloned();
        shown.extend(batch.into_iter().filter(|r| visible(r)));
        if let Some(w) = want.filter(|w| shown.len() >= *w) {
            shown.truncate(w);
            return Ok(shown);
        }
        if ended {
            return Ok(shown);
        }
    }
}

/// `GET /v2/_catalog`
pub async fn catalog(
    _req: &HttpRequest,
    state: &web::Data<AppState>,
    q: &Query,
    visible: impl Fn(&str) -> bool + Send + 'static,
) -> ApiResult<HttpResponse> {
    let (n, last) = page(q)?;
    let items = blocking(&state.store, move |s| {
        visible_names(&*s.meta, n.map(|n| n + 1), last, visible)
    })
    .await?;
    let (repos, link) = paginate(items, n, "/v2/_catalog");
    Ok(respond(json!({ "repositories": repos }), link))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Repositories `a` to `h`, each with a manifest (the catalog lists only those).
    fn catalog_of_eight() -> (tempfile::TempDir, crate::storage::SqliteMetadata) {
        let tmp = tempfile::TempDir::new().unwrap_or_else(|e| panic!("{e}"));
        let meta =
            crate::storage::SqliteMetadata::open(tmp.path()).unwrap_or_else(|e| panic!("{e}"));
        let c = rusqlite::Connection::open(tmp.path().join("registry.db"))
            .unwrap_or_else(|e| panic!("{e}"));
        for (id, name) in ('a'..='h').enumerate() {
            c.execute_batch(&format!(
                "INSERT INTO repositories (id, name, created) VALUES ({id}, '{name}', 0);
                 INSERT INTO manifests (repo_id, digest, media_type, size, created)
                     VALUES ({id}, 'sha256:m', 't', 1, 0);"
            ))
            .unwrap_or_else(|e| panic!("{e}"));
        }
        (tmp, meta)
    }

    /// Pages read in batches still skip hidden names, across more than one batch.
    #[test]
    fn a_page_skips_hidden_names_across_batches() {
        let (_tmp, meta) = catalog_of_eight();
        let visible = |r: &str| !matches!(r, "b" | "c" | "d" | "e");
        let page = |want, last: Option<&str>| {
            visible_names(&meta, want, last.map(str::to_owned), visible)
                .unwrap_or_else(|e| panic!("{e}"))
        };
        assert_eq!(page(Some(3), None), ["a", "f", "g"]);
        assert_eq!(page(Some(3), Some("f")), ["g", "h"]);
        assert_eq!(page(None, None), ["a", "f", "g", "h"]);
        assert_eq!(page(Some(1), Some("h")), Vec::<String>::new());
    }
}
