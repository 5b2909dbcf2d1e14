//! Unit tests: header grammar, token cache, errors, and the auth flow against a scripted server.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::auth::{parse_challenges, parse_token, scope_key, TokenCache};
use super::error::{clip, error_detail};
use super::request::{content_range, link_next, media_type, ContentRange};
use super::*;

const PW: &str = "s3cret-Pa55word";

#[test]
fn challenges_parse_robustly() {
    let c = parse_challenges(
        r#"Bearer realm="https://auth.example/token",service="reg.example",scope="repository:a/b:pull,push""#,
    );
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].scheme, "bearer");
    assert_eq!(c[0].param("realm"), Some("https://auth.example/token"));
    assert_eq!(c[0].param("SERVICE"), Some("reg.example"));
    assert_eq!(c[0].param("scope"), Some("repository:a/b:pull,push"));

    let c = parse_challenges(
        r#"BASIC realm="a, \"b\"", Bearer realm=x , error = "insufficient_scope""#,
    );
    assert_eq!(c.len(), 2);
    assert_eq!(
        (c[0].scheme.as_str(), c[0].param("realm")),
        ("basic", Some(r#"a, "b""#))
    );
    assert_eq!(c[1].param("realm"), Some("x"));
    assert_eq!(c[1].param("error"), Some("insufficient_scope"));

    let c = parse_challenges("Basic");
    assert_eq!((c.len(), c[0].params.len()), (1, 0));
    assert!(parse_challenges("").is_empty());
    assert!(parse_challenges("=x, ,,").is_empty());
    let c = parse_challenges(r#"bearer scope="repository:a:pull repository:b:pull""#);
    assert_eq!(
        c[0].param("scope"),
        Some("repository:a:pull repository:b:pull")
    );
    assert_eq!(
        scope_key(&[
            "repository:b:pull repository:a:pull".into(),
            "repository:a:pull".into()
        ]),
        "repository:a:pull repository:b:pull"
    );
}

#[test]
fn link_headers_parse() {
    let rel = r#"</v2/a/tags/list?n=2&last=b>; rel="next""#;
    assert_eq!(
        link_next(rel).as_deref(),
        Some("/v2/a/tags/list?n=2&last=b")
    );
    let abs = r#"<https://r.example/v2/a/tags/list?last=x,y>; rel="prev", <https://r.example/v2/a/tags/list?last=z>;rel=next"#;
    assert_eq!(
        link_next(abs).as_deref(),
        Some("https://r.example/v2/a/tags/list?last=z")
    );
    let multi = r#"<x>; title="a, b; rel=next"; rel="last next""#;
    assert_eq!(link_next(multi).as_deref(), Some("x"));
    assert_eq!(link_next(r#"<x>; rel="prev""#), None);
    assert_eq!(link_next("garbage"), None);
    assert_eq!(link_next(r#"<>; rel="next""#), None);
}

#[test]
fn content_ranges_parse() {
    let r = |first, last, total| Some(ContentRange { first, last, total });
    assert_eq!(content_range("bytes 10-19/100"), r(10, 19, Some(100)));
    assert_eq!(content_range("Bytes 0-0/*"), r(0, 0, None));
    assert_eq!(content_range(" bytes  5-9/10 "), r(5, 9, Some(10)));
    for bad in [
        "bytes 5-4/10",
        "bytes 0-10/10",
        "bytes -1-2/3",
        "items 0-1/2",
        "bytes 0-1",
        "bytes */10",
        "",
    ] {
        assert_eq!(content_range(bad), None, "{bad}");
    }
}

#[test]
fn token_cache_expires_before_the_token() {
    let (mut c, now) = (TokenCache::default(), Instant::now());
    c.insert("k", "t1".into(), Duration::from_secs(60), now);
    assert_eq!(
        c.get("k", now + Duration::from_secs(47)).as_deref(),
        Some("t1")
    );
    assert_eq!(c.get("k", now + Duration::from_secs(49)), None);
    assert_eq!(c.get("other", now), None);
    c.insert("k", "t2".into(), Duration::from_secs(3600), now);
    assert!(c.get("k", now + Duration::from_secs(3560)).is_some());
    assert!(c.get("k", now + Duration::from_secs(3571)).is_none());
    c.forget("k", "t1");
    assert!(c.get("k", now).is_some());
    c.forget("k", "t2");
    assert!(c.get("k", now).is_none());
    c.insert("z", "t".into(), Duration::ZERO, now);
    assert!(c.get("z", now).is_none());
}

#[test]
fn token_responses_parse() {
    let (t, l) = parse_token(br#"{"token":"a","expires_in":300}"#, 0).unwrap();
    assert_eq!((t.as_str(), l), ("a", Duration::from_secs(300)));
    let (t, l) = parse_token(br#"{"token":"","access_token":"b"}"#, 0).unwrap();
    assert_eq!((t.as_str(), l), ("b", Duration::from_secs(60)));
    let body = br#"{"access_token":"c","expires_in":300,"issued_at":"2026-01-01T00:00:00Z"}"#;
    let issued = 1_767_225_600;
    assert_eq!(
        parse_token(body, issued + 100).unwrap().1,
        Duration::from_secs(200)
    );
    assert_eq!(
        parse_token(body, issued - 50).unwrap().1,
        Duration::from_secs(300)
    );
    assert_eq!(
        parse_token(body, issued + 9999).unwrap().1,
        Duration::from_secs(300)
    );
    assert!(matches!(
        parse_token(b"{}", 0),
        Err(ParentError::Protocol(_))
    ));
    assert!(matches!(
        parse_token(b"<html>", 0),
        Err(ParentError::Protocol(_))
    ));
}

#[test]
fn errors_map_and_stay_short() {
    let body = br#"{"errors":[{"code":"DENIED","message":"no"}]}"#;
    assert_eq!(
        ParentError::from_status(403, body),
        ParentError::Denied("DENIED: no".into())
    );
    assert_eq!(ParentError::from_status(404, b""), ParentError::NotFound);
    let e = ParentError::from_status(503, b"");
    assert_eq!(
        (e.status_code(), e.is_transient()),
        ("ParentServerError", true)
    );
    let e = ParentError::from_status(429, b"slow down");
    assert_eq!(e, ParentError::Server(429, "slow down".into()));
    let e = ParentError::from_status(418, b"");
    assert_eq!(
        (e.status_code(), e.is_transient()),
        ("ParentProtocolError", false)
    );
    assert_eq!(
        ParentError::from_status(401, b"").status_code(),
        "ParentUnauthorized"
    );
    assert!(error_detail("x".repeat(5000).as_bytes()).chars().count() <= 201);
    assert_eq!(clip("a\nb"), "a?b");
    let e = ParentError::Unauthorized(format!("echo {PW}")).redact(PW);
    assert!(!e.to_string().contains(PW));
    assert_eq!(
        ParentError::Config(String::new()).status_code(),
        "ParentConfigError"
    );
}

#[test]
fn media_types_fall_back_to_the_json() {
    let idx = br#"{"schemaVersion":2,"manifests":[]}"#;
    assert_eq!(
        media_type(
            "application/vnd.oci.image.index.v1+json; charset=utf-8",
            b""
        )
        .unwrap(),
        media_types::OCI_INDEX
    );
    assert_eq!(
        media_type("application/json", idx).unwrap(),
        media_types::OCI_INDEX
    );
    let typed = br#"{"mediaType":"application/vnd.docker.distribution.manifest.v2+json"}"#;
    assert_eq!(media_type("", typed).unwrap(), media_types::DOCKER_MANIFEST);
    assert!(media_type("", b"{}").is_err());
}

#[test]
fn construction_validates_and_hides_the_password() {
    let c = ParentClient::new("parent.example:8443", "HTTPS", "sync", PW, None).unwrap();
    assert_eq!(c.base_url(), "https://parent.example:8443");
    let dbg = format!("{c:?}");
    assert!(dbg.contains("sync") && !dbg.contains(PW), "{dbg}");
    for (endpoint, protocol) in [
        ("", "https"),
        ("a/b", "https"),
        ("u:p@h", "http"),
        ("h", "ftp"),
    ] {
        let e = ParentClient::new(endpoint, protocol, "u", PW, None).unwrap_err();
        assert_eq!(
            e.status_code(),
            "ParentConfigError",
            "{endpoint} {protocol}"
        );
    }
    let missing = ParentClient::new(
        "h",
        "https",
        "u",
        PW,
        Some(Path::new("/nonexistent/ca.pem")),
    );
    assert!(matches!(missing, Err(ParentError::Config(_))));
    fn send<T: Send>(_: &T) {}
    send(&c.blob("a", "sha256:00", 0, None));
    send(&c.manifest("a", "latest"));
    send(&c.tags("a"));
}

/// What the scripted server saw: request line and lowercased headers.
#[derive(Debug, Clone)]
struct Seen {
    line: String,
    headers: Vec<(String, String)>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

type Handler = dyn Fn(&Seen) -> Vec<u8> + Send + Sync;

/// A one-request-per-connection HTTP server on a thread; returns (port, log).
fn serve(handler: Arc<Handler>) -> (u16, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let log = Arc::new(Mutex::new(Vec::new()));
    let seen = log.clone();
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            let mut buf = Vec::new();
            let mut b = [0u8; 4096];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut b) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&b[..n]),
                }
            }
            let text = String::from_utf8_lossy(&buf).to_string();
            let mut lines = text.split("\r\n");
            let line = lines.next().unwrap_or("").to_owned();
            let headers = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
                .collect();
            let req = Seen { line, headers };
            seen.lock().unwrap().push(req.clone());
            let _ = s.write_all(&handler(&req));
        }
    });
    (port, log)
}

fn reply(status: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 {status}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    r.push_str("\r\n");
    let mut r = r.into_bytes();
    r.extend_from_slice(body);
    r
}

fn client(port: u16) -> ParentClient {
    ParentClient::new(&format!("127.0.0.1:{port}"), "http", "sync", PW, None).unwrap()
}

#[tokio::test]
async fn basic_challenge_is_answered_then_sent_first() {
    let basic = format!(
        "Basic {}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("sync:{PW}")
        )
    );
    let (port, log) = serve(Arc::new(move |r: &Seen| match r.header("authorization") {
        Some(a) if a == basic => reply("200 OK", &[], br#"{"name":"a","tags":null}"#),
        _ => reply(
            "401 Unauthorized",
            &[("WWW-Authenticate", r#"Basic realm="r""#)],
            b"",
        ),
    }));
    let c = client(port);
    assert_eq!(c.tags("a").await.unwrap(), Vec::<String>::new());
    assert_eq!(c.tags("a").await.unwrap(), Vec::<String>::new());
    let log = log.lock().unwrap().clone();
    assert_eq!(log.len(), 3, "{log:?}");
    assert!(log[2]
        .header("user-agent")
        .unwrap()
        .starts_with("connected-registry/"));
    let bad =
        ParentClient::new(&format!("127.0.0.1:{port}"), "http", "sync", "wrong", None).unwrap();
    let e = bad.ping().await.unwrap_err();
    assert_eq!(e.status_code(), "ParentUnauthorized");
}

#[tokio::test]
async fn bearer_tokens_are_cached_per_scope_and_redirects_drop_credentials() {
    let (other, other_log) = serve(Arc::new(|_: &Seen| reply("200 OK", &[], b"blobdata")));
    let (port, log) = serve(Arc::new(move |r: &Seen| {
        let path = r.line.split(' ').nth(1).unwrap_or("");
        if path.starts_with("/token?") {
            return reply("200 OK", &[], br#"{"token":"tok","expires_in":300}"#);
        }
        if r.header("authorization") != Some("Bearer tok") {
            let ch = format!(
                r#"Bearer realm="http://127.0.0.1:{port_}/token",service="svc",scope="repository:a:pull""#,
                port_ = r
                    .header("host")
                    .and_then(|h| h.rsplit(':').next())
                    .unwrap_or("")
            );
            return reply(
                "401 Unauthorized",
                &[("WWW-Authenticate", &ch)],
                br#"{"errors":[{"code":"UNAUTHORIZED","message":"auth"}]}"#,
            );
        }
        let loc = format!("http://127.0.0.1:{other}/storage/blob");
        reply("307 Temporary Redirect", &[("Location", &loc)], b"")
    }));
    let c = client(port);
    let digest = format!("sha256:{}", "a".repeat(64));
    for _ in 0..2 {
        let mut s = c.blob("a", &digest, 0, None).await.unwrap().unwrap();
        assert_eq!((s.start, s.total), (0, Some(8)));
        assert_eq!(s.chunk().await.unwrap().as_deref(), Some(&b"blobdata"[..]));
    }
    let log = log.lock().unwrap().clone();
    let tokens: Vec<&Seen> = log.iter().filter(|s| s.line.contains("/token?")).collect();
    assert_eq!(tokens.len(), 1, "{log:?}");
    assert!(
        tokens[0].line.contains("service=svc")
            && tokens[0].line.contains("scope=repository%3Aa%3Apull")
    );
    assert!(tokens[0]
        .header("authorization")
        .unwrap()
        .starts_with("Basic "));
    let other_log = other_log.lock().unwrap().clone();
    assert_eq!(other_log.len(), 2);
    assert!(
        other_log
            .iter()
            .all(|s| s.header("authorization").is_none()),
        "{other_log:?}"
    );
}

#[tokio::test]
async fn ranges_digests_and_failures() {
    let body = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;
    let good = Digest::sha256_of(body).to_string();
    let g = good.clone();
    let (port, _) = serve(Arc::new(move |r: &Seen| {
        let path = r.line.split(' ').nth(1).unwrap_or("");
        match path {
            p if p.contains("/blobs/") && r.header("range") == Some("bytes=5-") => reply(
                "206 Partial Content",
                &[("Content-Range", "bytes 5-7/8")],
                b"abc",
            ),
            p if p.contains("/blobs/") => reply("200 OK", &[], b"01234abc"),
            "/v2/a/manifests/good" => reply(
                "200 OK",
                &[
                    ("Docker-Content-Digest", &g),
                    ("Content-Type", "application/json"),
                ],
                body,
            ),
            "/v2/a/manifests/liar" => reply(
                "200 OK",
                &[(
                    "Docker-Content-Digest",
                    &format!("sha256:{}", "0".repeat(64)),
                )],
                body,
            ),
            "/v2/a/tags/list?n=1000" => reply(
                "200 OK",
                &[(
                    "Link",
                    "<http://evil.example/v2/a/tags/list?n=1>; rel=\"next\"",
                )],
                br#"{"tags":["x"]}"#,
            ),
            "/v2/b/tags/list?n=1000" => reply(
                "500 Internal Server Error",
                &[],
                format!(r#"{{"errors":[{{"code":"UNKNOWN","message":"{PW}"}}]}}"#).as_bytes(),
            ),
            _ => reply("404 Not Found", &[], b""),
        }
    }));
    let c = client(port);
    let d = format!("sha256:{}", "b".repeat(64));
    let s = c.blob("a", &d, 5, None).await.unwrap().unwrap();
    assert_eq!((s.start, s.total), (5, Some(8)));
    let s = c.blob("a", &d, 2, Some(2)).await.unwrap().unwrap();
    assert_eq!(
        (s.start, s.total),
        (0, Some(8)),
        "Range ignored: caller skips"
    );
    let m = c.manifest("a", "good").await.unwrap().unwrap();
    assert_eq!(
        (m.digest.as_str(), m.media_type.as_str()),
        (good.as_str(), media_types::OCI_INDEX)
    );
    let h = c.manifest_head("a", "good").await.unwrap().unwrap();
    assert_eq!((h.digest, h.size), (good.clone(), body.len() as u64));
    assert!(matches!(
        c.manifest("a", "liar").await,
        Err(ParentError::Protocol(_))
    ));
    assert!(matches!(c.manifest("a", &d).await, Ok(None)));
    assert!(matches!(c.referrers("a", &d).await, Ok(None)));
    assert!(matches!(c.tags("a").await, Err(ParentError::Protocol(_))));
    let e = c.tags("b").await.unwrap_err();
    assert!(
        matches!(e, ParentError::Server(500, _)) && !e.to_string().contains(PW),
        "{e}"
    );
    assert_eq!(c.tags("c").await.unwrap_err(), ParentError::NotFound);
    assert!(matches!(c.tags("../x").await, Err(ParentError::Config(_))));
}

#[test]
fn credentials_go_to_a_plain_realm_only_on_the_parents_host() {
    use super::auth::may_send_credentials;
    let url = |s: &str| reqwest::Url::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
    let plain = url("http://parent.example:5000");
    let tls = url("https://parent.example");
    for (base, realm, allowed) in [
        (&plain, "http://parent.example:5000/token", true),
        (&plain, "http://PARENT.example:5000/auth/token?x=1", true),
        (&plain, "https://auth.example/token", true),
        (&plain, "http://auth.example:5000/token", false),
        (&plain, "http://parent.example:5001/token", false),
        (&plain, "http://parent.example/token", false),
        (&tls, "https://auth.example/token", true),
        (&tls, "https://parent.example/token", true),
        (&tls, "http://parent.example/token", false),
        (&tls, "http://parent.example:443/token", false),
    ] {
        assert_eq!(
            may_send_credentials(base, &url(realm)),
            allowed,
            "{base} {realm}"
        );
    }
}

#[tokio::test]
async fn a_plain_realm_on_another_host_gets_no_credentials() {
    let (realm, realm_log) = serve(Arc::new(|_: &Seen| {
        reply("200 OK", &[], br#"{"token":"tok","expires_in":300}"#)
    }));
    let (port, log) = serve(Arc::new(move |_: &Seen| {
        let ch = format!(r#"Bearer realm="http://127.0.0.1:{realm}/token",service="svc""#);
        reply("401 Unauthorized", &[("WWW-Authenticate", &ch)], b"")
    }));
    let e = client(port).tags("a").await.unwrap_err();
    let text = e.to_string();
    assert!(
        matches!(e, ParentError::Protocol(_)) && text.contains(&format!("127.0.0.1:{realm}/token")),
        "{text}"
    );
    let realm_log = realm_log.lock().unwrap().clone();
    assert!(
        realm_log
            .iter()
            .all(|s| s.header("authorization").is_none()),
        "{realm_log:?}"
    );
    let log = log.lock().unwrap().clone();
    assert!(
        log.iter().all(|s| s.header("authorization").is_none()),
        "{log:?}"
    );
}

#[tokio::test]
async fn redirect_loops_and_chains_end_with_an_error_quickly() {
    let (port, log) = serve(Arc::new(|r: &Seen| {
        let path = r.line.split(' ').nth(1).unwrap_or("");
        let to = match path {
            p if p.contains("/v2/a/blobs/") => "/loop/1".to_owned(),
            "/loop/1" => "/loop/2".to_owned(),
            "/loop/2" => "/loop/1".to_owned(),
            p if p.contains("/v2/b/blobs/") => "/chain/0".to_owned(),
            p => match p
                .strip_prefix("/chain/")
                .and_then(|n| n.parse::<u32>().ok())
            {
                Some(n) => format!("/chain/{}", n + 1),
                None => return reply("404 Not Found", &[], b""),
            },
        };
        reply("302 Found", &[("Location", &to)], b"")
    }));
    let c = client(port);
    let d = format!("sha256:{}", "c".repeat(64));
    let started = Instant::now();
    let e = c.blob("a", &d, 0, None).await.unwrap_err();
    assert!(
        matches!(&e, ParentError::Protocol(m) if m.contains("redirect loop")),
        "{e}"
    );
    let asked = log.lock().unwrap().len();
    assert_eq!(asked, 3, "the loop was followed past its first repeat");
    let e = c.blob("b", &d, 0, None).await.unwrap_err();
    assert!(
        matches!(&e, ParentError::Protocol(m) if m.contains("more than 5 redirects")),
        "{e}"
    );
    assert_eq!(
        log.lock().unwrap().len() - asked,
        6,
        "1 request + 5 redirects"
    );
    assert!(!e.is_transient());
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn tag_lists_are_bounded_in_pages_names_and_bytes() {
    let (port, log) = serve(Arc::new(|r: &Seen| {
        let path = r.line.split(' ').nth(1).unwrap_or("");
        let page: usize = path
            .split("last=")
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        // Past what the limits allow, a 500: a client without them fails fast, not never.
        let limit = if path.starts_with("/v2/many/") {
            1001
        } else {
            5
        };
        if page >= limit {
            return reply("500 Internal Server Error", &[], b"limits not applied");
        }
        let link = format!(
            "</v2/{{}}/tags/list?n=1000&last={}>; rel=\"next\"",
            page + 1
        );
        // `many`: 1000 names a page, forever; `huge`: 15 MiB names a page, forever.
        let (repo, tags): (&str, Vec<String>) = if path.starts_with("/v2/many/") {
            ("many", (0..1000).map(|i| format!("p{page}-{i}")).collect())
        } else {
            ("huge", vec![format!("{page}{}", "x".repeat(15 << 20))])
        };
        let body = serde_json::json!({ "name": repo, "tags": tags }).to_string();
        reply(
            "200 OK",
            &[("Link", &link.replace("{}", repo))],
            body.as_bytes(),
        )
    }));
    let c = client(port);
    let e = c.tags("many").await.unwrap_err();
    assert!(
        matches!(&e, ParentError::Protocol(m) if m.contains("more than 1000000 entries")),
        "{e}"
    );
    assert_eq!(log.lock().unwrap().len(), 1001);
    let e = c.tags("huge").await.unwrap_err();
    assert!(
        matches!(&e, ParentError::Protocol(m) if m.contains("larger than 67108864 bytes in all")),
        "{e}"
    );
    assert_eq!(log.lock().unwrap().len(), 1001 + 5);
}

#[tokio::test]
async fn a_tag_list_page_streaming_forever_is_cut_off() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let sent = Arc::new(Mutex::new(0usize));
    let total = sent.clone();
    std::thread::spawn(move || {
        let Some(Ok(mut s)) = listener.incoming().next() else {
            return;
        };
        let mut b = [0u8; 4096];
        let _ = s.read(&mut b);
        let head = "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{\"tags\":[\"";
        let names = "name-name-name\",\"".repeat(4096);
        let mut out = s.write_all(head.as_bytes());
        while out.is_ok() {
            out = s.write_all(names.as_bytes());
            *total.lock().unwrap() += names.len();
        }
    });
    let started = Instant::now();
    let e = client(port).tags("a").await.unwrap_err();
    assert!(
        matches!(&e, ParentError::Protocol(m) if m.contains("larger than 16777216 bytes")),
        "{e}"
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    // The client stopped reading at the page limit (plus what the sockets buffer).
    std::thread::sleep(Duration::from_millis(200));
    let sent = *sent.lock().unwrap();
    assert!(sent < 2 * LISTING_MAX, "{sent} bytes were taken");
}

#[test]
fn a_redirect_from_https_to_plain_http_is_refused() {
    let u = |s: &str| reqwest::Url::parse(s).unwrap_or_else(|e| panic!("{e}"));
    let https = [u("https://parent.example/v2/a/blobs/x")];
    assert!(super::request::downgrades(
        &https,
        &u("http://cdn.example/blob")
    ));
    assert!(!super::request::downgrades(
        &https,
        &u("https://cdn.example/blob")
    ));
    let plain = [u("http://parent.example/v2/a/blobs/x")];
    assert!(!super::request::downgrades(
        &plain,
        &u("http://cdn.example/blob")
    ));
    let via = [u("https://parent.example/x"), u("https://cdn.example/y")];
    assert!(super::request::downgrades(&via, &u("http://cdn.example/z")));
}

#[test]
fn a_page_with_more_strings_than_entries_left_is_refused_before_parsing() {
    use super::request::{json_strings, ListingBudget};
    assert_eq!(json_strings(br#"{"name":"a","tags":["x","y\"z"]}"#), 5);
    assert_eq!(json_strings(br#"["a\\","b"]"#), 2);
    let budget = ListingBudget::new("tag list of a".into(), 1 << 30, 1000);
    let mut page = String::from(r#"{"name":"a","tags":["#);
    page.push_str(&vec!["\"t\""; 1000].join(","));
    page.push_str("]}");
    assert!(budget.room_for_strings(page.as_bytes()).is_ok());
    // Four million one-letter names in one 16 MiB page: refused without a String made.
    let huge = format!(
        r#"{{"name":"a","tags":[{}]}}"#,
        vec!["\"t\""; 4_000_000].join(",")
    );
    let e = budget.room_for_strings(huge.as_bytes()).unwrap_err();
    assert!(e.to_string().contains("more than 1000 entries"), "{e}");
}
