//! A stand-in for edgeHub's MQTT 3.1.1 endpoint, module-twin side only, checking and answering as
//! edgeHub does (facts: `/work/shared/reference/iotedge-protocols.md` §1 and "Test peers we must
//! imitate" A; the rules below were also read in Azure/iotedge's `MqttUsernameParser.cs`,
//! `DeviceIdentityProvider.cs`, `SharedAccessSignature.cs`, `DeviceScopeTokenAuthenticator.cs`,
//! `ReportedPropertiesValidator.cs` and `JsonEx.cs`).
//!
//! It runs on its own thread with its own tokio runtime, so tests drive it with plain
//! synchronous calls whether they are async or not.

use std::collections::HashMap;
use std::net::TcpListener as StdListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use bytes::BytesMut;
use hmac::{Hmac, Mac};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use rumqttc::mqttbytes::v4::{
    ConnAck, Connect, ConnectReturnCode, Packet, PubAck, Publish, SubAck, Subscribe,
    SubscribeReasonCode, UnsubAck,
};
use rumqttc::mqttbytes::{Error as CodecError, QoS};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Map, Value};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;
use tokio_rustls::TlsAcceptor;

/// edgeHub's `MaxInboundMessageSize`.
const MAX_PACKET: usize = 262_144;
/// `SharedAccessSignatureConstants.MaxClockSkew`: a token counts as expired 5 min after `se`.
const MAX_CLOCK_SKEW: f64 = 300.0;
/// `MaxKeepAliveTimeout`: cap of 1.5 × keep-alive, and the timeout for a keep-alive of 0.
const MAX_KEEP_ALIVE: Duration = Duration::from_secs(600);
/// How long a fresh connection may take to finish TLS and send CONNECT (inference: the
/// protocol gateway has such a limit; its value does not matter to the tests).
const CONNECT_ARRIVAL: Duration = Duration::from_secs(60);
/// The only filter edgeHub maps to twin responses (`SessionStateParser`: exact equality).
const RES_FILTER: &str = "$iothub/twin/res/#";
/// Prefix of the filters edgeHub maps to desired-property patches.
const DESIRED_PREFIX: &str = "$iothub/twin/PATCH/properties/desired/";
const GET_PREFIX: &str = "$iothub/twin/GET/";
const REPORTED_PREFIX: &str = "$iothub/twin/PATCH/properties/reported/";
/// `ReportedPropertiesValidator` limits.
const MAX_DEPTH: usize = 10;
const MAX_VALUE_BYTES: usize = 4096;
const MAX_NAME_BYTES: usize = 1024;
const MAX_SAFE_INT: i64 = 4_503_599_627_370_495;
const MIN_SAFE_INT: i64 = -4_503_599_627_370_496;
const MAX_DOC_BYTES: usize = 32 * 1024;

/// What the stand-in is: identity, key and TLS material.
pub struct EdgeHubConfig {
    /// `IOTEDGE_IOTHUBHOSTNAME`, e.g. `hub.test.azure-devices.net`.
    pub hub_host: String,
    /// `IOTEDGE_GATEWAYHOSTNAME`, e.g. `edgehub.test`.
    pub gateway_host: String,
    /// The edge device id.
    pub device_id: String,
    /// The module id of the only identity it knows.
    pub module_id: String,
    /// The module's primary key, raw bytes (base64-decoded).
    pub module_key: Vec<u8>,
    /// Server certificate chain PEM for `gateway_host` (+ SAN `edgeHub`).
    pub cert_pem: String,
    /// Server private key PEM.
    pub key_pem: String,
    /// edgeHub re-validates tokens every 5 min; tests set about 1 s.
    pub reauth_every: Duration,
}

/// Counters and records for assertions.
#[derive(Clone, Debug, Default)]
pub struct EdgeHubStats {
    /// Every CONNACK return code sent, in order (0 accepted, 3, 5).
    pub connacks: Vec<u8>,
    /// The `se` of every accepted CONNECT's token, in order.
    pub token_expiries: Vec<u64>,
    /// Every CONNECT username (empty when none was sent).
    pub usernames: Vec<String>,
    /// Every CONNECT client id.
    pub client_ids: Vec<String>,
    /// Twin GETs answered with 200 (including answers no subscription took, see `lost_responses`).
    pub gets: u64,
    /// Reported patches accepted (answered 204, or applied silently without `$rid`).
    pub reported_ok: u64,
    /// Why each refused reported patch was refused (answered 400 when it had a `$rid`).
    pub reported_rejected: Vec<String>,
    /// Connections dropped by the periodic re-validation.
    pub dropped_expired: u64,
    /// Connections open now with an accepted CONNECT.
    pub connected: usize,
    /// Anything the client did that edgeHub closes the connection for or rejects (second
    /// CONNECT, QoS 2, GET without `$rid`, unknown topic published, ...).
    pub protocol_errors: Vec<String>,
    /// Twin responses dropped because no `$iothub/twin/res/#` subscription older than the
    /// request existed (edgeHub drops them the same way).
    pub lost_responses: u64,
    /// Why each refused CONNECT was refused.
    pub refusals: Vec<String>,
}

