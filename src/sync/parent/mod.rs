//! The client a connected registry uses to read from its parent: any OCI distribution registry
//! (ACR's data endpoint, another connected registry, distribution, zot, Harbor).
//!
//! Authentication follows the parent's challenges (Basic, or Bearer through its token service)
//! and caches bearer tokens per scope set. Every manifest is verified against its digest; blobs
//! are streamed (with `Range` for resumption) and verified by the caller.

pub(crate) mod auth;
mod control;
mod error;
mod push;
mod request;
mod summary;
pub(crate) mod tag_list;
#[cfg(test)]
mod tests;

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, CONTENT_TYPE, RANGE};
use reqwest::Method;

pub use control::ControlAnswer;
pub use error::ParentError;
pub use push::{DeleteResult, MountResult, UploadSession};

use crate::registry::{media_types, Algorithm, Digest};
use request::{
    checked_digest, checked_repo, header_digest, header_str, manifest_accept, read_limited,
    ListingBudget,
};

/// Largest manifest accepted.
pub const MANIFEST_MAX: usize = 4 * 1024 * 1024;
/// Largest referrers index or tag list page read.
const LISTING_MAX: usize = 16 * 1024 * 1024;
/// Most bytes of pages read for one tag list or referrers list, over all its pages.
const LISTING_TOTAL_MAX: usize = 64 * 1024 * 1024;
/// Most tag names one tag list may hold.
const TAGS_MAX: usize = 1_000_000;
/// Most referrers one manifest may have.
const REFERRERS_MAX: usize = 100_000;
/// Tag list page size asked for.
const TAGS_PAGE: usize = 1000;
/// Most tag list pages followed.
const TAGS_PAGES_MAX: usize = 10_000;
/// Most referrers pages followed.
const REFERRERS_PAGES_MAX: usize = 1000;
/// Connect timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A read that stalls this long means the link is dead.
const READ_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Sent with every request.
const USER_AGENT: &str = concat!("connected-registry/", env!("CARGO_PKG_VERSION"));
/// The manifest types asked for.
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
    application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json, \
    application/vnd.docker.distribution.manifest.list.v2+json";

/// A manifest read from the parent, byte-exact and verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedManifest {
    /// Its digest (`sha256:…`, or `sha512:…` when asked for by digest).
    pub digest: String,
    /// Its media type.
    pub media_type: String,
    /// The exact bytes.
    pub bytes: Bytes,
}

/// What a manifest HEAD told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestHead {
    /// Its digest.
    pub digest: String,
    /// Its media type.
    pub media_type: String,
    /// Its size in bytes.
    pub size: u64,
}

/// A blob download in progress.
#[derive(Debug)]
pub struct BlobStream {
    /// Offset of the first byte the stream yields (0 when the parent ignored `Range`).
    pub start: u64,
    /// The blob's full size, when the parent said.
    pub total: Option<u64>,
    /// The response being read.
    pub response: reqwest::Response,
}

impl BlobStream {
    /// The next piece of the body; `None` at the end. A stalled or dropped link is `Unreachable`.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, ParentError> {
        self.response
            .chunk()
            .await
            .map_err(|e| ParentError::transport(&e))
    }
}

/// A client for one parent registry. Cheap to clone; clones share connections and tokens.
#[derive(Clone)]
pub struct ParentClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    long_poll: reqwest::Client,
    base: String,
    /// `base` parsed: whose host and port may receive the credentials over plain http.
    origin: reqwest::Url,
    username: String,
    password: String,
    auth: auth::AuthState,
    /// Whether the parent offers ACR's tag listing, and since when that is known (a missing
    /// listing is asked for again after a while).
    tag_listing: std::sync::Mutex<Option<(bool, std::time::Instant)>>,
}

