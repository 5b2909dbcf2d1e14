//! Admission control at the HTTP edge: caps on connections and on uploads in flight, counted in
//! all and per client address. Over a cap the client gets the protocol's own answer (429 with
//! `Retry-After`) at once, never a hang, and the registry's own work stays bounded.

mod connections;
mod counter;
mod uploads;

pub use connections::{admit, on_connect};
pub use counter::{Counter, Full, Place};
pub use uploads::UploadGate;

use actix_web::http::StatusCode;

use super::error::ApiError;
use crate::registry::ErrorCode;

/// Seconds a refused client is told to wait: places free up as requests finish.
const RETRY_AFTER_SECS: u64 = 1;

/// The 429 a client gets when `what` is at its cap.
fn too_many(full: Full, what: &str) -> ApiError {
    let whose = match full {
        Full::Total => "in all",
        Full::Client => "from this client",
    };
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::TooManyRequests,
        format!("too many {what} {whose}; retry in {RETRY_AFTER_SECS} s"),
    )
    .with_header("Retry-After", RETRY_AFTER_SECS.to_string())
}
