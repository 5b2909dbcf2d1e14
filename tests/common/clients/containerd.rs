//! A private containerd (own root, state, socket and config) driven with `ctr`.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::common::{require, run_bounded, Registry};

/// Limit for any single `ctr` command.
pub const CMD_LIMIT: Duration = Duration::from_secs(60);
/// Snapshotter that needs no kernel filesystem support.
pub const SNAPSHOTTER: &str = "native";

/// A private containerd; stopped when dropped.
pub struct Containerd {
    child: Child,
    sock: String,
    log: std::path::PathBuf,
    _dir: TempDir,
}

impl Containerd {
    pub fn start() -> Self {
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

    pub fn wait_ready(&mut self, limit: Duration) {
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

    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// A `ctr` command talking to this containerd only, in a test namespace.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(require("ctr"));
        c.args(["--address", &self.sock, "--namespace", "crtest"])
            .env_remove("CONTAINERD_ADDRESS")
            .env_remove("CONTAINERD_NAMESPACE")
            .env_remove("CONTAINERD_SNAPSHOTTER")
            .args(args);
        c
    }

    /// Runs a `ctr` command; panics with containerd's and the registry's logs unless it succeeds.
    pub fn ok(&self, reg: &Registry, args: &[&str]) -> String {
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
