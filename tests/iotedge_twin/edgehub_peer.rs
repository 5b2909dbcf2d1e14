//! The edgeHub stand-in checks and answers as edgeHub does.
//!
//! Clients connect to `localhost` (the stand-in's certificate carries it as an extra SAN next to
//! `edgehub.test` and `edgeHub`), because rumqttc resolves the MQTT host name itself and
//! `edgehub.test` does not resolve. The raw-codec client connects to 127.0.0.1 and verifies the
//! certificate for `edgehub.test`, the name the registry uses.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use rumqttc::mqttbytes::v4::{Connect, Login, Packet as Raw, Publish as RawPublish};
use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, Packet, Publish, QoS,
    TlsConfiguration, Transport,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::common::edgehub::{sas_signature, sas_token, validate_reported, EdgeHub, EdgeHubConfig};
use crate::common::pki::Ca;

const HUB: &str = "hub.test.azure-devices.net";
const GATEWAY: &str = "edgehub.test";
const DEVICE: &str = "dev1";
const MODULE: &str = "registry";
const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";
const CLIENT_ID: &str = "dev1/registry";
const USERNAME: &str = "edgehub.test/dev1/registry/?api-version=2020-09-30";
/// Long enough for any answer on loopback; also how long "no answer" is waited for.
const WAIT: Duration = Duration::from_secs(3);

struct Peer {
    hub: EdgeHub,
    ca: String,
}

fn peer(reauth_every: Duration) -> Peer {
    let ca = Ca::new("edgeHub test CA");
    let (cert_pem, key_pem) = ca.server_for(&[GATEWAY, "edgeHub", "localhost"]);
    let hub = EdgeHub::start(EdgeHubConfig {
        hub_host: HUB.into(),
        gateway_host: GATEWAY.into(),
        device_id: DEVICE.into(),
        module_id: MODULE.into(),
        module_key: KEY.to_vec(),
        cert_pem,
        key_pem,
        reauth_every,
    });
    Peer {
        hub,
        ca: ca.0.pem(),
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn token() -> String {
    sas_token(HUB, DEVICE, MODULE, KEY, now() + 3600)
}

fn tls(
    ca: &str,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let cert = CertificateDer::from_pem_slice(ca.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    roots.add(cert).unwrap_or_else(|e| panic!("{e}"));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap_or_else(|e| panic!("{e}"))
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// A rumqttc client; returns it, its event loop and the CONNACK code (0 accepted).
async fn connect(
    p: &Peer,
    client_id: &str,
    user: &str,
    pass: &str,
) -> (AsyncClient, EventLoop, u8) {
    let mut o = MqttOptions::new(client_id, "localhost", p.hub.port());
    o.set_credentials(user, pass);
    o.set_keep_alive(Duration::from_secs(30));
    let versions = &[&rustls::version::TLS12, &rustls::version::TLS13];
    let config = TlsConfiguration::Rustls(tls(&p.ca, versions));
    o.set_transport(Transport::tls_with_config(config));
    let (client, mut el) = AsyncClient::new(o, 16);
    let code = match tokio::time::timeout(WAIT, el.poll()).await {
        Ok(Ok(Event::Incoming(Packet::ConnAck(a)))) => a.code as u8,
        Ok(Err(ConnectionError::ConnectionRefused(code))) => code as u8,
        other => panic!("no CONNACK: {other:?}"),
    };
    (client, el, code)
}

async fn connected(p: &Peer) -> (AsyncClient, EventLoop) {
    let (c, el, code) = connect(p, CLIENT_ID, USERNAME, &token()).await;
    assert_eq!(code, 0, "refused: {:?}", p.hub.stats().refusals);
    (c, el)
}

/// Drives the event loop until `want` matches an incoming packet, or `WAIT` passes.
async fn until(el: &mut EventLoop, want: impl Fn(&Packet) -> bool) -> Option<Packet> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, el.poll()).await {
            Ok(Ok(Event::Incoming(p))) if want(&p) => return Some(p),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("connection failed: {e}"),
            Err(_) => return None,
        }
    }
}

async fn subscribe(c: &AsyncClient, el: &mut EventLoop, filter: &str) {
    c.subscribe(filter, QoS::AtLeastOnce)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let ack = until(el, |p| matches!(p, Packet::SubAck(_))).await;
    let Some(Packet::SubAck(ack)) = ack else {
        panic!("no SUBACK")
    };
    assert_eq!(
        ack.return_codes,
        vec![rumqttc::SubscribeReasonCode::Success(QoS::AtLeastOnce)]
    );
}

/// The next publication whose topic starts with `prefix`.
async fn publication(el: &mut EventLoop, prefix: &str) -> Option<Publish> {
    match until(
        el,
        |p| matches!(p, Packet::Publish(p) if p.topic.starts_with(prefix)),
    )
    .await
    {
        Some(Packet::Publish(p)) => Some(p),
        _ => None,
    }
}

async fn request(c: &AsyncClient, topic: &str, body: Vec<u8>) {
    c.publish(topic, QoS::AtMostOnce, false, body)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

async fn get_twin(c: &AsyncClient, el: &mut EventLoop, rid: &str) -> Value {
    request(c, &format!("$iothub/twin/GET/?$rid={rid}"), Vec::new()).await;
    let topic = format!("$iothub/twin/res/200/?$rid={rid}");
    let p = publication(el, &topic)
        .await
        .unwrap_or_else(|| panic!("no {topic}"));
    assert_eq!(p.topic, topic);
    serde_json::from_slice(&p.payload).unwrap_or_else(|e| panic!("{e}"))
}

async fn report(c: &AsyncClient, rid: &str, body: Value) {
    let topic = format!("$iothub/twin/PATCH/properties/reported/?$rid={rid}");
    request(c, &topic, body.to_string().into_bytes()).await;
}

/// Runs `el` until the stand-in drops the connection; whether it did within `limit`.
async fn dropped(el: &mut EventLoop, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, el.poll()).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return true,
            Err(_) => return false,
        }
    }
}

