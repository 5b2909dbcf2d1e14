//! The IoT Edge workload API as a module sees it (reference: iotedge-protocols.md §2.2, §2.3 and
//! "Test peers" B): HTTP/1.1 on a Unix socket, a mandatory `api-version`, module-scoped routes
//! for one module only (403 for any other, as the PID check answers), `sign` = HMAC-SHA256 with
//! the module key, the trust bundle as plain PEM, server certificates signed by a test CA with
//! the daemon's SANs and its own (short) lifetime; plus switches for the daemon's failure modes.
//!
//! The request pipeline follows `iot-identity-service` `http-common/src/server.rs`: api-version
//! first, then route matching (404), then the body (parsed only for a missing or
//! `application/json` Content-Type; serde failure → 422), then the route (auth 403, missing body
//! 400). HTTP is hand-written so that a connection can be closed with no reply at all.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair, SanType};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use super::pki::Ca;

/// Versions the daemon knows (`edgelet/edgelet-http/src/version.rs`); every route used here
/// accepts all of them.
const API_VERSIONS: [&str; 7] = [
    "2018-06-28",
    "2019-01-30",
    "2019-10-22",
    "2019-11-05",
    "2020-07-07",
    "2021-12-07",
    "2022-08-03",
];
/// The daemon's body read timeout (`HYPER_REQUEST_TIMEOUT`): a slower body gets 408.
const BODY_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request head accepted; anything bigger is not a workload client.
const MAX_HEAD: usize = 64 * 1024;

/// What the stand-in serves and for whom.
pub struct WorkloadConfig {
    /// Unix socket path to listen on (`IOTEDGE_WORKLOADURI=unix://<path>`).
    pub socket: PathBuf,
    /// The only module allowed on module routes (others get 403, as the PID check answers).
    pub module_id: String,
    /// The module's primary key (raw bytes), the HMAC key of `sign`.
    pub module_key: Vec<u8>,
    /// Served by `GET /trust-bundle` (may hold several certificates).
    pub trust_bundle_pem: String,
    /// Signs server certificates (the Edge CA).
    pub ca: Arc<Ca>,
    /// Lifetime of issued server certificates; the requested expiration is ignored, as edged does.
    pub server_cert_lifetime: Duration,
}

/// A failure mode of the daemon, applied to every request while set.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Throttling: the request is read, then the connection closed with no HTTP reply.
    CloseWithoutReply,
    /// 500 with `{"message": …}`.
    ServerError,
    /// The normal answer, after this delay.
    Slow(Duration),
}

/// What the stand-in saw and answered.
#[derive(Clone, Debug, Default)]
pub struct WorkloadStats {
    /// Successful sign requests.
    pub signs: u64,
    /// The decoded (UTF-8, lossy) data of every successful sign, in order.
    pub sign_data: Vec<String>,
    /// Trust bundles served.
    pub trust_bundles: u64,
    /// commonName of every server certificate issued.
    pub server_certs: Vec<String>,
    /// Status and path (no query) of every non-2xx answer.
    pub rejected: Vec<(u16, String)>,
    /// api-version of every request that carried one.
    pub api_versions: Vec<String>,
}

struct Shared {
    cfg: WorkloadConfig,
    fault: Mutex<Option<Fault>>,
    stats: Mutex<WorkloadStats>,
}