/// A publication queued for one connection by the test thread.
struct Outgoing {
    topic: String,
    payload: Vec<u8>,
    qos: QoS,
}

/// One subscription and when it was made (edgeHub only matches messages created after it).
struct Sub {
    filter: String,
    qos: QoS,
    at: Instant,
}

/// One open connection as the test thread sees it.
struct Conn {
    tx: mpsc::UnboundedSender<Outgoing>,
    abort: AbortHandle,
    /// `se` of the accepted token; `None` until CONNACK 0.
    expiry: Option<f64>,
    subs: Vec<Sub>,
}

impl Drop for Conn {
    /// Forgetting a connection closes it: that is how stop() and re-validation drop clients.
    fn drop(&mut self) {
        self.abort.abort();
    }
}

impl Conn {
    /// The QoS a message on `topic` created at `at` is delivered with, if a subscription made
    /// no later than `at` matches it: min(granted, 1).
    fn delivery_qos(&self, topic: &str, at: Instant) -> Option<QoS> {
        self.subs
            .iter()
            .filter(|s| s.at <= at && topic_matches(&s.filter, topic))
            .map(|s| s.qos)
            .max_by_key(|q| *q as u8)
    }

    /// Whether edgeHub would produce twin responses for this client at `at`.
    fn wants_responses(&self, at: Instant) -> bool {
        self.subs
            .iter()
            .any(|s| s.filter == RES_FILTER && s.at <= at)
    }

    /// Whether edgeHub would forward desired patches to this client at `at`.
    fn wants_desired(&self, at: Instant) -> bool {
        self.subs
            .iter()
            .any(|s| s.filter.starts_with(DESIRED_PREFIX) && s.at <= at)
    }
}

struct State {
    desired: Map<String, Value>,
    desired_version: u64,
    reported: Map<String, Value>,
    reported_version: u64,
    empty_twin: bool,
    stats: EdgeHubStats,
    conns: HashMap<u64, Conn>,
    next_id: u64,
}

