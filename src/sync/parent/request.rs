//! HTTP plumbing of the parent client: the authenticated request with its one challenge
//! round, failures, and parsing of the headers the client relies on.

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, WWW_AUTHENTICATE};
use reqwest::{Method, Response, StatusCode};

use super::auth::{self, Challenge};
use super::error::{self, clip, ParentError};
use super::{
    ParentClient, CONNECT_TIMEOUT, LISTING_MAX, MANIFEST_ACCEPT, READ_IDLE_TIMEOUT, USER_AGENT,
};
use crate::registry::{media_types, Digest, RepoName};
use std::path::Path;

/// Largest error body read for its message.
const ERROR_BODY_MAX: usize = 64 * 1024;
/// Most redirects followed for one request (blob storage needs one or two).
const REDIRECTS_MAX: usize = 5;

/// What goes into `Authorization`.
#[derive(Clone, PartialEq, Eq)]
pub(super) enum Cred {
    Basic,
    Bearer(String),
}

impl ParentClient {
    /// Sends a body-less request with the best credentials known; on 401 answers the
    /// challenge (Basic, or a bearer token for `scopes`) and retries once.
    pub(super) async fn send(
        &self,
        method: Method,
        url: &str,
        scopes: &[String],
        headers: HeaderMap,
    ) -> Result<Response, ParentError> {
        let key = auth::scope_key(scopes);
        let first = self.initial_cred(&key, scopes).await?;
        let resp = self.raw(&method, url, &headers, first.as_ref()).await?;
        if resp.status() != StatusCode::UNAUTHORIZED {
            // Only a success says much: some parents answer 404 where they would challenge.
            if first.is_none() && resp.status().is_success() {
                self.inner.auth.lock().open = true;
            }
            return Ok(resp);
        }
        let challenges: Vec<Challenge> = resp
            .headers()
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(auth::parse_challenges)
            .collect();
        let second = match self
            .answer(&key, scopes, &challenges, first.as_ref())
            .await?
        {
            Some(c) => c,
            None => return Err(self.failure(resp).await),
        };
        let resp = self.raw(&method, url, &headers, Some(&second)).await?;
        if resp.status() != StatusCode::UNAUTHORIZED {
            return Ok(resp);
        }
        if let Cred::Bearer(t) = &second {
            self.inner.auth.lock().tokens.forget(&key, t);
        }
        Err(self.failure(resp).await)
    }

    /// A cached token, a fresh one when the token service is known, Basic when asked before.
    pub(super) async fn initial_cred(
        &self,
        key: &str,
        scopes: &[String],
    ) -> Result<Option<Cred>, ParentError> {
        let realm = {
            let s = self.inner.auth.lock();
            if let Some(t) = s.tokens.get(key, std::time::Instant::now()) {
                return Ok(Some(Cred::Bearer(t)));
            }
            if s.realm.is_none() {
                return Ok(s.basic.then_some(Cred::Basic));
            }
            s.realm.clone()
        };
        match realm {
            Some(r) => Ok(Some(Cred::Bearer(self.token(key, &r, scopes, None).await?))),
            None => Ok(None),
        }
    }

    /// The credentials a 401's challenges call for; `None` when nothing new can be tried.
    pub(super) async fn answer(
        &self,
        key: &str,
        scopes: &[String],
        challenges: &[Challenge],
        sent: Option<&Cred>,
    ) -> Result<Option<Cred>, ParentError> {
        if let Some(c) = challenges.iter().find(|c| c.scheme == "bearer") {
            let realm = auth::realm_of(c)?;
            self.inner.auth.lock().realm = Some(realm.clone());
            let asked: Vec<String> = match c.param("scope").filter(|s| !s.trim().is_empty()) {
                Some(s) => s.split_whitespace().map(str::to_owned).collect(),
                None => scopes.to_vec(),
            };
            let failed = match sent {
                Some(Cred::Bearer(t)) => {
                    self.inner.auth.lock().tokens.forget(key, t);
                    Some(t.as_str())
                }
                _ => None,
            };
            return Ok(Some(Cred::Bearer(
                self.token(key, &realm, &asked, failed).await?,
            )));
        }
        if challenges.iter().any(|c| c.scheme == "basic") && sent != Some(&Cred::Basic) {
            self.inner.auth.lock().basic = true;
            return Ok(Some(Cred::Basic));
        }
        Ok(None)
    }

