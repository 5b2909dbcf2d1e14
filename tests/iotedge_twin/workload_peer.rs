//! The workload API stand-in checks and answers as the workload API does (reference:
//! iotedge-protocols.md §2.2, §2.3, "Test peers" B), seen over its real Unix socket by a raw
//! HTTP/1.1 client, so that what the registry's client meets is what the daemon would send.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use serde_json::{json, Value};
use tempfile::TempDir;

use crate::common::pki::Ca;
use crate::common::workload::{Fault, Workload, WorkloadConfig};

const MODULE: &str = "connected-registry";
const KEY: &[u8] = b"the module's primary key, raw bytes";
const V: &str = "api-version=2019-01-30";

/// A stand-in for `module` on a fresh socket; its CA; the tempdir keeping the socket.
fn peer(module: &str, lifetime: Duration) -> (Workload, Arc<Ca>, TempDir) {
    let dir = TempDir::new().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let ca = Arc::new(Ca::new("edge CA"));
    // A bundle of two certificates, as a gateway with a parent's root would serve.
    let bundle = format!("{}{}", ca.0.pem(), Ca::new("parent root").0.pem());
    let w = Workload::start(WorkloadConfig {
        socket: dir.path().join("workload.sock"),
        module_id: module.to_owned(),
        module_key: KEY.to_vec(),
        trust_bundle_pem: bundle,
        ca: ca.clone(),
        server_cert_lifetime: lifetime,
    });
    (w, ca, dir)
}

