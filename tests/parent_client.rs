//! The parent client against the real binary: the bearer flow with a sync token (tokens reused
//! per scope), paginated tags, manifests by tag and digest with verified digests, full and
//! ranged blobs, referrers, and each failure classified (wrong password, repository outside the
//! scope map, unreachable parent) without the password in any message.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{oci, Registry};
use connected_registry::sync::parent::{BlobStream, ParentClient, ParentError};

/// Repositories the sync token may read.
const SCOPE: &str = "p/*";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"))
}

/// An authenticated registry with a pull-only sync token on `p/*`: (registry, its password).
fn registry_with_sync_token() -> (Registry, String) {
    let reg = Registry::start_authenticated(&[]);
    let read = ["content/read", "metadata/read"];
    let mut args = vec![
        "scope-map",
        "create",
        "--name",
        "sync",
        "--repository",
        SCOPE,
    ];
    args.extend(read);
    reg.admin(&args);
    let t = reg.admin(&["token", "create", "--name", "sync", "--scope-map", "sync"]);
    let pw = t["credentials"]["passwords"][0]["value"].as_str();
    let pw = pw
        .unwrap_or_else(|| panic!("no password in {t}"))
        .to_owned();
    let deadline = Instant::now() + Duration::from_secs(15);
    let url = format!("{}/v2/", reg.url());
    let get = || {
        common::http()
            .get(&url)
            .basic_auth("sync", Some(&pw))
            .send()
    };
    while !get().is_ok_and(|r| r.status().is_success()) {
        assert!(Instant::now() < deadline, "sync token never became valid");
        std::thread::sleep(Duration::from_millis(100));
    }
    (reg, pw)
}

/// Pushes blobs and the manifest as the admin (Basic on every request).
fn push_as_admin(reg: &Registry, repo: &str, reference: &str, m: &oci::Manifest) {
    let (c, base, pw) = (common::http(), reg.url(), reg.admin_password());
    for b in &m.blobs {
        let url = format!("{base}/v2/{repo}/blobs/uploads/?digest={}", b.digest);
        let r = c
            .post(&url)
            .basic_auth("admin", Some(&pw))
            .body(b.bytes.clone())
            .send();
        let r = r.unwrap_or_else(|e| panic!("push blob: {e}"));
        assert_eq!(r.status().as_u16(), 201, "push blob: {:?}", r.text());
    }
    tag_as_admin(reg, &c, repo, reference, m, &pw);
}

fn tag_as_admin(
    reg: &Registry,
    c: &reqwest::blocking::Client,
    repo: &str,
    reference: &str,
    m: &oci::Manifest,
    pw: &str,
) {
    let url = format!("{}/v2/{repo}/manifests/{reference}", reg.url());
    let r = c.put(&url).basic_auth("admin", Some(pw));
    let r = r
        .header("Content-Type", m.media_type.clone())
        .body(m.bytes.clone())
        .send();
    let r = r.unwrap_or_else(|e| panic!("put manifest: {e}"));
    assert_eq!(r.status().as_u16(), 201, "put manifest: {:?}", r.text());
}

async fn drain(mut s: BlobStream) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(c) = s.chunk().await.unwrap_or_else(|e| panic!("chunk: {e}")) {
        out.extend_from_slice(&c);
    }
    out
}

/// Everything clients sent through a relay, one buffer per connection.
type Sent = Arc<Mutex<Vec<Arc<Mutex<Vec<u8>>>>>>;

/// A TCP relay to `127.0.0.1:upstream` that keeps what clients send (the server's access log is
/// Debug-only); returns its port.
fn relay(upstream: u16) -> (u16, Sent) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("relay: {e}"));
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    let sent: Sent = Arc::default();
    let all = sent.clone();
    std::thread::spawn(move || {
        for mut client in listener.incoming().flatten() {
            let Ok(mut server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                continue;
            };
            let buf = Arc::new(Mutex::new(Vec::new()));
            all.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(buf.clone());
            let (Ok(mut back), Ok(mut to_client)) = (server.try_clone(), client.try_clone()) else {
                continue;
            };
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut back, &mut to_client);
                let _ = to_client.shutdown(Shutdown::Both);
            });
            std::thread::spawn(move || {
                let mut b = [0u8; 16 * 1024];
                while let Ok(n @ 1..) = client.read(&mut b) {
                    buf.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .extend_from_slice(&b[..n]);
                    if server.write_all(&b[..n]).is_err() {
                        break;
                    }
                }
                let _ = server.shutdown(Shutdown::Write);
            });
        }
    });
    (port, sent)
}