    /// A bearer token for `key`: one fetched meanwhile by another task, or a new one.
    async fn token(
        &self,
        key: &str,
        realm: &auth::Realm,
        scopes: &[String],
        failed: Option<&str>,
    ) -> Result<String, ParentError> {
        let _one_at_a_time = self.inner.auth.fetching.lock().await;
        if let Some(t) = self
            .inner
            .auth
            .lock()
            .tokens
            .get(key, std::time::Instant::now())
        {
            if Some(t.as_str()) != failed {
                return Ok(t);
            }
        }
        let basic = (!self.inner.username.is_empty())
            .then_some((self.inner.username.as_str(), self.inner.password.as_str()));
        if basic.is_some() && !auth::may_send_credentials(&self.inner.origin, &realm.url) {
            return Err(ParentError::Protocol(format!(
                "token realm {} is plain http on another host than the parent: \
                 the sync credentials are not sent there",
                error::clip(realm.url.as_str())
            ))
            .redact(&self.inner.password));
        }
        let (token, lifetime) = auth::fetch_token(&self.inner.http, realm, scopes, basic)
            .await
            .map_err(|e| e.redact(&self.inner.password))?;
        tracing::debug!(scope = %key, lifetime = lifetime.as_secs(), "parent bearer token obtained");
        let now = std::time::Instant::now();
        self.inner
            .auth
            .lock()
            .tokens
            .insert(key, token.clone(), lifetime, now);
        Ok(token)
    }

    async fn raw(
        &self,
        method: &Method,
        url: &str,
        headers: &HeaderMap,
        cred: Option<&Cred>,
    ) -> Result<Response, ParentError> {
        let mut req = self
            .inner
            .http
            .request(method.clone(), url)
            .headers(headers.clone());
        req = match cred {
            Some(Cred::Basic) => req.basic_auth(&self.inner.username, Some(&self.inner.password)),
            Some(Cred::Bearer(t)) => match HeaderValue::from_str(&format!("Bearer {t}")) {
                Ok(mut v) => {
                    v.set_sensitive(true);
                    req.header(AUTHORIZATION, v)
                }
                Err(_) => return Err(ParentError::Protocol("token is not a header value".into())),
            },
            None => req,
        };
        req.send().await.map_err(|e| ParentError::transport(&e))
    }

    pub(super) fn manifest_url(
        &self,
        repo: &str,
        reference: &str,
    ) -> Result<(String, Vec<String>, Option<Digest>), ParentError> {
        let repo = checked_repo(repo)?;
        let r = crate::registry::Reference::parse(reference).map_err(|e| {
            ParentError::Config(format!(
                "invalid reference {:?}: {e}",
                error::clip(reference)
            ))
        })?;
        let by_digest = match &r {
            crate::registry::Reference::Digest(d) => Some(d.clone()),
            crate::registry::Reference::Tag(_) => None,
        };
        let url = format!("{}/v2/{repo}/manifests/{r}", self.inner.base);
        Ok((url, auth::pull_scope(repo), by_digest))
    }

    pub(super) fn blob_url(
        &self,
        repo: &str,
        digest: &str,
    ) -> Result<(String, Vec<String>), ParentError> {
        let repo = checked_repo(repo)?;
        let digest = checked_digest(digest)?;
        let url = format!("{}/v2/{repo}/blobs/{digest}", self.inner.base);
        Ok((url, auth::pull_scope(repo)))
    }

