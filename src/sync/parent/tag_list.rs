//! Every tag of a repository with its digest in one paged listing, from a parent that offers
//! ACR's `/acr/v1/<name>/_tags` (ACR itself, or a connected registry): it replaces a manifest
//! HEAD per tag, the only way a generic OCI parent can tell what each tag points at.

use reqwest::header::HeaderMap;
use reqwest::{Method, Response, Url};
use serde_json::Value;

use super::error::ParentError;
use super::request::{checked_repo, read_limited, ListingBudget};
use super::{ParentClient, LISTING_TOTAL_MAX, TAGS_MAX, TAGS_PAGES_MAX};
use crate::registry::{Digest, Tag};

/// Page size asked for: ACR serves at most 1000 tags a page, whatever `n` says.
const PAGE: usize = 1000;
/// Largest error body read to tell an unknown repository from an absent API.
const ERROR_BODY_MAX: usize = 64 * 1024;

/// What one listing request told.
enum Answer {
    /// A page: its entries and the URL of the next one, if any.
    Page(Vec<Value>, Option<String>),
    /// The parent has no such API.
    Absent,
    /// The parent does not know the repository.
    Unknown,
}

impl ParentClient {
    /// Every tag of `repo` with the digest it points at, following pages; `None` when the parent
    /// does not offer the listing (the caller falls back to the tag list and a HEAD per tag),
    /// and empty when the parent does not know the repository (as `tags` treats it).
    pub async fn tag_digests(
        &self,
        repo: &str,
    ) -> Result<Option<Vec<(String, String)>>, ParentError> {
        let repo = checked_repo(repo)?;
        if self.has_tag_listing() == Some(false) {
            return Ok(None);
        }
        let base = format!("{}/acr/v1/{repo}/_tags", self.inner.base);
        let mut url = format!("{base}?n={PAGE}");
        let mut all = Vec::new();
        // Bounded over all pages, as the tag list is: a parent cannot grow the child without end.
        let what = format!("tag listing of {repo}");
        let mut budget = ListingBudget::new(what, LISTING_TOTAL_MAX, TAGS_MAX);
        for page in 0..TAGS_PAGES_MAX {
            let answer = self.tag_page(repo, &url, page == 0, &mut budget).await?;
            let (entries, next) = match answer {
                Answer::Page(entries, next) => (entries, next),
                Answer::Absent => {
                    self.remember_tag_listing(false);
                    return Ok(None);
                }
                Answer::Unknown => return Ok(Some(Vec::new())),
            };
            let last = entries
                .last()
                .and_then(|e| e["name"].as_str())
                .map(str::to_owned);
            budget.take(entries.len())?;
            let full = entries.len() >= PAGE;
            all.extend(entries.iter().filter_map(|e| valid_entry(repo, e)));
            // Without a Link, a full page may still have a successor: ask after its last name.
            let next = match (next, last) {
                (Some(n), _) => Some(n),
                (None, Some(last)) if full => Some(after(&base, &last)?),
                _ => None,
            };
            self.remember_tag_listing(true);
            // An empty page ends the listing whatever its Link says.
            match next {
                Some(n) if n != url && !entries.is_empty() => url = n,
                _ => return Ok(Some(all)),
            }
        }
        Err(ParentError::Protocol(format!(
            "tag listing of {repo} has more than {TAGS_PAGES_MAX} pages"
        )))
    }

    /// One page. Until the first page is read, answers that only a registry without the API
    /// gives (404 without NAME_UNKNOWN, 400, 405, 501, a body that is not a listing) and a
    /// refusal (the fallback path reports real credential faults) count as `Absent`.
    async fn tag_page(
        &self,
        repo: &str,
        url: &str,
        first: bool,
        budget: &mut ListingBudget,
    ) -> Result<Answer, ParentError> {
        let scopes = listing_scope(repo);
        let resp = match self.send(Method::GET, url, &scopes, HeaderMap::new()).await {
            Ok(r) => r,
            Err(ParentError::Unauthorized(m) | ParentError::Denied(m)) if first => {
                tracing::debug!(repo, reason = %m, "parent refused the tag listing");
                return Ok(Answer::Absent);
            }
            Err(e) => return Err(e),
        };
        let status = resp.status().as_u16();
        match status {
            200 => self.page_body(resp, url, first, budget).await,
            400 | 403 | 404 | 405 | 501 => self.refusal(resp, first).await,
            _ => Err(self.failure(resp).await),
        }
    }

