//! Blob uploads: monolithic (`POST ?digest=`), streamed and chunked (`PATCH`), finished by
//! `PUT ?digest=`, plus status, cancel and cross-repository mount.

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use tokio::sync::Mutex;

use super::super::auth::client_ip;
use super::super::auth::MountFrom;
use super::super::error::{ApiError, ApiResult};
use super::super::payload::{blob_too_large, on_writer, stream_into, with_writer};
use super::super::query::Query;
use super::super::urls::absolute;
use super::super::{blocking, AppState};
use super::upload_range;
use crate::registry::{Digest, ErrorCode, RepoName};
use crate::storage::uploads::SessionGuard;
use crate::storage::StorageError;

fn created(req: &HttpRequest, name: &RepoName, digest: &Digest) -> HttpResponse {
    HttpResponse::Created()
        .insert_header((
            "Location",
            absolute(req, &format!("/v2/{name}/blobs/{digest}")),
        ))
        .insert_header(("Docker-Content-Digest", digest.as_str()))
        .finish()
}

fn in_progress(
    req: &HttpRequest,
    status: StatusCode,
    name: &RepoName,
    id: &str,
    offset: u64,
) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((
            "Location",
            absolute(req, &format!("/v2/{name}/blobs/uploads/{id}")),
        ))
        .insert_header(("Range", upload_range(offset)))
        .insert_header(("Docker-Upload-UUID", id))
        .finish()
}

fn digest_param(q: &Query) -> ApiResult<Option<Digest>> {
    q.get("digest")
        .map(|d| d.parse::<Digest>().map_err(ApiError::from))
        .transpose()
}

/// `POST /v2/<name>/blobs/uploads/[?digest=|?mount=[&from=]]`
pub async fn start(
    req: &HttpRequest,
    payload: &mut web::Payload,
    state: &web::Data<AppState>,
    name: RepoName,
    q: &Query,
    from: MountFrom,
) -> ApiResult<HttpResponse> {
    if let Some(mount) = q.get("mount") {
        let digest: Digest = mount.parse()?;
        let (repo, d) = (name.clone(), digest.clone());
        let mounted = blocking(&state.store, move |s| match from {
            MountFrom::Nothing => Ok(false),
            MountFrom::Repo(from) => s.mount(&repo, &from, &d),
            MountFrom::Readable(readable) => Ok(s.mount_any(&repo, &d, readable)?.is_some()),
        })
        .await?;
        if mounted {
            tracing::info!(repository = %name, digest = %digest, "blob mounted");
            return Ok(created(req, &name, &digest));
        }
    } else if let Some(digest) = digest_param(q)? {
        let _place = state.upload_gate.enter(req)?;
        declared_fits(req, state, 0)?;
        let algo = digest.algorithm();
        let writer = blocking(&state.store, move |s| s.start_oneshot(algo)).await?;
        let handle = Arc::new(Mutex::new(Some(writer)));
        let mut slot = Some(SessionGuard::lock(handle).await);
        let (store, repo, d) = (state.store.clone(), name.clone(), digest.clone());
        match stream_into(payload, &mut slot, &state.body).await {
            Ok(_) => {
                on_writer(&mut slot, move |w| {
                    let w = w.take().ok_or(StorageError::UploadUnknown)?;
                    store.finish_oneshot(&repo, w, &d)
                })
                .await?;
                tracing::info!(repository = %name, digest = %digest, "blob uploaded");
            }
            Err(e) => {
                if let Some(w) = slot.as_mut().and_then(|g| g.take()) {
                    w.discard();
                }
                return Err(e);
            }
        }
        return Ok(created(req, &name, &digest));
    }
    let (repo, client, caps) = (name.clone(), client_ip(req).to_string(), state.session_caps);
    let id = blocking(&state.store, move |s| s.start_upload(&repo, &client, &caps)).await?;
    Ok(in_progress(req, StatusCode::ACCEPTED, &name, &id, 0))
}

/// Parses `Content-Range: <start>-<end>` (also accepting a `bytes ` prefix).
pub(crate) fn content_range(req: &HttpRequest) -> ApiResult<Option<(u64, u64)>> {
    let Some(v) = req.headers().get("content-range") else {
        return Ok(None);
    };
    let bad = || {
        ApiError::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            ErrorCode::BlobUploadInvalid,
            "Content-Range must look like <start>-<end>",
        )
    };
    let s = v.to_str().map_err(|_| bad())?.trim();
    let s = s
        .strip_prefix("bytes ")
        .or_else(|| s.strip_prefix("bytes="))
        .unwrap_or(s);
    let s = s.split('/').next().unwrap_or(s);
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let (a, b) = (
        a.trim().parse::<u64>().map_err(|_| bad())?,
        b.trim().parse::<u64>().map_err(|_| bad())?,
    );
    if b < a {
        return Err(bad());
    }
    Ok(Some((a, b)))
}