#[tokio::test]
async fn accepts_an_sdk_token_and_answers_get_only_after_subscribing() {
    let p = peer(Duration::from_secs(300));
    p.hub.set_desired(json!({"a": 1}), 7);
    let se = now() + 3600;
    let t = sas_token(HUB, DEVICE, MODULE, KEY, se);
    assert!(t.starts_with("SharedAccessSignature sr=hub.test.azure-devices.net%2Fdevices%2Fdev1%2Fmodules%2Fregistry&sig="), "{t}");
    let (c, mut el, code) = connect(&p, CLIENT_ID, USERNAME, &t).await;
    assert_eq!(code, 0, "{:?}", p.hub.stats().refusals);

    // A GET before the response subscription exists is answered into the void.
    request(&c, "$iothub/twin/GET/?$rid=early", Vec::new()).await;
    assert!(publication(&mut el, "$iothub/twin/res/").await.is_none());
    assert_eq!(p.hub.stats().lost_responses, 1);
    // A broader filter matches the response topic, but edgeHub only recognises the exact one.
    subscribe(&c, &mut el, "$iothub/twin/#").await;
    request(&c, "$iothub/twin/GET/?$rid=broad", Vec::new()).await;
    assert!(publication(&mut el, "$iothub/twin/res/").await.is_none());
    assert_eq!(p.hub.stats().lost_responses, 2);

    subscribe(&c, &mut el, "$iothub/twin/res/#").await;
    let twin = get_twin(&c, &mut el, "2").await;
    assert_eq!(
        twin,
        json!({"desired": {"a": 1, "$version": 7}, "reported": {"$version": 1}})
    );
    let s = p.hub.stats();
    assert_eq!(
        (s.connacks, s.token_expiries, s.gets, s.connected),
        (vec![0], vec![se], 3, 1)
    );
    assert_eq!(s.client_ids, vec![CLIENT_ID]);
    assert_eq!(s.usernames, vec![USERNAME]);
}