    /// The error a non-success response stands for, with the parent's message.
    pub(super) async fn failure(&self, resp: Response) -> ParentError {
        let status = resp.status().as_u16();
        let body = read_limited(resp, ERROR_BODY_MAX).await.unwrap_or_default();
        ParentError::from_status(status, &body).redact(&self.inner.password)
    }

    /// The absolute `rel="next"` URL of a listing page; only on the parent's own origin.
    pub(crate) fn next_link(
        &self,
        current: &str,
        headers: &HeaderMap,
    ) -> Result<Option<String>, ParentError> {
        let Some(target) = headers
            .get_all("link")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(link_next)
        else {
            return Ok(None);
        };
        let bad = || ParentError::Protocol(format!("bad Link target {:?}", error::clip(&target)));
        let next = reqwest::Url::parse(current)
            .and_then(|c| c.join(&target))
            .map_err(|_| bad())?;
        let base = reqwest::Url::parse(&self.inner.base).map_err(|_| bad())?;
        if next.origin() != base.origin() {
            return Err(bad());
        }
        Ok(Some(next.to_string()))
    }
}

/// The HTTP client: User-Agent, timeouts, and `ca_file` trusted besides the built-in roots.
pub(super) fn http_client(ca_file: Option<&Path>) -> Result<reqwest::Client, ParentError> {
    client_builder(ca_file, true)
}

/// A client without a read-idle timeout, for requests the parent holds open on purpose (the
/// control plane's long poll); each request sets its own deadline instead.
pub(super) fn long_poll_client(ca_file: Option<&Path>) -> Result<reqwest::Client, ParentError> {
    client_builder(ca_file, false)
}

fn client_builder(
    ca_file: Option<&Path>,
    idle_timeout: bool,
) -> Result<reqwest::Client, ParentError> {
    let mut builder = reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .connect_timeout(CONNECT_TIMEOUT)
        .redirect(redirect_policy());
    if idle_timeout {
        builder = builder.read_timeout(READ_IDLE_TIMEOUT);
    }
    if let Some(path) = ca_file {
        let pem = std::fs::read(path).map_err(|e| {
            ParentError::Config(format!("cannot read CA file {}: {e}", path.display()))
        })?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| ParentError::Config(format!("bad CA file {}: {e}", path.display())))?;
        if certs.is_empty() {
            return Err(ParentError::Config(format!(
                "CA file {} holds no certificate",
                path.display()
            )));
        }
        for c in certs {
            builder = builder.add_root_certificate(c);
        }
    }
    builder
        .build()
        .map_err(|e| ParentError::Config(format!("HTTP client: {e}")))
}

/// Follows at most `REDIRECTS_MAX` redirects, none back to a URL already visited (a loop is
/// an error at once, not `REDIRECTS_MAX` round trips) and none from https down to plain http
/// (the bytes and any token would cross the network readable). reqwest itself drops
/// `Authorization` on a redirect to another host or port.
fn redirect_policy() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        if downgrades(attempt.previous(), attempt.url()) {
            let to = clip(attempt.url().as_str());
            return attempt.error(format!("redirect from https to plain http refused: {to}"));
        }
        // `previous` holds the first URL too: its length is the number of hops so far.
        if attempt.previous().contains(attempt.url()) {
            let loop_at = clip(attempt.url().as_str());
            attempt.error(format!("redirect loop at {loop_at}"))
        } else if attempt.previous().len() > REDIRECTS_MAX {
            attempt.error(format!("more than {REDIRECTS_MAX} redirects"))
        } else {
            attempt.follow()
        }
    })
}

/// Whether going to `next` leaves https for plain http somewhere along `previous`.
pub(super) fn downgrades(previous: &[reqwest::Url], next: &reqwest::Url) -> bool {
    next.scheme() == "http" && previous.iter().any(|u| u.scheme() == "https")
}

