//! Notifications from the real binary to a small receiver of the test's own: distribution's
//! envelope, ACR's pattern filter, custom headers, and delivery that survives the receiver being
//! down and the registry restarting meanwhile (every event, once or more, in order).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{self, free_port, oci, Registry};

const V1: &str = "application/vnd.docker.distribution.events.v1+json";
const V2: &str = "application/vnd.docker.distribution.events.v2+json";

/// One POST as received.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    headers: HashMap<String, String>,
    body: Value,
}

type Log = Arc<Mutex<Vec<Received>>>;

/// An HTTP receiver on a fixed loopback port that answers 200 to every request and records it;
/// it can be stopped and started again on the same port.
struct Receiver {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Receiver {
    fn start(port: u16, log: Log) -> Receiver {
        let listener = bind(port);
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    return;
                }
                if let Ok(stream) = conn {
                    if let Some(r) = serve(stream) {
                        log.lock().unwrap().push(r);
                    }
                }
            }
        });
        Receiver {
            port,
            stop,
            thread: Some(thread),
        }
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
    }
}

fn bind(port: u16) -> TcpListener {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match TcpListener::bind(("127.0.0.1", port)) {
            Ok(l) => return l,
            Err(e) if Instant::now() > deadline => panic!("bind {port}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Reads one request (headers and a Content-Length body) and answers 200.
fn serve(stream: TcpStream) -> Option<Received> {
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let path = line.split_whitespace().nth(1)?.to_owned();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
    }
    let len: usize = headers.get("content-length")?.parse().ok()?;
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    let mut out = stream;
    out.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .ok()?;
    Some(Received {
        path,
        headers,
        body: serde_json::from_slice(&body).ok()?,
    })
}

/// Waits (at most 60 s) until `ok` holds; fails with `what` and the registry's log.
fn wait_until(reg: &Registry, what: &str, ok: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ok() {
        if Instant::now() > deadline {
            panic!("{what}: not within 60 s; registry log:\n{}", reg.log());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The events one endpoint (by path) received, in arrival order.
fn events(log: &Log, path: &str) -> Vec<Value> {
    log.lock()
        .unwrap()
        .iter()
        .filter(|r| r.path == path)
        .flat_map(|r| r.body["events"].as_array().cloned().unwrap_or_default())
        .collect()
}

/// `(action, repository, tag)` of each event.
fn summary(events: &[Value]) -> Vec<(String, String, String)> {
    events
        .iter()
        .map(|e| {
            let s = |v: &Value| v.as_str().unwrap_or("").to_owned();
            (
                s(&e["action"]),
                s(&e["target"]["repository"]),
                s(&e["target"]["tag"]),
            )
        })
        .collect()
}

/// The log sequence number in an event's id (`<instance>-<seq>`).
fn seq(e: &Value) -> i64 {
    let id = e["id"].as_str().unwrap_or_else(|| panic!("no id: {e}"));
    let (_, n) = id.rsplit_once('-').unwrap_or_else(|| panic!("id {id}"));
    n.parse().unwrap_or_else(|_| panic!("id {id}"))
}

fn start_with_policy(text: &str) -> Registry {
    let tmp = tempfile::TempDir::new().unwrap();
    let data = tmp.path().join("data");
    let policy = tmp.path().join("policy.toml");
    std::fs::write(&policy, text).unwrap();
    let policy = policy.display().to_string();
    Registry::start_at(tmp, data, &["--config", &policy])
}

fn delete(c: &reqwest::blocking::Client, url: String) {
    let r = c.delete(url).send().unwrap();
    assert_eq!(r.status().as_u16(), 202);
}

fn t(action: &str, repo: &str, tag: &str) -> (String, String, String) {
    (action.into(), repo.into(), tag.into())
}

#[test]
fn notifications_reach_the_receiver_in_distributions_envelope_filtered_by_pattern() {
    let port = free_port();
    let log: Log = Arc::default();
    let _receiver = Receiver::start(port, log.clone());
    let reg = start_with_policy(&format!(
        r#"
        [[notifications]]
        name = "all"
        url = "http://127.0.0.1:{port}/all"
        headers = {{ Authorization = "Bearer s3cret", X-Site = "plant-4" }}
        timeout = "PT5S"

        [[notifications]]
        name = "narrow"
        url = "http://127.0.0.1:{port}/narrow"
        patterns = ["app:v*:push"]
        "#
    ));
    wait_until(&reg, "both endpoints started", || {
        reg.log().matches("notifications: new endpoint").count() == 2
    });

    let c = common::http();
    let base = reg.url();
    let a = oci::image("amd64", b"first\n");
    let b = oci::image("arm64", b"second\n");
    oci::push(&c, &base, "app", "v1", &a);
    let r = oci::put_manifest(&c, &base, "app", "v2", &a);
    assert_eq!(r.status().as_u16(), 201, "re-tag");
    oci::push(&c, &base, "app", "latest", &b);
    oci::push(&c, &base, "other", "v1", &b);
    delete(&c, format!("{base}/v2/app/manifests/v2"));
    delete(&c, format!("{base}/v2/app/manifests/{}", b.digest));

    let manifest_deleted = |e: &Value| {
        e["action"] == "delete"
            && e["target"]["digest"] == b.digest.as_str()
            && e["target"]["tag"].is_null()
    };
    wait_until(&reg, "the manifest delete at 'all'", || {
        events(&log, "/all").iter().any(manifest_deleted)
    });
    let all = events(&log, "/all");
    let got = summary(&all);
    assert_eq!(
        got[..5],
        [
            t("push", "app", "v1"),
            t("push", "app", "v2"),
            t("push", "app", "latest"),
            t("push", "other", "v1"),
            t("delete", "app", "v2"),
        ],
        "{all:#?}"
    );
    assert!(manifest_deleted(&all[all.len() - 1]), "{all:#?}");
    let seqs: Vec<i64> = all.iter().map(seq).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "in log order: {seqs:?}"
    );

    // Distribution's fields, from the push of `a` by tag.
    let first = &all[0];
    assert_eq!(first["target"]["digest"], a.digest.as_str());
    assert_eq!(first["target"]["mediaType"], a.media_type.as_str());
    assert_eq!(first["target"]["size"], a.bytes.len());
    assert_eq!(first["target"]["length"], a.bytes.len());
    let ts = first["timestamp"].as_str().unwrap_or_default();
    assert!(
        ts.len() == 20 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T',
        "{ts}"
    );
    assert!(
        first["source"]["instanceID"]
            .as_str()
            .is_some_and(|s| !s.is_empty()),
        "{first}"
    );
    assert_eq!(
        all[4]["target"]["digest"],
        a.digest.as_str(),
        "a tag delete names what it pointed at"
    );

    for r in log.lock().unwrap().iter().filter(|r| r.path == "/all") {
        assert_eq!(r.headers.get("content-type").map(String::as_str), Some(V1));
        assert_eq!(
            r.headers.get("authorization").map(String::as_str),
            Some("Bearer s3cret")
        );
        assert_eq!(r.headers.get("x-site").map(String::as_str), Some("plant-4"));
    }

    // The narrow endpoint gets only pushes of app's v* tags, and no custom header.
    wait_until(&reg, "two events at 'narrow'", || {
        events(&log, "/narrow").len() >= 2
    });
    std::thread::sleep(Duration::from_secs(1));
    let narrow = events(&log, "/narrow");
    assert_eq!(
        summary(&narrow),
        [t("push", "app", "v1"), t("push", "app", "v2")]
    );
    assert_eq!(
        narrow[0]["id"], all[0]["id"],
        "one id per change, whatever the endpoint"
    );
    for r in log.lock().unwrap().iter().filter(|r| r.path == "/narrow") {
        assert!(!r.headers.contains_key("authorization"));
        assert_eq!(r.headers.get("content-type").map(String::as_str), Some(V1));
    }
}

#[test]
fn every_event_arrives_in_order_after_the_receiver_was_down_across_a_restart() {
    let port = free_port();
    let log: Log = Arc::default();
    let mut receiver = Receiver::start(port, log.clone());
    let mut reg = start_with_policy(&format!(
        r#"
        [[notifications]]
        url = "http://127.0.0.1:{port}/hook"
        content_type = "{V2}"
        timeout = "PT2S"
        max_backoff = "PT1S"
        "#
    ));
    wait_until(&reg, "the endpoint started", || {
        reg.log().contains("notifications: new endpoint")
    });
    let c = common::http();
    let images: Vec<_> = (0..5)
        .map(|i| oci::image("amd64", format!("image {i}\n").as_bytes()))
        .collect();
    oci::push(&c, &reg.url(), "app", "t0", &images[0]);
    wait_until(&reg, "t0 delivered", || events(&log, "/hook").len() == 1);

    // The receiver goes down; changes pile up; the registry is killed and started again.
    receiver.stop();
    for (i, m) in images.iter().enumerate().take(3).skip(1) {
        oci::push(&c, &reg.url(), "app", &format!("t{i}"), m);
    }
    wait_until(&reg, "a failed delivery", || {
        reg.log().contains("notifications: endpoint failing")
    });
    reg.restart();
    wait_until(&reg, "the endpoint resumed", || {
        reg.log().contains("notifications: resuming")
    });
    for (i, m) in images.iter().enumerate().skip(3) {
        oci::push(&c, &reg.url(), "app", &format!("t{i}"), m);
    }
    std::thread::sleep(Duration::from_secs(2));
    let _receiver = Receiver::start(port, log.clone());

    let tags = |evs: &[Value]| -> Vec<String> {
        let mut seen = Vec::new();
        for e in evs {
            let tag = e["target"]["tag"].as_str().unwrap_or_default().to_owned();
            if !seen.contains(&tag) {
                seen.push(tag);
            }
        }
        seen
    };
    let want: Vec<String> = (0..5).map(|i| format!("t{i}")).collect();
    wait_until(&reg, "every push delivered", || {
        tags(&events(&log, "/hook")) == want
    });
    let evs = events(&log, "/hook");
    // Duplicates are allowed (at least once); first deliveries follow the log's order.
    let mut firsts: Vec<i64> = Vec::new();
    for n in evs.iter().map(seq) {
        if !firsts.contains(&n) {
            firsts.push(n);
        }
    }
    assert!(firsts.windows(2).all(|w| w[0] < w[1]), "{firsts:?}");
    for e in &evs {
        assert_eq!(e["action"], "push");
        let tag = e["target"]["tag"].as_str().unwrap_or_default();
        let i: usize = tag.trim_start_matches('t').parse().unwrap();
        assert_eq!(e["target"]["digest"], images[i].digest.as_str(), "{tag}");
    }
    for r in log.lock().unwrap().iter() {
        assert_eq!(r.headers.get("content-type").map(String::as_str), Some(V2));
        let n = r.body["events"].as_array().map_or(0, Vec::len);
        assert!((1..=32).contains(&n), "batched: {n}");
    }
    wait_until(&reg, "the recovery logged", || {
        reg.log().contains("notifications: endpoint recovered")
    });
}
