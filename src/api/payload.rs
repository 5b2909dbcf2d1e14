//! Request bodies: streamed into blob writers (never buffered whole) or read with a size cap.

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::web;
use bytes::Bytes;
use futures_util::StreamExt;

use super::error::{ApiError, ApiResult};
use crate::registry::ErrorCode;
use crate::storage::uploads::SessionGuard;
use crate::storage::writer::BlobWriter;
use crate::storage::StorageError;

/// Body bytes gathered before they go to the blocking pool to be hashed and written together.
const BATCH: usize = 512 * 1024;

/// How long a body may stall and how large a blob may grow (`[limits]`).
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// Longest wait for the next bytes of a body; 408 after it.
    pub idle: Duration,
    /// Largest blob an upload may reach; 413 past it.
    pub blob_max: Option<u64>,
}

/// The next piece of a body, or 408 when none comes within `idle`; `code` names the kind of
/// body in the error (the same code as a body cut short).
async fn next_piece(
    payload: &mut web::Payload,
    idle: Duration,
    code: ErrorCode,
) -> ApiResult<Option<Result<Bytes, actix_web::error::PayloadError>>> {
    tokio::time::timeout(idle, payload.next())
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                code,
                format!(
                    "no body bytes arrived for {} s; send the body faster or retry",
                    idle.as_secs_f64()
                ),
            )
        })
}

/// Whether `e` leaves a body unread that should end the connection (413, 408).
pub fn ends_body(e: &ApiError) -> bool {
    matches!(
        e.status,
        StatusCode::PAYLOAD_TOO_LARGE | StatusCode::REQUEST_TIMEOUT
    )
}

/// A refusal's answer that holds the unread request body until the answer is sent: actix
/// drains the rest of a dropped chunked body to keep the connection (forever when the body
/// never ends), but closes the connection when the body is still held as the answer ends.
struct Refusal {
    answer: Option<Bytes>,
    size: u64,
    _unread: web::Payload,
}

impl actix_web::body::MessageBody for Refusal {
    type Error = std::convert::Infallible;

    fn size(&self) -> actix_web::body::BodySize {
        actix_web::body::BodySize::Sized(self.size)
    }

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Bytes, Self::Error>>> {
        std::task::Poll::Ready(self.answer.take().map(Ok))
    }
}

/// The answer to a refused body (see `ends_body`): the error, then the connection closes.
pub fn refused(e: ApiError, payload: web::Payload) -> actix_web::HttpResponse {
    use actix_web::body::MessageBody as _;
    use actix_web::ResponseError as _;
    let (head, body) = e.error_response().into_parts();
    let answer = body.try_into_bytes().unwrap_or_default();
    head.set_body(Refusal {
        size: answer.len() as u64,
        answer: Some(answer),
        _unread: payload,
    })
    .map_into_boxed_body()
}

/// The 413 for a blob that would pass `max` bytes.
pub fn blob_too_large(max: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::SizeInvalid,
        format!("blob larger than this registry's limit of {max} bytes"),
    )
    .with_detail(serde_json::json!({ "limit": max }))
}

/// Streams the whole body into the session's writer; on any failure the writer is rolled back
/// to where it started, so a failed chunk leaves the upload exactly as it was.
///
/// Hashing and writing run on the blocking pool one batch behind the network: while a batch is
/// hashed and written, the worker thread receives the next one (two cores, both busy). The
/// session's lock travels with each batch, so a request dropped midway leaves the session locked
/// until its last batch is written, and intact.
pub async fn stream_into(
    payload: &mut web::Payload,
    slot: &mut Option<SessionGuard>,
    limits: &BodyLimits,
) -> ApiResult<u64> {
    let start = with_writer(slot, |w| Ok(w.offset()))?;
    // What this body may add before the blob passes its limit.
    let room = limits.blob_max.map(|m| (m, m.saturating_sub(start)));
    let res = copy(payload, slot, limits.idle, room).await;
    if res.is_err() {
        // The session may be gone (a failed step on the blocking pool): nothing to roll back.
        let _ = with_writer(slot, |w| {
            if let Err(e) = w.rollback(start) {
                tracing::warn!(error = %e, "could not roll back a failed upload chunk");
            }
            Ok(())
        });
    }
    res?;
    with_writer(slot, |w| Ok(w.offset() - start))
}

/// Runs a quick step on the locked session's writer right here (no I/O); the session is unknown
/// when the writer is gone.
pub fn with_writer<T>(
    slot: &mut Option<SessionGuard>,
    f: impl FnOnce(&mut BlobWriter) -> crate::storage::Result<T>,
) -> ApiResult<T> {
    let guard = slot.as_mut().ok_or(StorageError::UploadUnknown)?;
    let w = guard.as_mut().ok_or(StorageError::UploadUnknown)?;
    f(w).map_err(ApiError::from)
}

