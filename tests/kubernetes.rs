//! The Kubernetes deployment (deploy/kubernetes): every overlay renders with `kubectl kustomize`,
//! every object validates offline against the Kubernetes API schemas (`kubernetes-validate`),
//! the values that matter are where they belong, the validator does reject a broken object, and
//! the policy file mounted from a ConfigMap is applied live when kubelet swaps `..data`.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{require, run_bounded, run_ok, Registry};
use serde_json::Value;
use tempfile::TempDir;

/// Kubernetes versions validated against: kubectl 1.32's and the newest the validator ships.
const KUBERNETES_VERSIONS: &[&str] = &["1.32.0", "1.37.0"];
/// The validator version scripts/test.sh installs (named when it is missing).
const VALIDATOR: &str = "kubernetes-validate==1.37.0";
const LIMIT: Duration = Duration::from_secs(120);
const NAMESPACE: &str = "connected-registry";
/// The Secret holding the connection string, and its key (ACR's `connectionString`).
const CONNECTION_SECRET: (&str, &str) =
    ("connected-registry-connection-string", "connectionString");
const TLS_SECRET: &str = "connected-registry-tls";
const CONFIG_MAP: &str = "connected-registry-config";
const CONFIG_FILE: &str = "/etc/connected-registry/registry.toml";
const HEALTH: &str = "/acr/v1/_health";

/// How an overlay serves.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Tls {
    Off,
    /// A Secret the user creates.
    Byoc,
    /// A cert-manager Certificate writing the Secret.
    CertManager,
}

/// What trust distribution writes, when deployed.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Trust {
    Ca,
    PlainHttp,
}

/// What one overlay must render.
struct Expect {
    name: &'static str,
    tls: Tls,
    trust: Option<Trust>,
    cluster_ip: Option<&'static str>,
    storage_class: Option<&'static str>,
    storage: &'static str,
    chunk_size_mb: i64,
    image: &'static str,
    /// The DaemonSet's host directory.
    certs_dir: &'static str,
}

const ETC_CERTS: &str = "/etc/containerd/certs.d";
const BASE_IMAGE: &str = "connected-registry:0.1.0";

/// What every overlay keeps from the base unless it says otherwise.
const BASE: Expect = Expect {
    name: "",
    tls: Tls::Off,
    trust: None,
    cluster_ip: None,
    storage_class: None,
    storage: "500Gi",
    chunk_size_mb: 8,
    image: BASE_IMAGE,
    certs_dir: ETC_CERTS,
};

const OVERLAYS: &[Expect] = &[
    Expect {
        name: "http",
        ..BASE
    },
    Expect {
        name: "https-byoc",
        tls: Tls::Byoc,
        ..BASE
    },
    Expect {
        name: "https-cert-manager",
        tls: Tls::CertManager,
        cluster_ip: Some("10.96.100.1"),
        ..BASE
    },
    Expect {
        name: "trust-distribution",
        tls: Tls::Byoc,
        trust: Some(Trust::Ca),
        cluster_ip: Some("10.96.100.1"),
        ..BASE
    },
    Expect {
        name: "k3s",
        trust: Some(Trust::PlainHttp),
        cluster_ip: Some("10.43.100.1"),
        storage_class: Some("local-path"),
        storage: "20Gi",
        chunk_size_mb: 1,
        image: "registry.example.net/acr/connected-registry:0.1.0",
        certs_dir: "/var/lib/rancher/k3s/agent/etc/containerd/certs.d",
        ..BASE
    },
    Expect {
        name: "arc",
        tls: Tls::CertManager,
        trust: Some(Trust::Ca),
        cluster_ip: Some("10.0.100.1"),
        image: "myregistry.azurecr.io/acr/connected-registry:0.1.0",
        ..BASE
    },
];

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes")
}