/// The media type of manifest bytes: `Content-Type` unless generic, else the JSON's.
pub(super) fn media_type(content_type: &str, bytes: &[u8]) -> Result<String, ParentError> {
    let ct = media_types::essence(content_type);
    let generic = matches!(
        ct,
        "" | "application/json" | "application/octet-stream" | "text/plain"
    );
    if !generic {
        return Ok(ct.to_owned());
    }
    let v: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| ParentError::Protocol(format!("manifest is not JSON: {e}")))?;
    if let Some(m) = v["mediaType"].as_str().filter(|m| !m.is_empty()) {
        return Ok(m.to_owned());
    }
    if v.get("manifests").is_some() {
        Ok(media_types::OCI_INDEX.to_owned())
    } else if v.get("config").is_some() {
        Ok(media_types::OCI_MANIFEST.to_owned())
    } else {
        Err(ParentError::Protocol("manifest has no media type".into()))
    }
}

/// The target of the `rel="next"` entry of a `Link` header (as written, maybe relative).
pub fn link_next(value: &str) -> Option<String> {
    let mut rest = value;
    loop {
        let open = rest.find('<')?;
        let close = open + rest[open..].find('>')?;
        let target = rest[open + 1..close].trim();
        rest = &rest[close + 1..];
        // Parameters run until the next ',' outside quotes.
        let mut in_quotes = false;
        let mut end = rest.len();
        for (i, c) in rest.char_indices() {
            match c {
                '"' => in_quotes = !in_quotes,
                ',' if !in_quotes => {
                    end = i;
                    break;
                }
                _ => {}
            }
        }
        let params = &rest[..end];
        rest = &rest[end..];
        let is_next = params.split(';').any(|p| {
            p.split_once('=').is_some_and(|(k, v)| {
                k.trim().eq_ignore_ascii_case("rel")
                    && v.trim()
                        .trim_matches('"')
                        .split_ascii_whitespace()
                        .any(|r| r.eq_ignore_ascii_case("next"))
            })
        });
        if is_next && !target.is_empty() {
            return Some(target.to_owned());
        }
    }
}

/// A parsed `Content-Range: bytes first-last/total` (`total` is `None` for `*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentRange {
    /// Offset of the first byte sent.
    pub first: u64,
    /// Offset of the last byte sent (inclusive).
    pub last: u64,
    /// Size of the whole blob, when the server knows it.
    pub total: Option<u64>,
}

/// Parses `bytes a-b/total` (or `/*`); `None` when malformed or inconsistent.
pub fn content_range(value: &str) -> Option<ContentRange> {
    let (unit, spec) = value.trim().split_once(|c: char| c.is_ascii_whitespace())?;
    if !unit.eq_ignore_ascii_case("bytes") {
        return None;
    }
    let (range, total) = spec.trim().split_once('/')?;
    let (first, last) = range.trim().split_once('-')?;
    let (first, last) = (number(first)?, number(last)?);
    let total = match total.trim() {
        "*" => None,
        t => Some(number(t)?),
    };
    if first > last || total.is_some_and(|t| last >= t) {
        return None;
    }
    Some(ContentRange { first, last, total })
}

fn number(s: &str) -> Option<u64> {
    let s = s.trim();
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

pub(super) fn checked_repo(repo: &str) -> Result<&str, ParentError> {
    RepoName::parse(repo)
        .map(|_| repo)
        .map_err(|e| ParentError::Config(e.to_string()))
}

pub(super) fn checked_digest(digest: &str) -> Result<Digest, ParentError> {
    digest
        .parse()
        .map_err(|e: crate::registry::RegistryError| ParentError::Config(e.to_string()))
}

pub(super) fn manifest_accept() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(ACCEPT, HeaderValue::from_static(MANIFEST_ACCEPT));
    h
}

