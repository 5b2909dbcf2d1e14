//! A private Docker daemon (own data root, exec root, socket and client config) for client tests.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::{alive_with, signal};
use crate::common::{netns, require, run_bounded, Registry};

/// Limit for any single docker CLI command.
pub const CMD_LIMIT: Duration = Duration::from_secs(60);

/// A private Docker daemon; stopped together with its containerd when dropped.
pub struct Dockerd {
    child: Child,
    sock: String,
    exec_root: PathBuf,
    log: PathBuf,
    /// Private directory: daemon state, client config, scratch files.
    pub dir: TempDir,
}

impl Dockerd {
    /// Starts a daemon in the test's own network namespace, with an empty `daemon.json`.
    pub fn start() -> Self {
        Self::start_in(None)
    }

    /// Starts a daemon inside network namespace `ns` (`Net::ns(i)`; `None`: the test's own):
    /// its pulls and pushes then go out from that layer. The CLI still reaches it from the
    /// test's namespace (a unix socket is a file), and it reads the host's
    /// `/etc/docker/certs.d` (`ApiProxy::trust_for_docker` applies to it).
    pub fn start_in(ns: Option<&str>) -> Self {
        Self::start_with_config(ns, "{}")
    }

    /// Like `start_in`, with `daemon_json` as the daemon's `daemon.json` (e.g.
    /// `{"insecure-registries": ["10.214.3.1:5000"]}`: only loopback registries are plain-HTTP
    /// by default, and a layer's registries are not on loopback).
    pub fn start_with_config(ns: Option<&str>, daemon_json: &str) -> Self {
        let dockerd = require("dockerd");
        let dir = tempfile::Builder::new()
            .prefix("dk")
            .tempdir_in("/tmp")
            .unwrap_or_else(|e| panic!("tempdir in /tmp: {e}"));
        let p = dir.path();
        let sock = format!("unix://{}", p.join("docker.sock").display());
        let exec_root = p.join("exec");
        let log = p.join("dockerd.log");
        std::fs::write(p.join("daemon.json"), daemon_json).unwrap_or_else(|e| panic!("{e}"));
        let out = std::fs::File::create(&log).unwrap_or_else(|e| panic!("dockerd log: {e}"));
        let err = out.try_clone().unwrap_or_else(|e| panic!("{e}"));
        let flag = |name: &str, file: &str| format!("--{name}={}", p.join(file).display());
        // Loopback registries are insecure (plain HTTP) by default; nothing else is configured
        // unless `daemon_json` says so. In a namespace `nsenter` execs dockerd in place,
        // so the child is dockerd itself (signalled and reaped on drop as before).
        let child = netns::in_ns(ns, dockerd)
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

    /// Waits until the daemon answers `docker version` on its socket; panics after `limit`.
    pub fn wait_ready(&mut self, limit: Duration) {
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

    /// The daemon log's last 40 lines.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// The daemon's socket, as `DOCKER_HOST` wants it.
    pub fn host(&self) -> &str {
        &self.sock
    }

    /// A `docker` CLI command talking to this daemon only, with a private client config.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(require("docker"));
        c.env("DOCKER_CONFIG", self.dir.path().join("client"))
            .env_remove("DOCKER_HOST")
            .env_remove("DOCKER_CONTEXT")
            .args(["-H", &self.sock])
            .args(args);
        c
    }

    /// Runs a docker command; panics with both daemon and registry logs unless it succeeds.
    pub fn ok(&self, reg: &Registry, args: &[&str]) -> String {
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

    /// `docker push`; returns the manifest digest docker reports.
    pub fn push(&self, reg: &Registry, image: &str) -> String {
        let out = self.ok(reg, &["push", image]);
        out.lines()
            .find_map(|l| l.strip_prefix("docker: digest: "))
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no digest in push output:\n{out}"))
            .to_owned()
    }

    /// True if the daemon knows `reference` (an image id, tag or digest reference).
    pub fn has_image(&self, reference: &str) -> bool {
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