/// kubectl with kustomize v5 or later (components, replacements); fails naming what is missing.
fn kubectl() -> PathBuf {
    let k = require("kubectl");
    let v = run_ok(Command::new(&k).args(["version", "--client"]), LIMIT);
    let major = v
        .lines()
        .find_map(|l| l.strip_prefix("Kustomize Version: v"))
        .and_then(|s| s.split('.').next())
        .and_then(|m| m.parse::<u32>().ok());
    assert!(
        major.is_some_and(|m| m >= 5),
        "kubectl with kustomize v5 or later is needed (components, replacements); found:\n{v}"
    );
    k
}

/// The offline schema validator; fails naming the package when it is missing.
fn validator() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("kubernetes-validate"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`kubernetes-validate` is not installed: run scripts/test.sh as root, or \
                 pip3 install {VALIDATOR}"
            )
        })
}

/// `kubectl kustomize` of one overlay, written to `dir/<name>.yaml`.
fn render(dir: &Path, overlay: &str) -> PathBuf {
    let src = deploy_dir().join("overlays").join(overlay);
    let yaml = run_ok(Command::new(kubectl()).arg("kustomize").arg(&src), LIMIT);
    let file = dir.join(format!("{overlay}.yaml"));
    fs::write(&file, &yaml).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    file
}

/// The YAML documents of `file` as JSON values (PyYAML: the validator's own dependency).
fn documents(file: &Path) -> Vec<Value> {
    let script = "import json, sys, yaml\n\
                  json.dump([d for d in yaml.safe_load_all(open(sys.argv[1])) if d], sys.stdout)";
    let out = run_ok(
        Command::new(require("python3"))
            .args(["-c", script])
            .arg(file),
        LIMIT,
    );
    match serde_json::from_str(&out) {
        Ok(Value::Array(docs)) => docs,
        other => panic!("{}: not a list of documents: {other:?}", file.display()),
    }
}

/// Runs the validator in strict mode (unknown fields rejected); returns (success, output).
fn validate(file: &Path, version: &str) -> (bool, String) {
    let out = run_bounded(
        Command::new(validator())
            .args(["--strict", "-k", version])
            .arg(file),
        LIMIT,
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Every object passed the schema of `version`; only cert-manager's kinds (no schema in the
/// Kubernetes API) may be without one, and those are checked field by field below.
fn assert_valid(file: &Path, docs: &[Value], version: &str) {
    let (ok, out) = validate(file, version);
    assert!(
        ok,
        "{} does not validate for {version}:\n{out}",
        file.display()
    );
    let minor = version.rsplit_once('.').map_or(version, |(v, _)| v);
    for d in docs {
        let kind = str_at(d, "/kind");
        let name = str_at(d, "/metadata/name");
        let api = str_at(d, "/apiVersion");
        let line = if api.starts_with("cert-manager.io/") {
            format!("Couldn't find schema for kind {kind} with api version {api}")
        } else {
            format!(
                "passed for resource {}/{name} against version {minor}",
                kind.to_lowercase()
            )
        };
        assert!(out.contains(&line), "{kind}/{name}: no `{line}` in:\n{out}");
    }
    for l in out.lines().filter(|l| !l.starts_with("INFO")) {
        assert!(
            l.contains("api version cert-manager.io/"),
            "{}: unexpected validator output for {version}: {l}",
            file.display()
        );
    }
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// The one object of `kind` named `name`.
fn object<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    let found: Vec<&Value> = docs
        .iter()
        .filter(|d| str_at(d, "/kind") == kind && str_at(d, "/metadata/name") == name)
        .collect();
    assert_eq!(found.len(), 1, "exactly one {kind}/{name}");
    found[0]
}

fn objects<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| str_at(d, "/kind") == kind).collect()
}

/// The entry of a list of named things (env, ports, volumes, containers).
fn named<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .and_then(|a| a.iter().find(|e| e["name"] == name))
        .unwrap_or_else(|| panic!("no `{name}` in {list}"))
}

