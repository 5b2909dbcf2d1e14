//! Self-test of the parent-registry harness: docker-registry (with and without htpasswd) and
//! the fault proxy that cuts, kills and revives the link to it.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::distribution::{push, push_blob, DockerRegistry};
use common::faultproxy::FaultProxy;
use common::oci::{self, Blob, OCI_LAYER, OCI_MANIFEST};
use reqwest::blocking::{Client, Response};

const MIB: u64 = 1024 * 1024;

/// A client without connection reuse, so every request through the proxy is a new connection.
fn fresh_client(timeout: Duration) -> Client {
    Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(timeout)
        .build()
        .unwrap_or_else(|e| panic!("client: {e}"))
}

/// Reads a body until EOF or error; returns the bytes and whether it ended cleanly.
fn read_body(mut r: Response) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match r.read(&mut buf) {
            Ok(0) => return (out, true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) => return (out, false),
        }
    }
}

fn status(c: &Client, url: &str, auth: Option<(&str, &str)>) -> u16 {
    let req = common::distribution::with_auth(c.get(url), auth);
    req.send()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .status()
        .as_u16()
}

#[test]
fn plain_push_get_and_restart() {
    let mut reg = DockerRegistry::start();
    let c = common::http();
    let img = oci::image("amd64", b"hello parent");
    reg.push("lib/hello", "v1", &img);

    let url = format!("{}/v2/lib/hello/manifests/v1", reg.url());
    let r = c
        .get(&url)
        .header("Accept", OCI_MANIFEST)
        .send()
        .unwrap_or_else(|e| panic!("GET manifest: {e}"));
    assert_eq!(r.status().as_u16(), 200);
    let digest = r.headers().get("docker-content-digest").cloned();
    assert_eq!(
        digest.as_ref().and_then(|v| v.to_str().ok()),
        Some(img.digest.as_str())
    );
    assert_eq!(r.bytes().map(|b| b.to_vec()).ok(), Some(img.bytes.clone()));
    // distribution 2.8 hides OCI manifests from clients that do not accept them.
    assert_eq!(status(&c, &url, None), 404, "OCI manifest without Accept");

    let layer = &img.blobs[1];
    let blob_url = format!("{}/v2/lib/hello/blobs/{}", reg.url(), layer.digest);
    let head = c
        .head(&blob_url)
        .send()
        .unwrap_or_else(|e| panic!("HEAD: {e}"));
    assert_eq!(head.status().as_u16(), 200);
    // reqwest reports a HEAD body as empty; the header carries the blob size.
    let length = head
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok());
    assert_eq!(length, Some(layer.bytes.len().to_string().as_str()));

    // Same port, same content after a restart; refused while stopped.
    let port = reg.port();
    reg.stop();
    assert!(
        c.get(format!("{}/v2/", reg.url())).send().is_err(),
        "stopped parent answered"
    );
    reg.restart();
    assert_eq!(reg.port(), port);
    let body = c.get(&blob_url).send().and_then(|r| r.bytes());
    assert_eq!(body.map(|b| b.to_vec()).ok(), Some(layer.bytes.clone()));
    assert!(reg
        .data_dir()
        .join("docker/registry/v2/repositories/lib/hello")
        .is_dir());
    assert!(reg.log().contains("listening on"), "log: {}", reg.log());

    // What sync code must cope with: no referrers API, tags/list without pagination.
    let referrers = format!("{}/v2/lib/hello/referrers/{}", reg.url(), img.digest);
    assert_eq!(status(&c, &referrers, None), 404, "referrers API appeared");
    reg.push("lib/hello", "v2", &img);
    let tags = c
        .get(format!("{}/v2/lib/hello/tags/list?n=1", reg.url()))
        .send()
        .unwrap_or_else(|e| panic!("tags/list: {e}"));
    assert!(
        tags.headers().get("link").is_none(),
        "tags/list paginates now"
    );
    let body: serde_json::Value = tags.json().unwrap_or_else(|e| panic!("tags json: {e}"));
    assert_eq!(body["tags"].as_array().map(|t| t.len()), Some(2), "{body}");
}