/// How many requests through the relay started with `prefix` (e.g. `GET /acr/oauth2/token`).
fn count(sent: &Sent, prefix: &str) -> usize {
    let conns = sent.lock().unwrap_or_else(|p| p.into_inner()).clone();
    conns
        .iter()
        .map(|c| {
            let c = c.lock().unwrap_or_else(|p| p.into_inner());
            String::from_utf8_lossy(&c).matches(prefix).count()
        })
        .sum()
}

fn token_requests(sent: &Sent) -> usize {
    count(sent, "GET /acr/oauth2/token")
}

#[test]
fn pulls_everything_through_the_bearer_flow() {
    let (reg, pw) = registry_with_sync_token();
    let layer = oci::pseudo_random(300_000, 7);
    let img = oci::image_with_layers(vec![layer.clone()]);
    let arm = oci::image("arm64", b"arm");
    let idx = oci::index(&[(&img, "linux", "amd64"), (&arm, "linux", "arm64")]);
    push_as_admin(&reg, "p/app", &img.digest, &img);
    push_as_admin(&reg, "p/app", &arm.digest, &arm);
    push_as_admin(&reg, "p/app", "multi", &idx);
    let sig = oci::referrer(&img, "application/vnd.example.sig", b"signed");
    push_as_admin(&reg, "p/app", &sig.digest, &sig);
    push_as_admin(&reg, "p/many", "t0000", &img);
    let (c, admin) = (common::http(), reg.admin_password());
    for i in 1..1100 {
        tag_as_admin(&reg, &c, "p/many", &format!("t{i:04}"), &img, &admin);
    }

    let (port, sent) = relay(reg.port);
    let client = ParentClient::new(&format!("127.0.0.1:{port}"), "http", "sync", &pw, None)
        .unwrap_or_else(|e| panic!("client: {e}"));
    assert!(!format!("{client:?}").contains(&pw));
    let before = token_requests(&sent);
    runtime().block_on(async {
        client.ping().await.unwrap_or_else(|e| panic!("ping: {e}"));
        let after_ping = token_requests(&sent);
        assert_eq!(after_ping, before + 1, "ping takes one token");

        let m = client.manifest("p/app", "multi").await.unwrap().unwrap();
        assert_eq!(
            (m.digest.as_str(), m.bytes.as_ref()),
            (idx.digest.as_str(), &idx.bytes[..])
        );
        assert_eq!(m.media_type, oci::OCI_INDEX);
        let child = client
            .manifest("p/app", &img.digest)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (child.digest, child.media_type.as_str()),
            (img.digest.clone(), oci::OCI_MANIFEST)
        );
        let h = client
            .manifest_head("p/app", "multi")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (h.digest.as_str(), h.size),
            (idx.digest.as_str(), idx.bytes.len() as u64)
        );
        assert!(client.manifest("p/app", "nope").await.unwrap().is_none());
        assert!(client
            .manifest_head("p/app", "nope")
            .await
            .unwrap()
            .is_none());

        let d = &img.blobs[1].digest;
        let full = client.blob("p/app", d, 0, None).await.unwrap().unwrap();
        assert_eq!((full.start, full.total), (0, Some(layer.len() as u64)));
        assert_eq!(drain(full).await, img.blobs[1].bytes);
        let mid = img.blobs[1].bytes.len() as u64 / 2;
        let tail = client.blob("p/app", d, mid, None).await.unwrap().unwrap();
        assert_eq!(tail.start, mid, "the server honours Range");
        assert_eq!(drain(tail).await, &img.blobs[1].bytes[mid as usize..]);
        let part = client
            .blob("p/app", d, mid, Some(10))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            drain(part).await,
            &img.blobs[1].bytes[mid as usize..mid as usize + 10]
        );
        let size = client.blob_head("p/app", d).await.unwrap();
        assert_eq!(size, Some(img.blobs[1].bytes.len() as u64));
        let missing = format!("sha256:{}", "0".repeat(64));
        assert!(client
            .blob("p/app", &missing, 0, None)
            .await
            .unwrap()
            .is_none());
        assert_eq!(client.blob_head("p/app", &missing).await.unwrap(), None);

        let refs = client
            .referrers("p/app", &img.digest)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(refs.len(), 1, "{refs:?}");
        assert_eq!(refs[0]["digest"], sig.digest.as_str());
        assert_eq!(refs[0]["artifactType"], "application/vnd.example.sig");
        let mut tags = client.tags("p/app").await.unwrap();
        tags.sort();
        assert_eq!(tags, ["multi"]);
        assert_eq!(
            token_requests(&sent),
            after_ping + 1,
            "one token for p/app, reused"
        );

        let many = client.tags("p/many").await.unwrap();
        assert_eq!(many.len(), 1100);
        assert!(many.iter().any(|t| t == "t1099"));
        assert_eq!(token_requests(&sent), after_ping + 2);
        assert_eq!(
            client.tags("p/absent").await.unwrap_err(),
            ParentError::NotFound
        );
    });
    let pages = count(&sent, "GET /v2/p/many/tags/list");
    assert!(pages >= 2, "tags were not paginated ({pages} pages)");
}