struct Shared {
    cfg: EdgeHubConfig,
    state: Mutex<State>,
    /// Connection tasks not yet finished (stop() waits for 0).
    live: AtomicUsize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not take the stand-in down with it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The running stand-in.
pub struct EdgeHub {
    hub: Arc<Shared>,
    port: u16,
    rt: tokio::runtime::Handle,
    acceptor: TlsAcceptor,
    /// The accept task and a receiver that disconnects once its listener is gone.
    listening: Mutex<Option<(AbortHandle, std_mpsc::Receiver<()>)>>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl EdgeHub {
    /// Listens on 127.0.0.1 on a free port (TLS 1.2 only, like edgeHub), on its own thread with
    /// its own tokio runtime.
    pub fn start(cfg: EdgeHubConfig) -> EdgeHub {
        let acceptor = TlsAcceptor::from(server_config(&cfg));
        let listener = StdListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
        let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
        let reauth_every = cfg.reauth_every;
        let hub = Arc::new(Shared {
            cfg,
            state: Mutex::new(State {
                desired: Map::new(),
                desired_version: 1,
                reported: Map::new(),
                reported_version: 1,
                empty_twin: false,
                stats: EdgeHubStats::default(),
                conns: HashMap::new(),
                next_id: 0,
            }),
            live: AtomicUsize::new(0),
        });
        let (handle_tx, handle_rx) = std_mpsc::channel();
        let (shutdown, shutdown_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("edgehub-stand-in".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap_or_else(|e| panic!("runtime: {e}"));
                let _ = handle_tx.send(rt.handle().clone());
                rt.block_on(async {
                    let _ = shutdown_rx.await;
                });
            })
            .unwrap_or_else(|e| panic!("thread: {e}"));
        let rt = handle_rx
            .recv()
            .unwrap_or_else(|e| panic!("edgeHub runtime: {e}"));
        rt.spawn(reauth_loop(hub.clone(), reauth_every));
        let eh = EdgeHub {
            hub,
            port,
            rt,
            acceptor,
            listening: Mutex::new(None),
            shutdown: Some(shutdown),
            thread: Some(thread),
        };
        *eh.listening() = Some(eh.listen(listener));
        eh
    }

    /// The loopback port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// edgeHub down: stop listening and drop every connection (twin state is kept). Returns
    /// once the port refuses connections and every connection is closed.
    pub fn stop(&self) {
        if let Some((accept, gone)) = self.listening().take() {
            accept.abort();
            // The sender lives in the accept task: disconnected means the listener is closed.
            let _ = gone.recv_timeout(Duration::from_secs(5));
        }
        let conns = std::mem::take(&mut self.hub.lock().conns);
        drop(conns);
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.hub.live.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// edgeHub back: listen again on the same port with the same twin state.
    pub fn restart(&self) {
        let mut listening = self.listening();
        if listening.is_some() {
            return;
        }
        // Retried: the port may be held briefly by the old listener's last moments.
        let mut tries = 0;
        let listener = loop {
            match StdListener::bind(("127.0.0.1", self.port)) {
                Ok(l) => break l,
                Err(e) if tries >= 100 => panic!("re-bind port {}: {e}", self.port),
                Err(_) => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        };
        *listening = Some(self.listen(listener));
    }

    /// Replaces the desired properties (no patch sent; for setting up before the module
    /// connects). Sets desired `$version` to `version`.
    pub fn set_desired(&self, desired: Value, version: u64) {
        let mut st = self.hub.lock();
        st.desired = object(desired, "desired");
        st.desired_version = version;
    }

    /// A desired-properties patch: merged into the stored desired, version += 1, published to
    /// every client subscribed to the desired-patch topic. Returns the new version.
    pub fn patch_desired(&self, patch: Value) -> u64 {
        self.publish_desired(Value::Object(Map::new()), patch, 0)
    }

    /// Like `patch_desired`, but the version jumps by 1 + `skipped` and `hidden` is merged into
    /// the stored desired without ever being published (what the skipped versions changed), as
    /// edgeHub's synthetic patch after a reconnect. Returns the new version.
    pub fn patch_desired_skipping(&self, hidden: Value, patch: Value, skipped: u64) -> u64 {
        self.publish_desired(hidden, patch, skipped)
    }

    /// Offline edgeHub with nothing stored: GET answers exactly `{"desired":{},"reported":{}}`.
    pub fn set_empty_twin(&self, on: bool) {
        self.hub.lock().empty_twin = on;
    }

    /// The stored reported properties (without `$version`).
    pub fn reported(&self) -> Value {
        Value::Object(self.hub.lock().reported.clone())
    }

    /// The stored desired properties (without `$version`).
    pub fn desired(&self) -> Value {
        Value::Object(self.hub.lock().desired.clone())
    }

    /// The desired `$version`.
    pub fn desired_version(&self) -> u64 {
        self.hub.lock().desired_version
    }

    /// Counters and records for assertions.
    pub fn stats(&self) -> EdgeHubStats {
        let st = self.hub.lock();
        let mut stats = st.stats.clone();
        stats.connected = st.conns.values().filter(|c| c.expiry.is_some()).count();
        stats
    }

    /// Polls `pred(&self)` every 50 ms until true or `limit` passes; returns whether it became
    /// true.
    pub fn wait_for(&self, limit: Duration, pred: impl Fn(&EdgeHub) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if pred(self) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn listening(&self) -> MutexGuard<'_, Option<(AbortHandle, std_mpsc::Receiver<()>)>> {
        self.listening.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn listen(&self, listener: StdListener) -> (AbortHandle, std_mpsc::Receiver<()>) {
        listener
            .set_nonblocking(true)
            .unwrap_or_else(|e| panic!("nonblocking: {e}"));
        let (gone_tx, gone_rx) = std_mpsc::channel();
        let task = self.rt.spawn(accept_loop(
            self.hub.clone(),
            listener,
            self.acceptor.clone(),
            gone_tx,
        ));
        (task.abort_handle(), gone_rx)
    }

    fn publish_desired(&self, hidden: Value, patch: Value, skipped: u64) -> u64 {
        let hidden = object(hidden, "hidden");
        let patch = object(patch, "patch");
        let at = Instant::now();
        let mut st = self.hub.lock();
        merge(&mut st.desired, &hidden);
        merge(&mut st.desired, &patch);
        st.desired_version += 1 + skipped;
        let version = st.desired_version;
        let mut body = patch;
        body.insert("$version".into(), version.into());
        let topic = format!("{DESIRED_PREFIX}?$version={version}");
        let payload = serde_json::to_vec(&body).unwrap_or_default();
        // Not queued for anyone disconnected or not (yet) subscribed: edgeHub does not either.
        for c in st.conns.values() {
            if c.expiry.is_none() || !c.wants_desired(at) {
                continue;
            }
            if let Some(qos) = c.delivery_qos(&topic, at) {
                let _ = c.tx.send(Outgoing {
                    topic: topic.clone(),
                    payload: payload.clone(),
                    qos,
                });
            }
        }
        version
    }
}

impl Drop for EdgeHub {
    fn drop(&mut self) {
        self.stop();
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A module SAS token as the SDKs build it: `sr` = `{hub}/devices/{device}/modules/{module}`
/// percent-encoded as a whole (`/` → `%2F`), `sig` percent-encoded.
pub fn sas_token(hub: &str, device: &str, module: &str, key: &[u8], expiry_unix: u64) -> String {
    let sr = utf8_percent_encode(&format!("{hub}/devices/{device}/modules/{module}"), URL_SET)
        .to_string();
    let se = expiry_unix.to_string();
    let sig = sas_signature(key, &sr, &se);
    let sig = utf8_percent_encode(&sig, URL_SET);
    format!("SharedAccessSignature sr={sr}&sig={sig}&se={se}")
}

/// base64(HMAC-SHA256(key, sr + "\n" + se)), over `sr` and `se` exactly as they appear in the
/// token (not yet percent-encoded itself).
pub fn sas_signature(key: &[u8], sr: &str, se: &str) -> String {
    let mut mac = <Hmac<Sha256>>::new_from_slice(key).unwrap_or_else(|e| panic!("hmac: {e}"));
    mac.update(format!("{sr}\n{se}").as_bytes());
    B64.encode(mac.finalize().into_bytes())
}

/// Everything but the unreserved characters, as Python's `quote(safe='')` encodes.
const URL_SET: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Checks a reported-properties patch as edgeHub's `ReportedPropertiesValidator` does: the
/// patch, or why edgeHub answers 400.
pub fn validate_reported(payload: &[u8]) -> Result<Map<String, Value>, String> {
    let value: Value =
        serde_json::from_slice(payload).map_err(|e| format!("patch is not JSON: {e}"))?;
    let Value::Object(patch) = value else {
        return Err("patch is not a JSON object".into());
    };
    check_properties(&patch, 1)?;
    // Size of the re-serialised (compact) collection, as `TwinCollection.ToJson()` measures it.
    let size = serde_json::to_vec(&patch).map(|v| v.len()).unwrap_or(0);
    if size > MAX_DOC_BYTES {
        return Err(format!(
            "Twin properties size {size} exceeds maximum {MAX_DOC_BYTES}"
        ));
    }
    patch.values().try_for_each(no_null_in_arrays)?;
    Ok(patch)
}

fn check_properties(props: &Map<String, Value>, depth: usize) -> Result<(), String> {
    for (name, value) in props {
        if name.len() > MAX_NAME_BYTES {
            return Err(format!(
                "Length of property name exceeds maximum length of {MAX_NAME_BYTES}"
            ));
        }
        if let Some(ch) = name
            .chars()
            .find(|&c| c.is_control() || c.is_whitespace() || matches!(c, '.' | '$' | '#'))
        {
            return Err(format!(
                "Property name {name} contains invalid character {ch:?}"
            ));
        }
        match value {
            Value::Number(n) if n.is_i64() || n.is_u64() => {
                let ok = n
                    .as_i64()
                    .is_some_and(|i| (MIN_SAFE_INT..=MAX_SAFE_INT).contains(&i));
                if !ok {
                    return Err(format!("Property {name} has an out of bound value"));
                }
            }
            Value::String(s) if s.len() > MAX_VALUE_BYTES => {
                return Err(format!(
                    "Value associated with property name {name} has length {} that exceeds maximum length of {MAX_VALUE_BYTES}",
                    s.len()
                ));
            }
            // The depth is checked where an object value is met, as edgeHub counts it.
            Value::Object(inner) => {
                if depth > MAX_DEPTH {
                    return Err(format!("Nested depth of twin property exceeds {MAX_DEPTH}"));
                }
                check_properties(inner, depth + 1)?;
            }
            _ => {}
        }
    }
    Ok(())
}

fn no_null_in_arrays(value: &Value) -> Result<(), String> {
    match value {
        Value::Array(items) => {
            if items.iter().any(Value::is_null) {
                return Err("Arrays cannot contain 'null' as value".into());
            }
            items.iter().try_for_each(no_null_in_arrays)
        }
        Value::Object(members) => members.values().try_for_each(no_null_in_arrays),
        _ => Ok(()),
    }
}

/// edgeHub's `JsonEx.Merge` with null-as-delete: objects merge recursively, anything else
/// (arrays included) replaces, `null` deletes; an object under a new key is stored as sent.
fn merge(base: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (k, v) in patch {
        if v.is_null() {
            base.remove(k);
            continue;
        }
        match (base.get_mut(k), v) {
            (Some(Value::Object(b)), Value::Object(p)) => merge(b, p),
            _ => {
                base.insert(k.clone(), v.clone());
            }
        }
    }
}

/// `value` as a twin collection without the service property `$version`.
fn object(value: Value, what: &str) -> Map<String, Value> {
    let Value::Object(mut map) = value else {
        panic!("{what} must be a JSON object, got {value}");
    };
    map.remove("$version");
    map
}

/// MQTT topic-filter matching (`+` one level, `#` the rest; wildcards never match a leading
/// `$` level).
fn topic_matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let (mut f, mut t) = (filter.split('/'), topic.split('/'));
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) | (None, None) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            _ => return false,
        }
    }
}

fn server_config(cfg: &EdgeHubConfig) -> Arc<rustls::ServerConfig> {
    let certs = CertificateDer::pem_slice_iter(cfg.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap_or_else(|e| panic!("edgeHub certificate: {e}"));
    let key = PrivateKeyDer::from_pem_slice(cfg.key_pem.as_bytes())
        .unwrap_or_else(|e| panic!("edgeHub key: {e}"));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        // edgeHub restricts TLS to 1.2 (iotedge commit 4a76a20b).
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap_or_else(|e| panic!("TLS 1.2: {e}"))
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap_or_else(|e| panic!("edgeHub certificate: {e}"));
    Arc::new(config)
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Accepts connections until aborted; `_gone` disconnects when this future is dropped, i.e. once
/// the listener is closed.
async fn accept_loop(
    hub: Arc<Shared>,
    listener: StdListener,
    acceptor: TlsAcceptor,
    _gone: std_mpsc::Sender<()>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => panic!("listener: {e}"),
    };
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let mut st = hub.lock();
        let id = st.next_id;
        st.next_id += 1;
        hub.live.fetch_add(1, Ordering::SeqCst);
        // The guard is an argument, so it is dropped even if the task is aborted before it ran.
        let live = Live {
            hub: hub.clone(),
            id,
        };
        let task = tokio::spawn(serve(live, acceptor.clone(), tcp, rx));
        st.conns.insert(
            id,
            Conn {
                tx,
                abort: task.abort_handle(),
                expiry: None,
                subs: Vec::new(),
            },
        );
    }
}

/// Drops connections whose token expired (+ clock skew), as `ConnectionReauthenticator` does.
async fn reauth_loop(hub: Arc<Shared>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let now = unix_now();
        let dropped: Vec<Conn> = {
            let mut st = hub.lock();
            let ids: Vec<u64> = st
                .conns
                .iter()
                .filter(|(_, c)| c.expiry.is_some_and(|se| se + MAX_CLOCK_SKEW < now))
                .map(|(id, _)| *id)
                .collect();
            st.stats.dropped_expired += ids.len() as u64;
            ids.iter().filter_map(|id| st.conns.remove(id)).collect()
        };
        drop(dropped);
    }
}

/// Held by a connection task: on its end the connection is forgotten and counted out.
struct Live {
    hub: Arc<Shared>,
    id: u64,
}

impl Drop for Live {
    fn drop(&mut self) {
        let conn = self.hub.lock().conns.remove(&self.id);
        drop(conn);
        self.hub.live.fetch_sub(1, Ordering::SeqCst);
    }
}

enum Flow {
    Go,
    Close,
}

/// One connection's protocol state, inside its task.
struct Session {
    hub: Arc<Shared>,
    id: u64,
    out: BytesMut,
    next_pkid: u16,
    connected: bool,
    keep_alive: Duration,
}

async fn serve(
    live: Live,
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
) {
    let Ok(Ok(mut tls)) = tokio::time::timeout(CONNECT_ARRIVAL, acceptor.accept(tcp)).await else {
        return;
    };
    let mut s = Session {
        hub: live.hub.clone(),
        id: live.id,
        out: BytesMut::new(),
        next_pkid: 0,
        connected: false,
        keep_alive: CONNECT_ARRIVAL,
    };
    let mut buf = BytesMut::with_capacity(4096);
    let mut last_rx = tokio::time::Instant::now();
    loop {
        let mut flow = Flow::Go;
        while let Flow::Go = flow {
            match Packet::read(&mut buf, MAX_PACKET) {
                Ok(p) => flow = s.handle(p),
                Err(CodecError::InsufficientBytes(_)) => break,
                Err(e) => {
                    s.protocol_error(format!("malformed packet: {e}"));
                    flow = Flow::Close;
                }
            }
        }
        if !s.out.is_empty() {
            if tls.write_all(&s.out).await.is_err() || tls.flush().await.is_err() {
                return;
            }
            s.out.clear();
        }
        if let Flow::Close = flow {
            let _ = tokio::time::timeout(Duration::from_secs(1), tls.shutdown()).await;
            return;
        }
        tokio::select! {
            r = tls.read_buf(&mut buf) => match r {
                Ok(n) if n > 0 => last_rx = tokio::time::Instant::now(),
                _ => return,
            },
            m = rx.recv() => match m {
                Some(o) => s.publish(o.topic, o.payload, o.qos),
                None => return,
            },
            // Keep-alive: nothing received for 1.5 × the client's keep-alive.
            _ = tokio::time::sleep_until(last_rx + s.keep_alive) => return,
        }
    }
}

impl Session {
    fn protocol_error(&self, what: String) {
        self.hub.lock().stats.protocol_errors.push(what);
    }

