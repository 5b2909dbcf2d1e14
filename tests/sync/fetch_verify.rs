//! Fetch-through never hands a client bytes that do not match their digest: a stand-in parent
//! serves a blob whose bytes were altered (same length); every answer the child gives for it is
//! an error or a cut body, and nothing of it is stored. A correct blob through the same path
//! arrives whole.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{self, oci, Registry};
use crate::{child, policy_for, status};

const REPO: &str = "fv/app";
/// Large enough that the child relays it in many pieces while downloading.
const BLOB_LEN: usize = 3 << 20;
/// Requests for the corrupted blob.
const TRIES: usize = 20;

/// A parent speaking just enough HTTP/1.1: `GET /v2/`, and the blobs it was given (any other
/// path is 404). One request per connection.
struct StandIn {
    port: u16,
    down: Arc<AtomicBool>,
}

impl StandIn {
    fn start(blobs: HashMap<String, Vec<u8>>) -> Self {
        let listener =
            TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("stand-in bind: {e}"));
        let port = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("stand-in addr: {e}"))
            .port();
        let down = Arc::new(AtomicBool::new(false));
        let (blobs, flag) = (Arc::new(blobs), down.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (blobs, flag) = (blobs.clone(), flag.clone());
                std::thread::spawn(move || answer(conn, &blobs, &flag));
            }
        });
        StandIn { port, down }
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

/// Reads one request head and answers it, then closes the connection.
fn answer(conn: TcpStream, blobs: &HashMap<String, Vec<u8>>, down: &AtomicBool) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(&conn);
    let mut first = String::new();
    if reader.read_line(&mut first).is_err() {
        return;
    }
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) if line.trim().is_empty() => break,
            Ok(_) => {}
        }
    }
    let mut parts = first.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    let (code, body, digest) = route(&path, blobs, down);
    let mut head = format!(
        "HTTP/1.1 {code}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    match &digest {
        Some(d) => head.push_str(&format!(
            "Content-Type: application/octet-stream\r\nDocker-Content-Digest: {d}\r\n\r\n"
        )),
        None => head.push_str("Content-Type: application/json\r\n\r\n"),
    }
    let mut w = &conn;
    if w.write_all(head.as_bytes()).is_err() || method == "HEAD" {
        return;
    }
    let _ = w.write_all(&body);
    let _ = w.flush();
}

/// Status line, body and (for a blob) its digest for `path`.
fn route(
    path: &str,
    blobs: &HashMap<String, Vec<u8>>,
    down: &AtomicBool,
) -> (&'static str, Vec<u8>, Option<String>) {
    if down.load(Ordering::Relaxed) {
        return ("503 Service Unavailable", b"{}".to_vec(), None);
    }
    if path == "/v2/" {
        return ("200 OK", b"{}".to_vec(), None);
    }
    let prefix = format!("/v2/{REPO}/blobs/");
    let found = path
        .strip_prefix(&prefix)
        .and_then(|d| blobs.get(d).map(|b| (d, b)));
    match found {
        Some((d, b)) => ("200 OK", b.clone(), Some(d.to_owned())),
        None => {
            let e = br#"{"errors":[{"code":"NAME_UNKNOWN","message":"unknown"}]}"#;
            ("404 Not Found", e.to_vec(), None)
        }
    }
}

/// What one GET of a blob at the child gave: status and, when the body arrived whole, the
/// body.
fn get_blob(base: &str, digest: &str) -> (u16, Option<Vec<u8>>) {
    let url = format!("{base}/v2/{REPO}/blobs/{digest}");
    // A fresh client per request: a fresh connection, with a bound on the time.
    let client = reqwest::blocking::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap_or_else(|e| panic!("client: {e}"));
    let Ok(r) = client.get(&url).send() else {
        return (0, None);
    };
    let code = r.status().as_u16();
    (code, r.bytes().ok().map(|b| b.to_vec()))
}

/// True when a file named after `hex` lies anywhere under `dir`.
fn holds_file(dir: &Path, hex: &str) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|e| {
        let p = e.path();
        if p.is_dir() {
            holds_file(&p, hex)
        } else {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.contains(hex))
        }
    })
}

/// The child, once its sync service is up (one sync pass ended).
fn child_of(parent: &StandIn) -> Registry {
    // Continuous sync is slow (once an hour): only fetch-through asks for the blobs.
    let policy = policy_for(&[REPO], "").replace("\"1s\"", "\"1h\"");
    let reg = child(&parent.host(), "unused", &policy, &[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while status(&reg)["syncPasses"].as_u64().unwrap_or(0) < 1 {
        assert!(Instant::now() < deadline, "first sync pass never ended");
        std::thread::sleep(Duration::from_millis(50));
    }
    reg
}

#[test]
fn a_blob_that_does_not_match_its_digest_never_reaches_a_client_whole() {
    let good = oci::pseudo_random(BLOB_LEN, 41);
    let good_digest = oci::sha256(&good);
    let wanted = oci::pseudo_random(BLOB_LEN, 42);
    let bad_digest = oci::sha256(&wanted);
    // Same length as the blob the digest names, a few bytes flipped.
    let mut bad = wanted.clone();
    for i in [0, BLOB_LEN / 2, BLOB_LEN - 1] {
        bad[i] ^= 0x5a;
    }
    let blobs = HashMap::from([(good_digest.clone(), good), (bad_digest.clone(), bad)]);
    let parent = StandIn::start(blobs);
    let reg = child_of(&parent);
    let base = reg.url();

    // Positive control: a correct blob arrives whole and verified.
    let (code, body) = get_blob(&base, &good_digest);
    let sha = body.as_deref().map(oci::sha256);
    assert_eq!(
        (code, sha.as_deref()),
        (200, Some(good_digest.as_str())),
        "the correct blob did not arrive whole:\n{}",
        crate::tail(&reg.log(), 40)
    );

    // The corrupted blob: an error status or a cut body, never a whole 200.
    let mut outcomes = Vec::new();
    for i in 0..TRIES {
        let (code, body) = get_blob(&base, &bad_digest);
        let whole = body.as_ref().map(Vec::len);
        assert!(
            !(code == 200 && whole == Some(BLOB_LEN)),
            "try {i}: a blob that does not match its digest was served whole (earlier: {outcomes:?})"
        );
        outcomes.push((code, whole));
    }

    // The relay path was taken (a 200 whose body was cut), not only the answer after failure.
    assert!(
        outcomes.contains(&(200, None)),
        "no answer was relayed while downloading: {outcomes:?}"
    );
    // Nothing of it was stored: with the parent down the child does not know it.
    parent.down.store(true, Ordering::Relaxed);
    let url = format!("{base}/v2/{REPO}/blobs/{bad_digest}");
    let head = common::http()
        .head(&url)
        .send()
        .map(|r| r.status().as_u16())
        .unwrap_or_else(|e| panic!("HEAD {url}: {e}"));
    assert_eq!(head, 404, "HEAD {url} after the bad downloads");
    let hex = bad_digest.trim_start_matches("sha256:");
    let deadline = Instant::now() + Duration::from_secs(10);
    // A download still running when the last client gave up ends (and is discarded) shortly.
    while holds_file(&reg.data, hex) {
        assert!(
            Instant::now() < deadline,
            "the data directory holds the bad blob"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The good blob was stored, so the check above can see a stored blob.
    let good_hex = good_digest.trim_start_matches("sha256:");
    assert!(
        holds_file(&reg.data, good_hex),
        "the correct blob was not stored"
    );
}
