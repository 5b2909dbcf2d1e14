//! Authentication and authorisation at the HTTP edge: who is asking (Basic, bearer, anonymous),
//! what the route needs, and the 401/403/405/429 answers in the spec's shape.

use std::net::IpAddr;
use std::sync::Arc;

use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest};
use base64::Engine as _;

use super::audit::{self, AuditEvent};
use super::error::ApiError;
use super::query::Query;
use super::route::Route;
use super::urls::origin;
use crate::auth::{Action, AuthError, Authenticator, Principal};
use crate::registry::{ErrorCode, RepoName};

/// Longest `Authorization` header considered.
const AUTH_HEADER_MAX: usize = 8192;

/// What a request needs before its handler runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    /// Any authenticated caller (the `/v2/` probe).
    Login,
    /// An action on a repository.
    Repo(RepoName, Action),
    /// A cross-repository mount: write on the target is required; reading the source decides
    /// whether the blob is linked or uploaded, so a challenge asks for both.
    Mount {
        /// Repository the blob goes to.
        target: RepoName,
        /// Repository named by `from`.
        from: RepoName,
    },
    /// The catalog (filtered per repository afterwards).
    Catalog,
}

/// The need of a route, method and query (`None` for routes that end in 405 anyway).
pub fn need(route: &Route, m: &Method, q: &Query) -> Option<Need> {
    let read = *m == Method::GET || *m == Method::HEAD;
    if let (Route::UploadStart(target), true) = (route, *m == Method::POST) {
        let from = q.get("mount").and(q.get("from"));
        if let Some(from) = from.and_then(|f| RepoName::parse(f).ok()) {
            return Some(Need::Mount {
                target: target.clone(),
                from,
            });
        }
    }
    Some(match route {
        Route::Base => Need::Login,
        Route::Catalog => Need::Catalog,
        Route::Tags(n) | Route::Referrers(n, _) => Need::Repo(n.clone(), Action::MetadataRead),
        Route::Manifest(n, _) | Route::Blob(n, _) if read => {
            Need::Repo(n.clone(), Action::ContentRead)
        }
        Route::Manifest(n, _) | Route::Blob(n, _) if *m == Method::DELETE => {
            Need::Repo(n.clone(), Action::ContentDelete)
        }
        Route::Manifest(n, _) if *m == Method::PUT => Need::Repo(n.clone(), Action::ContentWrite),
        Route::UploadStart(n) | Route::Upload(n, _) => Need::Repo(n.clone(), Action::ContentWrite),
        _ => return None,
    })
}

/// The service name tokens are issued for: the host the client addressed.
pub fn service(req: &HttpRequest) -> String {
    origin(req)
        .and_then(|o| o.split_once("://").map(|(_, h)| h.to_owned()))
        .unwrap_or_else(|| "connected-registry".to_owned())
}

pub(crate) fn client_ip(req: &HttpRequest) -> IpAddr {
    req.peer_addr()
        .map(|a| a.ip())
        .unwrap_or(IpAddr::from([0, 0, 0, 0]))
}

/// `WWW-Authenticate` for a 401, with the scope the client should ask for.
pub fn challenge(req: &HttpRequest, scope: Option<String>, error: Option<&str>) -> String {
    let realm = format!(
        "{}/acr/oauth2/token",
        origin(req).unwrap_or_else(|| "http://localhost".into())
    );
    let mut c = format!("Bearer realm=\"{realm}\",service=\"{}\"", service(req));
    if let Some(s) = scope {
        c.push_str(&format!(",scope=\"{s}\""));
    }
    if let Some(e) = error {
        c.push_str(&format!(",error=\"{e}\""));
    }
    c
}

fn scope_of(need: &Need) -> Option<String> {
    let repo = |n: &RepoName, a: &Action| {
        format!(
            "repository:{n}:{}",
            match a {
                Action::ContentRead | Action::MetadataRead => "pull",
                Action::ContentDelete => "delete",
                Action::ContentWrite | Action::MetadataWrite => "pull,push",
            }
        )
    };
    match need {
        Need::Login => None,
        Need::Catalog => Some("registry:catalog:*".into()),
        Need::Repo(n, a) => Some(repo(n, a)),
        // Space-separated, as distribution writes several scopes in one challenge.
        Need::Mount { target, from } => Some(format!(
            "{} {}",
            repo(target, &Action::ContentWrite),
            repo(from, &Action::ContentRead)
        )),
    }
}

