//! Bounded resources: slow and greedy clients meet the protocol's errors (429 with
//! `Retry-After`, 408, 413, 431) instead of starving others, idle upload sessions hold no file
//! descriptors, and the registry's memory stays under a stated bound throughout.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use reqwest::blocking::Client;

use crate::common::{self, oci};

/// Peak resident memory the registry may reach in these tests (a debug build).
const MEMORY_BOUND_KIB: u64 = 96 * 1024;

/// Starts a registry with a `[limits]` table.
fn registry_with(limits: &str) -> common::Registry {
    let tmp = tempfile::TempDir::new().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let config = tmp.path().join("limits.toml");
    std::fs::write(&config, format!("[limits]\n{limits}"))
        .unwrap_or_else(|e| panic!("config: {e}"));
    let data = tmp.path().join("data");
    let config = config.display().to_string();
    common::Registry::start_at(tmp, data, &["--config", &config])
}

/// An HTTP client whose connections come from `local` (another loopback address: another
/// client as the registry counts them).
fn client_from(local: [u8; 4]) -> Client {
    Client::builder()
        .local_address(IpAddr::from(local))
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap_or_else(|e| panic!("client: {e}"))
}

/// A raw connection from `local` to the registry.
fn connect_from(local: [u8; 4], port: u16) -> TcpStream {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    let stream = rt
        .block_on(async {
            let s = tokio::net::TcpSocket::new_v4()?;
            s.bind(SocketAddr::from((local, 0)))?;
            s.connect(SocketAddr::from(([127, 0, 0, 1], port))).await
        })
        .and_then(|t| t.into_std())
        .unwrap_or_else(|e| panic!("connect from {local:?}: {e}"));
    stream
        .set_nonblocking(false)
        .unwrap_or_else(|e| panic!("{e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap_or_else(|e| panic!("{e}"));
    // A server that stops reading must not hang the sender.
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap_or_else(|e| panic!("{e}"));
    stream
}

/// Everything the server sends until it closes or goes quiet (the read timeout).
fn read_answer(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        if out.len() > 1 << 20 {
            break;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A field of `/proc/<pid>/status` in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("status of {pid}: {e}"));
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in the status of {pid}"))
}

fn open_descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or_else(|e| panic!("fds of {pid}: {e}"))
}

/// Lowers the registry's descriptor limit, as a small gateway's might be.
fn limit_descriptors(pid: u32, n: u32) {
    let prlimit = common::require("prlimit");
    common::run_ok(
        std::process::Command::new(prlimit).args([
            "--pid",
            &pid.to_string(),
            &format!("--nofile={n}:{n}"),
        ]),
        Duration::from_secs(10),
    );
}

fn assert_memory_bounded(reg: &common::Registry) {
    let peak = status_kib(reg.pid(), "VmHWM:");
    assert!(
        peak < MEMORY_BOUND_KIB,
        "peak RSS {peak} KiB is over the bound of {MEMORY_BOUND_KIB} KiB"
    );
}

/// Starts a session and sends it one byte; returns its location.
fn idle_session(c: &Client, base: &str, repo: &str) -> reqwest::blocking::Response {
    let r = c
        .post(format!("{base}/v2/{repo}/blobs/uploads/"))
        .send()
        .unwrap_or_else(|e| panic!("POST: {e}"));
    if r.status() != 202 {
        return r;
    }
    let loc = r.headers()["location"]
        .to_str()
        .unwrap_or_else(|e| panic!("{e}"))
        .to_owned();
    let p = c
        .patch(&loc)
        .header("Content-Type", "application/octet-stream")
        .body(vec![b'x'])
        .send()
        .unwrap_or_else(|e| panic!("PATCH: {e}"));
    assert_eq!(p.status(), 202, "PATCH {loc}");
    p
}

/// A 429 in the registry's error format, with `Retry-After`, whose message says `why`.
fn assert_too_many(r: reqwest::blocking::Response, why: &str) {
    assert_eq!(r.status(), 429);
    assert!(
        r.headers().contains_key("retry-after"),
        "no Retry-After: {:?}",
        r.headers()
    );
    let body: serde_json::Value = r.json().unwrap_or_default();
    assert_eq!(body["errors"][0]["code"], "TOOMANYREQUESTS", "{body}");
    let msg = body["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(msg.contains(why), "{msg:?} should say {why:?}");
}

#[test]
fn thousands_of_idle_upload_sessions_hold_no_descriptors_and_meet_their_caps() {
    let mut reg = registry_with(
        "upload_sessions = 1100\nupload_sessions_per_client = 700\n\
         upload_sessions_per_repository = 900\n",
    );
    let base = reg.url();
    let c = common::http();
    let image = oci::image("amd64", b"held");
    oci::push(&c, &base, "keep/app", "v1", &image);
    // 300 descriptors: far fewer than the sessions about to be opened.
    limit_descriptors(reg.pid(), 300);
    let before = open_descriptors(reg.pid());

    let one = client_from([127, 0, 0, 1]);
    let mut kept = Vec::new();
    for i in 0..700 {
        let r = idle_session(&one, &base, "big/repo");
        assert_eq!(r.status(), 202, "session {i}");
        if i < 2 {
            let loc = r.headers()["location"].to_str().unwrap_or_default();
            kept.push(loc[loc.find("/v2/").unwrap_or(0)..].to_owned());
        }
    }
    assert!(
        open_descriptors(reg.pid()) < before + 40,
        "{} descriptors open with 700 idle sessions (from {before})",
        open_descriptors(reg.pid())
    );
    assert_too_many(idle_session(&one, &base, "big/repo"), "from this client");

    let two = client_from([127, 0, 0, 2]);
    for i in 0..200 {
        assert_eq!(idle_session(&two, &base, "big/repo").status(), 202, "{i}");
    }
    assert_too_many(idle_session(&two, &base, "big/repo"), "in this repository");
    for i in 0..200 {
        assert_eq!(idle_session(&two, &base, "other/repo").status(), 202, "{i}");
    }
    assert_too_many(idle_session(&two, &base, "other/repo"), "in this registry");

    // Everyone else is still served: pulls, a one-request push, the API.
    let three = client_from([127, 0, 0, 3]);
    let m = three
        .get(format!("{base}/v2/keep/app/manifests/v1"))
        .header("Accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(m.status(), 200);
    let blob = oci::Blob::new("application/octet-stream", b"one request".to_vec());
    oci::push_blob(&three, &base, "keep/app", &blob);
    assert_memory_bounded(&reg);

    // A cancelled session makes room for a new one.
    let d = one
        .delete(format!("{base}{}", kept[0]))
        .send()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(d.status(), 204);
    assert_eq!(idle_session(&two, &base, "other/repo").status(), 202);

    // After a restart the sessions are there, still cost nothing, and finish.
    reg.restart();
    limit_descriptors(reg.pid(), 300);
    let base = reg.url();
    assert_too_many(
        idle_session(&three, &base, "third/repo"),
        "in this registry",
    );
    // A session from before the restart takes another byte and finishes.
    let more = one
        .patch(format!("{base}{}", kept[1]))
        .body(b"y".to_vec())
        .send()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(more.status(), 202);
    assert_eq!(more.headers()["range"], "0-1");
    let digest = oci::sha256(b"xy");
    let done = one
        .put(format!("{base}{}?digest={digest}", kept[1]))
        .send()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(done.status(), 201);
    assert_eq!(idle_session(&three, &base, "third/repo").status(), 202);
    assert!(open_descriptors(reg.pid()) < 80);
    assert_memory_bounded(&reg);
}

#[test]
fn slow_and_greedy_clients_get_protocol_errors_and_do_not_stop_a_pull() {
    let reg = registry_with(
        "connections = 40\nconnections_per_client = 20\nuploads = 3\nuploads_per_client = 2\n\
         header_timeout = \"2s\"\nbody_timeout = \"2s\"\nkeep_alive = \"2s\"\n\
         blob_size = 8388608\n",
    );
    let base = reg.url();
    let port = reg.port;
    let c = common::http();
    let layer = oci::pseudo_random(4 << 20, 7);
    let image = oci::image_with_layers(vec![layer.clone()]);
    oci::push(&c, &base, "slow/app", "v1", &image);
    let layer_digest = oci::sha256(&layer);

    // Twenty connections from one client that never finish their headers.
    let mut slow: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut s = connect_from([127, 0, 0, 2], port);
            s.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n")
                .unwrap_or_else(|e| panic!("{e}"));
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    // The same client's next connection is over its cap: 429, Retry-After, closed.
    let mut extra = connect_from([127, 0, 0, 2], port);
    extra
        .write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let answer = read_answer(&mut extra);
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 1"),
        "{answer}"
    );
    assert!(answer.contains("TOOMANYREQUESTS"), "{answer}");

    // Meanwhile another client pulls a whole layer.
    let pulled = client_from([127, 0, 0, 1])
        .get(format!("{base}/v2/slow/app/blobs/{layer_digest}"))
        .send()
        .and_then(|r| r.bytes())
        .unwrap_or_else(|e| panic!("pull during the slow clients: {e}"));
    assert_eq!(oci::sha256(&pulled), layer_digest);

    // Twenty more slow connections from a third client fill the registry: then even a
    // well-behaved client is told to come back, not left hanging.
    let mut more: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut s = connect_from([127, 0, 0, 3], port);
            s.write_all(b"GET /v2/ HTTP/1.1\r\n")
                .unwrap_or_else(|e| panic!("{e}"));
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let r = client_from([127, 0, 0, 1])
        .get(format!("{base}/v2/"))
        .send()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_too_many(r, "connections in all");

    // The header timeout answers the slow ones with 408 and frees their places.
    let started = Instant::now();
    let timed_out = read_answer(&mut slow[0]);
    assert!(timed_out.starts_with("HTTP/1.1 408"), "{timed_out:?}");
    assert!(started.elapsed() < Duration::from_secs(15));
    slow.clear();
    more.clear();
    std::thread::sleep(Duration::from_millis(500));
    let ok = client_from([127, 0, 0, 1])
        .get(format!("{base}/v2/"))
        .send()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ok.status(), 200);

    idle_keep_alive_connections_close(port);
    slow_body_times_out_and_keeps_the_session(&base, port);
    greedy_uploads_meet_their_cap(&base, port);
    endless_bodies_are_refused(&base, port);
    over_long_headers_get_431(port);
    assert_memory_bounded(&reg);
}

/// Starts a session from `local` and returns its path.
fn session_path(c: &Client, base: &str, repo: &str) -> String {
    let r = c
        .post(format!("{base}/v2/{repo}/blobs/uploads/"))
        .send()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status(), 202);
    let loc = r.headers()["location"].to_str().unwrap_or_default();
    loc.find("/v2/")
        .map(|i| loc[i..].to_owned())
        .unwrap_or_else(|| panic!("odd location {loc}"))
}

