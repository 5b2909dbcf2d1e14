//! The tree across three network layers (ISA-95): the root in the top layer, `middle` one layer
//! down, `bottom` below it; each layer reaches only the one above, and every registry sits
//! behind a real nginx configured as the IoT Edge API proxy (TLS on 8000, `/v2` and `/acr`
//! forwarded with `X-Forwarded-*`). Every registry is defined only at the root with the CLI and
//! started with nothing but its connection string (and the CA of its parent's proxy, which a
//! gateway gets from its trust bundle).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::common::apiproxy::ApiProxy;
use crate::common::clients::docker::Dockerd;
use crate::common::clients::require_root;
use crate::common::netns::Net;
use crate::common::{oci, run_bounded, run_ok, Registry, BIN};
use crate::{client_as, cr, define_tree, listed, row, settings, tags_as, wait_for, APP};

/// Where every layer's registry listens inside its namespace (the proxy's upstream).
const INSIDE: &str = "127.0.0.1:8080";

/// A registry started in one layer; killed on drop.
struct Node {
    child: Option<Child>,
    data: PathBuf,
    log: PathBuf,
    _dir: TempDir,
}

impl Node {
    /// Starts `serve` in layer `layer` with only `connection_string` (and the parent's CA).
    fn start(net: &Net, layer: usize, connection_string: &str, parent_ca: &Path) -> Node {
        let dir = TempDir::new().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let data = dir.path().join("data");
        let log = dir.path().join("server.log");
        let out = File::create(&log).unwrap_or_else(|e| panic!("log: {e}"));
        let err = out.try_clone().unwrap_or_else(|e| panic!("log: {e}"));
        let child = net
            .command(layer, BIN)
            .args(["serve", "--listen", INSIDE, "--data-dir"])
            .arg(&data)
            .env("ACR_REGISTRY_CONNECTION_STRING", connection_string)
            .env("CONNECTED_REGISTRY_PARENT_CA", parent_ca)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn: {e}"));
        let node = Node {
            child: Some(child),
            data,
            log,
            _dir: dir,
        };
        let health = format!("http://{INSIDE}/acr/v1/_health");
        assert!(
            net.wait_reaches(layer, &health, Duration::from_secs(30)),
            "layer {layer}'s registry never answered:\n{}",
            node.log()
        );
        node
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn admin_password(&self) -> String {
        std::fs::read_to_string(self.data.join("admin-password"))
            .unwrap_or_default()
            .trim()
            .to_owned()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The tags of `repo` behind a proxy in layer `layer`, asked from inside that layer with curl.
fn tags_in(net: &Net, layer: usize, proxy: &ApiProxy, user: &str, pw: &str) -> String {
    let url = format!("{}/v2/{APP}/tags/list", proxy.url());
    let mut c = net.command(layer, "curl");
    c.args(["-s", "-m", "10", "--cacert"]).arg(&proxy.ca).args([
        "-u",
        &format!("{user}:{pw}"),
        &url,
    ]);
    String::from_utf8_lossy(&run_bounded(&mut c, Duration::from_secs(20)).stdout).into_owned()
}

#[test]
fn three_layers_behind_api_proxies_are_run_from_the_root() {
    require_root();
    let net = Net::chain(2);
    let root = Registry::start_authenticated(&[]);
    let root_admin = client_as("admin", &root.admin_password());
    let top_proxy = ApiProxy::start_in(None, net.down_addr(0), &root.host());

    let floor_pw = define_tree(&root, "middle2", "bottom2", "floor");

    let cs = settings(&root, "middle2", &top_proxy.addr, "https");
    let middle = Node::start(&net, 1, &cs, &top_proxy.ca);
    let mid_proxy = ApiProxy::start_in(net.ns(1), net.down_addr(1), INSIDE);
    let cs = settings(&root, "bottom2", &mid_proxy.addr, "https");
    let bottom = Node::start(&net, 2, &cs, &mid_proxy.ca);
    let mut bottom_proxy = ApiProxy::start_in(net.ns(2), net.addr(2), INSIDE);
    bottom_proxy.trust_for_docker();
    let logs = || format!("middle:\n{}\n---\nbottom:\n{}", middle.log(), bottom.log());

    // The bottom layer reaches its parent's proxy and nothing above it.
    assert!(net.reaches(2, &format!("{}/v2/", mid_proxy.url())));
    assert!(
        !net.reaches(2, &format!("{}/v2/", top_proxy.url())),
        "the bottom reaches the root"
    );

    // Down: pushed at the root, pulled by docker at the bottom with the token from the root.
    let img = oci::image("amd64", b"three layers down\n");
    oci::push(&root_admin, &root.url(), APP, "v1", &img);
    let docker = Dockerd::start_in(net.ns(2));
    wait_for(
        Duration::from_secs(60),
        "the root's image at the bottom",
        || tags_in(&net, 2, &bottom_proxy, "floor", &floor_pw).contains("v1"),
        logs,
    );
    let reference = format!("{}/{APP}:v1", bottom_proxy.addr);
    let mut login = docker.cmd(&["login", &bottom_proxy.addr, "-u", "floor", "-p", &floor_pw]);
    run_ok(&mut login, Duration::from_secs(60));
    run_ok(
        &mut docker.cmd(&["pull", &reference]),
        Duration::from_secs(120),
    );

    // Up: pushed at the bottom (ReadWrite), it reaches the root through the middle.
    let up = oci::image("arm64", b"three layers up\n");
    let bottom_admin_pw = bottom.admin_password();
    let pushed = push_in_layer(&net, 2, &bottom_proxy, "admin", &bottom_admin_pw, "v2", &up);
    assert!(pushed, "push at the bottom failed:\n{}", logs());
    wait_for(
        Duration::from_secs(60),
        "the bottom's push at the root",
        || tags_as(&root_admin, &root.url(), APP).contains(&"v2".to_owned()),
        logs,
    );

    // Status up: both online with their last sync time.
    let online = |n: &str| {
        let r = listed(&root, n);
        r["connectionState"] == "Online"
            && r["parent"]["syncProperties"]["lastSyncTime"].is_string()
    };
    // In tree order, both Online at once in one table (a pass in between may show Syncing).
    let table_online = || {
        let table = cr(&root, &["list", "-o", "table"]);
        let line = |n: usize| table.lines().nth(n).unwrap_or_default().to_owned();
        let (m, b) = (line(2), line(3));
        m.starts_with("middle2")
            && m.contains("Online")
            && b.starts_with("bottom2")
            && b.contains("Online")
            && b.contains("middle2")
    };
    wait_for(
        Duration::from_secs(30),
        "both online at the root",
        || online("middle2") && online("bottom2") && table_online(),
        || cr(&root, &["list", "-o", "table"]),
    );

    // Idle, the bottom costs its parent one exchange per interval (2 s here) and nothing else.
    // Idle starts once the echo of the bottom's own push (root → middle → bottom's feed, one
    // no-op pull) has passed: a 4 s stretch of exchanges only, within 30 s.
    let settle = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mark = mid_proxy.access_log().lines().count();
        std::thread::sleep(Duration::from_secs(4));
        let log = mid_proxy.access_log();
        let quiet = log.lines().skip(mark).all(|l| l.contains("/exchange"));
        if quiet || std::time::Instant::now() > settle {
            break;
        }
    }
    let before = mid_proxy.access_log().lines().count();
    std::thread::sleep(Duration::from_secs(10));
    let log = mid_proxy.access_log();
    let idle: Vec<&str> = log.lines().skip(before).collect();
    assert!(
        idle.len() <= 6,
        "{} requests in 10 s idle (interval 2 s):\n{}",
        idle.len(),
        idle.join("\n")
    );
    assert!(
        idle.iter().all(|l| l.contains("/exchange")),
        "an idle child sent more than its exchange:\n{}",
        idle.join("\n")
    );

    // Disabled at the root, the token stops working at the bottom.
    root.admin(&["token", "update", "-n", "floor", "--status", "disabled"]);
    wait_for(
        Duration::from_secs(30),
        "the disabled token refused at the bottom",
        || !tags_in(&net, 2, &bottom_proxy, "floor", &floor_pw).contains("v1"),
        logs,
    );

    // The middle link cut: the lower layers keep serving, the root shows them Offline after
    // the timeout, and they converge once the link is back.
    net.cut(1);
    let offline = |n: &str| {
        let out = cr(&root, &["list", "--offline-after", "PT8S"]);
        row(&out, n)["connectionState"] == "Offline"
    };
    wait_for(
        Duration::from_secs(30),
        "both offline at the root",
        || offline("middle2") && offline("bottom2"),
        || cr(&root, &["list"]),
    );
    let pw = bottom_admin_pw.clone();
    assert!(
        tags_in(&net, 2, &bottom_proxy, "admin", &pw).contains("v2"),
        "the bottom stopped serving"
    );
    let later = oci::image("amd64", b"while the link was down\n");
    oci::push(&root_admin, &root.url(), APP, "v3", &later);
    net.restore(1);
    wait_for(
        Duration::from_secs(90),
        "v3 at the bottom after the link returned",
        || tags_in(&net, 2, &bottom_proxy, "admin", &pw).contains("v3"),
        logs,
    );
    wait_for(
        Duration::from_secs(30),
        "both online again",
        || online("middle2") && online("bottom2"),
        || cr(&root, &["list", "-o", "table"]),
    );
    drop(docker);
}

/// Pushes `m` as `tag` through a proxy in layer `layer`, with curl from inside the layer
/// (blobs by monolithic POST+PUT, then the manifest); true when the manifest was accepted.
fn push_in_layer(
    net: &Net,
    layer: usize,
    proxy: &ApiProxy,
    user: &str,
    pw: &str,
    tag: &str,
    m: &oci::Manifest,
) -> bool {
    let dir = TempDir::new().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let cred = format!("{user}:{pw}");
    let curl = |args: &[&str], body: Option<&Path>| {
        let mut c = net.command(layer, "curl");
        c.args(["-s", "-m", "30", "--cacert"])
            .arg(&proxy.ca)
            .args(["-u", &cred]);
        if let Some(b) = body {
            c.arg("--data-binary").arg(format!("@{}", b.display()));
        }
        c.args(args);
        String::from_utf8_lossy(&run_bounded(&mut c, Duration::from_secs(60)).stdout).into_owned()
    };
    for (i, b) in m.blobs.iter().enumerate() {
        let f = dir.path().join(format!("b{i}"));
        std::fs::write(&f, &b.bytes).unwrap_or_else(|e| panic!("{e}"));
        let url = format!(
            "{}/v2/{APP}/blobs/uploads/?digest={}",
            proxy.url(),
            b.digest
        );
        let code = curl(
            &[
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-X",
                "POST",
                "-H",
                "Content-Type: application/octet-stream",
                &url,
            ],
            Some(&f),
        );
        if code != "201" {
            return false;
        }
    }
    let f = dir.path().join("manifest");
    std::fs::write(&f, &m.bytes).unwrap_or_else(|e| panic!("{e}"));
    let url = format!("{}/v2/{APP}/manifests/{tag}", proxy.url());
    let ct = format!("Content-Type: {}", m.media_type);
    let code = curl(
        &[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "PUT",
            "-H",
            &ct,
            &url,
        ],
        Some(&f),
    );
    code == "201"
}
