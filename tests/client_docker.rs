//! Docker as a real client: a private `dockerd` (own data, exec root and socket) imports an
//! image offline, pushes it to the registry, pushes a second tag into another repository
//! (cross-repository blob mount) and pulls everything back by tag and by digest.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{oci, require, run_bounded, Registry};
use serde_json::Value;
use tempfile::TempDir;

/// Limit for any single docker CLI command.
const CMD_LIMIT: Duration = Duration::from_secs(60);

/// Fails the test unless it runs as root (dockerd needs it); never skips.
fn require_root() {
    let uid = std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or_else(|e| panic!("cannot read /proc/self: {e}"));
    assert_eq!(uid, 0, "client_docker must run as root: it starts dockerd");
}

/// Sends `signal` to `pid` with the `kill` program.
fn signal(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status();
}

/// True while `pid` is a live (non-zombie) process whose command line mentions `marker`.
fn alive_with(pid: u32, marker: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains(marker))
        .unwrap_or(false)
}

/// A private Docker daemon; stopped together with its containerd when dropped.
struct Dockerd {
    child: Child,
    sock: String,
    exec_root: PathBuf,
    log: PathBuf,
    dir: TempDir,
}

impl Dockerd {
    fn start() -> Self {
        let dockerd = require("dockerd");
        let dir = tempfile::Builder::new()
            .prefix("dk")
            .tempdir_in("/tmp")
            .unwrap_or_else(|e| panic!("tempdir in /tmp: {e}"));
        let p = dir.path();
        let sock = format!("unix://{}", p.join("docker.sock").display());
        let exec_root = p.join("exec");
        let log = p.join("dockerd.log");
        std::fs::write(p.join("daemon.json"), "{}").unwrap_or_else(|e| panic!("{e}"));
        let out = std::fs::File::create(&log).unwrap_or_else(|e| panic!("dockerd log: {e}"));
        let err = out.try_clone().unwrap_or_else(|e| panic!("{e}"));
        let flag = |name: &str, file: &str| format!("--{name}={}", p.join(file).display());
        // Loopback registries are insecure (plain HTTP) by default; nothing else is configured.
        let child = Command::new(dockerd)
            .args(["--iptables=false", "--ip6tables=false", "--bridge=none"])
            .arg("--storage-driver=vfs")
            .arg(flag("config-file", "daemon.json"))
            .arg(flag("data-root", "data"))
            .arg(flag("exec-root", "exec"))
            .arg(flag("pidfile", "docker.pid"))
            .args(["-H", &sock])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn dockerd: {e}"));
        let mut d = Dockerd {
            child,
            sock,
            exec_root,
            log,
            dir,
        };
        d.wait_ready(Duration::from_secs(60));
        d
    }

    fn wait_ready(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        for _ in 0..600 {
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("dockerd exited early ({st}); log:\n{}", self.log_tail());
            }
            let out = run_bounded(&mut self.cmd(&["version"]), Duration::from_secs(10));
            if out.status.success() {
                return;
            }
            if Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("dockerd not ready in {limit:?}; log:\n{}", self.log_tail());
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// A `docker` CLI command talking to this daemon only, with a private client config.
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(require("docker"));
        c.env("DOCKER_CONFIG", self.dir.path().join("client"))
            .env_remove("DOCKER_HOST")
            .env_remove("DOCKER_CONTEXT")
            .args(["-H", &self.sock])
            .args(args);
        c
    }