/// A body that stalls gets 408 after the body timeout; the session is as it was.
fn slow_body_times_out_and_keeps_the_session(base: &str, port: u16) {
    let c = client_from([127, 0, 0, 4]);
    let path = session_path(&c, base, "slow/body");
    let mut s = connect_from([127, 0, 0, 4], port);
    write!(
        s,
        "PATCH {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: 1048576\r\n\r\n0123456789"
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let answer = read_answer(&mut s);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("BLOB_UPLOAD_INVALID"), "{answer}");
    let status = c
        .get(format!("{base}{path}"))
        .send()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(status.status(), 204);
    assert_eq!(
        status.headers()["range"],
        "0-0",
        "the stalled chunk was rolled back"
    );
}

/// An idle keep-alive connection is closed after the keep-alive time.
fn idle_keep_alive_connections_close(port: u16) {
    let mut s = connect_from([127, 0, 0, 8], port);
    s.write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).unwrap_or_else(|e| panic!("{e}"));
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let started = Instant::now();
    let rest = read_answer(&mut s);
    assert!(rest.is_empty(), "{rest:?}");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(1) && waited < Duration::from_secs(10),
        "closed after {waited:?}"
    );
}

/// Holds an upload in progress from `local`: a chunk that has sent 3 of its 100 bytes.
fn held_upload(c: &Client, base: &str, local: [u8; 4], port: u16) -> TcpStream {
    let path = session_path(c, base, "greedy/app");
    let mut s = connect_from(local, port);
    write!(
        s,
        "PATCH {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc"
    )
    .unwrap_or_else(|e| panic!("{e}"));
    s
}

