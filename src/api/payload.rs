//! Request bodies: streamed into blob writers (never buffered whole) or read with a size cap.

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
) -> ApiResult<u64> {
    let start = with_writer(slot, |w| Ok(w.offset()))?;
    let res = copy(payload, slot).await;
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

async fn copy(payload: &mut web::Payload, slot: &mut Option<SessionGuard>) -> ApiResult<()> {
    let mut batch: Vec<Bytes> = Vec::new();
    let mut gathered = 0;
    let mut busy: Option<InFlight<()>> = None;
    let res = loop {
        let end = match payload.next().await {
            Some(Ok(chunk)) => {
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
pub async fn read_limited(payload: &mut web::Payload, limit: usize) -> ApiResult<Vec<u8>> {
    let mut body = Vec::new();
    while let Some(chunk) = payload.next().await {
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