#[test]
fn htpasswd_basic_auth() {
    let reg = DockerRegistry::start_with_users(&[("alice", "s3cret"), ("bob", "hunter2")]);
    let c = common::http();
    let v2 = format!("{}/v2/", reg.url());
    let r = c
        .get(&v2)
        .send()
        .unwrap_or_else(|e| panic!("GET /v2/: {e}"));
    assert_eq!(r.status().as_u16(), 401);
    let challenge = r
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok());
    assert!(
        challenge.is_some_and(|v| v.starts_with("Basic")),
        "challenge: {challenge:?}"
    );
    assert_eq!(status(&c, &v2, Some(("alice", "s3cret"))), 200);
    assert_eq!(status(&c, &v2, Some(("bob", "hunter2"))), 200);
    assert_eq!(status(&c, &v2, Some(("alice", "hunter2"))), 401);
    assert_eq!(status(&c, &v2, Some(("mallory", "s3cret"))), 401);

    let img = oci::image("arm64", b"private");
    push(
        &c,
        &reg.url(),
        Some(("bob", "hunter2")),
        "team/app",
        "1.0",
        &img,
    );
    let manifest = format!("{}/v2/team/app/manifests/1.0", reg.url());
    assert_eq!(status(&c, &manifest, None), 401);
    let r = c
        .get(&manifest)
        .basic_auth("alice", Some("s3cret"))
        .header("Accept", OCI_MANIFEST)
        .send()
        .and_then(|r| r.bytes());
    assert_eq!(r.map(|b| b.to_vec()).ok(), Some(img.bytes.clone()));
    let r = c
        .post(format!("{}/v2/team/app/blobs/uploads/", reg.url()))
        .send()
        .unwrap_or_else(|e| panic!("anonymous upload: {e}"));
    assert_eq!(r.status().as_u16(), 401, "anonymous push allowed");
}

#[test]
fn fault_proxy_cuts_and_range_resume() {
    let reg = DockerRegistry::start();
    let total = 5 * MIB as usize;
    let blob = Blob::new(OCI_LAYER, oci::pseudo_random(total, 7));
    push_blob(&common::http(), &reg.url(), None, "big/blob", &blob);

    let proxy = FaultProxy::start(reg.addr());
    proxy.set_cut_every(Some(MIB));
    let c = fresh_client(Duration::from_secs(10));
    let url = format!("http://{}/v2/big/blob/blobs/{}", proxy.host(), blob.digest);
    let r = c
        .get(&url)
        .send()
        .unwrap_or_else(|e| panic!("GET via proxy: {e}"));
    assert_eq!(r.status().as_u16(), 200);
    let (mut got, complete) = read_body(r);
    assert!(
        !complete && got.len() < total,
        "1 MiB cut let {} bytes through",
        got.len()
    );
    assert!(
        got.len() as u64 > MIB - 1024,
        "lost data before the cut: {}",
        got.len()
    );

    for _ in 0..20 {
        if got.len() >= total {
            break;
        }
        let r = c
            .get(&url)
            .header("Range", format!("bytes={}-", got.len()))
            .send()
            .unwrap_or_else(|e| panic!("ranged GET from {}: {e}", got.len()));
        assert_eq!(r.status().as_u16(), 206);
        let range = r
            .headers()
            .get("content-range")
            .and_then(|v| v.to_str().ok());
        let want = format!("bytes {}-{}/{total}", got.len(), total - 1);
        assert_eq!(range, Some(want.as_str()));
        let (part, _) = read_body(r);
        assert!(!part.is_empty(), "no progress at {}", got.len());
        got.extend_from_slice(&part);
    }
    assert_eq!(got.len(), total);
    assert_eq!(oci::sha256(&got), blob.digest, "resumed blob is corrupt");
    let (down, cuts, conns) = (proxy.bytes_down(), proxy.cuts(), proxy.connections());
    assert!(
        cuts >= 5 && conns > cuts,
        "cuts {cuts}, connections {conns}"
    );
    assert!(down >= total as u64, "bytes_down {down}");
    assert!(
        down <= total as u64 + cuts * (MIB + 1024),
        "bytes_down {down}, cuts {cuts}"
    );
    assert!(
        down <= total as u64 + conns * 1024,
        "headers cost too much: {down}"
    );
    assert!(proxy.bytes_up() > 0);

    // Without a budget the same GET goes through in one piece.
    proxy.set_cut_every(None);
    proxy.reset_counters();
    let (body, complete) = read_body(c.get(&url).send().unwrap_or_else(|e| panic!("GET: {e}")));
    assert!(complete && body.len() == total);
    assert_eq!((proxy.cuts(), proxy.connections()), (0, 1));
}