fn env<'a>(container: &'a Value, name: &str) -> &'a str {
    str_at(named(&container["env"], name), "/value")
}

/// Seconds of a Go/our duration like `20s` or `2m`.
fn seconds(d: &str) -> u64 {
    let (n, unit) = d.split_at(d.len().saturating_sub(1));
    let n: u64 = n.parse().unwrap_or_else(|e| panic!("duration {d}: {e}"));
    match unit {
        "s" => n,
        "m" => n * 60,
        other => panic!("duration {d}: unit {other}"),
    }
}

/// Memory quantity in MiB (`Mi`, `Gi`).
fn mebibytes(q: &str) -> u64 {
    if let Some(n) = q.strip_suffix("Mi") {
        n.parse().unwrap_or_else(|e| panic!("{q}: {e}"))
    } else if let Some(n) = q.strip_suffix("Gi") {
        n.parse::<u64>().unwrap_or_else(|e| panic!("{q}: {e}")) * 1024
    } else {
        panic!("memory quantity {q}: expected Mi or Gi")
    }
}

/// The hardened container: not root, nothing to escalate, a read-only root filesystem.
fn assert_locked_down(what: &str, pod: &Value, container: &Value) {
    let c = &container["securityContext"];
    assert_eq!(c["allowPrivilegeEscalation"], false, "{what}: {c}");
    assert_eq!(c["readOnlyRootFilesystem"], true, "{what}: {c}");
    assert_eq!(
        c["capabilities"]["drop"],
        serde_json::json!(["ALL"]),
        "{what}: {c}"
    );
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
        "{what}"
    );
    assert_eq!(pod["automountServiceAccountToken"], false, "{what}");
}