    fn send(&mut self, p: Packet) {
        if let Err(e) = p.write(&mut self.out, usize::MAX) {
            panic!("encode {p:?}: {e}");
        }
    }

    fn publish(&mut self, topic: String, payload: Vec<u8>, qos: QoS) {
        let mut p = Publish::new(topic, qos, payload);
        if qos != QoS::AtMostOnce {
            // Packet ids for QoS 1; the PUBACK is accepted and nothing is ever re-sent.
            self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(1);
            p.pkid = self.next_pkid;
        }
        self.send(Packet::Publish(p));
    }

    fn handle(&mut self, p: Packet) -> Flow {
        match p {
            Packet::Connect(c) => self.on_connect(c),
            _ if !self.connected => {
                self.protocol_error(format!("first packet was not CONNECT: {p:?}"));
                Flow::Close
            }
            Packet::Publish(p) => self.on_publish(p),
            Packet::Subscribe(s) => self.on_subscribe(s),
            Packet::Unsubscribe(u) => {
                if let Some(c) = self.hub.lock().conns.get_mut(&self.id) {
                    c.subs.retain(|s| !u.topics.contains(&s.filter));
                }
                self.send(Packet::UnsubAck(UnsubAck::new(u.pkid)));
                Flow::Go
            }
            Packet::PubAck(_) => Flow::Go,
            Packet::PingReq => {
                self.send(Packet::PingResp);
                Flow::Go
            }
            Packet::Disconnect => Flow::Close,
            other => {
                self.protocol_error(format!("unexpected packet {other:?}"));
                Flow::Close
            }
        }
    }