impl Shared {
    /// The counters; a test that panicked while holding them does not hide them from others.
    fn stats(&self) -> std::sync::MutexGuard<'_, WorkloadStats> {
        self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running workload API stand-in; stops and removes its socket when dropped.
pub struct Workload {
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Workload {
    /// Binds the socket (before returning, so clients can connect at once) and serves it on its
    /// own thread and runtime until dropped.
    pub fn start(cfg: WorkloadConfig) -> Workload {
        let _ = std::fs::remove_file(&cfg.socket);
        let listener = std::os::unix::net::UnixListener::bind(&cfg.socket)
            .unwrap_or_else(|e| panic!("bind {}: {e}", cfg.socket.display()));
        listener
            .set_nonblocking(true)
            .unwrap_or_else(|e| panic!("nonblocking: {e}"));
        let shared = Arc::new(Shared {
            cfg,
            fault: Mutex::new(None),
            stats: Mutex::new(WorkloadStats::default()),
        });
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let sh = shared.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap_or_else(|e| panic!("runtime: {e}"));
            rt.block_on(async move {
                let listener = tokio::net::UnixListener::from_std(listener)
                    .unwrap_or_else(|e| panic!("listener: {e}"));
                loop {
                    tokio::select! {
                        _ = &mut stopped => break,
                        accepted = listener.accept() => {
                            if let Ok((stream, _)) = accepted {
                                tokio::spawn(connection(sh.clone(), stream));
                            }
                        }
                    }
                }
            });
        });
        Workload {
            shared,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// `unix://<socket path>`, the value for `IOTEDGE_WORKLOADURI`.
    pub fn uri(&self) -> String {
        format!("unix://{}", self.shared.cfg.socket.display())
    }

    /// Sets (or with `None` clears) the fault applied to the next requests.
    pub fn set_fault(&self, fault: Option<Fault>) {
        *self.shared.fault.lock().unwrap_or_else(|e| e.into_inner()) = fault;
    }

    /// A snapshot of what was seen so far.
    pub fn stats(&self) -> WorkloadStats {
        self.shared.stats().clone()
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.shared.cfg.socket);
    }
}

/// One parsed HTTP request.
struct Request {
    method: String,
    target: String,
    content_type: Option<String>,
    body: Vec<u8>,
    close: bool,
}

/// Serves requests on one connection until the client closes it (keep-alive, as hyper does).
async fn connection(shared: Arc<Shared>, mut stream: UnixStream) {
    let mut buf = Vec::new();
    loop {
        let req = match read_request(&mut stream, &mut buf).await {
            Ok(Some(r)) => r,
            Ok(None) => return,
            // The body did not arrive in time: the daemon answers 408 and gives up.
            Err(()) => {
                let _ = respond(&mut stream, 408, &msg("request body timed out"), true).await;
                return;
            }
        };
        let path = req.target.split('?').next().unwrap_or("").to_owned();
        let fault = shared
            .fault
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let (status, body) = match fault {
            Some(Fault::CloseWithoutReply) => {
                record_version(&shared, &req.target);
                return;
            }
            Some(Fault::ServerError) => {
                record_version(&shared, &req.target);
                (500, msg("injected fault: internal server error"))
            }
            Some(Fault::Slow(d)) => {
                tokio::time::sleep(d).await;
                handle(&shared, &req)
            }
            None => handle(&shared, &req),
        };
        if !(200..300).contains(&status) {
            let mut st = shared.stats();
            st.rejected.push((status, path));
        }
        if respond(&mut stream, status, &body, req.close)
            .await
            .is_err()
            || req.close
        {
            return;
        }
    }
}

/// Reads one request; `Ok(None)` when the connection ends (or is not HTTP), `Err` on a body
/// that does not arrive within the daemon's timeout.
async fn read_request(s: &mut UnixStream, buf: &mut Vec<u8>) -> Result<Option<Request>, ()> {
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > MAX_HEAD || !fill(s, buf).await {
            return Ok(None);
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    buf.drain(..head_end + 4);
    let mut lines = head.split("\r\n");
    let mut parts = lines.next().unwrap_or("").split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Ok(None);
    };
    let mut req = Request {
        method: method.to_owned(),
        target: target.to_owned(),
        content_type: None,
        body: Vec::new(),
        close: version == "HTTP/1.0",
    };
    let (mut length, mut chunked) = (0usize, false);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => length = value.parse().unwrap_or(0),
            "content-type" => req.content_type = Some(value.to_owned()),
            "transfer-encoding" => chunked = value.to_ascii_lowercase().contains("chunked"),
            "connection" => req.close = value.eq_ignore_ascii_case("close"),
            _ => {}
        }
    }
    let body = async {
        if chunked {
            read_chunked(s, buf).await
        } else {
            while buf.len() < length {
                if !fill(s, buf).await {
                    return None;
                }
            }
            Some(buf.drain(..length).collect())
        }
    };
    match tokio::time::timeout(BODY_TIMEOUT, body).await {
        Ok(Some(b)) => req.body = b,
        Ok(None) => return Ok(None),
        Err(_) => return Err(()),
    }
    Ok(Some(req))
}

