//! `/acr/v1/metrics` scraped by Debian's Prometheus: request counts with exact status codes,
//! latency histograms, content and storage figures, and a child's sync state.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{self, client_as, free_port, oci, require, Registry};

/// A Prometheus server scraping `targets` every second, on its own port and data directory.
struct Prometheus {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(scrape_configs: &str) -> Prometheus {
        let bin = require("prometheus");
        let dir = tempfile::TempDir::new().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let config = dir.path().join("prometheus.yml");
        let text = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n{scrape_configs}"
        );
        std::fs::write(&config, text).unwrap_or_else(|e| panic!("config: {e}"));
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log"))
            .unwrap_or_else(|e| panic!("log: {e}"));
        let err = log.try_clone().unwrap_or_else(|e| panic!("log: {e}"));
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("prometheus: {e}"));
        Prometheus { child, port, dir }
    }

    /// The value of an instant query's first series, if any.
    fn value(&self, query: &str) -> Option<f64> {
        let url = format!("http://127.0.0.1:{}/api/v1/query", self.port);
        let v: Value = common::http()
            .get(url)
            .query(&[("query", query)])
            .send()
            .ok()?
            .json()
            .ok()?;
        v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }

    /// Waits until `query` has a value satisfying `ok`; fails with Prometheus's log.
    fn wait(&self, query: &str, ok: impl Fn(f64) -> bool) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(v) = self.value(query).filter(|v| ok(*v)) {
                return v;
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(self.dir.path().join("prometheus.log"))
                    .unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                panic!(
                    "{query} = {:?}; prometheus log (newest first):\n{}",
                    self.value(query),
                    tail.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn prometheus_scrapes_requests_content_and_sync_state() {
    // A root with authentication, scraped with credentials.
    let root = Registry::start_authenticated(&[]);
    let admin = root.admin_password();
    let c = client_as("admin", &admin);
    let image = oci::image("amd64", b"measured\n");
    oci::push(&c, &root.url(), "app", "v1", &image);
    let manifest = format!("{}/v2/app/manifests/v1", root.url());
    let accept = "application/vnd.oci.image.manifest.v1+json";
    for _ in 0..5 {
        let r = c.get(&manifest).header("Accept", accept).send();
        assert!(r.is_ok_and(|r| r.status() == 200));
    }
    let missing = c
        .get(format!("{}/v2/app/manifests/nope", root.url()))
        .send();
    assert!(missing.is_ok_and(|r| r.status() == 404));
    let anonymous = common::http()
        .get(format!("{}/acr/v1/metrics", root.url()))
        .send();
    assert!(
        anonymous.is_ok_and(|r| r.status() == 401),
        "metrics are authenticated like the status"
    );

    // A child of an open parent, with --metrics-anonymous, scraped without credentials.
    let parent = Registry::start();
    oci::push(&common::http(), &parent.url(), "mirrored", "v1", &image);
    let tmp = tempfile::TempDir::new().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let policy = tmp.path().join("policy.toml");
    std::fs::write(
        &policy,
        "[sync]\nrepositories = [\"mirrored\"]\ninterval = \"1s\"\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let cs = format!(
        "ConnectedRegistryName=child;SyncTokenName=sync;SyncTokenPassword=unused;\
         ParentGatewayEndpoint={};ParentEndpointProtocol=http",
        parent.host()
    );
    let child = Registry::start_in(
        tmp,
        vec![
            "--metrics-anonymous".into(),
            "--config".into(),
            policy.display().to_string(),
        ],
        vec![("ACR_REGISTRY_CONNECTION_STRING".into(), cs)],
    );

    let prom = Prometheus::start(&format!(
        "  - job_name: root\n    metrics_path: /acr/v1/metrics\n    basic_auth:\n      username: admin\n      password: '{admin}'\n    static_configs:\n      - targets: ['{}']\n  - job_name: child\n    metrics_path: /acr/v1/metrics\n    static_configs:\n      - targets: ['{}']\n",
        root.host(),
        child.host()
    ));
    prom.wait("up{job=\"root\"}", |v| v == 1.0);
    prom.wait("up{job=\"child\"}", |v| v == 1.0);
    let root_q = |q: &str| for_job(q, "root");
    prom.wait(
        &root_q("registry_http_requests_total{handler=\"manifest\",method=\"GET\",code=\"200\"}"),
        |v| v >= 5.0,
    );
    prom.wait(
        &root_q("registry_http_requests_total{handler=\"manifest\",method=\"GET\",code=\"404\"}"),
        |v| v == 1.0,
    );
    prom.wait(
        &root_q("registry_http_requests_total{handler=\"acr\",method=\"GET\",code=\"401\"}"),
        |v| v >= 1.0,
    );
    prom.wait(
        &root_q(
            "registry_http_request_duration_seconds_count{handler=\"manifest\",method=\"GET\"}",
        ),
        |v| v >= 6.0,
    );
    prom.wait(
        &format!(
            "sum({})",
            root_q("registry_http_request_bytes_total{handler=\"blob_upload\"}")
        ),
        |v| v > 0.0,
    );
    prom.wait(
        &root_q("registry_http_response_bytes_total{handler=\"manifest\",method=\"GET\"}"),
        |v| v > 0.0,
    );
    prom.wait(&root_q("connected_registry_blobs{}"), |v| v == 2.0);
    prom.wait(&root_q("connected_registry_manifests{}"), |v| v == 1.0);
    prom.wait(&root_q("connected_registry_storage_used_bytes{}"), |v| {
        v > 0.0
    });
    prom.wait(&root_q("connected_registry_storage_free_bytes{}"), |v| {
        v > 0.0
    });
    prom.wait(
        &root_q("connected_registry_connection_state{state=\"Online\"}"),
        |v| v == 1.0,
    );

    // The child's sync state.
    let child_q = |q: &str| for_job(q, "child");
    prom.wait(
        &child_q("connected_registry_sync_repository_last_success_timestamp_seconds{repository=\"mirrored\"}"),
        |v| v > 1.7e9,
    );
    prom.wait(
        &child_q("connected_registry_sync_repository_lag_seconds{repository=\"mirrored\"}"),
        |v| v < 30.0,
    );
    prom.wait(&child_q("connected_registry_sync_passes_total{}"), |v| {
        v >= 1.0
    });
    prom.wait(
        &child_q("connected_registry_sync_repository_failures{repository=\"mirrored\"}"),
        |v| v == 0.0,
    );
    prom.wait(&child_q("connected_registry_outbox_pending{}"), |v| {
        v == 0.0
    });
    prom.wait(&child_q("connected_registry_manifests{}"), |v| v == 1.0);
}

/// `q` (one selector) narrowed to `job`.
fn for_job(q: &str, job: &str) -> String {
    match q.strip_suffix("{}") {
        Some(name) => format!("{name}{{job=\"{job}\"}}"),
        None => q.replacen('}', &format!(",job=\"{job}\"}}"), 1),
    }
}