fn connect(w: &Workload) -> UnixStream {
    let path = w.uri().strip_prefix("unix://").map(str::to_owned);
    let s = UnixStream::connect(path.unwrap_or_else(|| panic!("uri {}", w.uri())))
        .unwrap_or_else(|e| panic!("connect: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(15))).ok();
    s.set_write_timeout(Some(Duration::from_secs(15))).ok();
    s
}

/// One request on its own connection; `None` when the connection closes with no reply.
/// `content_type` None sends no Content-Type (as edgelet-client does).
fn call(
    w: &Workload,
    method: &str,
    target: &str,
    ct: Option<&str>,
    body: &str,
) -> Option<(u16, String, Value)> {
    let mut s = connect(w);
    let ct = ct
        .map(|c| format!("content-type: {c}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {target} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n{ct}content-length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes())
        .unwrap_or_else(|e| panic!("write: {e}"));
    let mut out = Vec::new();
    s.read_to_end(&mut out)
        .unwrap_or_else(|e| panic!("read (timeout?): {e}"));
    if out.is_empty() {
        return None;
    }
    Some(parse_response(&String::from_utf8_lossy(&out)))
}

/// (status, lower-cased head, JSON body) of one complete response.
fn parse_response(text: &str) -> (u16, String, Value) {
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no head: {text}"));
    let status = head.get(9..12).and_then(|s| s.parse().ok());
    let status = status.unwrap_or_else(|| panic!("status line: {head}"));
    let body = serde_json::from_str(body).unwrap_or_else(|e| panic!("body {body:?}: {e}"));
    (status, head.to_ascii_lowercase(), body)
}

fn sign_path(module: &str) -> String {
    format!("/modules/{module}/genid/637492/sign?{V}")
}

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

fn hmac(data: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(KEY).unwrap_or_else(|e| panic!("{e}"));
    mac.update(data);
    b64(&mac.finalize().into_bytes())
}

#[test]
fn sign_is_hmac_sha256_of_the_decoded_data_with_the_module_key() {
    let (w, _, _dir) = peer(MODULE, Duration::from_secs(60));
    let data = "hub.example/devices/dev/modules/connected-registry\n1700000000";
    let body = json!({"keyId": "primary", "algo": "HMACSHA256", "data": b64(data.as_bytes())});
    for ct in [None, Some("application/json; charset=utf-8")] {
        let r = call(&w, "POST", &sign_path(MODULE), ct, &body.to_string());
        let (status, head, v) = r.unwrap_or_else(|| panic!("no reply"));
        assert_eq!(status, 200, "{v}");
        assert!(head.contains("content-type: application/json"), "{head}");
        assert_eq!(v, json!({"digest": hmac(data.as_bytes())}));
    }
    // The module id is percent-decoded, as the real route does.
    let r = call(
        &w,
        "POST",
        &sign_path("connected%2Dregistry"),
        None,
        &body.to_string(),
    );
    assert_eq!(r.map(|r| r.0), Some(200));
    let st = w.stats();
    assert_eq!(st.signs, 3);
    assert_eq!(st.sign_data, vec![data.to_owned(); 3]);
    assert_eq!(st.api_versions, vec!["2019-01-30"; 3]);
    assert!(st.rejected.is_empty(), "{:?}", st.rejected);
}

#[test]
fn api_version_is_mandatory_and_checked_before_the_path() {
    let (w, _, _dir) = peer(MODULE, Duration::from_secs(60));
    let get = |t: &str| call(&w, "GET", t, None, "").unwrap_or_else(|| panic!("no reply {t}"));
    let (status, head, v) = get("/trust-bundle");
    assert_eq!(
        (status, v),
        (400, json!({"message": "api-version not specified"}))
    );
    assert!(head.contains("content-type: application/json"), "{head}");
    assert_eq!(
        get("/no/such/path").0,
        400,
        "api-version comes before routing"
    );
    let (status, _, v) = get("/trust-bundle?api-version=2099-01-01");
    assert_eq!(
        (status, v),
        (
            400,
            json!({"message": "invalid api-version \"2099-01-01\""})
        )
    );
    for ver in [
        "2018-06-28",
        "2019-01-30",
        "2019-10-22",
        "2019-11-05",
        "2020-07-07",
        "2021-12-07",
        "2022-08-03",
    ] {
        assert_eq!(
            get(&format!("/trust-bundle?api-version={ver}")).0,
            200,
            "{ver}"
        );
    }
    let (status, _, v) = get(&format!("/no/such/path?{V}"));
    assert_eq!((status, v), (404, json!({"message": "not found"})));
    // An empty generation id matches no route.
    let r = call(
        &w,
        "POST",
        &format!("/modules/{MODULE}/genid//sign?{V}"),
        None,
        "{}",
    );
    assert_eq!(r.map(|r| r.0), Some(404));
    let st = w.stats();
    assert_eq!(st.rejected[0], (400, "/trust-bundle".to_owned()));
    assert!(
        st.rejected.contains(&(404, "/no/such/path".to_owned())),
        "{:?}",
        st.rejected
    );
}

#[test]
fn sign_rejects_like_the_daemon() {
    let (w, _, _dir) = peer(MODULE, Duration::from_secs(60));
    let good = json!({"data": b64(b"x")}).to_string();
    let post = |path: &str, ct: Option<&str>, body: &str| {
        call(&w, "POST", path, ct, body).unwrap_or_else(|| panic!("no reply"))
    };
    let (status, _, v) = post(&sign_path("edgeAgent"), None, &good);
    assert_eq!(status, 403, "another module's key: {v}");
    let (status, _, v) = post(
        &sign_path(MODULE),
        None,
        &json!({"data": "not base64!"}).to_string(),
    );
    assert_eq!(status, 400, "{v}");
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    assert_eq!(post(&sign_path(MODULE), None, "{not json").0, 422);
    // `data` is a required field of the route's body type: a serde failure, hence 422.
    assert_eq!(post(&sign_path(MODULE), None, "{}").0, 422);
    // A non-JSON Content-Type makes the body count as absent.
    assert_eq!(post(&sign_path(MODULE), Some("text/plain"), &good).0, 400);
    assert_eq!(post(&sign_path(MODULE), None, "").0, 400);
    assert_eq!(
        call(&w, "GET", &sign_path(MODULE), None, "").map(|r| r.0),
        Some(400)
    );
    let st = w.stats();
    assert_eq!(st.signs, 0);
    let codes: Vec<u16> = st.rejected.iter().map(|r| r.0).collect();
    assert_eq!(codes, [403, 400, 422, 422, 400, 400, 400]);
}

#[test]
fn trust_bundle_is_plain_pem_with_every_certificate() {
    let (w, ca, _dir) = peer(MODULE, Duration::from_secs(60));
    let (status, _, v) = call(&w, "GET", &format!("/trust-bundle?{V}"), None, "")
        .unwrap_or_else(|| panic!("no reply"));
    assert_eq!(status, 200);
    let pem = v["certificate"].as_str().unwrap_or_else(|| panic!("{v}"));
    assert!(pem.starts_with(&ca.0.pem()), "{pem}");
    assert_eq!(CertificateDer::pem_slice_iter(pem.as_bytes()).count(), 2);
    assert_eq!(w.stats().trust_bundles, 1);
}

/// Issues a certificate for `cn` to `module` (path-encoded as `enc`); returns (chain, key,
/// expiration).
fn issue(
    w: &Workload,
    enc: &str,
    cn: &str,
) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>, String) {
    let path = format!("/modules/{enc}/genid/1/certificate/server?{V}");
    let body = json!({"commonName": cn, "expiration": "2099-01-01T00:00:00Z"}).to_string();
    let (status, _, v) = call(w, "POST", &path, None, &body).unwrap_or_else(|| panic!("no reply"));
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["privateKey"]["type"], "key");
    let key_pem = v["privateKey"]["bytes"]
        .as_str()
        .unwrap_or_else(|| panic!("{v}"));
    assert!(
        key_pem.starts_with("-----BEGIN PRIVATE KEY-----"),
        "PKCS#8: {key_pem}"
    );
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    let chain = v["certificate"].as_str().unwrap_or_else(|| panic!("{v}"));
    let chain: Vec<_> = CertificateDer::pem_slice_iter(chain.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("{e}"));
    let exp = v["expiration"]
        .as_str()
        .unwrap_or_else(|| panic!("{v}"))
        .to_owned();
    (chain, key, exp)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca: &Ca) -> Arc<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(ca.0.der().clone())
        .unwrap_or_else(|e| panic!("{e}"));
    Arc::new(roots)
}

/// Whether a TLS client trusting `ca` accepts `chain` for `name` at `at` (seconds from now).
fn valid_for(
    ca: &Ca,
    chain: &[CertificateDer<'static>],
    name: &str,
    at: i64,
) -> Result<(), rustls::Error> {
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(roots(ca), provider())
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let t = UnixTime::since_unix_epoch(Duration::from_secs((now.as_secs() as i64 + at) as u64));
    let name = ServerName::try_from(name.to_owned()).unwrap_or_else(|e| panic!("{e}"));
    verifier
        .verify_server_cert(&chain[0], &chain[1..], &name, &[], t)
        .map(|_| ())
}

/// A real TLS handshake (in memory) with the issued key and chain, for `name`.
fn handshake(
    ca: &Ca,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    name: &str,
) {
    let server = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(chain, key))
        .unwrap_or_else(|e| panic!("server config: {e}"));
    let client = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap_or_else(|e| panic!("{e}"))
        .with_root_certificates(roots(ca))
        .with_no_client_auth();
    let name = ServerName::try_from(name.to_owned()).unwrap_or_else(|e| panic!("{e}"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let rt = rt.unwrap_or_else(|e| panic!("{e}"));
    rt.block_on(async {
        let (c, s) = tokio::io::duplex(64 * 1024);
        let both = async {
            tokio::join!(
                tokio_rustls::TlsConnector::from(Arc::new(client)).connect(name, c),
                tokio_rustls::TlsAcceptor::from(Arc::new(server)).accept(s)
            )
        };
        let (c, s) = tokio::time::timeout(Duration::from_secs(10), both)
            .await
            .unwrap_or_else(|_| panic!("handshake hung"));
        c.unwrap_or_else(|e| panic!("client handshake: {e}"));
        s.unwrap_or_else(|e| panic!("server handshake: {e}"));
    });
}

#[test]
fn server_certificate_names_the_host_and_module_and_expires_on_its_own_schedule() {
    let (w, ca, _dir) = peer(MODULE, Duration::from_secs(120));
    let (chain, key, exp) = issue(&w, MODULE, "gateway.example");
    assert_eq!(chain.len(), 2, "certificate followed by the CA");
    assert_eq!(chain[1].as_ref(), ca.0.der().as_ref());
    for name in ["gateway.example", MODULE] {
        valid_for(&ca, &chain, name, 0).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    assert!(valid_for(&ca, &chain, "other.example", 0).is_err());
    // Requested 2099 is ignored: valid for the configured 120 s, and the answer says so.
    valid_for(&ca, &chain, MODULE, 110).unwrap_or_else(|e| panic!("before expiry: {e}"));
    let expired = valid_for(&ca, &chain, MODULE, 130);
    assert!(
        matches!(
            expired,
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Expired | rustls::CertificateError::ExpiredContext { .. }
            ))
        ),
        "{expired:?}"
    );
    let exp = chrono::DateTime::parse_from_rfc3339(&exp).unwrap_or_else(|e| panic!("{exp}: {e}"));
    let left = exp.timestamp() - chrono::Utc::now().timestamp();
    assert!(
        (115..=121).contains(&left),
        "expiration {exp} is {left} s away"
    );
    handshake(&ca, chain, key, "gateway.example");
    assert_eq!(w.stats().server_certs, ["gateway.example"]);
}

#[test]
fn server_certificate_for_an_ip_and_a_dollar_module() {
    let (w, ca, _dir) = peer("$edgeHub", Duration::from_secs(600));
    let (chain, _, _) = issue(&w, "%24edgeHub", "10.1.2.3");
    for name in ["10.1.2.3", "edgeHub"] {
        valid_for(&ca, &chain, name, 0).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let path = format!("/modules/%24edgeHub/genid/1/certificate/server?{V}");
    let r = call(
        &w,
        "POST",
        &path,
        None,
        r#"{"expiration":"2099-01-01T00:00:00Z"}"#,
    );
    assert_eq!(r.map(|r| r.0), Some(422), "commonName missing");
    let path = format!("/modules/{MODULE}/genid/1/certificate/server?{V}");
    let r = call(&w, "POST", &path, None, r#"{"commonName":"x"}"#);
    assert_eq!(r.map(|r| r.0), Some(403), "another module");
}

#[test]
fn faults_close_fail_and_delay() {
    let (w, _, _dir) = peer(MODULE, Duration::from_secs(60));
    let path = format!("/trust-bundle?{V}");
    w.set_fault(Some(Fault::CloseWithoutReply));
    assert!(
        call(&w, "GET", &path, None, "").is_none(),
        "throttled: no reply at all"
    );
    w.set_fault(Some(Fault::ServerError));
    let (status, _, v) = call(&w, "GET", &path, None, "").unwrap_or_else(|| panic!("no reply"));
    assert_eq!(status, 500);
    assert!(v["message"].is_string(), "{v}");
    w.set_fault(Some(Fault::Slow(Duration::from_millis(1500))));
    let t = Instant::now();
    assert_eq!(call(&w, "GET", &path, None, "").map(|r| r.0), Some(200));
    assert!(
        t.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
    w.set_fault(None);
    let t = Instant::now();
    assert_eq!(call(&w, "GET", &path, None, "").map(|r| r.0), Some(200));
    assert!(t.elapsed() < Duration::from_secs(1));
    let st = w.stats();
    assert_eq!(st.trust_bundles, 2);
    assert_eq!(st.rejected, [(500, "/trust-bundle".to_owned())]);
    assert_eq!(st.api_versions.len(), 4);
}

#[test]
fn keep_alive_and_chunked_bodies() {
    let (w, _, _dir) = peer(MODULE, Duration::from_secs(60));
    let mut s = connect(&w);
    let body = json!({"data": b64(b"chunked")}).to_string();
    let (a, b) = body.split_at(5);
    // A chunked sign, then a second request on the same connection.
    let req = format!(
        "POST {} HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n\
         GET /trust-bundle?{V} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        sign_path(MODULE),
        a.len(),
        b.len()
    );
    s.write_all(req.as_bytes())
        .unwrap_or_else(|e| panic!("{e}"));
    let mut out = String::new();
    s.read_to_string(&mut out)
        .unwrap_or_else(|e| panic!("read: {e}"));
    let second = out
        .find("HTTP/1.1 200 OK\r\n")
        .and_then(|i| out[i + 1..].find("HTTP/1.1 ").map(|j| i + 1 + j));
    let second = second.unwrap_or_else(|| panic!("two responses: {out}"));
    let (status, _, v) = parse_response(&out[..second]);
    assert_eq!((status, v), (200, json!({"digest": hmac(b"chunked")})));
    assert_eq!(parse_response(&out[second..]).0, 200);
}