pub(super) fn header_str(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

/// `Docker-Content-Digest`, when present; a malformed one is a protocol error.
pub(super) fn header_digest(h: &HeaderMap) -> Result<Option<Digest>, ParentError> {
    match header_str(h, "docker-content-digest") {
        None => Ok(None),
        Some(s) if s.trim().is_empty() => Ok(None),
        Some(s) => s.trim().parse().map(Some).map_err(|_| {
            ParentError::Protocol(format!("bad Docker-Content-Digest {:?}", error::clip(&s)))
        }),
    }
}

/// Reads a whole body, refusing more than `max` bytes.
pub(super) async fn read_limited(resp: Response, max: usize) -> Result<Bytes, ParentError> {
    read_at_most(resp, max)
        .await?
        .ok_or_else(|| ParentError::Protocol(format!("response larger than {max} bytes")))
}

/// A whole body of at most `max` bytes; `None` (having stopped reading) when it is larger.
async fn read_at_most(mut resp: Response, max: usize) -> Result<Option<Bytes>, ParentError> {
    if resp.content_length().is_some_and(|n| n > max as u64) {
        return Ok(None);
    }
    let mut buf = bytes::BytesMut::new();
    while let Some(c) = resp.chunk().await.map_err(|e| ParentError::transport(&e))? {
        if buf.len() + c.len() > max {
            return Ok(None);
        }
        buf.extend_from_slice(&c);
    }
    Ok(Some(buf.freeze()))
}

/// What a paged listing may still read over all its pages, bytes and entries, so that a parent
/// serving pages forever ends with an error instead of growing memory without bound.
pub(super) struct ListingBudget {
    /// What is listed, for messages (`tag list of a/b`).
    what: String,
    /// Bytes of page bodies left.
    bytes: usize,
    /// Entries left.
    entries: usize,
    /// The limits as given, for messages.
    limits: (usize, usize),
}

impl ListingBudget {
    /// A budget of `bytes` of bodies and `entries` entries for the listing `what`.
    pub(super) fn new(what: String, bytes: usize, entries: usize) -> ListingBudget {
        ListingBudget {
            what,
            bytes,
            entries,
            limits: (bytes, entries),
        }
    }

    /// The body of the next page: at most `LISTING_MAX`, and no more than is left.
    pub(super) async fn read(&mut self, resp: Response) -> Result<Bytes, ParentError> {
        let max = self.bytes.min(LISTING_MAX);
        let Some(body) = read_at_most(resp, max).await? else {
            let what = clip(&self.what);
            return Err(ParentError::Protocol(if max < LISTING_MAX {
                format!("{what} is larger than {} bytes in all", self.limits.0)
            } else {
                format!("a page of {what} is larger than {LISTING_MAX} bytes")
            }));
        };
        self.bytes -= body.len();
        self.room_for_strings(&body)?;
        Ok(body)
    }

    /// Refuses a page holding more JSON strings than entries may still come, before it is
    /// parsed: every entry has at least one string, and a 16 MiB page of one-letter names
    /// would otherwise become millions of `String`s (~130 MB) before being counted.
    pub(super) fn room_for_strings(&self, body: &[u8]) -> Result<(), ParentError> {
        // The few strings a page has besides its entries (`name`, `tags`, `manifests`, ...).
        const FRAME: usize = 16;
        if json_strings(body) > self.entries.saturating_add(FRAME) {
            return Err(self.too_many());
        }
        Ok(())
    }

    fn too_many(&self) -> ParentError {
        ParentError::Protocol(format!(
            "{} has more than {} entries",
            clip(&self.what),
            self.limits.1
        ))
    }

    /// Counts `n` more entries; an error once there are more than the limit.
    pub(super) fn take(&mut self, n: usize) -> Result<(), ParentError> {
        self.entries = self.entries.checked_sub(n).ok_or_else(|| self.too_many())?;
        Ok(())
    }
}

/// How many JSON strings `body` holds, counting unescaped quotes (an escaped backslash before
/// a quote is rare enough to over-count harmlessly: the bound is only ever reached by abuse).
pub(super) fn json_strings(body: &[u8]) -> usize {
    let mut quotes = 0;
    let mut escaped = false;
    for &b in body {
        match b {
            b'\\' => escaped = !escaped,
            b'"' if !escaped => quotes += 1,
            _ => escaped = false,
        }
    }
    quotes / 2
}