impl fmt::Debug for ParentClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParentClient")
            .field("base_url", &self.inner.base)
            .field("username", &self.inner.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl ParentClient {
    /// A client for `protocol://endpoint` (endpoint is `host[:port]`), authenticating as
    /// `username`/`password`; `ca_file` (PEM, bundles allowed) is trusted besides the
    /// built-in roots.
    pub fn new(
        endpoint: &str,
        protocol: &str,
        username: &str,
        password: &str,
        ca_file: Option<&Path>,
    ) -> Result<ParentClient, ParentError> {
        let protocol = protocol.to_ascii_lowercase();
        if protocol != "http" && protocol != "https" {
            return Err(ParentError::Config(format!(
                "protocol must be http or https, not {:?}",
                error::clip(&protocol)
            )));
        }
        let endpoint = endpoint.trim().trim_end_matches('/');
        let base = format!("{protocol}://{endpoint}");
        let parsed = reqwest::Url::parse(&base).ok();
        let origin = parsed.filter(|u| {
            u.host_str().is_some_and(|h| !h.is_empty())
                && u.path() == "/"
                && u.query().is_none()
                && u.username().is_empty()
        });
        let Some(origin) = origin.filter(|_| !endpoint.is_empty()) else {
            return Err(ParentError::Config(format!(
                "parent endpoint {:?} is not host[:port]",
                error::clip(endpoint)
            )));
        };
        let http = request::http_client(ca_file)?;
        let long_poll = request::long_poll_client(ca_file)?;
        Ok(ParentClient {
            inner: Arc::new(Inner {
                http,
                long_poll,
                base,
                origin,
                username: username.to_owned(),
                password: password.to_owned(),
                auth: auth::AuthState::default(),
                tag_listing: std::sync::Mutex::new(None),
            }),
        })
    }

    /// The parent's base URL, e.g. `https://parent.example:8443`.
    pub fn base_url(&self) -> &str {
        &self.inner.base
    }

    /// Checks that the parent answers `/v2/` and accepts the credentials.
    pub async fn ping(&self) -> Result<(), ParentError> {
        let url = format!("{}/v2/", self.inner.base);
        let resp = self.send(Method::GET, &url, &[], HeaderMap::new()).await?;
        match resp.status().as_u16() {
            200..=299 => Ok(()),
            _ => Err(self.failure(resp).await),
        }
    }

    /// Every tag of `repo`, following `Link` pagination.
    pub async fn tags(&self, repo: &str) -> Result<Vec<String>, ParentError> {
        #[derive(serde::Deserialize)]
        struct Page {
            tags: Option<Vec<String>>,
        }
        let repo = checked_repo(repo)?;
        let scopes = auth::pull_scope(repo);
        let mut url = format!("{}/v2/{repo}/tags/list?n={TAGS_PAGE}", self.inner.base);
        let mut tags = Vec::new();
        let what = format!("tag list of {repo}");
        let mut budget = ListingBudget::new(what, LISTING_TOTAL_MAX, TAGS_MAX);
        for _ in 0..TAGS_PAGES_MAX {
            let resp = self
                .send(Method::GET, &url, &scopes, HeaderMap::new())
                .await?;
            if resp.status().as_u16() != 200 {
                return Err(self.failure(resp).await);
            }
            let next = self.next_link(&url, resp.headers())?;
            let body = budget.read(resp).await?;
            let page: Page = serde_json::from_slice(&body)
                .map_err(|e| ParentError::Protocol(format!("bad tag list: {e}")))?;
            let page = page.tags.unwrap_or_default();
            budget.take(page.len())?;
            tags.extend(page);
            match next {
                Some(n) if n != url => url = n,
                _ => return Ok(tags),
            }
        }
        Err(ParentError::Protocol(format!(
            "tag list of {repo} has more than {TAGS_PAGES_MAX} pages"
        )))
    }

    /// A manifest by tag or digest, verified; `None` when the parent does not have it.
    pub async fn manifest(
        &self,
        repo: &str,
        reference: &str,
    ) -> Result<Option<FetchedManifest>, ParentError> {
        let (url, scopes, by_digest) = self.manifest_url(repo, reference)?;
        let resp = self
            .send(Method::GET, &url, &scopes, manifest_accept())
            .await?;
        match resp.status().as_u16() {
            200 => {}
            404 => return Ok(None),
            _ => return Err(self.failure(resp).await),
        }
        let header = header_digest(resp.headers())?;
        let content_type = header_str(resp.headers(), CONTENT_TYPE.as_str()).unwrap_or_default();
        let bytes = read_limited(resp, MANIFEST_MAX).await?;
        let expected = by_digest.or(header);
        let algorithm = expected
            .as_ref()
            .map(Digest::algorithm)
            .unwrap_or(Algorithm::Sha256);
        let digest = Digest::of(algorithm, &bytes);
        if let Some(want) = expected.filter(|w| *w != digest) {
            return Err(ParentError::Protocol(format!(
                "manifest {repo}@{} has digest {digest}, expected {want}",
                error::clip(reference)
            )));
        }
        let media_type = request::media_type(&content_type, &bytes)?;
        Ok(Some(FetchedManifest {
            digest: digest.to_string(),
            media_type,
            bytes,
        }))
    }

    /// A manifest's digest, media type and size without its body (GET when HEAD says too little).
    pub async fn manifest_head(
        &self,
        repo: &str,
        reference: &str,
    ) -> Result<Option<ManifestHead>, ParentError> {
        let (url, scopes, by_digest) = self.manifest_url(repo, reference)?;
        let resp = self
            .send(Method::HEAD, &url, &scopes, manifest_accept())
            .await?;
        match resp.status().as_u16() {
            200 => {}
            404 => return Ok(None),
            _ => return Err(self.failure(resp).await),
        }
        let h = resp.headers();
        let digest = header_digest(h)?;
        let size = header_str(h, "content-length").and_then(|s| s.trim().parse::<u64>().ok());
        let media_type = header_str(h, CONTENT_TYPE.as_str())
            .map(|c| media_types::essence(&c).to_owned())
            .filter(|m| media_types::is_manifest(m));
        if let (Some(d), Some(size), Some(media_type)) = (digest, size, media_type) {
            if by_digest.as_ref().is_some_and(|b| *b != d) {
                return Err(ParentError::Protocol(format!(
                    "HEAD {repo}@{} answered digest {d}",
                    error::clip(reference)
                )));
            }
            return Ok(Some(ManifestHead {
                digest: d.to_string(),
                media_type,
                size,
            }));
        }
        Ok(self.manifest(repo, reference).await?.map(|m| ManifestHead {
            size: m.bytes.len() as u64,
            digest: m.digest,
            media_type: m.media_type,
        }))
    }

    /// The referrers of `digest` (the `manifests` of the referrers index); `None` when the
    /// parent has no referrers API, so the caller falls back to the `sha256-<hex>` tag.
    pub async fn referrers(
        &self,
        repo: &str,
        digest: &str,
    ) -> Result<Option<Vec<serde_json::Value>>, ParentError> {
        let repo = checked_repo(repo)?;
        let digest = checked_digest(digest)?;
        let scopes = auth::pull_scope(repo);
        let mut url = format!("{}/v2/{repo}/referrers/{digest}", self.inner.base);
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static(media_types::OCI_INDEX));
        let mut all = Vec::new();
        let what = format!("referrers list of {repo}@{digest}");
        let mut budget = ListingBudget::new(what, LISTING_TOTAL_MAX, REFERRERS_MAX);
        for _ in 0..REFERRERS_PAGES_MAX {
            let resp = self
                .send(Method::GET, &url, &scopes, headers.clone())
                .await?;
            match resp.status().as_u16() {
                200 => {}
                400 | 404 | 405 | 501 if all.is_empty() => return Ok(None),
                _ => return Err(self.failure(resp).await),
            }
            let next = self.next_link(&url, resp.headers())?;
            let body = budget.read(resp).await?;
            let index: serde_json::Value = serde_json::from_slice(&body)
                .map_err(|e| ParentError::Protocol(format!("bad referrers index: {e}")))?;
            match index.get("manifests") {
                Some(serde_json::Value::Array(m)) => {
                    budget.take(m.len())?;
                    all.extend(m.iter().cloned());
                }
                None | Some(serde_json::Value::Null) => {}
                Some(_) => return Err(ParentError::Protocol("bad referrers index".into())),
            }
            match next {
                Some(n) if n != url => url = n,
                _ => return Ok(Some(all)),
            }
        }
        Err(ParentError::Protocol("too many referrers pages".into()))
    }

    /// Starts downloading a blob from offset `from` (`len` bytes, or to the end); `None` when
    /// the parent does not have it.
    pub async fn blob(
        &self,
        repo: &str,
        digest: &str,
        from: u64,
        len: Option<u64>,
    ) -> Result<Option<BlobStream>, ParentError> {
        let (url, scopes) = self.blob_url(repo, digest)?;
        let mut headers = HeaderMap::new();
        let range = match len {
            Some(0) => return Err(ParentError::Config("empty blob range asked".into())),
            Some(n) => Some(format!("bytes={from}-{}", from.saturating_add(n - 1))),
            None if from > 0 => Some(format!("bytes={from}-")),
            None => None,
        };
        if let Some(r) = range.and_then(|r| HeaderValue::from_str(&r).ok()) {
            headers.insert(RANGE, r);
        }
        let resp = self.send(Method::GET, &url, &scopes, headers).await?;
        match resp.status().as_u16() {
            200 => {
                let total = header_str(resp.headers(), "content-length")
                    .and_then(|s| s.trim().parse().ok());
                Ok(Some(BlobStream {
                    start: 0,
                    total,
                    response: resp,
                }))
            }
            206 => {
                let cr = header_str(resp.headers(), "content-range")
                    .and_then(|v| request::content_range(&v))
                    .ok_or_else(|| {
                        ParentError::Protocol("206 without a valid Content-Range".into())
                    })?;
                if cr.first > from {
                    return Err(ParentError::Protocol(format!(
                        "asked for bytes from {from}, parent sent from {}",
                        cr.first
                    )));
                }
                Ok(Some(BlobStream {
                    start: cr.first,
                    total: cr.total,
                    response: resp,
                }))
            }
            404 => Ok(None),
            416 => Err(ParentError::Protocol(format!(
                "range from {from} not satisfiable"
            ))),
            _ => Err(self.failure(resp).await),
        }
    }

    /// A blob's size; `None` when the parent does not have it.
    pub async fn blob_head(&self, repo: &str, digest: &str) -> Result<Option<u64>, ParentError> {
        let (url, scopes) = self.blob_url(repo, digest)?;
        let resp = self
            .send(Method::HEAD, &url, &scopes, HeaderMap::new())
            .await?;
        match resp.status().as_u16() {
            200 => {}
            404 => return Ok(None),
            _ => return Err(self.failure(resp).await),
        }
        if let Some(n) =
            header_str(resp.headers(), "content-length").and_then(|s| s.trim().parse().ok())
        {
            return Ok(Some(n));
        }
        // No length on HEAD: ask for one byte and read the total from Content-Range.
        let Some(s) = self.blob(repo, digest, 0, Some(1)).await? else {
            return Ok(None);
        };
        s.total
            .map(Some)
            .ok_or_else(|| ParentError::Protocol("parent does not tell the blob size".into()))
    }
}