#[test]
fn fault_proxy_down_and_up() {
    let reg = DockerRegistry::start();
    let proxy = FaultProxy::start(reg.addr());
    let c = fresh_client(Duration::from_secs(5));
    let v2 = format!("http://{}/v2/", proxy.host());
    assert_eq!(status(&c, &v2, None), 200);

    // An established keep-alive connection is cut when the link goes down.
    let mut raw = TcpStream::connect(proxy.addr()).unwrap_or_else(|e| panic!("connect: {e}"));
    raw.set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap_or_else(|e| panic!("timeout: {e}"));
    raw.write_all(b"GET /v2/ HTTP/1.1\r\nHost: parent\r\n\r\n")
        .unwrap_or_else(|e| panic!("write: {e}"));
    let mut buf = vec![0u8; 4096];
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n{}") {
        let n = raw.read(&mut buf).unwrap_or_else(|e| panic!("read: {e}"));
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&head));
        head.extend_from_slice(&buf[..n]);
    }
    assert!(head.starts_with(b"HTTP/1.1 200"));
    let started = Instant::now();
    proxy.set_down(true);
    let res = raw.read(&mut buf);
    assert!(
        matches!(res, Ok(0))
            || res.as_ref().is_err_and(|e| {
                !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
            }),
        "existing connection survived set_down: {res:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));

    let started = Instant::now();
    assert!(
        c.get(&v2).send().is_err(),
        "request went through a downed link"
    );
    assert!(started.elapsed() < Duration::from_secs(2), "down link hung");
    let deadline = Instant::now() + Duration::from_secs(2);
    while proxy.live_connections() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(proxy.live_connections(), 0, "connections outlived set_down");

    proxy.set_down(false);
    assert_eq!(status(&c, &v2, None), 200);
    assert!(proxy.connections() >= 4);
}

#[test]
fn fault_proxy_delay_and_prompt_drop() {
    let reg = DockerRegistry::start();
    let blob = Blob::new(OCI_LAYER, oci::pseudo_random(MIB as usize, 3));
    push_blob(&common::http(), &reg.url(), None, "slow/blob", &blob);
    let proxy = FaultProxy::start(reg.addr());
    proxy.set_delay(Some(Duration::from_millis(50)));
    let c = fresh_client(Duration::from_secs(10));
    let started = Instant::now();
    assert_eq!(
        status(&c, &format!("http://{}/v2/", proxy.host()), None),
        200
    );
    assert!(started.elapsed() >= Duration::from_millis(100), "no delay");

    // A transfer in progress (64 KiB per 50 ms) dies with the proxy, and the port closes.
    let url = format!("http://{}/v2/slow/blob/blobs/{}", proxy.host(), blob.digest);
    let reader =
        std::thread::spawn(move || c.get(&url).send().map(|r| read_body(r).1).unwrap_or(false));
    std::thread::sleep(Duration::from_millis(300));
    assert!(proxy.bytes_down() < MIB, "delay not applied");
    let addr = proxy.addr();
    let started = Instant::now();
    drop(proxy);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "drop took {:?}",
        started.elapsed()
    );
    let complete = reader.join().unwrap_or_else(|_| panic!("reader panicked"));
    assert!(!complete, "download survived the proxy");
    assert!(TcpStream::connect(addr).is_err(), "proxy port still open");
}