#[tokio::test]
async fn refuses_as_edgehub_does() {
    let p = peer(Duration::from_secs(300));
    let wrong_key = sas_token(HUB, DEVICE, MODULE, b"another key", now() + 3600);
    let expired = sas_token(HUB, DEVICE, MODULE, KEY, now() - 600);
    let in_skew = sas_token(HUB, DEVICE, MODULE, KEY, now() - 200);
    let other_module = sas_token(HUB, DEVICE, "other", KEY, now() + 3600);
    let other_host = sas_token("elsewhere.example", DEVICE, MODULE, KEY, now() + 3600);
    let gateway_sr = sas_token(GATEWAY, DEVICE, MODULE, KEY, now() + 3600);
    let no_api = "edgehub.test/dev1/registry/?DeviceClientType=x";
    let blank_api = "edgehub.test/dev1/registry/?api-version=%20";
    let no_query_mark = "any.host/dev1/registry/api-version=2018-06-30";
    let cases: &[(&str, &str, &str, u8)] = &[
        (CLIENT_ID, USERNAME, &wrong_key, 5),
        (CLIENT_ID, USERNAME, &expired, 5),
        (CLIENT_ID, USERNAME, &in_skew, 0),
        (CLIENT_ID, USERNAME, &other_module, 5),
        (CLIENT_ID, USERNAME, &other_host, 5),
        (CLIENT_ID, USERNAME, &gateway_sr, 0),
        (CLIENT_ID, no_api, &token(), 3),
        (CLIENT_ID, blank_api, &token(), 3),
        (CLIENT_ID, no_query_mark, &token(), 0),
        (
            "Dev1/registry",
            "edgehub.test/Dev1/registry/?api-version=1",
            &token(),
            5,
        ),
        ("dev1/other", USERNAME, &token(), 5),
        (CLIENT_ID, USERNAME, "Bearer xyz", 5),
    ];
    for (i, (id, user, pass, want)) in cases.iter().enumerate() {
        let (_c, _el, code) = connect(&p, id, user, pass).await;
        assert_eq!(code, *want, "case {i}: {:?}", p.hub.stats().refusals);
    }
    let codes: Vec<u8> = cases.iter().map(|c| c.3).collect();
    assert_eq!(p.hub.stats().connacks, codes);
}

#[tokio::test]
async fn a_raw_plus_in_sig_fails() {
    let p = peer(Duration::from_secs(300));
    let sr = "hub.test.azure-devices.net%2Fdevices%2Fdev1%2Fmodules%2Fregistry";
    // An expiry whose signature has a '+' (about half of them do).
    let (se, sig) = (now() + 3600..)
        .map(|se| (se, sas_signature(KEY, sr, &se.to_string())))
        .find(|(_, sig)| sig.contains('+'))
        .unwrap_or_else(|| panic!("no signature with '+'"));
    // Only the '+' left raw: '/' and '=' encoded, so '+' alone decides.
    let half = sig.replace('/', "%2F").replace('=', "%3D");
    let raw = format!("SharedAccessSignature sr={sr}&sig={half}&se={se}");
    let encoded = format!(
        "SharedAccessSignature sr={sr}&sig={}&se={se}",
        half.replace('+', "%2B")
    );
    assert_eq!(connect(&p, CLIENT_ID, USERNAME, &raw).await.2, 5);
    assert_eq!(connect(&p, CLIENT_ID, USERNAME, &encoded).await.2, 0);
}

#[test]
fn reported_patches_are_validated_as_edgehub_does() {
    let deep = (0..11).fold(json!(1), |v, _| json!({ "k": v }));
    let too_deep = json!({ "k": deep });
    let ok = [
        json!({"a": 1, "b": {"c": "x"}, "l": [1, "2", {"x": 1}]}),
        json!({"n": null}),
        json!({"max": 4_503_599_627_370_495_i64, "min": -4_503_599_627_370_496_i64}),
        json!({"s": "x".repeat(4096)}),
        deep,
    ];
    let bad = [
        json!({"a.b": 1}),
        json!({"$version": 1}),
        json!({"a#": 1}),
        json!({"a b": 1}),
        json!({"a\u{1}": 1}),
        json!({"big": 4_503_599_627_370_496_i64}),
        json!({"small": -4_503_599_627_370_497_i64}),
        json!({"s": "x".repeat(4097)}),
        json!({"l": [1, null]}),
        json!({"o": {"l": [[null]]}}),
        json!({"k".repeat(1025): 1}),
        json!({"a": "x".repeat(4000), "b": "x".repeat(4000), "c": "x".repeat(4000), "d": "x".repeat(4000), "e": "x".repeat(4000), "f": "x".repeat(4000), "g": "x".repeat(4000), "h": "x".repeat(4000), "i": "x".repeat(4000)}),
        too_deep,
        json!([1]),
    ];
    for v in ok {
        let r = validate_reported(v.to_string().as_bytes());
        assert!(r.is_ok(), "{v}: {r:?}");
    }
    for v in bad {
        assert!(
            validate_reported(v.to_string().as_bytes()).is_err(),
            "accepted {v}"
        );
    }
    assert!(validate_reported(b"{not json").is_err());
    assert!(validate_reported(b"").is_err());
}