/// Decodes a chunked body (trailers skipped).
async fn read_chunked(s: &mut UnixStream, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = loop {
            if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                break i;
            }
            if !fill(s, buf).await {
                return None;
            }
        };
        let line = String::from_utf8_lossy(&buf[..line_end]).into_owned();
        let size = usize::from_str_radix(line.split(';').next()?.trim(), 16).ok()?;
        buf.drain(..line_end + 2);
        if size == 0 {
            // Trailer lines until the empty line that ends the message.
            loop {
                match buf.windows(2).position(|w| w == b"\r\n") {
                    Some(0) => {
                        buf.drain(..2);
                        return Some(body);
                    }
                    Some(i) => drop(buf.drain(..i + 2)),
                    None if !fill(s, buf).await => return None,
                    None => {}
                }
            }
        }
        while buf.len() < size + 2 {
            if !fill(s, buf).await {
                return None;
            }
        }
        body.extend(buf.drain(..size));
        buf.drain(..2);
    }
}

/// Reads more bytes into `buf`; false at end of stream or on error.
async fn fill(s: &mut UnixStream, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 8192];
    match s.read(&mut chunk).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
    }
}

async fn respond(
    s: &mut UnixStream,
    status: u16,
    body: &Value,
    close: bool,
) -> std::io::Result<()> {
    let body = body.to_string();
    let reason = match status {
        200 => "OK",
        201 => "Created",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        422 => "Unprocessable Entity",
        _ => "Internal Server Error",
    };
    let conn = if close { "connection: close\r\n" } else { "" };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{conn}\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await?;
    s.write_all(body.as_bytes()).await?;
    s.flush().await
}

fn msg(m: &str) -> Value {
    json!({ "message": m })
}

/// The api-version query parameter, decoded as `form_urlencoded` does (last one wins).
fn api_version(target: &str) -> Option<String> {
    let query = target.split_once('?')?.1;
    query.split('&').rev().find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        let dec = |s: &str| {
            percent_encoding::percent_decode_str(&s.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        };
        (dec(k) == "api-version").then(|| dec(v))
    })
}

fn record_version(shared: &Shared, target: &str) {
    if let Some(v) = api_version(target) {
        let mut st = shared.stats();
        st.api_versions.push(v);
    }
}

#[derive(Deserialize)]
struct SignRequest {
    data: String,
}

#[derive(Deserialize)]
struct ServerCertRequest {
    #[serde(rename = "commonName")]
    common_name: String,
}

/// Answers one request as the daemon would: (status, JSON body).
fn handle(shared: &Shared, req: &Request) -> (u16, Value) {
    record_version(shared, &req.target);
    let Some(version) = api_version(&req.target) else {
        return (400, msg("api-version not specified"));
    };
    if !API_VERSIONS.contains(&version.as_str()) {
        return (400, msg(&format!("invalid api-version {version:?}")));
    }
    let path = req.target.split('?').next().unwrap_or("");
    if path == "/trust-bundle" {
        if req.method != "GET" {
            return (400, msg("method not allowed"));
        }
        shared.stats().trust_bundles += 1;
        return (200, json!({ "certificate": shared.cfg.trust_bundle_pem }));
    }
    // `^/modules/(?P<moduleId>[^/]+)/genid/(?P<genId>[^/]+)/(sign|certificate/server)$`; a module
    // id that is not UTF-8 once decoded matches no route.
    let segs: Vec<&str> = path.split('/').collect();
    let (module, is_sign) = match segs.as_slice() {
        ["", "modules", m, "genid", g, "sign"] if !m.is_empty() && !g.is_empty() => (m, true),
        ["", "modules", m, "genid", g, "certificate", "server"]
            if !m.is_empty() && !g.is_empty() =>
        {
            (m, false)
        }
        _ => return (404, msg("not found")),
    };
    let Ok(module) = percent_encoding::percent_decode_str(module).decode_utf8() else {
        return (404, msg("not found"));
    };
    if req.method != "POST" {
        return (400, msg("method not allowed"));
    }
    let json_type = req
        .content_type
        .as_deref()
        .is_none_or(|ct| ct.split(';').next().unwrap_or("").trim() == "application/json");
    let present = !req.body.is_empty() && json_type;
    let answer = if is_sign {
        route::<SignRequest>(shared, &module, present, &req.body).map(|b| sign(shared, &b.data))
    } else {
        route::<ServerCertRequest>(shared, &module, present, &req.body)
            .map(|b| server_cert(shared, &module, &b.common_name))
    };
    answer.unwrap_or_else(|e| e)
}

