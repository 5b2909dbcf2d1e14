//! What can go wrong talking to the parent, and how it shows in the status report.

use crate::sync::status::DetailCode;

/// Longest excerpt of the parent's own error text kept in a message.
const MESSAGE_MAX: usize = 200;

/// A failed exchange with the parent registry. Messages never contain the sync password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParentError {
    /// The parent could not be reached: DNS, connect, TLS, timeout, or the link dropped mid-body.
    #[error("parent unreachable: {0}")]
    Unreachable(String),
    /// The parent refused the credentials (401 after answering its challenge).
    #[error("parent refused the credentials: {0}")]
    Unauthorized(String),
    /// The credentials are valid but lack the right (403).
    #[error("parent denied access: {0}")]
    Denied(String),
    /// The repository or content does not exist at the parent.
    #[error("not found at the parent")]
    NotFound,
    /// The parent answered something that breaks the protocol (bad digest, bad JSON, odd status).
    #[error("parent protocol error: {0}")]
    Protocol(String),
    /// The parent failed or is throttling (5xx, 429).
    #[error("parent server error {0}: {1}")]
    Server(u16, String),
    /// The client cannot be built or used as configured (bad endpoint, CA file, name).
    #[error("parent configuration error: {0}")]
    Config(String),
}

impl ParentError {
    /// The code used in the registry's status report.
    pub fn code(&self) -> DetailCode {
        match self {
            ParentError::Unreachable(_) => DetailCode::ParentUnreachable,
            ParentError::Unauthorized(_) => DetailCode::ParentUnauthorized,
            ParentError::Denied(_) => DetailCode::ParentDenied,
            ParentError::NotFound => DetailCode::ParentNotFound,
            ParentError::Protocol(_) => DetailCode::ParentProtocolError,
            ParentError::Server(..) => DetailCode::ParentServerError,
            ParentError::Config(_) => DetailCode::ParentConfigError,
        }
    }

    /// The status report code as its string.
    pub fn status_code(&self) -> &'static str {
        self.code().as_str()
    }

    /// Whether retrying later (with back-off) may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, ParentError::Unreachable(_) | ParentError::Server(..))
    }

    /// The error for a non-success status, with the parent's `errors[0]` code and message.
    pub fn from_status(status: u16, body: &[u8]) -> ParentError {
        let detail = error_detail(body);
        let detail = if detail.is_empty() {
            format!("status {status}")
        } else {
            detail
        };
        match status {
            401 => ParentError::Unauthorized(detail),
            403 => ParentError::Denied(detail),
            404 => ParentError::NotFound,
            429 | 500..=599 => ParentError::Server(status, detail),
            _ => ParentError::Protocol(format!("unexpected status {status}: {detail}")),
        }
    }

    /// An error from the HTTP stack; all of them mean the link or the peer failed.
    pub fn transport(e: &reqwest::Error) -> ParentError {
        use std::error::Error as _;
        let mut text = e.to_string();
        let mut source = e.source();
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        // reqwest reports every failure while reading a body (a dropped link, a read timeout)
        // as a decode error: only one without a body failure underneath is the parent's fault.
        let body_failed = std::iter::successors(e.source(), |s| (*s).source()).any(|s| {
            s.downcast_ref::<reqwest::Error>()
                .is_some_and(|r| r.is_body() || r.is_timeout())
                || s.is::<std::io::Error>()
        });
        // A redirect loop or chain is the parent's doing: retrying would only repeat it.
        if e.is_redirect() || (e.is_decode() && !body_failed) {
            return ParentError::Protocol(clip(&text));
        }
        ParentError::Unreachable(clip(&text))
    }

    /// The same error with every occurrence of `secret` replaced (belt and braces: text from the
    /// parent or the TLS stack could echo what was sent).
    pub fn redact(self, secret: &str) -> ParentError {
        if secret.is_empty() {
            return self;
        }
        let r = |s: String| s.replace(secret, "<redacted>");
        match self {
            ParentError::Unreachable(s) => ParentError::Unreachable(r(s)),
            ParentError::Unauthorized(s) => ParentError::Unauthorized(r(s)),
            ParentError::Denied(s) => ParentError::Denied(r(s)),
            ParentError::NotFound => ParentError::NotFound,
            ParentError::Protocol(s) => ParentError::Protocol(r(s)),
            ParentError::Server(c, s) => ParentError::Server(c, r(s)),
            ParentError::Config(s) => ParentError::Config(r(s)),
        }
    }
}

/// `CODE: message` from a distribution-spec error body, or a clipped excerpt of other text.
pub fn error_detail(body: &[u8]) -> String {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        let e = &v["errors"][0];
        let code = e["code"].as_str().unwrap_or("");
        let message = e["message"].as_str().unwrap_or("");
        let text = match (code.is_empty(), message.is_empty()) {
            (false, false) => format!("{code}: {message}"),
            (false, true) => code.to_owned(),
            (true, false) => message.to_owned(),
            (true, true) => String::new(),
        };
        if !text.is_empty() {
            return clip(&text);
        }
    }
    clip(String::from_utf8_lossy(body).trim())
}

/// At most `MESSAGE_MAX` characters, control characters replaced.
pub fn clip(text: &str) -> String {
    let mut out: String = text
        .chars()
        .take(MESSAGE_MAX)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if text.chars().nth(MESSAGE_MAX).is_some() {
        out.push('…');
    }
    out
}