#[tokio::test]
async fn reported_patches_answer_204_or_400_and_merge() {
    let p = peer(Duration::from_secs(300));
    let (c, mut el) = connected(&p).await;
    subscribe(&c, &mut el, "$iothub/twin/res/#").await;

    report(&c, "1", json!({"a.b": 1})).await;
    let r = publication(&mut el, "$iothub/twin/res/")
        .await
        .unwrap_or_else(|| panic!("no answer"));
    assert_eq!(
        (r.topic.as_str(), r.payload.len()),
        ("$iothub/twin/res/400/?$rid=1", 0)
    );

    report(&c, "2", json!({"status": {"state": "ok", "n": 1}, "m": 3})).await;
    let r = publication(&mut el, "$iothub/twin/res/")
        .await
        .unwrap_or_else(|| panic!("no answer"));
    // 204 without `&$version=` (that is IoT Hub, not edgeHub), empty body.
    assert_eq!(
        (r.topic.as_str(), r.payload.len()),
        ("$iothub/twin/res/204/?$rid=2", 0)
    );
    assert_eq!(
        p.hub.reported(),
        json!({"status": {"state": "ok", "n": 1}, "m": 3})
    );

    report(&c, "3", json!({"status": {"n": null}, "m": null})).await;
    let r = publication(&mut el, "$iothub/twin/res/")
        .await
        .unwrap_or_else(|| panic!("no answer"));
    assert_eq!(r.topic, "$iothub/twin/res/204/?$rid=3");
    assert_eq!(p.hub.reported(), json!({"status": {"state": "ok"}}));

    // Without $rid: applied, never answered.
    request(
        &c,
        "$iothub/twin/PATCH/properties/reported/",
        br#"{"x":1}"#.to_vec(),
    )
    .await;
    let twin = get_twin(&c, &mut el, "4").await;
    assert_eq!(
        twin["reported"],
        json!({"status": {"state": "ok"}, "x": 1, "$version": 4})
    );
    let s = p.hub.stats();
    assert_eq!((s.reported_ok, s.reported_rejected.len()), (3, 1));
    assert!(
        s.reported_rejected[0].contains("a.b"),
        "{:?}",
        s.reported_rejected
    );
}