/// The registry's Deployment: secret refs, probes, security context, volumes, termination.
fn check_registry(e: &Expect, docs: &[Value]) -> Value {
    let d = object(docs, "Deployment", "connected-registry");
    assert_eq!(d["spec"]["replicas"], 1, "{}", e.name);
    // One pod owns the ReadWriteOnce volume: the old one is gone before the new one starts.
    assert_eq!(d["spec"]["strategy"]["type"], "Recreate", "{}", e.name);
    let pod = &d["spec"]["template"]["spec"];
    let c = named(&pod["containers"], "connected-registry");
    assert_eq!(str_at(c, "/image"), e.image, "{}", e.name);

    let p = &pod["securityContext"];
    assert_eq!(p["runAsNonRoot"], true, "{}: {p}", e.name);
    assert_eq!(p["runAsUser"], 65532, "{}: the image's user", e.name);
    assert_eq!(p["fsGroup"], 65532, "{}: the volume writable by it", e.name);
    assert_locked_down(e.name, pod, c);

    let cs = named(&c["env"], "ACR_REGISTRY_CONNECTION_STRING");
    assert_eq!(
        str_at(cs, "/valueFrom/secretKeyRef/name"),
        CONNECTION_SECRET.0,
        "{}",
        e.name
    );
    assert_eq!(
        str_at(cs, "/valueFrom/secretKeyRef/key"),
        CONNECTION_SECRET.1,
        "{}",
        e.name
    );
    assert!(
        cs.get("value").is_none(),
        "{}: no literal connection string",
        e.name
    );
    assert_eq!(
        env(c, "ACR_REGISTRY_DATA_VOLUME"),
        "/var/acr/data",
        "{}",
        e.name
    );

    let args: Vec<&str> = c["args"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    assert_eq!(args, ["serve", "--config", CONFIG_FILE], "{}", e.name);

    // The policy directory from the ConfigMap, never a subPath (kubelet would not update it).
    let mounts = &c["volumeMounts"];
    let config = named(mounts, "config");
    assert_eq!(
        str_at(config, "/mountPath"),
        "/etc/connected-registry",
        "{}",
        e.name
    );
    assert!(
        config.get("subPath").is_none(),
        "{}: subPath mounts are never updated",
        e.name
    );
    let cm = named(&pod["volumes"], "config");
    assert_eq!(str_at(cm, "/configMap/name"), CONFIG_MAP, "{}", e.name);
    assert_eq!(str_at(named(mounts, "data"), "/mountPath"), "/var/acr/data");
    let data = named(&pod["volumes"], "data");
    assert_eq!(
        str_at(data, "/persistentVolumeClaim/claimName"),
        "connected-registry-data",
        "{}",
        e.name
    );

    // Probes on the health endpoint, over the scheme the registry serves.
    let (port, scheme) = match e.tls {
        Tls::Off => ("http", "HTTP"),
        Tls::Byoc | Tls::CertManager => ("https", "HTTPS"),
    };
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        let g = &c[probe]["httpGet"];
        assert_eq!(str_at(g, "/path"), HEALTH, "{}: {probe}", e.name);
        assert_eq!(str_at(g, "/port"), port, "{}: {probe}", e.name);
        let s = g["scheme"].as_str().unwrap_or("HTTP");
        assert_eq!(s, scheme, "{}: {probe}", e.name);
    }
    let container_port = named(&c["ports"], port)["containerPort"].as_u64();
    let want = if port == "http" { 8080 } else { 8443 };
    assert_eq!(container_port, Some(want), "{}", e.name);

    // SIGTERM: in-flight requests get the shutdown timeout, and the grace period covers it.
    let shutdown = seconds(env(c, "CONNECTED_REGISTRY_SHUTDOWN_TIMEOUT"));
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap_or(30);
    assert!(
        grace >= shutdown + 5,
        "{}: grace {grace}s vs shutdown {shutdown}s",
        e.name
    );

    // A small node: modest requests, a memory limit well under a 1 GiB gateway's memory.
    let r = &c["resources"];
    assert!(
        mebibytes(str_at(r, "/requests/memory")) <= 128,
        "{}: {r}",
        e.name
    );
    assert!(
        mebibytes(str_at(r, "/limits/memory")) <= 512,
        "{}: {r}",
        e.name
    );
    assert!(!str_at(r, "/requests/cpu").is_empty(), "{}: {r}", e.name);

    if e.tls != Tls::Off {
        let certs = env(c, "ACR_REGISTRY_CERTIFICATE_VOLUME");
        assert_eq!(
            str_at(named(mounts, "tls"), "/mountPath"),
            certs,
            "{}",
            e.name
        );
        let tls = named(&pod["volumes"], "tls");
        assert_eq!(str_at(tls, "/secret/secretName"), TLS_SECRET, "{}", e.name);
        let keys: BTreeSet<&str> = tls["secret"]["items"]
            .as_array()
            .map(|a| a.iter().map(|i| str_at(i, "/key")).collect())
            .unwrap_or_default();
        assert_eq!(keys, BTreeSet::from(["tls.crt", "tls.key"]), "{}", e.name);
    }
    pod.clone()
}

/// The Service: the registry's pods only, the right port, the fixed clusterIP.
fn check_service(e: &Expect, docs: &[Value], registry_pod_labels: &Value) -> (String, u64) {
    let s = object(docs, "Service", "connected-registry");
    let selector = s["spec"]["selector"]
        .as_object()
        .unwrap_or_else(|| panic!("{}: Service without selector", e.name));
    for (k, v) in selector {
        assert_eq!(&registry_pod_labels[k], v, "{}: selector {k}", e.name);
    }
    assert_eq!(
        selector.get("app.kubernetes.io/component"),
        Some(&"registry".into())
    );
    let ports = s["spec"]["ports"].as_array().cloned().unwrap_or_default();
    assert_eq!(ports.len(), 1, "{}: {ports:?}", e.name);
    let (port, target) = match e.tls {
        Tls::Off => (80, "http"),
        Tls::Byoc | Tls::CertManager => (443, "https"),
    };
    assert_eq!(ports[0]["port"], port, "{}", e.name);
    assert_eq!(ports[0]["targetPort"], target, "{}", e.name);
    let ip = s["spec"]["clusterIP"].as_str().map(str::to_owned);
    assert_eq!(ip.as_deref(), e.cluster_ip, "{}: service.clusterIP", e.name);
    (ip.unwrap_or_default(), port)
}

