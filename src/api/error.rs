//! Spec-shaped errors: `{"errors":[{"code","message","detail"}]}` with the distribution codes.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::{json, Value};

use crate::registry::{ErrorCode, RegistryError};
use crate::storage::StorageError;

/// An error as the client sees it.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Distribution-spec error code.
    pub code: ErrorCode,
    /// Human message.
    pub message: String,
    /// Optional structured detail.
    pub detail: Option<Value>,
    /// Extra response headers (e.g. `Content-Range` on 416).
    pub headers: Vec<(&'static str, String)>,
}

impl ApiError {
    /// An error with a status, code and message.
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            detail: None,
            headers: Vec::new(),
        }
    }

    /// Adds structured detail.
    pub fn with_detail(mut self, detail: Value) -> Self {
        self.detail = Some(detail);
        self
    }

    /// Adds a response header.
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// 404 for paths and methods the API does not have.
    pub fn unsupported(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, ErrorCode::Unsupported, message)
    }

    /// 405 for a method the endpoint does not support.
    pub fn method_not_allowed() -> Self {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::Unsupported,
            "the operation is unsupported for this endpoint",
        )
    }

    /// 400 for a malformed request.
    pub fn bad_request(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 500 for a failure of the server itself (a storage fault, a lost blocking task).
    pub fn internal(message: impl Into<String>) -> Self {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Unknown,
            message,
        )
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut entry = json!({"code": self.code, "message": self.message});
        if let Some(d) = &self.detail {
            entry["detail"] = d.clone();
        }
        let mut r = HttpResponse::build(self.status);
        r.content_type("application/json")
            .insert_header(super::v2::API_VERSION_HEADER);
        for (name, value) in &self.headers {
            r.insert_header((*name, value.as_str()));
        }
        // The rest of a too-large or stalled body is not worth reading (it may never end):
        // close the connection after the answer rather than drain it.
        if matches!(
            self.status,
            StatusCode::PAYLOAD_TOO_LARGE | StatusCode::REQUEST_TIMEOUT
        ) {
            r.force_close();
        }
        r.body(json!({ "errors": [entry] }).to_string())
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        let status = StatusCode::BAD_REQUEST;
        ApiError::new(status, e.code(), e.to_string())
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        use StorageError as S;
        let msg = e.to_string();
        match e {
            S::NoSpace => ApiError::new(StatusCode::INSUFFICIENT_STORAGE, ErrorCode::Unknown, msg),
            S::DigestMismatch { expected, actual } => {
                ApiError::bad_request(ErrorCode::DigestInvalid, msg).with_detail(json!({
                    "expected": expected.as_str(), "actual": actual.as_str()
                }))
            }
            S::RangeInvalid { .. } => ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                ErrorCode::BlobUploadInvalid,
                msg,
            ),
            S::UploadUnknown => {
                ApiError::new(StatusCode::NOT_FOUND, ErrorCode::BlobUploadUnknown, msg)
            }
            S::BlobUnknown(d) => ApiError::new(StatusCode::NOT_FOUND, ErrorCode::BlobUnknown, msg)
                .with_detail(json!({ "digest": d.as_str() })),
            S::ManifestUnknown(r) => {
                ApiError::new(StatusCode::NOT_FOUND, ErrorCode::ManifestUnknown, msg)
                    .with_detail(json!({ "reference": r }))
            }
            S::NameUnknown => ApiError::new(StatusCode::NOT_FOUND, ErrorCode::NameUnknown, msg),
            S::ManifestBlobUnknown(d) => ApiError::bad_request(ErrorCode::ManifestBlobUnknown, msg)
                .with_detail(json!({ "digest": d.as_str() })),
            S::Invalid(r) => r.into(),
            S::AlreadyExists(_) | S::NotFound(_) | S::InUse(_) => {
                ApiError::new(StatusCode::CONFLICT, ErrorCode::Unknown, msg)
            }
            S::Busy(_) => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::TooManyRequests,
                msg,
            ),
            // Sessions end as clients finish, cancel or abandon them (then the cleaner).
            S::TooManySessions(_) => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::TooManyRequests,
                msg,
            )
            .with_header("Retry-After", "5"),
            S::Io { .. } | S::Sqlite(_) | S::Postgres(_) | S::Corrupt(_) | S::Config(_) => {
                tracing::error!(error = %msg, "storage failure");
                ApiError::internal(msg)
            }
        }
    }
}

/// Handler result.
pub type ApiResult<T> = Result<T, ApiError>;
