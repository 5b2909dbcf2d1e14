//! Pushing to the parent: blob existence, cross-repository mount, resumable chunked uploads,
//! manifests and manifest deletes.
//!
//! A streamed body cannot be sent twice, so a request carrying one gets its credentials before
//! it goes out: the cached bearer token for its scope set, a fresh one when the parent's token
//! service is known, Basic when the parent asked for it, and otherwise a body-less `GET /v2/`
//! first to learn the parent's challenge (once a request without credentials was answered, the
//! parent is taken to be open and bodies go out without that probe).
//! Should the parent still answer 401 (a token revoked meanwhile), its challenge is answered and
//! the call fails with a transient `Server(401, …)` so that the caller sends the chunk again.
//! Manifests are small and in memory: they are simply resent after a 401.

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};
use serde::{Deserialize, Serialize};

use super::auth;
use super::error::{clip, ParentError};
use super::request::{checked_digest, checked_repo, header_digest, header_str, Cred};
use super::ParentClient;
use crate::registry::{Algorithm, Digest};

/// A blob upload in progress at the parent; persist it (serde) to resume after a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadSession {
    /// Absolute URL of the upload as the parent last gave it, query included (distribution's
    /// `_state` pins the offset: an older location of the same upload is refused with 404).
    pub location: String,
    /// How many bytes the parent holds: the next chunk starts here.
    pub offset: u64,
}

/// What a cross-repository mount did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountResult {
    /// The blob is now in the repository.
    Mounted,
    /// The parent could not mount (source missing or unreadable) and started an upload instead.
    Upload(UploadSession),
}

/// What a manifest delete did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteResult {
    /// The parent deleted it (202).
    Deleted,
    /// The parent does not have it (404): already gone.
    NotFound,
    /// The parent cannot or will not delete this way (405; 400 `UNSUPPORTED`; any 400 for a tag,
    /// as distribution answers `DIGEST_INVALID` there).
    Unsupported,
}

/// A request body: in-memory bytes (resent after a 401) or a stream (sent once).
enum Payload {
    Bytes(Bytes),
    Stream(reqwest::Body),
}

/// The scopes an upload or manifest push to `repo` needs.
fn push_scope(repo: &str) -> Vec<String> {
    vec![format!("repository:{repo}:pull,push")]
}

fn protocol(message: String) -> ParentError {
    ParentError::Protocol(message)
}

impl ParentClient {
    /// A blob's size in `repo` (HEAD with the push token: one token per pushed repository);
    /// `None` when the parent does not have it.
    pub async fn blob_exists(&self, repo: &str, digest: &str) -> Result<Option<u64>, ParentError> {
        let (url, _) = self.blob_url(repo, digest)?;
        let resp = self.call(Method::HEAD, &url, &push_scope(repo)).await?;
        match resp.status().as_u16() {
            200 => {}
            404 => return Ok(None),
            _ => return Err(self.failure(resp).await),
        }
        match header_str(resp.headers(), "content-length").and_then(|s| s.trim().parse().ok()) {
            Some(n) => Ok(Some(n)),
            None => self.blob_head(repo, digest).await,
        }
    }

    /// Mounts `digest` from `from_repo` into `repo` (`POST …/blobs/uploads/?mount=&from=`).
    pub async fn mount_blob(
        &self,
        repo: &str,
        digest: &str,
        from_repo: &str,
    ) -> Result<MountResult, ParentError> {
        let (repo, from) = (checked_repo(repo)?, checked_repo(from_repo)?);
        let digest = checked_digest(digest)?;
        let base = &self.inner.base;
        let url = format!("{base}/v2/{repo}/blobs/uploads/?mount={digest}&from={from}");
        let mut scopes = push_scope(repo);
        if from != repo {
            scopes.extend(auth::pull_scope(from));
        }
        let resp = self.call(Method::POST, &url, &scopes).await?;
        match resp.status().as_u16() {
            201 => Ok(MountResult::Mounted),
            202 => Ok(MountResult::Upload(self.new_session(&url, &resp)?)),
            _ => Err(self.failure(resp).await),
        }
    }