/// A body whose declared length would take the blob past the limit gets 413 before a byte is
/// read.
fn declared_fits(req: &HttpRequest, state: &AppState, offset: u64) -> ApiResult<()> {
    let Some(max) = state.body.blob_max else {
        return Ok(());
    };
    let declared = req
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    match offset.checked_add(declared) {
        Some(end) if end <= max => Ok(()),
        _ => Err(blob_too_large(max)),
    }
}

/// Appends the request body to the session after checking `Content-Range` and the size limit.
async fn append_chunk(
    req: &HttpRequest,
    payload: &mut web::Payload,
    state: &AppState,
    slot: &mut Option<SessionGuard>,
) -> ApiResult<()> {
    let offset = with_writer(slot, |w| Ok(w.offset()))?;
    if let Some((start, _end)) = content_range(req)? {
        if start != offset {
            return Err(StorageError::RangeInvalid { offset }.into());
        }
    }
    declared_fits(req, state, offset)?;
    stream_into(payload, &mut *slot, &state.body).await?;
    Ok(())
}

/// Locks session `id` of `name` for this request.
async fn lock_session(
    state: &web::Data<AppState>,
    name: &RepoName,
    id: &str,
) -> ApiResult<Option<SessionGuard>> {
    let (repo, sid) = (name.clone(), id.to_owned());
    let handle = blocking(&state.store, move |s| s.upload_session(&repo, &sid)).await?;
    Ok(Some(SessionGuard::lock(handle).await))
}

/// `PATCH /v2/<name>/blobs/uploads/<id>`: a streamed body or an in-order chunk.
pub async fn patch(
    req: &HttpRequest,
    payload: &mut web::Payload,
    state: &web::Data<AppState>,
    name: RepoName,
    id: String,
) -> ApiResult<HttpResponse> {
    let _place = state.upload_gate.enter(req)?;
    let mut slot = lock_session(state, &name, &id).await?;
    append_chunk(req, payload, state, &mut slot).await?;
    let offset = on_writer(&mut slot, |w| {
        let w = w.as_mut().ok_or(StorageError::UploadUnknown)?;
        w.sync().map(|_| w.offset())
    })
    .await?;
    let sid = id.clone();
    blocking(&state.store, move |s| s.meta.touch_upload(&sid)).await?;
    Ok(in_progress(req, StatusCode::ACCEPTED, &name, &id, offset))
}

/// `PUT /v2/<name>/blobs/uploads/<id>?digest=`: optional last chunk, then verify and store.
pub async fn finish(
    req: &HttpRequest,
    payload: &mut web::Payload,
    state: &web::Data<AppState>,
    name: RepoName,
    id: String,
    q: &Query,
) -> ApiResult<HttpResponse> {
    let digest = digest_param(q)?.ok_or_else(|| {
        ApiError::bad_request(
            ErrorCode::DigestInvalid,
            "the digest query parameter is required",
        )
    })?;
    let _place = state.upload_gate.enter(req)?;
    let mut slot = lock_session(state, &name, &id).await?;
    append_chunk(req, payload, state, &mut slot).await?;
    let (store, repo, d, sid) = (
        state.store.clone(),
        name.clone(),
        digest.clone(),
        id.clone(),
    );
    on_writer(&mut slot, move |w| store.finish_upload(&repo, &sid, w, &d)).await?;
    tracing::info!(repository = %name, digest = %digest, "blob uploaded");
    Ok(created(req, &name, &digest))
}

/// `GET /v2/<name>/blobs/uploads/<id>`: how far the upload got (after a restart too).
pub async fn status(
    req: &HttpRequest,
    state: &web::Data<AppState>,
    name: RepoName,
    id: String,
) -> ApiResult<HttpResponse> {
    let mut slot = lock_session(state, &name, &id).await?;
    let offset = with_writer(&mut slot, |w| Ok(w.offset()))?;
    Ok(in_progress(req, StatusCode::NO_CONTENT, &name, &id, offset))
}

/// `DELETE /v2/<name>/blobs/uploads/<id>`
pub async fn cancel(
    state: &web::Data<AppState>,
    name: RepoName,
    id: String,
) -> ApiResult<HttpResponse> {
    let mut slot = lock_session(state, &name, &id).await?;
    let store = state.store.clone();
    on_writer(&mut slot, move |w| {
        store.cancel_upload(&id, w);
        Ok(())
    })
    .await?;
    Ok(HttpResponse::NoContent().finish())
}