    fn on_connect(&mut self, c: Connect) -> Flow {
        if self.connected {
            self.protocol_error("second CONNECT on one connection".into());
            return Flow::Close;
        }
        let verdict = authenticate(&self.hub.cfg, &c);
        let code = match &verdict {
            Ok(_) => ConnectReturnCode::Success,
            Err((code, _)) => *code,
        };
        {
            let mut st = self.hub.lock();
            let user = c.login.as_ref().map(|l| l.username.clone());
            st.stats.usernames.push(user.unwrap_or_default());
            st.stats.client_ids.push(c.client_id.clone());
            st.stats.connacks.push(code as u8);
            match &verdict {
                Ok(se) => {
                    st.stats.token_expiries.push(*se as u64);
                    if let Some(conn) = st.conns.get_mut(&self.id) {
                        conn.expiry = Some(*se);
                    }
                }
                Err((_, why)) => st.stats.refusals.push(why.clone()),
            }
        }
        self.send(Packet::ConnAck(ConnAck::new(code, false)));
        if verdict.is_err() {
            return Flow::Close;
        }
        self.connected = true;
        // `DeriveKeepAliveTimeout`: 1.5 × keep-alive, the maximum instead when 0 or above it.
        let ka = Duration::from_millis(u64::from(c.keep_alive) * 1500);
        self.keep_alive = if ka.is_zero() || ka > MAX_KEEP_ALIVE {
            MAX_KEEP_ALIVE
        } else {
            ka
        };
        Flow::Go
    }