#[tokio::test]
async fn empty_twin_switch_answers_without_versions() {
    let p = peer(Duration::from_secs(300));
    let (c, mut el) = connected(&p).await;
    subscribe(&c, &mut el, "$iothub/twin/res/#").await;
    p.hub.set_empty_twin(true);
    request(&c, "$iothub/twin/GET/?$rid=e", Vec::new()).await;
    let r = publication(&mut el, "$iothub/twin/res/200/")
        .await
        .unwrap_or_else(|| panic!("no answer"));
    assert_eq!(&r.payload[..], br#"{"desired":{},"reported":{}}"#);
    p.hub.set_empty_twin(false);
    assert_eq!(get_twin(&c, &mut el, "f").await["desired"]["$version"], 1);
}

#[tokio::test]
async fn desired_patches_reach_subscribers_with_their_version() {
    let p = peer(Duration::from_secs(300));
    p.hub.set_desired(json!({"a": 1, "b": {"c": 1}}), 3);
    let (c, mut el) = connected(&p).await;
    // Not subscribed yet: nothing is queued for later.
    assert_eq!(p.hub.patch_desired(json!({"early": true})), 4);
    subscribe(&c, &mut el, "$iothub/twin/PATCH/properties/desired/#").await;
    subscribe(&c, &mut el, "$iothub/twin/res/#").await;

    assert_eq!(p.hub.patch_desired(json!({"b": {"c": null, "d": 2}})), 5);
    let d = publication(&mut el, "$iothub/twin/PATCH/")
        .await
        .unwrap_or_else(|| panic!("no patch"));
    assert_eq!(
        (d.topic.as_str(), d.qos),
        (
            "$iothub/twin/PATCH/properties/desired/?$version=5",
            QoS::AtLeastOnce
        )
    );
    let body: Value = serde_json::from_slice(&d.payload).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(body, json!({"b": {"c": null, "d": 2}, "$version": 5}));

    assert_eq!(
        p.hub
            .patch_desired_skipping(json!({"x": 1}), json!({"y": 2}), 2),
        8
    );
    let d = publication(&mut el, "$iothub/twin/PATCH/")
        .await
        .unwrap_or_else(|| panic!("no patch"));
    let body: Value = serde_json::from_slice(&d.payload).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(body, json!({"y": 2, "$version": 8}));

    let twin = get_twin(&c, &mut el, "1").await;
    let want = json!({"a": 1, "b": {"d": 2}, "early": true, "x": 1, "y": 2, "$version": 8});
    assert_eq!(twin["desired"], want);
    assert_eq!(p.hub.desired_version(), 8);
}

#[tokio::test]
async fn stop_drops_everyone_and_restart_keeps_the_twin() {
    let p = peer(Duration::from_secs(300));
    p.hub.set_desired(json!({"a": 1}), 5);
    let (_c, mut el) = connected(&p).await;
    p.hub.stop();
    assert_eq!(p.hub.stats().connected, 0);
    assert!(dropped(&mut el, WAIT).await, "connection survived stop()");
    assert!(TcpStream::connect(("127.0.0.1", p.hub.port()))
        .await
        .is_err());

    p.hub.restart();
    let (c, mut el) = connected(&p).await;
    subscribe(&c, &mut el, "$iothub/twin/res/#").await;
    assert_eq!(
        get_twin(&c, &mut el, "1").await["desired"],
        json!({"a": 1, "$version": 5})
    );
    assert_eq!(p.hub.stats().connacks, vec![0, 0]);
}

#[tokio::test]
async fn revalidation_drops_a_token_that_expires() {
    let p = peer(Duration::from_secs(1));
    // Valid for about 2 s more, counting the 5-minute clock skew.
    let t = sas_token(HUB, DEVICE, MODULE, KEY, now() - 300 + 2);
    let (_c, mut el, code) = connect(&p, CLIENT_ID, USERNAME, &t).await;
    assert_eq!(code, 0);
    let started = Instant::now();
    assert!(
        dropped(&mut el, Duration::from_secs(6)).await,
        "never dropped"
    );
    assert!(started.elapsed() >= Duration::from_millis(500));
    let s = p.hub.stats();
    assert_eq!((s.dropped_expired, s.connected), (1, 0));
}

#[tokio::test]
async fn tls_is_1_2_only() {
    let p = peer(Duration::from_secs(300));
    let tcp = TcpStream::connect(("127.0.0.1", p.hub.port()))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let name = ServerName::try_from(GATEWAY).unwrap_or_else(|e| panic!("{e}"));
    let tls13 = TlsConnector::from(tls(&p.ca, &[&rustls::version::TLS13]));
    assert!(tls13.connect(name, tcp).await.is_err(), "TLS 1.3 accepted");
    let mut raw = RawClient::open(&p).await;
    raw.send(Raw::PingReq).await;
    // Before CONNECT anything else closes the connection.
    assert!(matches!(raw.recv().await, Got::Closed));
}

/// A client speaking the v4 codec over TLS, for what rumqttc would not send.
struct RawClient {
    tls: TlsStream<TcpStream>,
    buf: BytesMut,
}

#[derive(Debug)]
enum Got {
    Packet(Raw),
    Closed,
    Nothing,
}

impl RawClient {
    async fn open(p: &Peer) -> RawClient {
        let tcp = TcpStream::connect(("127.0.0.1", p.hub.port()))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let name = ServerName::try_from(GATEWAY).unwrap_or_else(|e| panic!("{e}"));
        let connector = TlsConnector::from(tls(&p.ca, &[&rustls::version::TLS12]));
        let tls = connector
            .connect(name, tcp)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        RawClient {
            tls,
            buf: BytesMut::new(),
        }
    }

    async fn connected(p: &Peer, keep_alive: u16) -> RawClient {
        let mut raw = RawClient::open(p).await;
        let mut c = Connect::new(CLIENT_ID);
        c.keep_alive = keep_alive;
        c.login = Some(Login::new(USERNAME, token()));
        raw.send(Raw::Connect(c)).await;
        match raw.recv().await {
            Got::Packet(Raw::ConnAck(a)) => assert_eq!(a.code as u8, 0),
            other => panic!("no CONNACK: {other:?}"),
        }
        raw
    }

    async fn send(&mut self, p: Raw) {
        let mut out = BytesMut::new();
        p.write(&mut out, usize::MAX)
            .unwrap_or_else(|e| panic!("{e}"));
        self.tls
            .write_all(&out)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }

    async fn recv(&mut self) -> Got {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Ok(p) = Raw::read(&mut self.buf, usize::MAX) {
                return Got::Packet(p);
            }
            match tokio::time::timeout_at(deadline, self.tls.read_buf(&mut self.buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return Got::Closed,
                Ok(Ok(_)) => {}
                Err(_) => return Got::Nothing,
            }
        }
    }
}

#[tokio::test]
async fn protocol_violations_close_or_are_ignored_as_edgehub_does() {
    let p = peer(Duration::from_secs(300));

    let mut raw = RawClient::connected(&p, 30).await;
    let mut sub = rumqttc::mqttbytes::v4::Subscribe::new("$iothub/twin/res/#", QoS::ExactlyOnce);
    sub.pkid = 1;
    raw.send(Raw::Subscribe(sub)).await;
    match raw.recv().await {
        Got::Packet(Raw::SubAck(a)) => assert_eq!(
            a.return_codes,
            vec![rumqttc::SubscribeReasonCode::Success(QoS::AtLeastOnce)]
        ),
        other => panic!("no SUBACK: {other:?}"),
    }
    // GET without $rid and an unknown topic: no answer, connection kept.
    raw.send(Raw::Publish(RawPublish::new(
        "$iothub/twin/GET/",
        QoS::AtMostOnce,
        vec![],
    )))
    .await;
    raw.send(Raw::Publish(RawPublish::new(
        "devices/dev1/messages/events/",
        QoS::AtMostOnce,
        vec![],
    )))
    .await;
    let mut q1 = RawPublish::new("$iothub/twin/GET/?$rid=7", QoS::AtLeastOnce, vec![]);
    q1.pkid = 9;
    raw.send(Raw::Publish(q1)).await;
    // The answer comes at QoS 1 (granted 1) with a packet id, and the request is acknowledged.
    let mut got = Vec::new();
    for _ in 0..2 {
        got.push(raw.recv().await);
    }
    assert!(
        got.iter()
            .any(|g| matches!(g, Got::Packet(Raw::PubAck(a)) if a.pkid == 9)),
        "{got:?}"
    );
    assert!(got.iter().any(|g| matches!(g, Got::Packet(Raw::Publish(r)) if r.topic == "$iothub/twin/res/200/?$rid=7" && r.qos == QoS::AtLeastOnce && r.pkid != 0)), "{got:?}");
    raw.send(Raw::PingReq).await;
    assert!(matches!(raw.recv().await, Got::Packet(Raw::PingResp)));
    // A second CONNECT closes the connection.
    raw.send(Raw::Connect(Connect::new(CLIENT_ID))).await;
    assert!(matches!(raw.recv().await, Got::Closed));

    // QoS 2 closes the connection.
    let mut raw = RawClient::connected(&p, 30).await;
    let mut q2 = RawPublish::new("$iothub/twin/GET/?$rid=8", QoS::ExactlyOnce, vec![]);
    q2.pkid = 1;
    raw.send(Raw::Publish(q2)).await;
    assert!(matches!(raw.recv().await, Got::Closed));

    let errors = p.hub.stats().protocol_errors;
    assert_eq!(errors.len(), 4, "{errors:?}");
    for (e, want) in
        errors
            .iter()
            .zip(["Correlation id", "unknown topic", "second CONNECT", "QoS 2"])
    {
        assert!(e.contains(want), "{e} should mention {want}");
    }
}

#[tokio::test]
async fn keep_alive_closes_a_silent_client_after_one_and_a_half_periods() {
    let p = peer(Duration::from_secs(300));
    let mut raw = RawClient::connected(&p, 1).await;
    let started = Instant::now();
    assert!(matches!(raw.recv().await, Got::Closed));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1300) && took < Duration::from_millis(2500),
        "{took:?}"
    );
}
