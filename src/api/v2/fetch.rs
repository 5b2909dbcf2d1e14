//! Fetch-through at the HTTP edge: a child asked for content of a synced repository that it
//! does not hold yet answers from the parent while the content is stored, so a client (or a
//! grandchild) never waits for the next sync.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;

use actix_web::body::SizedStream;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use tokio::sync::watch;

use super::super::error::ApiResult;
use super::super::AppState;
use super::manifests::HeadBody;
use crate::registry::{Digest, Reference, RepoName};
use crate::sync::transfer::{FetchState, Inflight};
use crate::sync::SyncService;

/// Bytes read from the growing file per step.
const READ_CHUNK: u64 = 256 * 1024;

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

/// A blob fetched through from the parent, streamed while it is written here; `None` when
/// not mirrored or the parent lacks it. A `Range` request waits for the whole blob and is then
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
            (None, Some(t)) if !ranged => break t,
            _ => {}
        }
        if rx.changed().await.is_err() {
            return Ok(None);
        }
    };
    let path = inflight.path.clone();
    let stored = sync.store.blobs.path(digest);
    let body = follow(inflight, rx, path, stored, total);
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
    file: Option<File>,
    partial: PathBuf,
    stored: PathBuf,
    sent: u64,
    total: u64,
}

/// Streams the blob from the file being downloaded, waiting for bytes as they land.
fn follow(
    inflight: Arc<Inflight>,
    rx: watch::Receiver<FetchState>,
    partial: PathBuf,
    stored: PathBuf,
    total: u64,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    let state = Follow {
        _inflight: inflight,
        rx,
        file: None,
        partial,
        stored,
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
            let available = match &now.done {
                Some(Ok(_)) => st.total,
                Some(Err(f)) => {
                    let e = std::io::Error::other(format!(
                        "download from the parent failed: {}",
                        f.message
                    ));
                    return Some((Err(e), None));
                }
                None => now.written,
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

/// Reads `want` bytes at the current position of the partial file (or, once moved into place,
/// the stored blob: an open handle keeps reading the same file across the rename).
async fn read_at(st: &mut Follow, want: u64) -> std::io::Result<Bytes> {
    let file = match st.file.take() {
        Some(f) => f,
        None => match File::open(&st.partial) {
            Ok(f) => f,
            Err(_) => File::open(&st.stored)?,
        },
    };
    let pos = st.sent;
    let res = web::block(move || {
        let mut f = file;
        f.seek(SeekFrom::Start(pos))?;
        let mut buf = vec![0u8; want as usize];
        f.read_exact(&mut buf)?;
        Ok::<_, std::io::Error>((f, buf))
    })
    .await
    .map_err(|e| std::io::Error::other(e.to_string()))??;
    st.file = Some(res.0);
    Ok(Bytes::from(res.1))
}