    fn on_subscribe(&mut self, s: Subscribe) -> Flow {
        let at = Instant::now();
        let mut codes = Vec::new();
        if let Some(conn) = self.hub.lock().conns.get_mut(&self.id) {
            for f in s.filters {
                // edgeHub has no QoS 2 support: it grants min(requested, 1).
                let qos = if f.qos == QoS::AtMostOnce {
                    QoS::AtMostOnce
                } else {
                    QoS::AtLeastOnce
                };
                conn.subs.retain(|x| x.filter != f.path);
                conn.subs.push(Sub {
                    filter: f.path,
                    qos,
                    at,
                });
                codes.push(SubscribeReasonCode::Success(qos));
            }
        }
        self.send(Packet::SubAck(SubAck::new(s.pkid, codes)));
        Flow::Go
    }

    fn on_publish(&mut self, p: Publish) -> Flow {
        if p.qos == QoS::ExactlyOnce {
            self.protocol_error(format!("QoS 2 is not supported ({})", p.topic));
            return Flow::Close;
        }
        let at = Instant::now();
        if let Some(rest) = p.topic.strip_prefix(GET_PREFIX) {
            self.on_get(rest, at);
        } else if let Some(rest) = p.topic.strip_prefix(REPORTED_PREFIX) {
            self.on_reported(rest, &p.payload, at);
        } else {
            self.protocol_error(format!("publish to unknown topic {}", p.topic));
        }
        if p.qos == QoS::AtLeastOnce {
            self.send(Packet::PubAck(PubAck::new(p.pkid)));
        }
        Flow::Go
    }