fn check_pvc(e: &Expect, docs: &[Value]) {
    let p = object(docs, "PersistentVolumeClaim", "connected-registry-data");
    assert_eq!(
        p["spec"]["accessModes"],
        serde_json::json!(["ReadWriteOnce"])
    );
    assert_eq!(
        str_at(p, "/spec/resources/requests/storage"),
        e.storage,
        "{}",
        e.name
    );
    let class = p["spec"]["storageClassName"].as_str();
    assert_eq!(class, e.storage_class, "{}: pvc.storageClassName", e.name);
}

/// The ConfigMap's policy parses as the registry reads it and carries the overlay's chunk size.
fn check_policy(e: &Expect, docs: &[Value]) {
    let cm = object(docs, "ConfigMap", CONFIG_MAP);
    let text = str_at(cm, "/data/registry.toml");
    let doc: toml::Table = text
        .parse()
        .unwrap_or_else(|err| panic!("{}: registry.toml: {err}", e.name));
    let chunk = doc
        .get("sync")
        .and_then(|s| s.get("chunk_size_mb"))
        .and_then(toml::Value::as_integer);
    assert_eq!(
        chunk,
        Some(e.chunk_size_mb),
        "{}: sync.chunkSizeInMb",
        e.name
    );
}

/// cert-manager's objects, which the schemas do not cover: checked here field by field.
fn check_cert_manager(e: &Expect, docs: &[Value], cluster_ip: &str) {
    let certs = objects(docs, "Certificate");
    if e.tls != Tls::CertManager {
        assert!(certs.is_empty(), "{}: no Certificate", e.name);
        return;
    }
    let issuers: BTreeSet<&str> = objects(docs, "Issuer")
        .iter()
        .map(|i| str_at(i, "/metadata/name"))
        .collect();
    for c in &certs {
        assert_eq!(str_at(c, "/apiVersion"), "cert-manager.io/v1");
        let issuer = str_at(c, "/spec/issuerRef/name");
        assert!(
            issuers.contains(issuer),
            "{}: issuer {issuer} not rendered",
            e.name
        );
        assert_eq!(str_at(c, "/spec/issuerRef/kind"), "Issuer");
        assert!(!str_at(c, "/spec/secretName").is_empty());
    }
    let tls = object(docs, "Certificate", TLS_SECRET);
    assert_eq!(str_at(tls, "/spec/secretName"), TLS_SECRET, "{}", e.name);
    assert_eq!(
        tls["spec"]["ipAddresses"],
        serde_json::json!([cluster_ip]),
        "{}: the certificate names the clusterIP",
        e.name
    );
    let dns = &tls["spec"]["dnsNames"];
    let want = format!("connected-registry.{NAMESPACE}.svc");
    assert!(
        dns.as_array().is_some_and(|a| a.contains(&want.into())),
        "{}: {dns}",
        e.name
    );
    // The CA issuer's certificate reaches the Secret's ca.crt, which trust distribution uses.
    let ca = object(docs, "Issuer", issuer_of(tls));
    assert!(
        !str_at(ca, "/spec/ca/secretName").is_empty(),
        "{}: a CA issuer",
        e.name
    );
}

fn issuer_of(cert: &Value) -> &str {
    str_at(cert, "/spec/issuerRef/name")
}

