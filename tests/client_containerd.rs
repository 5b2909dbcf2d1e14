//! containerd as a real client: a private `containerd` (own root, state, socket and config)
//! pulls, with `ctr --plain-http`, a single image and a multi-arch index pushed by the
//! harness, by tag and by digest, and must end up with exactly the pushed digests and blobs;
//! then `ctr images push` copies the index into another repository, byte for byte.

mod common;

use std::os::unix::fs::MetadataExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::oci::{self, Manifest};
use common::{require, run_bounded, Registry};
use tempfile::TempDir;

/// Limit for any single `ctr` command.
const CMD_LIMIT: Duration = Duration::from_secs(60);
/// Snapshotter that needs no kernel filesystem support.
const SNAPSHOTTER: &str = "native";

/// Fails the test unless it runs as root (containerd needs it); never skips.
fn require_root() {
    let uid = std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or_else(|e| panic!("cannot read /proc/self: {e}"));
    assert_eq!(
        uid, 0,
        "client_containerd must run as root: it starts its own containerd"
    );
}

/// A private containerd; stopped when dropped.
struct Containerd {
    child: Child,
    sock: String,
    log: std::path::PathBuf,
    _dir: TempDir,
}

impl Containerd {
    fn start() -> Self {
        let containerd = require("containerd");
        let dir = tempfile::Builder::new()
            .prefix("ct")
            .tempdir_in("/tmp")
            .unwrap_or_else(|e| panic!("tempdir in /tmp: {e}"));
        let p = dir.path();
        let sock = p.join("c.sock").display().to_string();
        let (root, state) = (p.join("root"), p.join("state"));
        // Our own config, so the host's /etc/containerd/config.toml is not read; the CRI
        // plugin (networking, sandboxes) and the opt plugin (host paths) are not needed.
        let config = format!(
            "version = 2\nroot = {:?}\nstate = {:?}\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\", \"io.containerd.internal.v1.opt\"]\n\
             [grpc]\n  address = {sock:?}\n",
            root.display().to_string(),
            state.display().to_string(),
        );
        std::fs::write(p.join("config.toml"), config).unwrap_or_else(|e| panic!("{e}"));
        let log = p.join("containerd.log");
        let out = std::fs::File::create(&log).unwrap_or_else(|e| panic!("containerd log: {e}"));
        let err = out
            .try_clone()
            .unwrap_or_else(|e| panic!("containerd log: {e}"));
        let child = Command::new(containerd)
            .arg("--config")
            .arg(p.join("config.toml"))
            .arg("--root")
            .arg(&root)
            .arg("--state")
            .arg(&state)
            .args(["--address", &sock])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn containerd: {e}"));
        let mut c = Containerd {
            child,
            sock,
            log,
            _dir: dir,
        };
        c.wait_ready(Duration::from_secs(60));
        c
    }

