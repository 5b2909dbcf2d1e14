//! The registry started with only the IoT Edge variables: its connection string and policy come
//! from the module twin, its trust from the workload API's bundle, and its status goes back as
//! reported properties; edgeHub going away changes nothing but the status.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::edgehub::{EdgeHub, EdgeHubConfig};
use crate::common::pki::{self, Ca};
use crate::common::workload::{Fault, Workload, WorkloadConfig};
use crate::common::{self, free_port, oci, Registry};

const DEVICE: &str = "gateway-1";
const MODULE: &str = "connected-registry";
const HUB: &str = "factory-hub.azure-devices.net";
/// edgeHub's name: it must resolve, and edgeHub's certificate is checked for it.
const GATEWAY: &str = "localhost";

/// Everything around the module: the IoT Edge CA, edgeHub, the workload API and an HTTPS
/// parent whose certificate chains to the same CA.
struct Edge {
    ca: Arc<Ca>,
    hub: EdgeHub,
    workload: Workload,
    parent: Registry,
    /// The parent's HTTPS `host:port`.
    parent_tls: String,
    _dir: tempfile::TempDir,
}

impl Edge {
    fn start() -> Edge {
        Self::start_with(Duration::from_secs(3600))
    }

    /// With server certificates from the workload API valid for `cert_lifetime`.
    fn start_with(cert_lifetime: Duration) -> Edge {
        let dir = tempfile::TempDir::new().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let ca = Arc::new(Ca::new("IoT Edge device CA"));
        let key: Vec<u8> = oci::pseudo_random(32, 16);
        let (hub_cert, hub_key) = ca.server_for(&[GATEWAY, "edgeHub"]);
        let hub = EdgeHub::start(EdgeHubConfig {
            hub_host: HUB.into(),
            gateway_host: GATEWAY.into(),
            device_id: DEVICE.into(),
            module_id: MODULE.into(),
            module_key: key.clone(),
            cert_pem: hub_cert,
            key_pem: hub_key,
            reauth_every: Duration::from_secs(1),
        });
        let workload = Workload::start(WorkloadConfig {
            socket: dir.path().join("workload.sock"),
            module_id: MODULE.into(),
            module_key: key,
            trust_bundle_pem: ca.0.pem(),
            ca: ca.clone(),
            server_cert_lifetime: cert_lifetime,
        });
        let (cert, tls_key) = ca.server();
        let cert = pki::write(dir.path(), "parent.crt", &cert);
        let tls_key = pki::write(dir.path(), "parent.key", &tls_key);
        let parent_tls = format!("127.0.0.1:{}", free_port());
        let parent = Registry::start_with(&[
            "--tls-cert",
            &cert.display().to_string(),
            "--tls-key",
            &tls_key.display().to_string(),
            "--tls-listen",
            &parent_tls,
            "--http-enabled",
        ]);
        Edge {
            ca,
            hub,
            workload,
            parent,
            parent_tls,
            _dir: dir,
        }
    }

    /// The connection string for the parent over HTTPS.
    fn connection_string(&self) -> String {
        format!(
            "ConnectedRegistryName=edgechild;SyncTokenName=sync;SyncTokenPassword=unused;\
             ParentGatewayEndpoint={};ParentEndpointProtocol=https",
            self.parent_tls
        )
    }

    /// The module, with nothing in its environment but what edgeAgent sets (and the test's
    /// edgeHub port and a short token lifetime).
    fn module(&self, token_ttl: &str) -> Registry {
        self.module_with(token_ttl, &[])
    }

    /// Like `module`, with more `serve` arguments.
    fn module_with(&self, token_ttl: &str, args: &[&str]) -> Registry {
        let tmp = tempfile::TempDir::new().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let env = [
            ("IOTEDGE_WORKLOADURI", self.workload.uri()),
            ("IOTEDGE_MODULEID", MODULE.into()),
            ("IOTEDGE_DEVICEID", DEVICE.into()),
            ("IOTEDGE_IOTHUBHOSTNAME", HUB.into()),
            ("IOTEDGE_GATEWAYHOSTNAME", GATEWAY.into()),
            ("IOTEDGE_MODULEGENERATIONID", "638000000000000000".into()),
            ("IOTEDGE_APIVERSION", "2022-08-03".into()),
            ("IOTEDGE_AUTHSCHEME", "sasToken".into()),
            (
                "CONNECTED_REGISTRY_EDGEHUB_PORT",
                self.hub.port().to_string(),
            ),
            ("CONNECTED_REGISTRY_TWIN_TOKEN_TTL", token_ttl.into()),
        ];
        let env = env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        let mut all = vec!["--insecure-no-auth".to_owned()];
        all.extend(args.iter().map(|a| a.to_string()));
        Registry::start_in_clean_env(tmp, all, env)
    }