    fn on_get(&mut self, rest: &str, at: Instant) {
        let rid = match request_id(rest) {
            Ok(Some(rid)) => rid,
            Ok(None) => {
                self.protocol_error("twin GET: Correlation id is missing or empty.".into());
                return;
            }
            Err(e) => {
                self.protocol_error(format!("twin GET: {e}"));
                return;
            }
        };
        let topic = format!("$iothub/twin/res/200/?$rid={rid}");
        let mut st = self.hub.lock();
        st.stats.gets += 1;
        let body = if st.empty_twin {
            // An empty `Twin` serialises without `$version` keys.
            br#"{"desired":{},"reported":{}}"#.to_vec()
        } else {
            let mut desired = st.desired.clone();
            desired.insert("$version".into(), st.desired_version.into());
            let mut reported = st.reported.clone();
            reported.insert("$version".into(), st.reported_version.into());
            let twin = serde_json::json!({"desired": desired, "reported": reported});
            serde_json::to_vec(&twin).unwrap_or_default()
        };
        let qos = self.qos_for_response(&mut st, &topic, at);
        drop(st);
        if let Some(qos) = qos {
            self.publish(topic, body, qos);
        }
    }

    fn on_reported(&mut self, rest: &str, payload: &[u8], at: Instant) {
        let rid = match request_id(rest) {
            Ok(rid) => rid,
            Err(e) => {
                self.protocol_error(format!("reported PATCH: {e}"));
                return;
            }
        };
        let verdict = validate_reported(payload);
        let mut st = self.hub.lock();
        let status = match verdict {
            Ok(patch) => {
                merge(&mut st.reported, &patch);
                st.reported_version += 1;
                st.stats.reported_ok += 1;
                204
            }
            Err(why) => {
                st.stats.reported_rejected.push(why);
                400
            }
        };
        // Without a correlation id the patch is applied but never answered.
        let Some(rid) = rid else { return };
        let topic = format!("$iothub/twin/res/{status}/?$rid={rid}");
        let qos = self.qos_for_response(&mut st, &topic, at);
        drop(st);
        if let Some(qos) = qos {
            self.publish(topic, Vec::new(), qos);
        }
    }