    /// The entries and next link of a 200 answer.
    async fn page_body(
        &self,
        resp: Response,
        url: &str,
        first: bool,
        budget: &mut ListingBudget,
    ) -> Result<Answer, ParentError> {
        let next = self.next_link(url, resp.headers())?;
        let body = budget.read(resp).await?;
        match parse_page(&body) {
            Some(entries) => Ok(Answer::Page(entries, next)),
            // A registry without the API may serve its web portal here.
            None if first => Ok(Answer::Absent),
            None => Err(ParentError::Protocol("bad tag listing page".into())),
        }
    }

    /// A 4xx/501 answer: the repository is unknown (NAME_UNKNOWN), or the API is absent.
    async fn refusal(&self, resp: Response, first: bool) -> Result<Answer, ParentError> {
        let status = resp.status().as_u16();
        let body = read_limited(resp, ERROR_BODY_MAX).await.unwrap_or_default();
        if status == 404 && error_code(&body).as_deref() == Some("NAME_UNKNOWN") {
            return Ok(Answer::Unknown);
        }
        if first {
            return Ok(Answer::Absent);
        }
        Err(ParentError::from_status(status, &body).redact(&self.inner.password))
    }
}

/// `pull` for our own parents and distribution-style token services; ACR wants `metadata_read`
/// for its `/acr/v1` listings, and a token service grants only what the credentials may do, so
/// one token serves both (kept apart from the pull token in the cache, so neither is replaced).
pub(super) fn listing_scope(repo: &str) -> Vec<String> {
    vec![format!("repository:{repo}:pull,metadata_read")]
}

/// The `tags` entries of a listing; `None` when the body is not one (a listing names its image).
pub(crate) fn parse_page(body: &[u8]) -> Option<Vec<Value>> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let tags = v.get("tags");
    if v.get("imageName").is_none() && tags.is_none() {
        return None;
    }
    match tags {
        None | Some(Value::Null) => Some(Vec::new()),
        Some(Value::Array(a)) => Some(a.clone()),
        Some(_) => None,
    }
}

/// `errors[0].code` of a distribution-style error body.
fn error_code(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    v["errors"][0]["code"].as_str().map(str::to_owned)
}

/// `(tag, digest)` of an entry whose name is a tag and whose digest parses; others are skipped.
pub(crate) fn valid_entry(repo: &str, e: &Value) -> Option<(String, String)> {
    let (name, digest) = (e["name"].as_str(), e["digest"].as_str());
    let tag = name.and_then(|n| Tag::parse(n).ok());
    let digest = digest.and_then(|d| d.parse::<Digest>().ok());
    match (tag, digest) {
        (Some(t), Some(d)) => Some((t.to_string(), d.to_string())),
        _ => {
            tracing::warn!(repo, entry = %super::error::clip(&e.to_string()), "parent listed an invalid tag; skipped");
            None
        }
    }
}

/// The listing URL after `last` (query-encoded: an invalid name is still a valid position).
pub(crate) fn after(base: &str, last: &str) -> Result<String, ParentError> {
    let n = PAGE.to_string();
    Url::parse_with_params(base, [("n", n.as_str()), ("last", last)])
        .map(String::from)
        .map_err(|e| ParentError::Protocol(format!("bad listing URL: {e}")))
}

impl ParentClient {
    /// Whether the parent offers the tag listing: `None` until known; a missing one is asked
    /// for again after `ABSENT_FOR` (a generic parent costs one refused request per hour, not
    /// one per repository).
    pub fn has_tag_listing(&self) -> Option<bool> {
        let known = self.inner.tag_listing.lock().map(|s| *s).unwrap_or(None);
        match known {
            Some((false, at)) if at.elapsed() >= ABSENT_FOR => None,
            k => k.map(|(present, _)| present),
        }
    }

    /// Remembers whether the parent has the tag listing.
    fn remember_tag_listing(&self, present: bool) {
        if let Ok(mut s) = self.inner.tag_listing.lock() {
            *s = Some((present, std::time::Instant::now()));
        }
    }
}