/// The trust-distribution DaemonSet: the subcommand's interface, the Service's address, the CA
/// or the plain-HTTP entry, the host directory.
fn check_trust(e: &Expect, docs: &[Value], address: (&str, u64)) {
    let sets = objects(docs, "DaemonSet");
    let Some(mode) = e.trust else {
        assert!(sets.is_empty(), "{}: no DaemonSet", e.name);
        return;
    };
    let d = object(docs, "DaemonSet", "connected-registry-trust");
    let pod = &d["spec"]["template"]["spec"];
    let c = named(&pod["containers"], "trust-distribution");
    assert_eq!(
        str_at(c, "/image"),
        e.image,
        "{}: the registry's image",
        e.name
    );
    assert_eq!(
        c["args"],
        serde_json::json!(["trust-distribution"]),
        "{}",
        e.name
    );
    assert_locked_down(e.name, pod, c);
    assert_eq!(
        pod["tolerations"],
        serde_json::json!([{"operator": "Exists"}]),
        "{}: every node",
        e.name
    );
    let registry = format!("{}:{}", address.0, address.1);
    assert_eq!(
        env(c, "CONNECTED_REGISTRY_TRUST_REGISTRY"),
        registry,
        "{}",
        e.name
    );

    let certs_dir = env(c, "CONNECTED_REGISTRY_TRUST_CERTS_DIR");
    assert_eq!(certs_dir, "/host/certs.d", "{}", e.name);
    let mounts = &c["volumeMounts"];
    assert_eq!(str_at(named(mounts, "certs-d"), "/mountPath"), certs_dir);
    let host = named(&pod["volumes"], "certs-d");
    assert_eq!(str_at(host, "/hostPath/path"), e.certs_dir, "{}", e.name);

    let names: Vec<&str> = c["env"]
        .as_array()
        .map(|a| a.iter().map(|v| str_at(v, "/name")).collect())
        .unwrap_or_default();
    match mode {
        Trust::Ca => {
            assert!(
                !names.contains(&"CONNECTED_REGISTRY_TRUST_PLAIN_HTTP"),
                "{}",
                e.name
            );
            let ca_file = env(c, "CONNECTED_REGISTRY_TRUST_CA_FILE");
            let ca_mount = named(mounts, "ca");
            assert_eq!(ca_mount["readOnly"], true, "{}", e.name);
            let dir = str_at(ca_mount, "/mountPath");
            assert_eq!(ca_file, format!("{dir}/ca.crt"), "{}", e.name);
            let ca = named(&pod["volumes"], "ca");
            assert_eq!(str_at(ca, "/secret/secretName"), TLS_SECRET, "{}", e.name);
            assert_eq!(
                ca["secret"]["items"],
                serde_json::json!([{"key": "ca.crt", "path": "ca.crt"}]),
                "{}",
                e.name
            );
        }
        Trust::PlainHttp => {
            assert!(
                !names.contains(&"CONNECTED_REGISTRY_TRUST_CA_FILE"),
                "{}",
                e.name
            );
            assert_eq!(env(c, "CONNECTED_REGISTRY_TRUST_PLAIN_HTTP"), "true");
        }
    }
}

#[test]
fn overlays_render_validate_and_carry_the_settings() {
    let tmp = TempDir::new().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let on_disk: BTreeSet<String> = fs::read_dir(deploy_dir().join("overlays"))
        .unwrap_or_else(|e| panic!("overlays: {e}"))
        .filter_map(|d| d.ok().and_then(|d| d.file_name().into_string().ok()))
        .collect();
    let tested: BTreeSet<String> = OVERLAYS.iter().map(|e| e.name.to_owned()).collect();
    assert_eq!(on_disk, tested, "every overlay is tested");

    for e in OVERLAYS {
        let started = Instant::now();
        let file = render(tmp.path(), e.name);
        let docs = documents(&file);
        for v in KUBERNETES_VERSIONS {
            assert_valid(&file, &docs, v);
        }
        for d in &docs {
            if str_at(d, "/kind") != "Namespace" {
                assert_eq!(
                    str_at(d, "/metadata/namespace"),
                    NAMESPACE,
                    "{}: {d}",
                    e.name
                );
            }
        }
        let pod = check_registry(e, &docs);
        let labels = object(&docs, "Deployment", "connected-registry")["spec"]["template"]
            ["metadata"]["labels"]
            .clone();
        assert!(pod["containers"].is_array());
        let (ip, port) = check_service(e, &docs, &labels);
        check_pvc(e, &docs);
        check_policy(e, &docs);
        check_cert_manager(e, &docs, &ip);
        check_trust(e, &docs, (&ip, port));
        eprintln!(
            "{}: {} objects rendered, validated and checked in {:?}",
            e.name,
            docs.len(),
            started.elapsed()
        );
    }
}