/// The repository and action a need requires before the handler runs.
fn required(need: &Need) -> Option<(&RepoName, Action)> {
    match need {
        Need::Repo(n, a) => Some((n, *a)),
        Need::Mount { target, .. } => Some((target, Action::ContentWrite)),
        Need::Login | Need::Catalog => None,
    }
}

/// Where `POST …/blobs/uploads/?mount=` may link the blob from.
pub enum MountFrom {
    /// No mount was asked for, or the caller may not read the source: upload as usual.
    Nothing,
    /// The repository named by `from`, which the caller may read.
    Repo(RepoName),
    /// Any repository the caller may read (automatic mount: `mount` without `from`).
    Readable(Box<dyn FnMut(&str) -> bool + Send>),
}

/// Decides the mount source from the request's need (which holds a valid `from`) and query.
/// The token's scope map decides, not the narrower scopes of a bearer token issued for the
/// target only: the caller could read the source anyway, and refusing would send a whole layer
/// again over the edge link.
pub fn mount_from(
    auth: &Arc<Authenticator>,
    p: &Principal,
    need: Option<&Need>,
    q: &Query,
) -> MountFrom {
    let full = p.unnarrowed();
    match (need, q.get("mount"), q.get("from")) {
        (Some(Need::Mount { from, .. }), _, _) => {
            if auth.allowed(&full, from.as_str()).has(Action::ContentRead) {
                MountFrom::Repo(from.clone())
            } else {
                MountFrom::Nothing
            }
        }
        (_, Some(_), None) => {
            let auth = auth.clone();
            MountFrom::Readable(Box::new(move |repo| {
                auth.allowed(&full, repo).has(Action::ContentRead)
            }))
        }
        // No mount asked for, or a `from` that names no repository: upload as usual.
        _ => MountFrom::Nothing,
    }
}

/// Whether `p` may do what `need` asks (anonymous login is decided by the caller).
fn permits(auth: &Authenticator, p: &Principal, need: &Need) -> bool {
    match need {
        Need::Catalog => auth.may_list_catalog(p),
        n => required(n).is_some_and(|(n, a)| auth.allowed(p, n.as_str()).has(a)),
    }
}

fn unauthorized(
    req: &HttpRequest,
    need: Option<&Need>,
    msg: &str,
    error: Option<&str>,
) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, msg).with_header(
        "WWW-Authenticate",
        challenge(req, need.and_then(scope_of), error),
    )
}

/// 403 with ACR's text.
pub fn denied() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        ErrorCode::Denied,
        "Insufficient scopes to perform the operation",
    )
}

/// Decodes `Basic` credentials.
pub fn basic_credentials(value: &str) -> Option<(String, String)> {
    let b64 = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_owned(), p.to_owned()))
}

/// Verifies a username and password: cached digest first, argon2 on a blocking thread otherwise,
/// with failed-login pauses per client and username.
pub async fn password_login(
    req: &HttpRequest,
    auth: &Arc<Authenticator>,
    user: String,
    pass: String,
) -> Result<Principal, ApiError> {
    if let Some(p) = auth.check_cached(&user, &pass) {
        return Ok(p);
    }
    let ip = client_ip(req);
    if let Some(wait) = auth.throttle.blocked_for(ip, &user) {
        audit::record(
            AuditEvent::LoginThrottled,
            req,
            Some(&user),
            "too many failed logins",
        );
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::TooManyRequests,
            format!(
                "too many failed logins; retry in {} s",
                wait.as_secs().max(1)
            ),
        )
        .with_header("Retry-After", wait.as_secs().max(1).to_string()));
    }
    let a = auth.clone();
    let u = user.clone();
    let result = web::block(move || a.check_password(&u, &pass))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    match result {
        Ok(p) => {
            auth.throttle.succeeded(ip, &user);
            Ok(p)
        }
        Err(e) => {
            auth.throttle.failed(ip, &user);
            audit::record(
                AuditEvent::AuthenticationFailed,
                req,
                Some(&user),
                &e.to_string(),
            );
            Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                ErrorCode::Unauthorized,
                "authentication required",
            ))
        }
    }
}

