//! Blob GET/HEAD (with single `Range` requests) and DELETE (unlink from the repository).

use actix_web::body::SizedStream;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};

use super::super::error::{ApiError, ApiResult};
use super::super::{blocking, AppState};
use super::manifests::HeadBody;
use crate::registry::{Digest, ErrorCode, Reference, RepoName};
use crate::storage::{BlobReader, StorageError};

/// What a blob request resolves to.
enum Found {
    Stored(BlobReader),
    /// Manifests are blobs too: served from metadata when asked for by the blobs endpoint.
    Bytes(Vec<u8>),
}

/// `GET`/`HEAD /v2/<name>/blobs/<digest>`
pub async fn get(
    req: &HttpRequest,
    state: &web::Data<AppState>,
    name: RepoName,
    digest: Digest,
    with_body: bool,
) -> ApiResult<HttpResponse> {
    let found = match lookup(state, &name, &digest).await? {
        Some(f) => f,
        None => match super::fetch::blob(req, state, &name, &digest, with_body).await? {
            Some(Some(resp)) => return Ok(resp),
            // Stored meanwhile (a range request waits for the whole blob): serve it from here.
            Some(None) => {
                let d = digest.clone();
                let f = blocking(&state.store, move |s| s.open_blob(&d)).await?;
                f.map(Found::Stored)
            }
            None => None,
        }
        .ok_or_else(|| StorageError::BlobUnknown(digest.clone()))?,
    };
    let total = match &found {
        Found::Stored(r) => r.len(),
        Found::Bytes(b) => b.len() as u64,
    };
    let range = match req.headers().get("range").and_then(|v| v.to_str().ok()) {
        Some(h) => parse_range(h, total)?,
        None => None,
    };
    let (start, len) = range.unwrap_or((0, total));
    let mut resp = HttpResponse::build(if range.is_some() {
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    });
    resp.insert_header(("Content-Type", "application/octet-stream"))
        .insert_header(("Docker-Content-Digest", digest.as_str()))
        .insert_header(("Accept-Ranges", "bytes"))
        .insert_header(("ETag", format!("\"{digest}\"")));
    if range.is_some() {
        let end = (start + len).saturating_sub(1);
        resp.insert_header(("Content-Range", format!("bytes {start}-{end}/{total}")));
    }
    if !with_body {
        return Ok(resp.body(HeadBody(len)));
    }
    Ok(match found {
        Found::Bytes(b) => {
            let s = start as usize;
            resp.body(b[s..s + len as usize].to_vec())
        }
        Found::Stored(r) => resp.body(SizedStream::new(
            len,
            super::filestream::blob_stream(r, start, len),
        )),
    })
}

/// The blob (or manifest) `digest` as `repo` may serve it, or `None`.
async fn lookup(
    state: &web::Data<AppState>,
    repo: &RepoName,
    digest: &Digest,
) -> ApiResult<Option<Found>> {
    let (name, d) = (repo.clone(), digest.clone());
    blocking(&state.store, move |s| {
        if s.meta.blob_link(&name, &d)?.is_some() {
            if let Some(r) = s.open_blob(&d)? {
                return Ok(Some(Found::Stored(r)));
            }
            tracing::error!(digest = %d, "blob linked but its file is missing");
        }
        let m = s.meta.manifest(&name, &Reference::Digest(d), true)?;
        Ok(m.and_then(|m| m.body).map(Found::Bytes))
    })
    .await
}

/// Parses a single `bytes=` range into (start, length). Unparseable or multi-range headers are
/// ignored (a full response is always allowed); an unsatisfiable one is 416.
pub(crate) fn parse_range(h: &str, total: u64) -> ApiResult<Option<(u64, u64)>> {
    let Some(spec) = h.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Ok(None);
    };
    let unsatisfiable = || {
        ApiError::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            ErrorCode::BlobUnknown,
            format!("range {spec} is outside the blob's {total} bytes"),
        )
        .with_header("Content-Range", format!("bytes */{total}"))
    };
    let range = match (a.trim(), b.trim()) {
        ("", suffix) => {
            let n: u64 = match suffix.parse() {
                Ok(n) => n,
                Err(_) => return Ok(None),
            };
            if n == 0 || total == 0 {
                return Err(unsatisfiable());
            }
            let n = n.min(total);
            (total - n, n)
        }
        (start, end) => {
            let Ok(s) = start.parse::<u64>() else {
                return Ok(None);
            };
            let e = if end.is_empty() {
                total.saturating_sub(1)
            } else {
                match end.parse::<u64>() {
                    Ok(e) if e >= s => e.min(total.saturating_sub(1)),
                    _ => return Ok(None),
                }
            };
            if s >= total {
                return Err(unsatisfiable());
            }
            (s, e - s + 1)
        }
    };
    Ok(Some(range))
}

/// `DELETE /v2/<name>/blobs/<digest>`: the repository stops serving it; the file stays for
/// other repositories until garbage collection.
pub async fn delete(
    state: &web::Data<AppState>,
    name: RepoName,
    digest: Digest,
) -> ApiResult<HttpResponse> {
    let d = digest.clone();
    let removed = blocking(&state.store, move |s| s.meta.unlink_blob(&name, &d)).await?;
    if !removed {
        return Err(StorageError::BlobUnknown(digest).into());
    }
    Ok(HttpResponse::build(StatusCode::ACCEPTED).finish())
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100).unwrap(), Some((0, 10)));
        assert_eq!(parse_range("bytes=90-", 100).unwrap(), Some((90, 10)));
        assert_eq!(parse_range("bytes=-10", 100).unwrap(), Some((90, 10)));
        assert_eq!(parse_range("bytes=50-500", 100).unwrap(), Some((50, 50)));
        assert_eq!(parse_range("bytes=0-1,5-6", 100).unwrap(), None);
        assert_eq!(parse_range("items=0-1", 100).unwrap(), None);
        assert_eq!(parse_range("bytes=9-2", 100).unwrap(), None);
        assert!(parse_range("bytes=100-", 100).is_err());
        assert!(parse_range("bytes=-5", 0).is_err());
    }
}
