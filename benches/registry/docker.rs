//! A private `dockerd` for the edge rows' `docker pull` (vfs storage, no networking of its
//! own, everything under a temporary directory); stopped and removed when dropped.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::servers::require;

/// How long the daemon gets to answer after its start.
const READY_WITHIN: Duration = Duration::from_secs(60);

/// A running daemon.
pub struct Dockerd {
    child: Child,
    sock: String,
    dir: TempDir,
}

impl Dockerd {
    /// Starts a fresh daemon (empty image store) under `run`.
    pub fn start(run: &Path) -> Dockerd {
        let dockerd = require("dockerd", "docker.io");
        let dir = tempfile::Builder::new()
            .prefix("dockerd-")
            .tempdir_in(run)
            .unwrap_or_else(|e| panic!("temporary directory in {}: {e}", run.display()));
        let p = dir.path();
        let sock = format!("unix://{}", p.join("docker.sock").display());
        let log = std::fs::File::create(p.join("dockerd.log"))
            .unwrap_or_else(|e| panic!("dockerd log: {e}"));
        let err = log
            .try_clone()
            .unwrap_or_else(|e| panic!("dockerd log: {e}"));
        let flag = |name: &str, file: &str| format!("--{name}={}", p.join(file).display());
        // Loopback registries are plain HTTP to docker by default: no configuration needed.
        let child = Command::new(dockerd)
            .args(["--iptables=false", "--ip6tables=false", "--bridge=none"])
            .arg("--storage-driver=vfs")
            .arg(flag("data-root", "data"))
            .arg(flag("exec-root", "exec"))
            .arg(flag("pidfile", "docker.pid"))
            .args(["-H", &sock])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run dockerd: {e}"));
        let d = Dockerd { child, sock, dir };
        let deadline = Instant::now() + READY_WITHIN;
        while !d.docker(&["version"]).status.success() {
            if Instant::now() > deadline {
                panic!("dockerd did not start; log:\n{}", d.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        d
    }

    fn docker(&self, args: &[&str]) -> std::process::Output {
        Command::new(require("docker", "docker.io"))
            .env("DOCKER_HOST", &self.sock)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run docker: {e}"))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
    }

    /// `docker pull image`, timed; `None` when it failed or took longer than `limit` (docker
    /// retries a failed layer a few times, then gives up).
    pub fn pull(&self, image: &str, limit: Duration) -> Option<f64> {
        let t = Instant::now();
        let mut child = Command::new(require("docker", "docker.io"))
            .env("DOCKER_HOST", &self.sock)
            .args(["pull", "--quiet", image])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run docker pull: {e}"));
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                if st.success() {
                    return Some(t.elapsed().as_secs_f64());
                }
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                println!("    docker pull {image} failed: {}", err.trim());
                return None;
            }
            if t.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                println!("    docker pull {image}: not within {limit:?}");
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        // SAFETY: kill has no memory-safety preconditions; the pid is our own child's.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