/// How long a parent without the tag listing is not asked for it again.
const ABSENT_FOR: std::time::Duration = std::time::Duration::from_secs(3600);

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::sync::{Arc, Mutex};

    use super::*;

    /// What the stand-in saw of a request.
    struct Req {
        path: String,
        auth: Option<String>,
    }

    type Handler = dyn Fn(&Req, u16) -> String + Send + Sync;

    /// A stand-in parent on a thread, one request per connection; returns its port and the
    /// paths it was asked for.
    fn parent(handler: Arc<Handler>) -> (u16, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for mut s in listener.incoming().flatten() {
                let req = read_request(&mut s);
                if let Ok(mut l) = log.lock() {
                    l.push(req.path.clone());
                }
                let _ = s.write_all(handler(&req, port).as_bytes());
            }
        });
        (port, seen)
    }

    fn read_request(s: &mut std::net::TcpStream) -> Req {
        let (mut buf, mut b) = (Vec::new(), [0u8; 4096]);
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut b) {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&b[..n]),
            }
        }
        let text = String::from_utf8_lossy(&buf).to_string();
        let path = text.split(' ').nth(1).unwrap_or("").to_owned();
        let auth = text
            .split("\r\n")
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
            .map(|(_, v)| v.trim().to_owned());
        Req { path, auth }
    }

    fn reply(status: &str, headers: &[(&str, &str)], body: &str) -> String {
        let mut r = format!(
            "HTTP/1.1 {status}\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            r.push_str(&format!("{k}: {v}\r\n"));
        }
        format!("{r}\r\n{body}")
    }

    fn client(port: u16) -> ParentClient {
        ParentClient::new(&format!("127.0.0.1:{port}"), "http", "sync", "pw", None)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn digest(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    /// An entry as ACR writes it.
    fn acr_entry(name: &str, digest: &str) -> Value {
        serde_json::json!({
            "name": name, "digest": digest,
            "createdTime": "2026-01-01T00:00:00.1234567Z",
            "lastUpdateTime": "2026-01-02T00:00:00.1234567Z", "signed": false,
            "changeableAttributes": {"deleteEnabled": true, "writeEnabled": true,
                                     "readEnabled": true, "listEnabled": true},
        })
    }

    fn listing(repo: &str, tags: Vec<Value>) -> String {
        serde_json::json!({"registry": "r.azurecr.io", "imageName": repo, "tags": tags}).to_string()
    }

    /// ACR's shape behind its bearer flow: pages follow the Link, invalid entries are skipped,
    /// and the token is asked with the scope ACR's listing needs.
    #[tokio::test]
    async fn acr_pages_follow_the_link_behind_a_bearer_token() {
        let (d1, d2, d3) = (digest('a'), digest('b'), digest('c'));
        let (a, b, c) = (d1.clone(), d2.clone(), d3.clone());
        let (port, seen) = parent(Arc::new(move |r: &Req, port| {
            if r.path.starts_with("/token?") {
                return reply("200 OK", &[], r#"{"access_token":"tok","expires_in":300}"#);
            }
            if r.auth.as_deref() != Some("Bearer tok") {
                let ch = format!(r#"Bearer realm="http://127.0.0.1:{port}/token",service="svc""#);
                return reply("401 Unauthorized", &[("WWW-Authenticate", &ch)], "");
            }
            let next = r#"</acr/v1/team/app/_tags?last=b&n=1000&orderby=>; rel="next""#;
            match r.path.as_str() {
                "/acr/v1/team/app/_tags?n=1000" => {
                    let tags = vec![
                        acr_entry("a", &a),
                        acr_entry("b", &b),
                        acr_entry("bad tag!", &a),
                        acr_entry("short", "sha256:abc"),
                        serde_json::json!({"name": "nodigest"}),
                    ];
                    reply("200 OK", &[("Link", next)], &listing("team/app", tags))
                }
                "/acr/v1/team/app/_tags?last=b&n=1000&orderby=" => reply(
                    "200 OK",
                    &[],
                    &listing("team/app", vec![acr_entry("c", &c)]),
                ),
                _ => reply("404 Not Found", &[], ""),
            }
        }));
        let got = client(port).tag_digests("team/app").await;
        let want = vec![("a".into(), d1), ("b".into(), d2), ("c".into(), d3)];
        assert_eq!(got, Ok(Some(want)));
        let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
        let tokens: Vec<&String> = seen.iter().filter(|p| p.starts_with("/token?")).collect();
        assert_eq!(tokens.len(), 1, "{seen:?}");
        assert!(
            tokens[0].contains("scope=repository%3Ateam%2Fapp%3Apull%2Cmetadata_read"),
            "{seen:?}"
        );
    }

    /// A full page without a Link may have a successor: the next is asked after its last name.
    #[tokio::test]
    async fn full_pages_without_a_link_continue_after_the_last_name() {
        let d = digest('d');
        let (port, _) = parent(Arc::new(move |r: &Req, _| match r.path.as_str() {
            "/acr/v1/a/_tags?n=1000" => {
                let tags = (0..PAGE)
                    .map(|i| acr_entry(&format!("t{i:04}"), &d))
                    .collect();
                reply("200 OK", &[], &listing("a", tags))
            }
            "/acr/v1/a/_tags?n=1000&last=t0999" => {
                reply("200 OK", &[], &listing("a", vec![acr_entry("u", &d)]))
            }
            _ => reply("200 OK", &[], &listing("a", Vec::new())),
        }));
        let got = client(port).tag_digests("a").await.ok().flatten();
        let names: Vec<String> = got
            .unwrap_or_default()
            .into_iter()
            .map(|(t, _)| t)
            .collect();
        assert_eq!(names.len(), PAGE + 1);
        assert_eq!((names[0].as_str(), names[PAGE].as_str()), ("t0000", "u"));
    }

    /// A registry without the API answers in many ways, all `None`; an unknown repository is
    /// empty; real failures stay errors.
    #[tokio::test]
    async fn absent_api_unknown_repository_and_failures() {
        let unsupported = r#"{"errors":[{"code":"UNSUPPORTED","message":"no such endpoint"}]}"#;
        let unknown = r#"{"errors":[{"code":"NAME_UNKNOWN","message":"repository unknown"}]}"#;
        let (port, seen) = parent(Arc::new(move |r: &Req, _| {
            let repo = r.path.trim_start_matches("/acr/v1/").split('/').next();
            match repo.unwrap_or("") {
                "plain" => reply("404 Not Found", &[], "404 page not found"),
                "method" => reply("405 Method Not Allowed", &[], ""),
                "bad" => reply("400 Bad Request", &[], unsupported),
                "older" => reply("404 Not Found", &[], unsupported),
                "portal" => reply("200 OK", &[("Content-Type", "text/html")], "<html></html>"),
                "denied" => reply("403 Forbidden", &[], ""),
                "gone" => reply("404 Not Found", &[], unknown),
                "empty" => reply("200 OK", &[], r#"{"registry":"r","imageName":"empty"}"#),
                "broken" => reply("500 Internal Server Error", &[], ""),
                "later" if r.path.contains("last=") => reply("404 Not Found", &[], ""),
                "later" => {
                    let next = r#"</acr/v1/later/_tags?last=a>; rel="next""#;
                    let tags = vec![acr_entry("a", &digest('a'))];
                    reply("200 OK", &[("Link", next)], &listing("later", tags))
                }
                _ => reply("404 Not Found", &[], ""),
            }
        }));
        // A fresh client each: one that found the listing absent does not ask again.
        for absent in ["plain", "method", "bad", "older", "portal", "denied"] {
            assert_eq!(client(port).tag_digests(absent).await, Ok(None), "{absent}");
        }
        let c = client(port);
        let asked = || seen.lock().map(|s| s.len()).unwrap_or(0);
        assert_eq!(c.tag_digests("plain").await, Ok(None));
        let before = asked();
        assert_eq!(c.tag_digests("method").await, Ok(None));
        assert_eq!(asked(), before, "an absent listing was asked for again");
        let c = client(port);
        assert_eq!(c.tag_digests("gone").await, Ok(Some(Vec::new())));
        assert_eq!(c.tag_digests("empty").await, Ok(Some(Vec::new())));
        assert!(matches!(
            c.tag_digests("broken").await,
            Err(ParentError::Server(500, _))
        ));
        assert_eq!(c.tag_digests("later").await, Err(ParentError::NotFound));
        assert!(matches!(
            c.tag_digests("../x").await,
            Err(ParentError::Config(_))
        ));
    }

    /// A parent serving full pages forever ends with an error once the listing's bound over
    /// all pages is spent, long before the page limit.
    #[tokio::test]
    async fn an_endless_listing_ends_at_its_bound() {
        let d = digest('e');
        let asked = Arc::new(Mutex::new(0usize));
        let count = asked.clone();
        let (port, _) = parent(Arc::new(move |_: &Req, _| {
            let n = count.lock().map(|mut c| {
                *c += 1;
                *c
            });
            let n = n.unwrap_or(0);
            if n > 2_000 {
                return reply("500 Internal Server Error", &[], "bound not applied");
            }
            let tags = (0..PAGE)
                .map(|i| acr_entry(&format!("p{n:05}t{i:04}"), &d))
                .collect();
            let next = format!("</acr/v1/e/_tags?n=1000&last=p{n:05}>; rel=\"next\"");
            reply("200 OK", &[("Link", &next)], &listing("e", tags))
        }));
        let got = client(port).tag_digests("e").await;
        assert!(
            matches!(&got, Err(ParentError::Protocol(m)) if m.contains("tag listing of e")),
            "{got:?}"
        );
    }

    #[test]
    fn pages_parse_only_listings() {
        assert_eq!(
            parse_page(br#"{"imageName":"a","tags":null}"#),
            Some(Vec::new())
        );
        assert_eq!(parse_page(br#"{"tags":[1]}"#).map(|t| t.len()), Some(1));
        for not in [
            &br#"{"repositories":[]}"#[..],
            b"<html>",
            br#"{"tags":"x"}"#,
            b"[]",
        ] {
            assert_eq!(parse_page(not), None);
        }
        let url = after("http://h/acr/v1/a/_tags", "a b&c");
        assert_eq!(
            url.as_deref(),
            Ok("http://h/acr/v1/a/_tags?n=1000&last=a+b%26c")
        );
    }
}