#[test]
fn examples_validate() {
    let file = deploy_dir().join("examples/hello-world.yaml");
    let docs = documents(&file);
    for v in KUBERNETES_VERSIONS {
        assert_valid(&file, &docs, v);
    }
    let pod = &object(&docs, "Deployment", "hello-world")["spec"]["template"]["spec"];
    assert_eq!(
        str_at(pod, "/imagePullSecrets/0/name"),
        "connected-registry-pull"
    );
    let script = fs::read_to_string(deploy_dir().join("examples/pull-secret.sh"))
        .unwrap_or_else(|e| panic!("pull-secret.sh: {e}"));
    assert!(script.contains("kubectl -n \"$ns\" create secret docker-registry"));
    assert!(script.contains("connected-registry-pull"));
}

/// The validator is not a rubber stamp: a wrong type and an unknown field are both refused.
#[test]
fn validator_rejects_a_broken_object() {
    let tmp = TempDir::new().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let file = render(tmp.path(), "http");
    let docs = documents(&file);
    let deployment = object(&docs, "Deployment", "connected-registry");
    let breakages: [(&str, Value); 2] = [
        ("/spec/replicas", Value::from("one")),
        (
            "/spec/template/spec/containers/0/livenessProbe/httpGet/pth",
            HEALTH.into(),
        ),
    ];
    for (i, (pointer, value)) in breakages.into_iter().enumerate() {
        let mut broken = deployment.clone();
        let (parent, key) = pointer.rsplit_once('/').unwrap_or_default();
        match broken.pointer_mut(parent).and_then(Value::as_object_mut) {
            Some(map) => map.insert(key.to_owned(), value),
            None => panic!("no {parent} in the Deployment"),
        };
        let path = tmp.path().join(format!("broken-{i}.json"));
        fs::write(&path, broken.to_string()).unwrap_or_else(|e| panic!("write: {e}"));
        let (ok, out) = validate(&path, KUBERNETES_VERSIONS[0]);
        assert!(!ok, "the validator accepted {pointer}: {out}");
        assert!(
            out.contains("ERROR") && out.contains(key),
            "{pointer}: {out}"
        );
        eprintln!("rejected as expected: {}", out.trim());
    }
}

/// Lays `text` out as kubelet does a ConfigMap volume and swaps it atomically like kubelet's
/// AtomicWriter: a new timestamped directory, `..data_tmp` -> it, renamed over `..data`, then
/// the old directory removed. `registry.toml` is a symlink to `..data/registry.toml`.
struct ConfigMapVolume {
    dir: PathBuf,
    version: u32,
}

impl ConfigMapVolume {
    fn new(dir: PathBuf, text: &str) -> Self {
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let mut v = ConfigMapVolume { dir, version: 0 };
        v.update(text);
        symlink("..data/registry.toml", v.dir.join("registry.toml"))
            .unwrap_or_else(|e| panic!("symlink: {e}"));
        v
    }

    fn file(&self) -> PathBuf {
        self.dir.join("registry.toml")
    }

