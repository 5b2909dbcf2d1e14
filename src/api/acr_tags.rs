//! `GET /acr/v1/<name>/_tags`: ACR's tag listing, every tag with its digest and times, paged by
//! `n`/`last` with a `Link` header. One listing tells a child what each tag points at, where the
//! distribution API needs a manifest HEAD per tag.

use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, SecondsFormat};
use serde_json::{json, Value};

use super::auth;
use super::error::{ApiError, ApiResult};
use super::query::{percent_decode, Query};
use super::route::Route;
use super::{blocking, AppState};
use crate::registry::{echo, ErrorCode, RepoName};
use crate::storage::metadata::TagEntry;

/// Page size when `n` is not given (ACR's default).
const DEFAULT_PAGE: usize = 100;
/// Largest page served, as ACR caps it; the rest stays behind the `Link` header.
const MAX_PAGE: usize = 1000;

/// `GET`/`HEAD /acr/v1/<name>/_tags?n=&last=&orderby=`. `orderby` is accepted but pages are
/// always in name order: that is the order `last` pages by, as in `/v2/<name>/tags/list`.
pub async fn list(req: HttpRequest, state: web::Data<AppState>) -> ApiResult<HttpResponse> {
    let name = authorized_repo(&req, &state, "/_tags").await?;
    let (n, last) = page(&Query::parse(req.query_string()))?;
    let repo = name.clone();
    // One look-ahead row tells whether another page follows.
    let mut rows = blocking(&state.store, move |s| {
        s.meta.tag_page(&repo, n + 1, last.as_deref())
    })
    .await?;
    let more = rows.len() > n;
    rows.truncate(n);
    let mut resp = HttpResponse::Ok();
    if let Some(last) = rows.last().filter(|_| more) {
        let next = format!(
            "</acr/v1/{name}/_tags?last={}&n={n}>; rel=\"next\"",
            last.name
        );
        resp.insert_header(("Link", next));
    }
    let body = json!({
        "registry": auth::service(&req),
        "imageName": name.as_str(),
        "tags": rows.iter().map(entry).collect::<Vec<_>>(),
    });
    Ok(resp.content_type("application/json").body(body.to_string()))
}

/// The repository of a `GET`/`HEAD /acr/v1/<name><suffix>` the caller may read: authorised
/// like `/v2/<name>/tags/list`, as both tell the same facts about the repository.
pub(super) async fn authorized_repo(
    req: &HttpRequest,
    state: &AppState,
    suffix: &str,
) -> ApiResult<RepoName> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Err(ApiError::method_not_allowed());
    }
    let name = repo_of(req.path(), suffix)?;
    let q = Query::parse(req.query_string());
    let need = auth::need(&Route::Tags(name.clone()), req.method(), &q);
    auth::authorize(req, &state.auth, state.writable(), need.as_ref()).await?;
    Ok(name)
}

/// The repository of `/acr/v1/<name><suffix>`, each segment decoded and the whole checked like
/// the `/v2/` routes do, so an encoded `..` or `/` cannot slip through.
pub(super) fn repo_of(raw_path: &str, suffix: &str) -> ApiResult<RepoName> {
    let inner = raw_path
        .strip_prefix("/acr/v1/")
        .and_then(|r| r.strip_suffix(suffix))
        .ok_or_else(|| ApiError::unsupported("no such registry API endpoint"))?;
    let segs: Vec<String> = inner.split('/').map(|s| percent_decode(s, false)).collect();
    Ok(RepoName::parse(&segs.join("/"))?)
}

/// `n` (default `DEFAULT_PAGE`, capped at `MAX_PAGE`) and `last` from the query.
fn page(q: &Query) -> ApiResult<(usize, Option<String>)> {
    let n = match q.get("n") {
        None | Some("") => DEFAULT_PAGE,
        Some(s) => s.parse::<usize>().map_err(|_| {
            ApiError::bad_request(
                ErrorCode::PaginationNumberInvalid,
                format!("n must be a non-negative number, not '{}'", echo(s)),
            )
        })?,
    };
    let last = q.get("last").filter(|l| !l.is_empty()).map(str::to_owned);
    Ok((n.min(MAX_PAGE), last))
}

/// One tag in ACR's shape. Tags carry no locks or signatures here, so the attributes are fixed.
fn entry(t: &TagEntry) -> Value {
    json!({
        "name": t.name,
        "digest": t.digest,
        "createdTime": rfc3339(t.created),
        "lastUpdateTime": rfc3339(t.updated),
        "signed": false,
        "changeableAttributes": {
            "deleteEnabled": true,
            "writeEnabled": true,
            "readEnabled": true,
            "listEnabled": true,
        },
    })
}

/// Unix seconds as RFC 3339 UTC (`1970-01-01T00:00:00Z` for a time out of range).
pub(super) fn rfc3339(secs: i64) -> String {
    DateTime::from_timestamp(secs, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_decoded_and_checked() {
        let ok = |p: &str| repo_of(p, "/_tags").map(|n| n.as_str().to_owned()).ok();
        assert_eq!(ok("/acr/v1/a/b/_tags").as_deref(), Some("a/b"));
        assert_eq!(ok("/acr/v1/a%2Db/_tags").as_deref(), Some("a-b"));
        for bad in [
            "/acr/v1/_tags",
            "/acr/v1/A/_tags",
            "/acr/v1/a/%2e%2e/b/_tags",
            "/acr/v1/a%2F..%2Fb/_tags",
            "/acr/v1//_tags",
            "/acr/v1/a/_tags/x",
        ] {
            assert!(repo_of(bad, "/_tags").is_err(), "{bad}");
        }
    }

    #[test]
    fn pages_default_cap_and_refuse_bad_numbers() {
        let p = |qs: &str| page(&Query::parse(qs)).map_err(|e| e.code);
        assert_eq!(p(""), Ok((DEFAULT_PAGE, None)));
        assert_eq!(
            p("n=5&last=v1&orderby=timedesc"),
            Ok((5, Some("v1".into())))
        );
        assert_eq!(p("n=99999"), Ok((MAX_PAGE, None)));
        assert_eq!(p("n=0&last="), Ok((0, None)));
        for bad in ["n=-1", "n=x", "n=1.5"] {
            assert_eq!(p(bad), Err(ErrorCode::PaginationNumberInvalid), "{bad}");
        }
    }

    #[test]
    fn entries_have_acr_fields() {
        let e = entry(&TagEntry {
            name: "v1".into(),
            digest: "sha256:ab".into(),
            created: 0,
            updated: 1_767_225_600,
        });
        assert_eq!(e["createdTime"], "1970-01-01T00:00:00Z");
        assert_eq!(e["lastUpdateTime"], "2026-01-01T00:00:00Z");
        assert_eq!(
            (e["name"].as_str(), e["signed"].as_bool()),
            (Some("v1"), Some(false))
        );
        assert_eq!(e["changeableAttributes"]["listEnabled"], true);
        assert_eq!(rfc3339(i64::MAX), "1970-01-01T00:00:00Z");
    }
}