/// Runs a blocking step on the session's writer on the blocking pool, the lock travelling with
/// it, so a dropped request can neither lose the writer nor let another request in meanwhile.
pub async fn on_writer<T: Send + 'static>(
    slot: &mut Option<SessionGuard>,
    f: impl FnOnce(&mut Option<BlobWriter>) -> crate::storage::Result<T> + Send + 'static,
) -> ApiResult<T> {
    let task = dispatch(slot, f)?;
    settle(task, slot).await
}

/// A step running on the blocking pool; it owns the session's lock meanwhile.
type InFlight<T> = tokio::task::JoinHandle<(SessionGuard, crate::storage::Result<T>)>;

fn dispatch<T: Send + 'static>(
    slot: &mut Option<SessionGuard>,
    f: impl FnOnce(&mut Option<BlobWriter>) -> crate::storage::Result<T> + Send + 'static,
) -> ApiResult<InFlight<T>> {
    let mut guard = slot.take().ok_or(StorageError::UploadUnknown)?;
    Ok(tokio::task::spawn_blocking(move || {
        let r = f(&mut guard);
        (guard, r)
    }))
}

/// Waits for the step in flight and puts the session's lock back in `slot`.
async fn settle<T>(task: InFlight<T>, slot: &mut Option<SessionGuard>) -> ApiResult<T> {
    let (guard, r) = task
        .await
        .map_err(|e| ApiError::internal(format!("internal error: {e}")))?;
    *slot = Some(guard);
    r.map_err(ApiError::from)
}

/// `room` is the blob's limit and the bytes this body may still add under it.
async fn copy(
    payload: &mut web::Payload,
    slot: &mut Option<SessionGuard>,
    idle: Duration,
    room: Option<(u64, u64)>,
) -> ApiResult<()> {
    let mut batch: Vec<Bytes> = Vec::new();
    let mut gathered = 0;
    let mut received = 0u64;
    let mut busy: Option<InFlight<()>> = None;
    let res = loop {
        let piece = match next_piece(payload, idle, ErrorCode::BlobUploadInvalid).await {
            Ok(p) => p,
            Err(e) => break Err(e),
        };
        let end = match piece {
            Some(Ok(chunk)) => {
                received += chunk.len() as u64;
                if let Some((max, left)) = room {
                    if received > left {
                        break Err(blob_too_large(max));
                    }
                }
                gathered += chunk.len();
                batch.push(chunk);
                if gathered < BATCH {
                    continue;
                }
                false
            }
            Some(Err(e)) => {
                break Err(ApiError::bad_request(
                    ErrorCode::BlobUploadInvalid,
                    format!("the upload body was cut short: {e}"),
                ))
            }
            None => true,
        };
        if let Some(task) = busy.take() {
            if let Err(e) = settle(task, slot).await {
                break Err(e);
            }
        }
        if !batch.is_empty() {
            let pieces = std::mem::take(&mut batch);
            gathered = 0;
            match dispatch(slot, move |w| {
                w.as_mut()
                    .ok_or(StorageError::UploadUnknown)?
                    .append_batch(&pieces)
            }) {
                Ok(task) => busy = Some(task),
                Err(e) => break Err(e),
            }
        }
        if end {
            break Ok(());
        }
    };
    let last = match busy.take() {
        Some(task) => settle(task, slot).await,
        None => Ok(()),
    };
    res.and(last)
}

/// `limit` in MiB, or KiB below one MiB (a small limit must not read "0 MiB").
fn size_text(limit: usize) -> String {
    if limit >= 1 << 20 {
        format!("{} MiB", limit >> 20)
    } else {
        format!("{} KiB", limit >> 10)
    }
}

/// Reads a small body (a manifest, a token form, a control-plane message) into memory, refusing
/// more than `limit` bytes with 413.
pub async fn read_limited(
    payload: &mut web::Payload,
    limit: usize,
    idle: Duration,
) -> ApiResult<Vec<u8>> {
    let mut body = Vec::new();
    while let Some(chunk) = next_piece(payload, idle, ErrorCode::ManifestInvalid).await? {
        let chunk = chunk.map_err(|e| {
            ApiError::bad_request(
                ErrorCode::ManifestInvalid,
                format!("the body was cut short: {e}"),
            )
        })?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::SizeInvalid,
                format!("request body larger than the {} limit", size_text(limit)),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