    /// Pushes a small image to the parent as `repo:tag`.
    fn publish(&self, repo: &str, tag: &str) {
        let image = oci::image("amd64", format!("{repo}:{tag}\n").as_bytes());
        oci::push(&common::http(), &self.parent.url(), repo, tag, &image);
    }
}

fn has(reg: &Registry, repo: &str, tag: &str) -> bool {
    common::http()
        .get(format!("{}/v2/{repo}/manifests/{tag}", reg.url()))
        .header(
            "Accept",
            "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json",
        )
        .send()
        .is_ok_and(|r| r.status().is_success())
}

fn status(reg: &Registry) -> Value {
    common::http()
        .get(format!("{}/acr/v1/status", reg.url()))
        .send()
        .and_then(|r| r.json())
        .unwrap_or(Value::Null)
}

fn details(v: &Value) -> String {
    v["statusDetails"].to_string()
}

/// Waits until `cond` holds, failing with the module's log and what edgeHub saw.
fn wait(edge: &Edge, reg: &Registry, what: &str, limit: Duration, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        if Instant::now() > deadline {
            let log = reg.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            panic!(
                "timed out waiting for {what}\nedgeHub: {:?}\nreported: {}\nworkload: {:?}\nlog (newest first):\n{}",
                edge.hub.stats(),
                edge.hub.reported(),
                edge.workload.stats(),
                tail.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn reported(edge: &Edge, key: &str) -> Value {
    edge.hub.reported()[key].clone()
}

#[test]
fn the_twin_configures_the_module_live_and_receives_its_status() {
    let edge = Edge::start();
    edge.publish("hello-world", "v1");
    edge.publish("second", "v1");
    edge.publish("third", "v1");
    edge.hub.set_desired(
        json!({
            "connectionString": edge.connection_string(),
            "mode": "ReadOnly",
            "sync": {"repositories": ["hello-world"], "interval": "PT1S"},
        }),
        1,
    );
    let reg = edge.module("PT12S");
    let limit = Duration::from_secs(30);

    // Connection string and policy from the twin; the parent's CA from the trust bundle.
    wait(&edge, &reg, "hello-world from the parent", limit, || {
        has(&reg, "hello-world", "v1")
    });
    assert!(!has(&reg, "second", "v1"), "only the twin's repositories");
    let ws = edge.workload.stats();
    assert!(ws.signs >= 1 && ws.trust_bundles >= 1, "{ws:?}");
    assert!(
        ws.sign_data[0].starts_with(
            "factory-hub.azure-devices.net%2Fdevices%2Fgateway-1%2Fmodules%2Fconnected-registry\n"
        ),
        "the token signs sr and expiry: {:?}",
        ws.sign_data[0]
    );

    // Status as reported properties, accepted by edgeHub's validation.
    // Storage figures are refreshed every 30 s at most.
    wait(
        &edge,
        &reg,
        "reported properties",
        Duration::from_secs(45),
        || {
            reported(&edge, "appliedDesiredVersion") == json!(1)
                && reported(&edge, "connectionState") == json!("Online")
                && reported(&edge, "storage")["usedBytes"].as_u64() > Some(0)
        },
    );
    let r = edge.hub.reported();
    assert_eq!(r["mode"], "ReadOnly");
    assert_eq!(r["version"], env!("CARGO_PKG_VERSION"));
    assert!(r["lastSyncTime"].is_string(), "{r}");
    assert!(r["storage"]["freeBytes"].as_u64() > Some(0), "{r}");
    assert!(
        r["outbox"].is_object() && r["statusDetails"].is_array(),
        "{r}"
    );
    let pid = reg.pid();

    // A desired patch adds a repository: synced without a restart.
    let v2 = edge
        .hub
        .patch_desired(json!({"sync": {"repositories": ["hello-world", "second"]}}));
    assert_eq!(v2, 2);
    wait(&edge, &reg, "the patched repository", limit, || {
        has(&reg, "second", "v1") && reported(&edge, "appliedDesiredVersion") == json!(2)
    });
    assert_eq!(reg.pid(), pid, "applied live");

    // A patch whose version skips ahead: the module fetches the whole twin and so learns what
    // the skipped versions changed.
    let gets = edge.hub.stats().gets;
    let v5 = edge.hub.patch_desired_skipping(
        json!({"sync": {"repositories": ["hello-world", "second", "third"]}}),
        json!({"server": {"log_level": "Debug"}}),
        2,
    );
    assert_eq!(v5, 5);
    wait(
        &edge,
        &reg,
        "the skipped version's repository",
        limit,
        || has(&reg, "third", "v1") && reported(&edge, "appliedDesiredVersion") == json!(5),
    );
    assert!(
        edge.hub.stats().gets > gets,
        "a whole-twin GET followed the gap"
    );
    assert!(
        reg.log().contains("log level changed level=Debug"),
        "server.log_level applied live"
    );

    // An invalid value is reported; the policy in force stays and keeps syncing.
    edge.hub
        .patch_desired(json!({"sync": {"interval": "whenever"}}));
    wait(&edge, &reg, "the invalid value reported", limit, || {
        let d = reported(&edge, "statusDetails").to_string();
        d.contains("DesiredPropertiesInvalid") && d.contains("sync.interval")
    });
    assert_eq!(reported(&edge, "appliedDesiredVersion"), json!(5));
    assert!(details(&status(&reg)).contains("DesiredPropertiesInvalid"));
    edge.publish("hello-world", "v2");
    wait(&edge, &reg, "a new tag under the old policy", limit, || {
        has(&reg, "hello-world", "v2")
    });
    // Fixing it clears the condition.
    edge.hub
        .patch_desired(json!({"sync": {"interval": "PT2S"}}));
    wait(&edge, &reg, "the fixed value applied", limit, || {
        reported(&edge, "appliedDesiredVersion") == json!(7)
            && !reported(&edge, "statusDetails")
                .to_string()
                .contains("DesiredPropertiesInvalid")
    });

    // The 12 s token was renewed by reconnecting with a new one, never refused.
    wait(
        &edge,
        &reg,
        "two token renewals",
        Duration::from_secs(40),
        || edge.hub.stats().token_expiries.len() >= 3,
    );
    let s = edge.hub.stats();
    assert!(s.connacks.iter().all(|c| *c == 0), "{s:?}");
    assert!(
        s.token_expiries.windows(2).all(|w| w[0] < w[1]),
        "each connection carries a newer token: {s:?}"
    );
    assert!(s.reported_ok >= 3, "{s:?}");
    assert!(s.reported_rejected.is_empty(), "{s:?}");
    assert!(s.protocol_errors.is_empty(), "{s:?}");
    assert_eq!(reg.pid(), pid);
}

#[test]
fn without_edgehub_the_module_serves_and_syncs_from_its_last_known_policy() {
    let edge = Edge::start();
    edge.publish("app", "v1");
    edge.hub.set_desired(
        json!({
            "connectionString": edge.connection_string(),
            "sync": {"repositories": ["app"], "interval": "PT1S"},
        }),
        3,
    );
    let mut reg = edge.module("PT1H");
    let limit = Duration::from_secs(30);
    wait(&edge, &reg, "the first sync", limit, || {
        has(&reg, "app", "v1")
    });
    wait(&edge, &reg, "the first report", limit, || {
        reported(&edge, "appliedDesiredVersion") == json!(3)
    });

    // edgeHub goes away: serving and syncing go on, the status says why.
    edge.hub.stop();
    edge.publish("app", "v2");
    wait(&edge, &reg, "a sync while edgeHub is down", limit, || {
        has(&reg, "app", "v2")
    });
    wait(
        &edge,
        &reg,
        "edgeHub's absence in the status",
        limit,
        || details(&status(&reg)).contains("EdgeHubUnavailable"),
    );

    // A restart while edgeHub is down and the workload API throttles (closes without an
    // answer) keeps the last desired properties and the last trust bundle (both persisted).
    edge.workload.set_fault(Some(Fault::CloseWithoutReply));
    reg.restart();
    edge.publish("app", "v3");
    wait(
        &edge,
        &reg,
        "a sync after a restart without edgeHub",
        limit,
        || has(&reg, "app", "v3"),
    );
    assert!(has(&reg, "app", "v1"), "nothing synced earlier was dropped");
    assert!(details(&status(&reg)).contains("TrustBundleUnavailable"));
    edge.workload.set_fault(None);
    wait(&edge, &reg, "the trust bundle again", limit, || {
        !details(&status(&reg)).contains("TrustBundleUnavailable")
    });

    // edgeHub comes back offline with nothing stored (an empty twin without $version): the
    // module keeps its policy, reconnects and reports again.
    edge.hub.set_empty_twin(true);
    let connects = edge.hub.stats().token_expiries.len();
    edge.hub.restart();
    wait(
        &edge,
        &reg,
        "the reconnection",
        Duration::from_secs(90),
        || edge.hub.stats().token_expiries.len() > connects && edge.hub.stats().gets > 0,
    );
    edge.publish("app", "v4");
    wait(&edge, &reg, "a sync under the kept policy", limit, || {
        has(&reg, "app", "v4")
    });
    wait(&edge, &reg, "the condition cleared", limit, || {
        !details(&status(&reg)).contains("EdgeHubUnavailable")
    });

    // Back online: a patch applies again.
    edge.hub.set_empty_twin(false);
    edge.publish("later", "v1");
    edge.hub
        .patch_desired(json!({"sync": {"repositories": ["app", "later"]}}));
    wait(&edge, &reg, "a patch after the outage", limit, || {
        has(&reg, "later", "v1") && reported(&edge, "appliedDesiredVersion") == json!(4)
    });
}

#[test]
fn https_with_a_server_certificate_from_the_workload_api_renewed_before_expiry() {
    let edge = Edge::start_with(Duration::from_secs(15));
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let reg = edge.module_with(
        "PT1H",
        &[
            "--tls-from-workload",
            "--tls-listen",
            &listen,
            "--http-enabled",
        ],
    );
    let https = |what: &str| {
        // A fresh client each time: a new handshake sees the certificate served now.
        let ca = reqwest::Certificate::from_pem(edge.ca.0.pem().as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
        let client = reqwest::blocking::Client::builder()
            .no_proxy()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca)
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        let r = client
            .get(format!("https://{GATEWAY}:{port}/v2/"))
            .send()
            .unwrap_or_else(|e| panic!("{what}: {e:?}"));
        assert_eq!(r.status(), 200, "{what}");
    };
    https("the first certificate, for the gateway's name, chained to the IoT Edge CA");
    assert_eq!(edge.workload.stats().server_certs, vec![GATEWAY.to_owned()]);
    wait(
        &edge,
        &reg,
        "a renewal before expiry",
        Duration::from_secs(30),
        || edge.workload.stats().server_certs.len() >= 2,
    );
    https("the renewed certificate");
    // Past the first certificate's expiry, handshakes still succeed.
    std::thread::sleep(Duration::from_secs(5));
    https("after the first certificate expired");
}

#[test]
fn local_development_connects_with_a_module_connection_string_and_ca_file() {
    let edge = Edge::start();
    edge.publish("dev", "v1");
    edge.hub.set_desired(
        json!({
            "connectionString": edge.connection_string(),
            "sync": {"repositories": ["dev"], "interval": "PT1S"},
        }),
        2,
    );
    let tmp = tempfile::TempDir::new().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let ca = pki::write(tmp.path(), "edge-ca.pem", &edge.ca.0.pem());
    let b64 = |k: Vec<u8>| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, k);
    let cs = |key: String| {
        format!(
            "HostName={HUB};GatewayHostName={GATEWAY};DeviceId={DEVICE};ModuleId={MODULE};SharedAccessKey={key}"
        )
    };
    let env = |key: String| {
        vec![
            ("EdgeHubConnectionString".to_owned(), cs(key)),
            (
                "EdgeModuleCACertificateFile".to_owned(),
                ca.display().to_string(),
            ),
            (
                "CONNECTED_REGISTRY_EDGEHUB_PORT".to_owned(),
                edge.hub.port().to_string(),
            ),
        ]
    };
    // A wrong key: edgeHub refuses the token; the registry runs, and says why.
    let wrong = env(b64(oci::pseudo_random(32, 99)));
    let mut reg = Registry::start_in_clean_env(tmp, vec!["--insecure-no-auth".into()], wrong);
    wait(
        &edge,
        &reg,
        "the refusal in the status",
        Duration::from_secs(30),
        || {
            let d = details(&status(&reg));
            d.contains("EdgeHubUnavailable") && d.contains("CONNACK 5")
        },
    );
    assert!(edge.hub.stats().connacks.contains(&5));
    assert!(common::http()
        .get(format!("{}/v2/", reg.url()))
        .send()
        .is_ok_and(|r| r.status().is_success()));

    // The module's key: connected, configured.
    reg.env = env(b64(oci::pseudo_random(32, 16)));
    reg.restart();
    wait(
        &edge,
        &reg,
        "the twin's policy",
        Duration::from_secs(30),
        || has(&reg, "dev", "v1") && reported(&edge, "appliedDesiredVersion") == json!(2),
    );
    assert_eq!(
        edge.workload.stats().signs,
        0,
        "signed with the key, not the daemon"
    );
    assert_eq!(edge.hub.stats().connacks.last(), Some(&0));
}
