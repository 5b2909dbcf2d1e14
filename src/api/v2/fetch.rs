//! Fetch-through at the HTTP edge: a child asked for content of a synced repository that it
//! does not hold yet answers from the parent while the content is stored, so a client (or a
//! grandchild) never waits for the next sync.

use std::sync::Arc;

use actix_web::body::SizedStream;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use tokio::sync::watch;

use super::super::error::ApiResult;
use super::super::AppState;
use super::manifests::HeadBody;
use crate::registry::{Digest, Reference, RepoName};
use crate::storage::{BlobReader, Store};
use crate::sync::transfer::{FetchState, Inflight};
use crate::sync::SyncService;

/// Bytes read from the growing file per step.
const READ_CHUNK: u64 = 256 * 1024;
/// Bytes at the end of a relayed blob held back until the whole download is verified: a blob
/// that turns out not to match its digest then never reaches a client complete. Blobs no
/// larger than this are served from the store once verified.
const HOLD_BACK: u64 = 64 * 1024;

/// The sync service, when `repo` (and, for a tag, the tag) is something this child mirrors.
fn mirror(
    state: &web::Data<AppState>,
    repo: &RepoName,
    tag: Option<&str>,
) -> Option<Arc<SyncService>> {
    let s = state.sync.get()?;
    let policy = s.policy();
    let wanted =
        policy.includes_repository(repo.as_str()) && tag.is_none_or(|t| policy.tag_selected(t));
    wanted.then_some(s)
}

/// A manifest fetched through from the parent, or `None` (not mirrored, or the parent lacks
/// it or cannot be asked: the caller answers `MANIFEST_UNKNOWN`).
pub async fn manifest(
    state: &web::Data<AppState>,
    repo: &RepoName,
    reference: &Reference,
    with_body: bool,
) -> ApiResult<Option<HttpResponse>> {
    let tag = match reference {
        Reference::Tag(t) => Some(t.as_str()),
        Reference::Digest(_) => None,
    };
    let Some(sync) = mirror(state, repo, tag) else {
        return Ok(None);
    };
    let fetched = match sync.fetch_manifest(repo.clone(), reference.clone()).await {
        Ok(Some(m)) => m,
        Ok(None) => return Ok(None),
        Err(e) => {
            tracing::warn!(repo = %repo.as_str(), reference = %reference.as_str(), error = %e, "fetch-through failed");
            return Ok(None);
        }
    };
    let mut resp = HttpResponse::Ok();
    resp.insert_header(("Content-Type", fetched.media_type.as_str()))
        .insert_header(("Docker-Content-Digest", fetched.digest.as_str()))
        .insert_header(("ETag", format!("\"{}\"", fetched.digest)));
    let len = fetched.bytes.len() as u64;
    Ok(Some(if with_body {
        resp.body(fetched.bytes)
    } else {
        resp.body(HeadBody(len))
    }))
}

/// A blob fetched through from the parent, streamed while it is written here (all but its
/// last bytes, which follow once the download is verified); `None` when not mirrored or the
/// parent lacks it. A `Range` request or a small blob waits for the whole blob and is then
/// served from the store by the caller (`Some(None)` inside means: now stored, serve locally).
pub async fn blob(
    req: &HttpRequest,
    state: &web::Data<AppState>,
    repo: &RepoName,
    digest: &Digest,
    with_body: bool,
) -> ApiResult<Option<Option<HttpResponse>>> {
    let Some(sync) = mirror(state, repo, None) else {
        return Ok(None);
    };
    if !with_body {
        // Answer from the parent, and start storing it so a chain fills up from below.
        return match sync.parent_blob_size(repo, digest).await {
            Ok(Some(size)) => {
                sync.fetch_blob(repo, digest);
                Ok(Some(Some(blob_response(digest).body(HeadBody(size)))))
            }
            Ok(None) => Ok(None),
            Err(e) => {
                tracing::warn!(%digest, error = %e, "fetch-through HEAD failed");
                Ok(None)
            }
        };
    }
    let inflight = sync.fetch_blob(repo, digest);
    let mut rx = inflight.subscribe();
    let ranged = req.headers().contains_key("range");
    let total = loop {
        let st = rx.borrow_and_update().clone();
        match (&st.done, st.total) {
            (Some(Ok(_)), _) => return Ok(Some(None)),
            (Some(Err(f)), _) => {
                tracing::warn!(%digest, code = f.code.as_str(), error = %f.message, "fetch-through failed");
                return Ok(None);
            }
            (None, Some(t)) if !ranged && t > HOLD_BACK => break t,
            _ => {}
        }
        if rx.changed().await.is_err() {
            return Ok(None);
        }
    };
    let body = follow(inflight, rx, sync.store.clone(), digest.clone(), total);
    Ok(Some(Some(
        blob_response(digest).body(SizedStream::new(total, body)),
    )))
}