/// Who is asking, from the `Authorization` header.
pub async fn authenticate(
    req: &HttpRequest,
    auth: &Arc<Authenticator>,
    need: Option<&Need>,
) -> Result<Principal, ApiError> {
    if auth.access.insecure_no_auth {
        return Ok(Principal::Unrestricted);
    }
    let Some(h) = req.headers().get("authorization") else {
        return Ok(Principal::Anonymous);
    };
    let bad = |msg: &str| {
        audit::record(AuditEvent::AuthenticationFailed, req, None, msg);
        unauthorized(req, need, msg, Some("invalid_token"))
    };
    if h.len() > AUTH_HEADER_MAX {
        return Err(bad("Authorization header too large"));
    }
    let value = h
        .to_str()
        .map_err(|_| bad("malformed Authorization header"))?;
    if let Some(jwt) = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
    {
        return auth.check_bearer(jwt.trim(), &service(req)).map_err(|e| {
            tracing::debug!(reason = %e, "bearer token refused");
            bad("invalid or expired token")
        });
    }
    let (user, pass) =
        basic_credentials(value).ok_or_else(|| bad("malformed Authorization header"))?;
    password_login(req, auth, user, pass).await.map_err(|e| {
        if e.status == StatusCode::UNAUTHORIZED {
            unauthorized(req, need, "authentication required", None)
        } else {
            e
        }
    })
}

/// Checks the mode, the login server and the principal's permissions for `need`.
pub async fn authorize(
    req: &HttpRequest,
    auth: &Arc<Authenticator>,
    writable: bool,
    need: Option<&Need>,
) -> Result<Principal, ApiError> {
    if let Some(login) = &auth.access.login_server {
        let host = service(req);
        if !host.eq_ignore_ascii_case(login) {
            audit::record(AuditEvent::WrongLoginServer, req, None, &host);
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                ErrorCode::Denied,
                format!(
                    "this registry serves {login}, not {}",
                    crate::registry::echo(&host)
                ),
            ));
        }
    }
    if let Some((_, a)) = need.and_then(required) {
        if !writable && !matches!(a, Action::ContentRead | Action::MetadataRead) {
            return Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                ErrorCode::Denied,
                "This operation is not allowed on this registry.",
            ));
        }
    }
    let p = authenticate(req, auth, need).await?;
    let ok = match need {
        None => true,
        Some(Need::Login) => p != Principal::Anonymous || auth.access.anonymous_pull,
        Some(n) => permits(auth, &p, n),
    };
    if ok {
        return Ok(p);
    }
    match &p {
        Principal::Anonymous => Err(unauthorized(req, need, "authentication required", None)),
        Principal::Token {
            name,
            bearer: Some(_),
            ..
        } => {
            // The scope map may allow what this bearer token was not issued for: ask for more.
            let could = need.is_some_and(|n| permits(auth, &p.unnarrowed(), n));
            if could {
                Err(unauthorized(
                    req,
                    need,
                    "token lacks the required scope",
                    Some("insufficient_scope"),
                ))
            } else {
                audit::record(
                    AuditEvent::AccessDenied,
                    req,
                    Some(name),
                    &format!("{need:?}"),
                );
                Err(denied())
            }
        }
        Principal::Token { name, .. } => {
            audit::record(
                AuditEvent::AccessDenied,
                req,
                Some(name),
                &format!("{need:?}"),
            );
            Err(denied())
        }
        Principal::Unrestricted => Ok(p),
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Invalid(m) => ApiError::bad_request(ErrorCode::Unsupported, m),
            AuthError::Unauthorized(_) | AuthError::BadToken(_) => ApiError::new(
                StatusCode::UNAUTHORIZED,
                ErrorCode::Unauthorized,
                "authentication required",
            ),
            AuthError::Storage(s) => s.into(),
            AuthError::Internal(m) => ApiError::internal(m),
        }
    }
}