    /// The QoS a twin response goes out at, or `None` when the connection had no
    /// `$iothub/twin/res/#` subscription made before the request: edgeHub drops it then.
    fn qos_for_response(&self, st: &mut State, topic: &str, at: Instant) -> Option<QoS> {
        let qos = st
            .conns
            .get(&self.id)
            .and_then(|c| response_qos(c, topic, at));
        if qos.is_none() {
            st.stats.lost_responses += 1;
        }
        qos
    }
}

/// A twin response is produced only for a `$iothub/twin/res/#` subscription made before the
/// request, and delivered at the matching subscription's QoS.
fn response_qos(c: &Conn, topic: &str, at: Instant) -> Option<QoS> {
    if c.wants_responses(at) {
        c.delivery_qos(topic, at)
    } else {
        None
    }
}

/// The `$rid` of a twin request topic's remainder (`?$rid=…`); `Err` for extra path segments
/// ("Further resource specialization is not supported").
fn request_id(rest: &str) -> Result<Option<String>, String> {
    let query = match rest.strip_prefix('?') {
        Some(q) => q,
        None if rest.is_empty() => "",
        None => {
            return Err(format!(
                "Further resource specialization is not supported: {rest}"
            ))
        }
    };
    let rid = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == "$rid")
        .map(|(_, v)| v.to_string());
    Ok(rid.filter(|r| !r.trim().is_empty()))
}

/// `DeviceIdentityProvider.GetAsync` + the token authenticator: the token's `se`, or the CONNACK
/// code and why. Username/client id that cannot be parsed → 3 (an exception while building the
/// identity); any authentication failure → 5.
fn authenticate(cfg: &EdgeHubConfig, c: &Connect) -> Result<f64, (ConnectReturnCode, String)> {
    let unavailable = |why: String| (ConnectReturnCode::ServiceUnavailable, why);
    let refused = |why: String| (ConnectReturnCode::NotAuthorized, why);
    let (user, password) = match &c.login {
        Some(l) => (l.username.as_str(), l.password.as_str()),
        None => ("", ""),
    };
    if user.trim().is_empty() {
        return Err(unavailable("username is missing".into()));
    }
    if c.client_id.trim().is_empty() {
        return Err(unavailable("client id is missing".into()));
    }
    let (device, module) = parse_username(user).map_err(unavailable)?;
    if password.is_empty() {
        return Err(refused(
            "neither token nor certificate was presented".into(),
        ));
    }
    let identity = if module.is_empty() {
        device.clone()
    } else {
        format!("{device}/{module}")
    };
    if c.client_id != identity {
        return Err(refused(format!(
            "client id {} is not the identity {identity}",
            c.client_id
        )));
    }
    if device != cfg.device_id || module != cfg.module_id {
        return Err(refused(format!("unknown identity {identity}")));
    }
    verify_sas(cfg, password, unix_now()).map_err(refused)
}

/// `MqttUsernameParser.Parse`: (device id, module id or "") of
/// `{host}/{device}[/{module}]/?{props}` or `{host}/{device}[/{module}]/{props}`; `api-version`
/// must be present and non-blank (its value is never checked); the host is not compared.
fn parse_username(user: &str) -> Result<(String, String), String> {
    let segs: Vec<&str> = user.split('/').collect();
    let last = segs[segs.len() - 1];
    let (device, module, query) = match (last.strip_prefix('?'), segs.len()) {
        (Some(q), 3) => (segs[1], "", q),
        (Some(q), 4) => (segs[1], segs[2], q),
        (None, 3) if last.contains("api-version=") => (segs[1], "", last),
        (None, 4) if last.contains("api-version=") => (segs[1], segs[2], last),
        _ => return Err(format!("Username {user} does not contain valid values")),
    };
    let mut props: HashMap<&str, String> = HashMap::new();
    for kv in query.trim().split('&') {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        // The first occurrence of a key wins; values are `Uri.UnescapeDataString`-decoded.
        props
            .entry(k)
            .or_insert_with(|| percent_decode_str(v).decode_utf8_lossy().into_owned());
    }
    if props.get("api-version").is_none_or(|v| v.trim().is_empty()) {
        return Err(format!(
            "Username {user} does not contain a valid Api-version property"
        ));
    }
    let (device, module) = (device.trim(), module.trim());
    if device.is_empty() {
        return Err(format!(
            "Username {user} does not contain a valid device ID"
        ));
    }
    Ok((device.to_string(), module.to_string()))
}

/// `SharedAccessSignature.Parse` + `Authenticate` + `ValidateAudience` + `ValidateExpiry`: the
/// token's `se`, or why it is refused.
fn verify_sas(cfg: &EdgeHubConfig, token: &str, now: f64) -> Result<f64, String> {
    let parts: Vec<&str> = token.split(char::is_whitespace).collect();
    if parts.len() != 2 || parts[0].trim() != "SharedAccessSignature" {
        return Err("Malformed signature".into());
    }
    let mut fields: HashMap<String, String> = HashMap::new();
    for field in parts[1].trim().split('&').filter(|f| !f.is_empty()) {
        let mut kv = field.split('=');
        let key = kv.next().unwrap_or_default();
        // .NET splits on every `=` and keeps only the second piece as the value.
        let Some(value) = kv.next() else {
            return Err(format!("field without '=': {field}"));
        };
        // `sr` stays raw: the signature is over the audience exactly as sent.
        let value = if key.eq_ignore_ascii_case("sr") {
            value.to_string()
        } else {
            url_decode(value)
        };
        if fields.insert(key.to_ascii_lowercase(), value).is_some() {
            return Err(format!("duplicate field {key}"));
        }
    }
    let field = |name: &str| {
        fields
            .get(name)
            .cloned()
            .ok_or_else(|| format!("Missing field: {name}"))
    };
    let (sig, se_text, sr) = (field("sig")?, field("se")?, field("sr")?);
    let se: f64 = se_text
        .parse()
        .map_err(|_| format!("se is not a number: {se_text}"))?;
    if se + MAX_CLOCK_SKEW < now {
        return Err("The specified SAS token is expired".into());
    }
    if sas_signature(&cfg.module_key, &sr, &se_text) != sig {
        return Err("The specified SAS token has an invalid signature".into());
    }
    // The audience is URL-decoded twice: once when parsed, again (after trimming) when checked.
    let audience = url_decode(url_decode(&sr).trim());
    let segs: Vec<&str> = audience.split('/').collect();
    let (host, device, module) = match segs.len() {
        3 => (segs[0], segs[2], None),
        5 => (segs[0], segs[2], Some(segs[4])),
        _ => return Err(format!("Invalid audience: {audience}")),
    };
    // Ids and host names compared ordinally, as `DeviceScopeTokenAuthenticator` does.
    if device != cfg.device_id || module.is_some_and(|m| m != cfg.module_id) {
        return Err(format!("audience {audience} is not for this identity"));
    }
    if host.trim().is_empty() || (host != cfg.hub_host && host != cfg.gateway_host) {
        return Err(format!("audience host {host} is neither hub nor edgeHub"));
    }
    Ok(se)
}

/// .NET `WebUtility.UrlDecode`: `+` becomes a space, `%XX` is decoded, anything else is kept.
fn url_decode(s: &str) -> String {
    let b = s.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