fn blob_response(digest: &Digest) -> actix_web::HttpResponseBuilder {
    let mut resp = HttpResponse::Ok();
    resp.insert_header(("Content-Type", "application/octet-stream"))
        .insert_header(("Docker-Content-Digest", digest.as_str()))
        .insert_header(("ETag", format!("\"{digest}\"")));
    resp
}

struct Follow {
    _inflight: Arc<Inflight>,
    rx: watch::Receiver<FetchState>,
    store: Arc<Store>,
    digest: Digest,
    reader: Option<BlobReader>,
    sent: u64,
    total: u64,
}

/// Streams the blob from the file being downloaded, waiting for bytes as they land.
fn follow(
    inflight: Arc<Inflight>,
    rx: watch::Receiver<FetchState>,
    store: Arc<Store>,
    digest: Digest,
    total: u64,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    let state = Follow {
        _inflight: inflight,
        rx,
        store,
        digest,
        reader: None,
        sent: 0,
        total,
    };
    futures_util::stream::unfold(Some(state), |st| async move {
        let mut st = st?;
        loop {
            if st.sent >= st.total {
                return None;
            }
            let now = st.rx.borrow_and_update().clone();
            let available = match readable(&now, st.total) {
                Ok(n) => n,
                // Ending the body with an error makes actix cut the connection: the client
                // sees a short body, never a complete response of wrong bytes.
                Err(e) => return Some((Err(e), None)),
            };
            if available > st.sent {
                let want = (available - st.sent).min(READ_CHUNK);
                return match read_at(&mut st, want).await {
                    Ok(b) => {
                        st.sent += b.len() as u64;
                        Some((Ok(b), Some(st)))
                    }
                    Err(e) => Some((Err(e), None)),
                };
            }
            if st.rx.changed().await.is_err() && st.rx.borrow().done.is_none() {
                let e = std::io::Error::other("download from the parent was abandoned");
                return Some((Err(e), None));
            }
        }
    })
}

/// How much of a blob of `total` bytes a client may have now: what is on disk short of the
/// held-back tail while downloading, all of it once verified and stored, an error when the
/// download failed (a digest mismatch included).
fn readable(now: &FetchState, total: u64) -> std::io::Result<u64> {
    match &now.done {
        Some(Ok(_)) => Ok(total),
        Some(Err(f)) => Err(std::io::Error::other(format!(
            "download from the parent failed: {}",
            f.message
        ))),
        None => Ok(now.written.min(total.saturating_sub(HOLD_BACK))),
    }
}

/// Reads `want` bytes at the current position of the download (an open reader keeps reading
/// the same bytes once the download is moved into place; opened afresh, the stored blob).
async fn read_at(st: &mut Follow, want: u64) -> std::io::Result<Bytes> {
    let reader = match st.reader.take() {
        Some(r) => r,
        None => {
            let (store, digest) = (st.store.clone(), st.digest.clone());
            web::block(move || store.open_download(&digest))
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))?
                .map_err(|e| std::io::Error::other(e.to_string()))?
                .ok_or_else(|| std::io::Error::other("the download's bytes are gone"))?
        }
    };
    let piece = super::filestream::read_piece(&reader, st.sent, want as usize).await?;
    st.reader = Some(reader);
    Ok(piece)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::status::DetailCode;
    use crate::sync::transfer::Failure;

    fn state(written: u64, done: Option<Result<u64, Failure>>) -> FetchState {
        FetchState {
            written,
            total: Some(1 << 20),
            done,
        }
    }

    #[test]
    fn the_tail_waits_for_verification() {
        let total = 1 << 20;
        let held = total - HOLD_BACK;
        // Early bytes flow as they land; the tail does not, even once it is all on disk.
        assert_eq!(readable(&state(1000, None), total).ok(), Some(1000));
        assert_eq!(readable(&state(total, None), total).ok(), Some(held));
        // Verified and stored: all of it.
        assert_eq!(
            readable(&state(total, Some(Ok(total))), total).ok(),
            Some(total)
        );
        // A mismatch (or any failure): an error, so the response is cut.
        let f = Failure {
            code: DetailCode::DiskError,
            message: "digest mismatch".into(),
            offline: false,
        };
        assert!(readable(&state(total, Some(Err(f))), total).is_err());
    }
}