    /// Runs a docker command; panics with both daemon and registry logs unless it succeeds.
    fn ok(&self, reg: &Registry, args: &[&str]) -> String {
        let out: Output = run_bounded(&mut self.cmd(args), CMD_LIMIT);
        if !out.status.success() {
            panic!(
                "docker {args:?} failed ({})\nstdout: {}\nstderr: {}\ndockerd log:\n{}\nregistry log:\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                self.log_tail(),
                reg.log()
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// True if the daemon knows `reference` (an image id, tag or digest reference).
    fn has_image(&self, reference: &str) -> bool {
        let out = run_bounded(&mut self.cmd(&["image", "inspect", reference]), CMD_LIMIT);
        out.status.success()
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let containerd_pid =
            std::fs::read_to_string(self.exec_root.join("containerd/containerd.pid"))
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok());
        signal(self.child.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !matches!(self.child.try_wait(), Ok(Some(_))) {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // dockerd stops its containerd on a clean exit; make sure it is gone regardless.
        let marker = self.exec_root.display().to_string();
        if let Some(pid) = containerd_pid.filter(|p| alive_with(*p, &marker)) {
            signal(pid, "TERM");
            let deadline = Instant::now() + Duration::from_secs(10);
            while alive_with(pid, &marker) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            if alive_with(pid, &marker) {
                signal(pid, "KILL");
            }
        }
    }
}

/// The `sha256:` digest on the `<tag>: digest: sha256:... size: N` line of `docker push`.
fn pushed_digest(push_output: &str, tag: &str) -> String {
    let prefix = format!("{tag}: digest: ");
    push_output
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|rest| rest.split_whitespace().next())
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no digest for {tag} in push output:\n{push_output}"))
}

/// GETs `url` and asserts 200; returns the `Docker-Content-Digest` header and the body.
fn get(url: &str, accept: &str) -> (Option<String>, Vec<u8>) {
    let r = common::http().get(url).header("Accept", accept).send();
    let r = r.unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert_eq!(r.status().as_u16(), 200, "GET {url}");
    let digest = r.headers().get("Docker-Content-Digest");
    let digest = digest.and_then(|v| v.to_str().ok()).map(str::to_string);
    let body = r.bytes().unwrap_or_else(|e| panic!("GET {url}: {e}"));
    (digest, body.to_vec())
}

/// Checks over HTTP that `repo:tag` resolves to `digest` and that every blob it names is served.
fn check_over_http(reg: &Registry, repo: &str, tag: &str, digest: &str) -> Value {
    let accept = "application/vnd.docker.distribution.manifest.v2+json, \
                  application/vnd.oci.image.manifest.v1+json";
    let base = format!("{}/v2/{repo}", reg.url());
    let (header, body) = get(&format!("{base}/manifests/{tag}"), accept);
    assert_eq!(
        header.as_deref(),
        Some(digest),
        "Docker-Content-Digest of {repo}:{tag}"
    );
    assert_eq!(oci::sha256(&body), digest, "sha256 of {repo}:{tag}");
    let (_, by_digest) = get(&format!("{base}/manifests/{digest}"), accept);
    assert_eq!(by_digest, body, "{repo}@{digest} differs from {repo}:{tag}");
    let manifest: Value =
        serde_json::from_slice(&body).unwrap_or_else(|e| panic!("manifest is not JSON: {e}"));
    let layers = manifest["layers"].as_array().cloned().unwrap_or_default();
    assert!(!layers.is_empty(), "manifest has no layers: {manifest}");
    for desc in layers.iter().chain([&manifest["config"]]) {
        let d = desc["digest"].as_str().unwrap_or_default();
        let (_, blob) = get(&format!("{base}/blobs/{d}"), "*/*");
        assert_eq!(oci::sha256(&blob), d, "blob {d} in {repo}");
        let size = Some(blob.len() as u64);
        assert_eq!(size, desc["size"].as_u64(), "size of {d} in {repo}");
    }
    manifest
}

/// Image id, then all repo digests, of a local image.
fn inspect(dk: &Dockerd, reg: &Registry, reference: &str) -> (String, Vec<String>) {
    let id = dk.ok(reg, &["image", "inspect", "--format", "{{.Id}}", reference]);
    let fmt = "{{range .RepoDigests}}{{println .}}{{end}}";
    let digests = dk.ok(reg, &["image", "inspect", "--format", fmt, reference]);
    let digests = digests.lines().filter(|l| !l.is_empty());
    (id.trim().to_string(), digests.map(str::to_string).collect())
}

/// Pulls `reference` into an empty daemon and checks it has `repo_digest` and `image_id`.
fn pull_and_check(dk: &Dockerd, reg: &Registry, reference: &str, repo_digest: &str, id: &str) {
    assert!(!dk.has_image(id), "{id} present before pulling {reference}");
    let out = dk.ok(reg, &["pull", reference]);
    let digest = repo_digest.split('@').nth(1).unwrap_or_default();
    let line = format!("Digest: {digest}");
    assert!(out.contains(&line), "pull {reference}:\n{out}");
    let (got_id, repo_digests) = inspect(dk, reg, reference);
    assert_eq!(got_id, id, "image id after pulling {reference}");
    assert!(
        repo_digests.iter().any(|d| d == repo_digest),
        "{repo_digest} not in RepoDigests {repo_digests:?} after pulling {reference}"
    );
    dk.ok(reg, &["rmi", reference]);
    assert!(!dk.has_image(id), "{id} present after removing {reference}");
}

#[test]
fn docker_push_mount_and_pull_round_trip() {
    require_root();
    require("docker");
    let started = Instant::now();
    let reg = Registry::start();
    let dk = Dockerd::start();
    let host = reg.host();
    let (hello_v1, copy_v2) = (
        format!("{host}/docker/hello:v1"),
        format!("{host}/docker/copy:v2"),
    );

    // An image made offline: a tarball imported as a single-layer image.
    let tarball = dk.dir.path().join("rootfs.tar");
    let content = oci::pseudo_random(3 * 1024 * 1024, 7);
    std::fs::write(&tarball, oci::tar_one_file("hello.bin", &content))
        .unwrap_or_else(|e| panic!("write {}: {e}", tarball.display()));
    let tarball = tarball.to_string_lossy().to_string();
    let id = dk
        .ok(&reg, &["import", &tarball, &hello_v1])
        .trim()
        .to_string();
    assert!(id.starts_with("sha256:"), "docker import printed {id:?}");

    // Push; the digest docker reports is what the registry serves for the tag.
    let digest = pushed_digest(&dk.ok(&reg, &["push", &hello_v1]), "v1");
    let hello_digest = format!("{host}/docker/hello@{digest}");
    let (_, repo_digests) = inspect(&dk, &reg, &hello_v1);
    assert_eq!(repo_digests, [hello_digest.as_str()], "after push");
    let manifest = check_over_http(&reg, "docker/hello", "v1", &digest);
    let config = manifest["config"]["digest"].as_str();
    assert_eq!(config, Some(id.as_str()), "the config is the image id");

    // A second tag in another repository: the layer is mounted, not uploaded again.
    dk.ok(&reg, &["tag", &hello_v1, &copy_v2]);
    let out = dk.ok(&reg, &["push", &copy_v2]);
    assert_eq!(pushed_digest(&out, "v2"), digest, "same image, same digest");
    assert!(
        out.contains("Mounted from docker/hello"),
        "no cross-repo mount:\n{out}"
    );
    check_over_http(&reg, "docker/copy", "v2", &digest);

    // Forget the local image entirely, then pull it back by tag, by digest, and the copy.
    dk.ok(&reg, &["rmi", &hello_v1, &copy_v2]);
    pull_and_check(&dk, &reg, &hello_v1, &hello_digest, &id);
    pull_and_check(&dk, &reg, &hello_digest, &hello_digest, &id);
    let copy_digest = format!("{host}/docker/copy@{digest}");
    pull_and_check(&dk, &reg, &copy_v2, &copy_digest, &id);

    drop(dk);
    eprintln!("docker round trip took {:?}", started.elapsed());
}