    /// Starts an upload to `repo` (`POST …/blobs/uploads/`, 202).
    pub async fn start_upload(&self, repo: &str) -> Result<UploadSession, ParentError> {
        let repo = checked_repo(repo)?;
        let url = format!("{}/v2/{repo}/blobs/uploads/", self.inner.base);
        let resp = self.call(Method::POST, &url, &push_scope(repo)).await?;
        match resp.status().as_u16() {
            202 => self.new_session(&url, &resp),
            _ => Err(self.failure(resp).await),
        }
    }

    /// Where an upload stands (`GET <location>`, 204): the session to go on with (the parent's
    /// offset and location); `None` when the parent no longer knows it (expired, cancelled, or
    /// a stale distribution location): start over.
    pub async fn upload_status(
        &self,
        session: &UploadSession,
    ) -> Result<Option<UploadSession>, ParentError> {
        let resp = self
            .call(Method::GET, &session.location, &session_scopes(session)?)
            .await?;
        match resp.status().as_u16() {
            200 | 204 => {}
            404 => return Ok(None),
            _ => return Err(self.failure(resp).await),
        }
        let range = header_str(resp.headers(), "range").unwrap_or_default();
        let offset = range_offset(&range, session.offset).ok_or_else(|| bad_range(&range))?;
        let location = self.next_location(&session.location, resp.headers())?;
        Ok(Some(UploadSession { location, offset }))
    }

    /// Sends `len` bytes at `session.offset` (`PATCH` with `Content-Range`); `body` may stream
    /// (e.g. `reqwest::Body::wrap_stream` over a file) and is sent once. On success the session
    /// holds the new location and `offset + len`. A refused offset (416) is `Protocol`: ask
    /// `upload_status`. When the parent reports another offset than `offset + len` (it ignored
    /// `Content-Range`, as distribution 2.8 does, or kept less) the session takes the parent's
    /// word and the call fails with `Protocol`.
    pub async fn upload_chunk(
        &self,
        session: &mut UploadSession,
        body: reqwest::Body,
        len: u64,
    ) -> Result<(), ParentError> {
        if len == 0 {
            return Ok(());
        }
        let scopes = session_scopes(session)?;
        let start = session.offset;
        let Some(expected) = start.checked_add(len) else {
            return Err(ParentError::Config("chunk past 2^64 bytes".into()));
        };
        let url = session.location.clone();
        let req = self.blob_request(Method::PATCH, &url, len);
        let req = req.header("content-range", format!("{start}-{}", expected - 1));
        let resp = self.send_body(req, &scopes, Payload::Stream(body)).await?;
        match resp.status().as_u16() {
            202 | 204 => {}
            416 => {
                return Err(protocol(format!(
                    "parent refused a chunk at offset {start}: wrong offset, ask the upload status"
                )))
            }
            _ => return Err(self.failure(resp).await),
        }
        let offset = match header_str(resp.headers(), "range") {
            Some(r) => range_offset(&r, expected).ok_or_else(|| bad_range(&r))?,
            None => expected,
        };
        session.location = self.next_location(&url, resp.headers())?;
        session.offset = offset;
        if offset != expected {
            return Err(protocol(format!(
                "after bytes {start}-{} the parent holds {offset} bytes (it may have ignored \
                 Content-Range): ask the upload status or start over",
                expected - 1
            )));
        }
        Ok(())
    }

    /// Completes an upload as `digest` (`PUT <location>&digest=`, 201), sending a last chunk of
    /// `len` bytes at `session.offset` first when given.
    pub async fn finish_upload(
        &self,
        session: &UploadSession,
        digest: &str,
        last: Option<(reqwest::Body, u64)>,
    ) -> Result<(), ParentError> {
        let digest = checked_digest(digest)?;
        let scopes = session_scopes(session)?;
        let url = with_digest(&session.location, &digest);
        let resp = match last {
            Some((body, len)) if len > 0 => {
                let req = self.blob_request(Method::PUT, &url, len);
                self.send_body(req, &scopes, Payload::Stream(body)).await?
            }
            _ => self.call(Method::PUT, &url, &scopes).await?,
        };
        if !matches!(resp.status().as_u16(), 200 | 201 | 204) {
            return Err(self.failure(resp).await);
        }
        match header_digest(resp.headers())? {
            Some(d) if d != digest => Err(protocol(format!("upload of {digest} stored as {d}"))),
            _ => Ok(()),
        }
    }

