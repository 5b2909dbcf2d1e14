//! Nested networks (ISA-95 layers): the grandchild runs in its own network namespace whose only
//! way out is a veth link to the layer above, where the child listens. The root is out of its
//! reach, yet an image pushed at the root reaches a client of the grandchild through the child.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::clients::require_root;
use crate::common::clients::skopeo::Skopeo;
use crate::common::{self, free_port, oci, require, run_bounded, Registry, BIN};
use crate::{connection_string, policy_for};

const REPO: &str = "layers/app";

/// A network namespace joined to this one by a veth pair; deleted (with the pair) on drop.
struct Layer {
    ns: String,
    /// Address of this side of the link (where the layer above listens).
    up: String,
    /// Address inside the namespace.
    inside: String,
}

/// Runs `ip` with `args`; panics with its output unless it succeeds.
fn ip(args: &[&str]) {
    let out = run_bounded(
        Command::new(require("ip")).args(args),
        Duration::from_secs(10),
    );
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Layer {
    fn new() -> Self {
        let id = std::process::id() % 100_000;
        let (ns, host_if, ns_if) = (format!("crl{id}"), format!("crh{id}"), format!("crn{id}"));
        let net = format!("10.213.{}", id % 200 + 20);
        let (up, inside) = (format!("{net}.1"), format!("{net}.2"));
        ip(&["netns", "add", &ns]);
        let layer = Layer { ns, up, inside };
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
        ]);
        ip(&["link", "set", &ns_if, "netns", &layer.ns]);
        ip(&["addr", "add", &format!("{}/24", layer.up), "dev", &host_if]);
        ip(&["link", "set", &host_if, "up"]);
        let inside_cidr = format!("{}/24", layer.inside);
        ip(&["-n", &layer.ns, "addr", "add", &inside_cidr, "dev", &ns_if]);
        ip(&["-n", &layer.ns, "link", "set", &ns_if, "up"]);
        ip(&["-n", &layer.ns, "link", "set", "lo", "up"]);
        layer
    }

    /// A command run inside the namespace.
    fn exec(&self, program: &Path) -> Command {
        let mut c = Command::new(require("ip"));
        c.args(["netns", "exec", &self.ns]).arg(program);
        c
    }

    /// True when `url` answers from inside the namespace.
    fn reaches(&self, url: &str) -> bool {
        let mut c = self.exec(&require("curl"));
        c.args([
            "-s",
            "-o",
            "/dev/null",
            "-m",
            "3",
            "-w",
            "%{http_code}",
            url,
        ]);
        let out = run_bounded(&mut c, Duration::from_secs(10));
        out.status.success() && String::from_utf8_lossy(&out.stdout).starts_with('2')
    }
}

impl Drop for Layer {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

/// A registry process started by hand (another address or namespace); killed on drop.
struct Proc {
    child: Child,
    url: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Proc {
    /// Starts `connected-registry serve` on `listen` as a child of `parent`, via `cmd`.
    fn start(mut cmd: Command, listen: &str, parent: &str) -> Self {
        let dir = tempfile::TempDir::new().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let policy = dir.path().join("policy.toml");
        std::fs::write(&policy, policy_for(&[REPO], "")).unwrap_or_else(|e| panic!("{e}"));
        let log = dir.path().join("server.log");
        let out = File::create(&log).unwrap_or_else(|e| panic!("log: {e}"));
        let err = out.try_clone().unwrap_or_else(|e| panic!("log: {e}"));
        let child = cmd
            .args([
                "serve",
                "--insecure-no-auth",
                "--listen",
                listen,
                "--data-dir",
            ])
            .arg(dir.path().join("data"))
            .arg("--config")
            .arg(&policy)
            .env(
                "ACR_REGISTRY_CONNECTION_STRING",
                connection_string(parent, "unused"),
            )
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn: {e}"));
        let p = Proc {
            child,
            url: format!("http://{listen}"),
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        let health = format!("{}/acr/v1/_health", p.url);
        while !common::http()
            .get(&health)
            .send()
            .is_ok_and(|r| r.status().is_success())
        {
            assert!(
                Instant::now() < deadline,
                "{listen} never answered:\n{}",
                p.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        p
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_grandchild_in_a_lower_network_layer_gets_root_content_only_through_its_parent() {
    require_root();
    let root = Registry::start();
    let layer = Layer::new();
    let child_listen = format!("{}:{}", layer.up, free_port());
    let child = Proc::start(Command::new(BIN), &child_listen, &root.host());
    let leaf_listen = format!("{}:{}", layer.inside, free_port());
    let leaf = Proc::start(layer.exec(Path::new(BIN)), &leaf_listen, &child_listen);

    // The lower layer reaches its parent and nothing above it.
    assert!(
        layer.reaches(&format!("{}/v2/", child.url)),
        "the child is out of reach"
    );
    let root_port = root.port;
    for host in ["127.0.0.1", layer.up.as_str()] {
        let url = format!("http://{host}:{root_port}/v2/");
        assert!(
            !layer.reaches(&url),
            "the lower layer reaches the root at {url}"
        );
    }

    let amd = oci::image("amd64", b"down two layers\n");
    let arm = oci::image("arm64", b"down two layers, arm\n");
    let index = oci::index(&[(&amd, "linux", "amd64"), (&arm, "linux", "arm64")]);
    let http = common::http();
    for m in [&amd, &arm] {
        oci::push(&http, &root.url(), REPO, &m.digest, m);
    }
    oci::push(&http, &root.url(), REPO, "v1", &index);

    let deadline = Instant::now() + Duration::from_secs(60);
    while crate::tags(&leaf.url, REPO) != ["v1"] {
        assert!(
            Instant::now() < deadline,
            "the grandchild never got the tag\nchild log:\n{}\ngrandchild log:\n{}",
            crate::tail(&child.log(), 30),
            crate::tail(&leaf.log(), 30)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let sk = Skopeo::new();
    let out = root.scratch().join("out");
    sk.run(&[
        "copy",
        "--all",
        "--preserve-digests",
        "--src-tls-verify=false",
        &format!("docker://{leaf_listen}/{REPO}:v1"),
        &format!("oci:{}:v1", out.display()),
    ]);
    let text = std::fs::read_to_string(out.join("index.json")).unwrap_or_default();
    assert!(
        text.contains(&index.digest),
        "the grandchild served another index: {text}"
    );
    for b in amd.blobs.iter().chain(&arm.blobs) {
        let file = out
            .join("blobs/sha256")
            .join(b.digest.trim_start_matches("sha256:"));
        assert!(
            file.is_file(),
            "{} missing at the grandchild's client",
            b.digest
        );
    }
}
