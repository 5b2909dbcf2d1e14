//! Request bodies: streamed into blob writers (never buffered whole) or read with a size cap.

use actix_web::http::StatusCode;
use actix_web::web;
use futures_util::StreamExt;

use super::error::{ApiError, ApiResult};
use crate::storage::writer::BlobWriter;

/// Streams the whole body into `writer`; on any failure the writer is rolled back to where it
/// started, so a failed chunk leaves the upload exactly as it was.
pub async fn stream_into(payload: &mut web::Payload, writer: &mut BlobWriter) -> ApiResult<u64> {
    let start = writer.offset();
    let res = copy(payload, writer).await;
    if res.is_err() {
        if let Err(e) = writer.rollback(start) {
            tracing::warn!(error = %e, "could not roll back a failed upload chunk");
        }
    }
    res.map(|_| writer.offset() - start)
}

async fn copy(payload: &mut web::Payload, writer: &mut BlobWriter) -> ApiResult<()> {
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::bad_request(
                "BLOB_UPLOAD_INVALID",
                format!("the upload body was cut short: {e}"),
            )
        })?;
        writer.append(&chunk)?;
    }
    writer.flush()?;
    Ok(())
}

/// Reads a small body (a manifest) into memory, refusing more than `limit` bytes with 413.
pub async fn read_limited(payload: &mut web::Payload, limit: usize) -> ApiResult<Vec<u8>> {
    let mut body = Vec::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::bad_request("MANIFEST_INVALID", format!("the body was cut short: {e}"))
        })?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "SIZE_INVALID",
                format!("manifest larger than the {} MiB limit", limit >> 20),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