    fn wait_ready(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        for _ in 0..600 {
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("containerd exited early ({st}); log:\n{}", self.log_tail());
            }
            let out = run_bounded(&mut self.cmd(&["version"]), Duration::from_secs(10));
            if out.status.success() {
                return;
            }
            if Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "containerd not ready within {limit:?}; log:\n{}",
            self.log_tail()
        );
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// A `ctr` command talking to this containerd only, in a test namespace.
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(require("ctr"));
        c.args(["--address", &self.sock, "--namespace", "crtest"])
            .env_remove("CONTAINERD_ADDRESS")
            .env_remove("CONTAINERD_NAMESPACE")
            .env_remove("CONTAINERD_SNAPSHOTTER")
            .args(args);
        c
    }

    /// Runs a `ctr` command; panics with containerd's and the registry's logs unless it succeeds.
    fn ok(&self, reg: &Registry, args: &[&str]) -> String {
        let out = run_bounded(&mut self.cmd(args), CMD_LIMIT);
        if !out.status.success() {
            panic!(
                "ctr {args:?} failed ({})\nstdout: {}\nstderr: {}\ncontainerd log:\n{}\nregistry log:\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                self.log_tail(),
                reg.log()
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !matches!(self.child.try_wait(), Ok(Some(_))) {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The whitespace-separated columns of the row of a `ctr` table whose first column is `first`.
fn row(table: &str, first: &str) -> Vec<String> {
    table
        .lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .find(|cols| cols.first().map(String::as_str) == Some(first))
        .unwrap_or_else(|| panic!("no row for {first} in:\n{table}"))
}

/// Pulls `reference` and checks that `ctr images ls` / `check` agree with what was pushed.
fn pull_and_check(ct: &Containerd, reg: &Registry, reference: &str, root: &Manifest, all: bool) {
    let mut pull = vec![
        "images",
        "pull",
        "--plain-http",
        "--snapshotter",
        SNAPSHOTTER,
    ];
    if all {
        pull.push("--all-platforms");
    }
    pull.push(reference);
    ct.ok(reg, &pull);

    let ls = ct.ok(reg, &["images", "ls"]);
    let cols = row(&ls, reference);
    assert_eq!(
        cols.get(1),
        Some(&root.media_type),
        "type of {reference}:\n{ls}"
    );
    assert_eq!(
        cols.get(2),
        Some(&root.digest),
        "digest of {reference}:\n{ls}"
    );

    let check = ct.ok(reg, &["images", "check", "--snapshotter", SNAPSHOTTER]);
    let cols = row(&check, reference);
    assert_eq!(
        cols.get(2),
        Some(&root.digest),
        "digest of {reference}:\n{check}"
    );
    assert_eq!(
        cols.get(3).map(String::as_str),
        Some("complete"),
        "{reference}:\n{check}"
    );
    let unpacked = cols.last().map(String::as_str);
    assert_eq!(unpacked, Some("true"), "{reference} not unpacked:\n{check}");
}

/// Asserts containerd's content store holds every manifest and blob of `manifests`.
fn assert_content(ct: &Containerd, reg: &Registry, manifests: &[&Manifest]) {
    let content = ct.ok(reg, &["content", "ls", "--quiet"]);
    let have: Vec<&str> = content.lines().map(str::trim).collect();
    for m in manifests {
        for d in std::iter::once(&m.digest).chain(m.blobs.iter().map(|b| &b.digest)) {
            assert!(
                have.contains(&d.as_str()),
                "{d} missing from content store:\n{content}"
            );
        }
    }
}

#[test]
fn ctr_pulls_single_images_and_multi_arch_indexes() {
    require_root();
    let started = Instant::now();
    let reg = Registry::start();
    let c = common::http();
    let base = reg.url();

    let single = oci::image("amd64", b"single image for containerd");
    oci::push(&c, &base, "ctr/single", "v1", &single);
    let amd64 = oci::image("amd64", b"multi-arch: amd64");
    let arm64 = oci::image("arm64", b"multi-arch: arm64");
    let index = oci::index(&[(&amd64, "linux", "amd64"), (&arm64, "linux", "arm64")]);
    for m in [&amd64, &arm64] {
        oci::push(&c, &base, "ctr/multi", &m.digest, m);
    }
    oci::push(&c, &base, "ctr/multi", "v1", &index);

    let ct = Containerd::start();
    let host = reg.host();

    let by_tag = format!("{host}/ctr/single:v1");
    pull_and_check(&ct, &reg, &by_tag, &single, false);
    assert_content(&ct, &reg, &[&single]);

    let by_digest = format!("{host}/ctr/single@{}", single.digest);
    pull_and_check(&ct, &reg, &by_digest, &single, false);

    let multi = format!("{host}/ctr/multi:v1");
    pull_and_check(&ct, &reg, &multi, &index, true);
    assert_content(&ct, &reg, &[&index, &amd64, &arm64]);
    let ls = ct.ok(&reg, &["images", "ls"]);
    let platforms = "linux/amd64,linux/arm64";
    assert!(
        row(&ls, &multi).iter().any(|c| c == platforms),
        "platforms of {multi}:\n{ls}"
    );

    let multi_digest = format!("{host}/ctr/multi@{}", index.digest);
    pull_and_check(&ct, &reg, &multi_digest, &index, true);

    // containerd pushes too: the index it holds goes to a new repository, unchanged.
    let pushed = format!("{host}/ctr/pushed:v2");
    ct.ok(&reg, &["images", "push", "--plain-http", &pushed, &multi]);
    let r = c
        .get(format!("{base}/v2/ctr/pushed/manifests/v2"))
        .header("Accept", oci::OCI_INDEX)
        .send()
        .unwrap_or_else(|e| panic!("GET pushed index: {e}"));
    assert_eq!(r.status().as_u16(), 200, "GET pushed index");
    let body = r
        .bytes()
        .unwrap_or_else(|e| panic!("GET pushed index: {e}"));
    assert_eq!(
        body.as_ref(),
        index.bytes.as_slice(),
        "pushed index differs"
    );
    for m in [&amd64, &arm64] {
        let paths = std::iter::once(format!("manifests/{}", m.digest))
            .chain(m.blobs.iter().map(|b| format!("blobs/{}", b.digest)));
        for path in paths {
            let r = c
                .head(format!("{base}/v2/ctr/pushed/{path}"))
                .send()
                .unwrap_or_else(|e| panic!("HEAD {path}: {e}"));
            assert_eq!(r.status().as_u16(), 200, "{path} not in ctr/pushed");
        }
    }

    drop(ct);
    eprintln!("containerd round trip took {:?}", started.elapsed());
}
