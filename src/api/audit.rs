//! Audit lines: one structured log line (`WARN audit event="…" …`, target `audit`) per authentication failure
//! and permission denial, with a stable `event` name, the client, the token and the request, so
//! a log collector can count and alert on them. Secrets never appear: only token names.
//! Sibling events: changes to tokens and scope maps (`auth::audit::ChangeEvent`) and sync actions
//! (`sync::audit::SyncEvent`), on the same `audit` target.

use actix_web::HttpRequest;

use crate::registry::echo;

/// What an audit line records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditEvent {
    /// Credentials were presented and refused: wrong password, unknown or disabled token,
    /// invalid or expired bearer token, malformed `Authorization` header.
    AuthenticationFailed,
    /// Too many failed logins from one client for one token: held back.
    LoginThrottled,
    /// An authenticated token asked for something its scope map does not allow.
    AccessDenied,
    /// A request addressed to another host than the configured login server.
    WrongLoginServer,
}

impl AuditEvent {
    /// The `event` field's value.
    pub const fn as_str(self) -> &'static str {
        match self {
            AuditEvent::AuthenticationFailed => "authentication_failed",
            AuditEvent::LoginThrottled => "login_throttled",
            AuditEvent::AccessDenied => "access_denied",
            AuditEvent::WrongLoginServer => "wrong_login_server",
        }
    }
}

/// Writes one audit line for `req`; `token` is the token name presented, if any.
pub fn record(event: AuditEvent, req: &HttpRequest, token: Option<&str>, reason: &str) {
    tracing::warn!(
        target: "audit",
        event = event.as_str(),
        client = %super::auth::client_ip(req),
        token = %token.map(echo).unwrap_or_default(),
        method = %req.method(),
        path = %echo(req.path()),
        reason = %echo(reason),
        // The message marks the line, since the target is not printed.
        "audit"
    );
}