    /// Cancels an upload (`DELETE <location>`), best effort: failures are only logged.
    pub async fn cancel_upload(&self, session: &UploadSession) {
        let Ok(scopes) = session_scopes(session) else {
            return;
        };
        match self.call(Method::DELETE, &session.location, &scopes).await {
            Ok(r) if r.status().is_success() || r.status() == StatusCode::NOT_FOUND => {}
            Ok(r) => tracing::debug!(status = %r.status(), "parent kept a cancelled upload"),
            Err(e) => tracing::debug!(error = %e, "cancelling an upload at the parent failed"),
        }
    }

    /// Pushes a manifest under a tag or its digest; returns its digest (the parent's
    /// `Docker-Content-Digest`, checked against the bytes, else computed). A refusal (400:
    /// `MANIFEST_BLOB_UNKNOWN`, `MANIFEST_INVALID`…) is `Protocol` with the parent's code and text.
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: Bytes,
    ) -> Result<String, ParentError> {
        let (url, _, by_digest) = self.manifest_url(repo, reference)?;
        let bad = || ParentError::Config(format!("bad media type {:?}", clip(media_type)));
        let content_type = HeaderValue::from_str(media_type).map_err(|_| bad())?;
        let req = self.inner.http.put(&url).header(CONTENT_TYPE, content_type);
        let payload = Payload::Bytes(bytes.clone());
        let resp = self.send_body(req, &push_scope(repo), payload).await?;
        if !resp.status().is_success() {
            return Err(self.failure(resp).await);
        }
        match header_digest(resp.headers())? {
            Some(d) if Digest::of(d.algorithm(), &bytes) != d => Err(protocol(format!(
                "parent says manifest {repo}:{} has digest {d}, the bytes do not",
                clip(reference)
            ))),
            Some(d) => Ok(d.to_string()),
            None => {
                let algorithm = by_digest.map_or(Algorithm::Sha256, |d| d.algorithm());
                Ok(Digest::of(algorithm, &bytes).to_string())
            }
        }
    }

    /// Pushes a manifest by its digest and asks the parent to tag it in the same request
    /// (`?tag=`, the spec's push with tags). True when the parent says it applied the tag
    /// (`OCI-Tag`); a parent that ignores the parameter stored the manifest untagged.
    pub async fn put_manifest_tagged(
        &self,
        repo: &str,
        digest: &Digest,
        tag: &str,
        media_type: &str,
        bytes: Bytes,
    ) -> Result<bool, ParentError> {
        let tag = crate::registry::Tag::parse(tag)
            .map_err(|e| ParentError::Config(format!("invalid tag: {e}")))?;
        let (url, _, _) = self.manifest_url(repo, digest.as_str())?;
        let url = format!("{url}?tag={tag}");
        let bad = || ParentError::Config(format!("bad media type {:?}", clip(media_type)));
        let content_type = HeaderValue::from_str(media_type).map_err(|_| bad())?;
        let req = self.inner.http.put(&url).header(CONTENT_TYPE, content_type);
        let resp = self
            .send_body(req, &push_scope(repo), Payload::Bytes(bytes))
            .await?;
        if !resp.status().is_success() {
            return Err(self.failure(resp).await);
        }
        let applied = resp
            .headers()
            .get_all("oci-tag")
            .iter()
            .any(|v| v == tag.as_str());
        Ok(applied)
    }

    /// Deletes a manifest by digest (manifest and tags) or by tag (the tag only, where the parent
    /// can). 401 is `Unauthorized`, 403 `Denied`.
    pub async fn delete_manifest(
        &self,
        repo: &str,
        reference: &str,
    ) -> Result<DeleteResult, ParentError> {
        let (url, _, by_digest) = self.manifest_url(repo, reference)?;
        let scopes = [format!("repository:{repo}:delete")];
        let resp = self.call(Method::DELETE, &url, &scopes).await?;
        match resp.status().as_u16() {
            200..=299 => Ok(DeleteResult::Deleted),
            404 => Ok(DeleteResult::NotFound),
            405 => Ok(DeleteResult::Unsupported),
            400 => match self.failure(resp).await {
                _ if by_digest.is_none() => Ok(DeleteResult::Unsupported),
                ParentError::Protocol(m) if m.contains(": UNSUPPORTED") => {
                    Ok(DeleteResult::Unsupported)
                }
                e => Err(e),
            },
            _ => Err(self.failure(resp).await),
        }
    }

    /// A body-less request (see `send`).
    async fn call(&self, m: Method, url: &str, scopes: &[String]) -> Result<Response, ParentError> {
        self.send(m, url, scopes, HeaderMap::new()).await
    }

    /// Sends `req` (body-less so far) with `payload`, credentials obtained before the body goes
    /// out (see the module documentation).
    async fn send_body(
        &self,
        req: RequestBuilder,
        scopes: &[String],
        payload: Payload,
    ) -> Result<Response, ParentError> {
        let key = auth::scope_key(scopes);
        let mut first = self.initial_cred(&key, scopes).await?;
        if first.is_none() && !self.inner.auth.lock().open {
            // Nothing known yet: a body-less request learns the scheme (and fetches the token).
            let probe = format!("{}/v2/", self.inner.base);
            drop(self.call(Method::GET, &probe, scopes).await?);
            first = self.initial_cred(&key, scopes).await?;
        }
        let (body, replay) = match payload {
            Payload::Bytes(b) => (reqwest::Body::from(b.clone()), Some(b)),
            Payload::Stream(s) => (s, None),
        };
        let again = req.try_clone();
        let resp = self.with_cred(req, first.as_ref())?.body(body).send().await;
        let resp = resp.map_err(|e| self.transport(&e))?;
        if resp.status() != StatusCode::UNAUTHORIZED {
            return Ok(resp);
        }
        let headers = resp.headers().get_all(reqwest::header::WWW_AUTHENTICATE);
        let texts = headers.iter().filter_map(|v| v.to_str().ok());
        let challenges: Vec<_> = texts.flat_map(auth::parse_challenges).collect();
        let answer = self.answer(&key, scopes, &challenges, first.as_ref());
        let Some(second) = answer.await? else {
            return Err(self.failure(resp).await);
        };
        let (Some(bytes), Some(req)) = (replay, again) else {
            let m = "credentials refused while a streamed body was sent; new ones were obtained: \
                     send it again";
            return Err(ParentError::Server(401, m.into()));
        };
        let resp = self.with_cred(req, Some(&second))?.body(bytes).send().await;
        let resp = resp.map_err(|e| self.transport(&e))?;
        if resp.status() == StatusCode::UNAUTHORIZED {
            if let Cred::Bearer(t) = &second {
                self.inner.auth.lock().tokens.forget(&key, t);
            }
            return Err(self.failure(resp).await);
        }
        Ok(resp)
    }

    /// `req` with `Authorization` for `cred`.
    fn with_cred(
        &self,
        req: RequestBuilder,
        cred: Option<&Cred>,
    ) -> Result<RequestBuilder, ParentError> {
        let (user, password) = (&self.inner.username, &self.inner.password);
        Ok(match cred {
            Some(Cred::Basic) => req.basic_auth(user, Some(password)),
            Some(Cred::Bearer(t)) => {
                let Ok(mut v) = HeaderValue::from_str(&format!("Bearer {t}")) else {
                    return Err(protocol("token is not a header value".into()));
                };
                v.set_sensitive(true);
                req.header(AUTHORIZATION, v)
            }
            None => req,
        })
    }

    fn transport(&self, e: &reqwest::Error) -> ParentError {
        ParentError::transport(e).redact(&self.inner.password)
    }

    /// A body-less request for `len` blob bytes.
    fn blob_request(&self, method: Method, url: &str, len: u64) -> RequestBuilder {
        let req = self.inner.http.request(method, url);
        let req = req.header(CONTENT_TYPE, "application/octet-stream");
        req.header(CONTENT_LENGTH, len)
    }

    /// A fresh session from the 202 answering `url`: its `Location`, offset 0.
    fn new_session(&self, url: &str, resp: &Response) -> Result<UploadSession, ParentError> {
        if header_str(resp.headers(), "location").is_none() {
            return Err(protocol("upload started without Location".into()));
        }
        let location = self.next_location(url, resp.headers())?;
        upload_repo(&location).ok_or_else(|| no_repo(&location))?;
        Ok(UploadSession {
            location,
            offset: 0,
        })
    }

    /// The `Location` made absolute against `current` (which stays when there is none); only on
    /// the parent's own origin, so that credentials go nowhere else.
    fn next_location(&self, current: &str, headers: &HeaderMap) -> Result<String, ParentError> {
        let Some(loc) = header_str(headers, "location") else {
            return Ok(current.to_owned());
        };
        join_location(&self.inner.base, current, &loc)
            .ok_or_else(|| protocol(format!("bad upload Location {:?}", clip(&loc))))
    }
}