/// A module route's body, checked in the daemon's order: the body is parsed (serde failure →
/// 422) before the route runs, then the caller (403), then its presence (400).
fn route<T: serde::de::DeserializeOwned>(
    shared: &Shared,
    module: &str,
    present: bool,
    body: &[u8],
) -> Result<T, (u16, Value)> {
    let body = if present {
        Some(serde_json::from_slice(body).map_err(|e| (422, msg(&e.to_string())))?)
    } else {
        None
    };
    if module != shared.cfg.module_id {
        return Err((403, msg("forbidden")));
    }
    body.ok_or_else(|| (400, msg("missing request body")))
}

fn sign(shared: &Shared, data: &str) -> (u16, Value) {
    let b64 = base64::engine::general_purpose::STANDARD;
    let data = match b64.decode(data) {
        Ok(d) => d,
        Err(e) => return (400, msg(&format!("invalid parameter: {e}"))),
    };
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&shared.cfg.module_key)
        .unwrap_or_else(|e| panic!("hmac key: {e}"));
    mac.update(&data);
    let digest = b64.encode(mac.finalize().into_bytes());
    let mut st = shared.stats();
    st.signs += 1;
    st.sign_data
        .push(String::from_utf8_lossy(&data).into_owned());
    (200, json!({ "digest": digest }))
}

/// Issues a server certificate: SANs = commonName (IP or DNS) and the module id without `$`,
/// serverAuth, valid from a minute ago for the configured lifetime (whole seconds, so the
/// returned expiration is exactly the certificate's notAfter).
fn server_cert(shared: &Shared, module: &str, common_name: &str) -> (u16, Value) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let not_after =
        UNIX_EPOCH + Duration::from_secs(now + shared.cfg.server_cert_lifetime.as_secs());
    let issued = (|| -> Result<(String, String), rcgen::Error> {
        let cn_san = match common_name.parse::<std::net::IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(common_name.try_into()?),
        };
        let mut p = CertificateParams::default();
        p.subject_alt_names = vec![
            cn_san,
            SanType::DnsName(module.trim_start_matches('$').try_into()?),
        ];
        p.distinguished_name.push(DnType::CommonName, common_name);
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        p.not_before = (UNIX_EPOCH + Duration::from_secs(now.saturating_sub(60))).into();
        p.not_after = not_after.into();
        // ECDSA P-256: rcgen on ring cannot generate the RSA-2048 keys edged uses.
        let key = KeyPair::generate()?;
        let cert = p.signed_by(&key, &shared.cfg.ca.0)?;
        Ok((cert.pem() + &shared.cfg.ca.0.pem(), key.serialize_pem()))
    })();
    let (chain, key) = match issued {
        Ok(x) => x,
        Err(e) => return (500, msg(&format!("failed to issue certificate: {e}"))),
    };
    let expiration = chrono::DateTime::<chrono::Utc>::from(not_after)
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut st = shared.stats();
    st.server_certs.push(common_name.to_owned());
    (
        201,
        json!({
            "privateKey": { "type": "key", "bytes": key },
            "certificate": chain,
            "expiration": expiration,
        }),
    )
}