#[test]
fn failures_are_classified_without_the_password() {
    let (reg, pw) = registry_with_sync_token();
    push_as_admin(&reg, "q/x", "v1", &oci::image("amd64", b"q"));
    let rt = runtime();
    let mut errors = Vec::new();

    let client = ParentClient::new(&reg.host(), "http", "sync", &pw, None).unwrap();
    // Our server issues a token without the repository, then refuses with 403.
    let e = rt.block_on(client.manifest("q/x", "v1")).unwrap_err();
    assert!(matches!(e, ParentError::Denied(_)), "{e:?}");
    assert_eq!((e.status_code(), e.is_transient()), ("ParentDenied", false));
    errors.push(e);

    let wrong = format!("{pw}-wrong");
    let bad = ParentClient::new(&reg.host(), "http", "sync", &wrong, None).unwrap();
    for e in [
        rt.block_on(bad.ping()).unwrap_err(),
        rt.block_on(bad.tags("p/app")).unwrap_err(),
    ] {
        assert!(matches!(e, ParentError::Unauthorized(_)), "{e:?}");
        assert_eq!(e.status_code(), "ParentUnauthorized");
        assert!(!e.to_string().contains(&wrong), "{e}");
        errors.push(e);
    }

    let port = common::free_port();
    let gone = ParentClient::new(&format!("127.0.0.1:{port}"), "http", "sync", &pw, None).unwrap();
    let e = rt.block_on(gone.ping()).unwrap_err();
    assert!(matches!(e, ParentError::Unreachable(_)), "{e:?}");
    assert!(e.is_transient());
    assert_eq!(e.status_code(), "ParentUnreachable");
    errors.push(e);

    for e in &errors {
        assert!(
            !e.to_string().contains(&pw) && !format!("{e:?}").contains(&pw),
            "{e}"
        );
    }
    assert!(!reg.log().contains(&pw));
}

#[test]
fn reads_an_open_parent_anonymously() {
    let reg = Registry::start();
    let img = oci::image("amd64", b"open");
    oci::push(&common::http(), &reg.url(), "open/app", "v1", &img);
    let client = ParentClient::new(&reg.host(), "HTTP", "", "", None).unwrap();
    runtime().block_on(async {
        client.ping().await.unwrap();
        assert_eq!(client.tags("open/app").await.unwrap(), ["v1"]);
        let m = client.manifest("open/app", "v1").await.unwrap().unwrap();
        assert_eq!(m.digest, img.digest);
        let refs = client.referrers("open/app", &img.digest).await.unwrap();
        assert_eq!(refs, Some(Vec::new()));
    });
}