    fn update(&mut self, text: &str) {
        let old = self.timestamped(self.version);
        self.version += 1;
        let new = self.timestamped(self.version);
        let new_dir = self.dir.join(&new);
        fs::create_dir(&new_dir).unwrap_or_else(|e| panic!("{}: {e}", new_dir.display()));
        fs::write(new_dir.join("registry.toml"), text).unwrap_or_else(|e| panic!("{e}"));
        let tmp = self.dir.join("..data_tmp");
        symlink(&new, &tmp).unwrap_or_else(|e| panic!("symlink: {e}"));
        fs::rename(&tmp, self.dir.join("..data")).unwrap_or_else(|e| panic!("swap: {e}"));
        if self.version > 1 {
            fs::remove_dir_all(self.dir.join(old)).unwrap_or_else(|e| panic!("{e}"));
        }
    }

    fn timestamped(&self, version: u32) -> String {
        format!("..2026_01_01_00_00_{version:02}.{}", 100_000 + version)
    }
}

fn wait_for(reg: &Registry, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "{what}: not within 10 s\nlog:\n{}",
            reg.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn status_details(reg: &Registry) -> Vec<(String, String)> {
    let url = format!("{}/acr/v1/status", reg.url());
    let st: Value = common::http()
        .get(&url)
        .send()
        .and_then(|r| r.json())
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    st["statusDetails"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|d| {
                    (
                        str_at(d, "/code").to_owned(),
                        str_at(d, "/message").to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The rendered ConfigMap's registry.toml of one overlay.
fn rendered_policy(dir: &Path, overlay: &str) -> String {
    let docs = documents(&render(dir, overlay));
    str_at(
        object(&docs, "ConfigMap", CONFIG_MAP),
        "/data/registry.toml",
    )
    .to_owned()
}

/// The shipped policies start the real registry, and a ConfigMap update (kubelet's `..data`
/// swap) is applied without a restart: the log level follows at once, an invalid version is
/// reported and a fixed one clears the report.
#[test]
fn policy_configmap_update_is_applied_live() {
    let tmp = TempDir::new().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let base = rendered_policy(tmp.path(), "http");
    let k3s = rendered_policy(tmp.path(), "k3s");
    let mut volume = ConfigMapVolume::new(tmp.path().join("config"), &base);
    let config = volume.file();
    let config = config
        .to_str()
        .unwrap_or_else(|| panic!("non-UTF-8 temp dir"));
    let args = ["--insecure-no-auth", "--config", config].map(String::from);
    // A clean environment: the log level comes from the policy file only.
    let reg = Registry::start_in_clean_env(tmp, args.to_vec(), Vec::new());
    let pid = reg.pid();
    let seen_debug = |reg: &Registry| reg.log().contains("level=Debug");
    let request_logged = |reg: &Registry| reg.log().contains("\"GET /v2/");
    // At the shipped policy's level (Information) requests are not logged.
    let _ = common::http().get(format!("{}/v2/", reg.url())).send();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !request_logged(&reg) && !seen_debug(&reg),
        "log:\n{}",
        reg.log()
    );

    let started = Instant::now();
    volume.update(&format!("{k3s}\n[server]\nlog_level = \"Debug\"\n"));
    wait_for(&reg, "log level Debug from the swapped ConfigMap", || {
        seen_debug(&reg)
    });
    eprintln!("new policy applied {:?} after the swap", started.elapsed());
    // Debug really is in force: requests are now logged.
    let _ = common::http().get(format!("{}/v2/", reg.url())).send();
    wait_for(&reg, "a request logged at Debug", || request_logged(&reg));

    volume.update(&k3s.replace("chunk_size_mb = 1", "chunk_size_mb = 0"));
    wait_for(&reg, "PolicyInvalid for the broken version", || {
        status_details(&reg)
            .iter()
            .any(|(c, m)| c == "PolicyInvalid" && m.contains("chunk_size_mb"))
    });
    volume.update(&k3s);
    wait_for(&reg, "PolicyInvalid cleared by the fixed version", || {
        !status_details(&reg)
            .iter()
            .any(|(c, _)| c == "PolicyInvalid")
    });
    assert_eq!(reg.pid(), pid, "no restart");
}