/// A client sending more uploads at once than its cap gets 429 for the extra one, and so does
/// anyone once the uploads in progress reach the cap over all clients.
fn greedy_uploads_meet_their_cap(base: &str, port: u16) {
    let c = client_from([127, 0, 0, 5]);
    let mut held: Vec<TcpStream> = (0..2)
        .map(|_| held_upload(&c, base, [127, 0, 0, 5], port))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let patch = |c: &Client| {
        let path = session_path(c, base, "greedy/app");
        c.patch(format!("{base}{path}"))
            .body(b"abc".to_vec())
            .send()
            .unwrap_or_else(|e| panic!("{e}"))
    };
    assert_too_many(patch(&c), "uploads in progress from this client");
    let other = client_from([127, 0, 0, 9]);
    held.push(held_upload(&other, base, [127, 0, 0, 9], port));
    std::thread::sleep(Duration::from_millis(300));
    assert_too_many(
        patch(&client_from([127, 0, 0, 10])),
        "uploads in progress in all",
    );
    held.clear();
    // Places come back when the stalled chunks end (408 after the body timeout).
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(patch(&other).status(), 202);
}

/// Bodies that never end meet 413 (a manifest, a blob past the size limit, a token form) and
/// the connection closes soon after, rather than the registry reading forever; the sender
/// gives up after 20 s.
fn endless_bodies_are_refused(base: &str, port: u16) {
    let c = client_from([127, 0, 0, 6]);
    let blob_path = session_path(&c, base, "endless/app");
    for (method, path) in [
        ("PUT", "/v2/endless/app/manifests/v1".to_owned()),
        ("PATCH", blob_path),
        ("POST", "/oauth2/token".to_owned()),
    ] {
        let mut s = connect_from([127, 0, 0, 6], port);
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: x\r\n\
             Content-Type: application/vnd.oci.image.manifest.v1+json\r\n\
             Transfer-Encoding: chunked\r\n\r\n"
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let chunk = format!("10000\r\n{}\r\n", "a".repeat(0x10000));
        let started = Instant::now();
        let mut cut = false;
        while started.elapsed() < Duration::from_secs(20) {
            if s.write_all(chunk.as_bytes()).is_err() {
                cut = true;
                break;
            }
        }
        assert!(
            cut,
            "{method} {path}: the registry was still reading after 20 s"
        );
        let answer = read_answer(&mut s);
        assert!(
            answer.is_empty()
                || answer.starts_with("HTTP/1.1 413") && answer.contains("SIZE_INVALID"),
            "{method} {path}: {answer:?}"
        );
    }
}

/// Headers past the size limit (128 KiB) or the count limit (96) get 431.
fn over_long_headers_get_431(port: u16) {
    let many: String = (0..120).map(|i| format!("X-H{i}: v\r\n")).collect();
    let long = format!("X-Long: {}\r\n", "y".repeat(200 * 1024));
    for extra in [long, many] {
        let mut s = connect_from([127, 0, 0, 7], port);
        let _ = write!(s, "GET /v2/ HTTP/1.1\r\nHost: x\r\n{extra}\r\n");
        let answer = read_answer(&mut s);
        assert!(answer.starts_with("HTTP/1.1 431"), "{answer:?}");
    }
}