fn bad_range(value: &str) -> ParentError {
    protocol(format!("bad or missing upload Range {:?}", clip(value)))
}

/// The scopes of an upload session: push on the repository its location names.
fn session_scopes(session: &UploadSession) -> Result<Vec<String>, ParentError> {
    let repo = upload_repo(&session.location).ok_or_else(|| no_repo(&session.location))?;
    Ok(push_scope(&repo))
}

fn no_repo(location: &str) -> ParentError {
    protocol(format!(
        "upload location {:?} names no repository",
        clip(location)
    ))
}

/// The repository of an upload URL `…/v2/<repo>/blobs/uploads/<id>`.
fn upload_repo(location: &str) -> Option<String> {
    let url = Url::parse(location).ok()?;
    let (repo, _id) = url
        .path()
        .strip_prefix("/v2/")?
        .rsplit_once("/blobs/uploads/")?;
    checked_repo(repo).ok().map(str::to_owned)
}

/// `location` (absolute or relative, query kept) resolved against `current`; `None` when
/// malformed or on another origin than `base`.
fn join_location(base: &str, current: &str, location: &str) -> Option<String> {
    let url = Url::parse(current).ok()?.join(location.trim()).ok()?;
    (url.origin() == Url::parse(base).ok()?.origin()).then(|| url.to_string())
}

/// `location` with `digest=` added to its query.
fn with_digest(location: &str, digest: &Digest) -> String {
    let sep = match location.find('?') {
        None => "?",
        Some(_) if location.ends_with('?') || location.ends_with('&') => "",
        Some(_) => "&",
    };
    format!("{location}{sep}digest={digest}")
}

/// The offset an upload `Range: 0-<last>` reports. Registries send `0-0` both before any byte
/// and after one byte (distribution and connected-registry alike): `hint`, the offset expected,
/// settles it (1 when 1 was expected, else 0).
fn range_offset(value: &str, hint: u64) -> Option<u64> {
    let v = value.trim();
    let v = v
        .strip_prefix("bytes=")
        .or_else(|| v.strip_prefix("bytes "))
        .unwrap_or(v);
    let number = |s: &str| {
        let s = s.trim();
        let digits = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        digits.then(|| s.parse::<u64>().ok()).flatten()
    };
    let (first, last) = v.split_once('-')?;
    match (number(first)?, number(last)?) {
        (f, l) if f > l => None,
        (_, 0) => Some(u64::from(hint == 1)),
        (_, l) => l.checked_add(1),
    }
}

#[cfg(test)]
mod tests;
