//! Startup with the content already on disk: the server that was populated is stopped
//! (SIGTERM, so ours closes its database as in a normal restart) and a fresh process is started
//! on the same directory and port, timed from spawn to its first 200 on `GET /v2/`.

use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::http::Conn;
use crate::servers::{require, Kind, Server};

/// Longest a restart may take before the benchmark gives up.
const READY_WITHIN: Duration = Duration::from_secs(120);
/// Longest a server gets to exit after SIGTERM before it is killed.
const EXIT_WITHIN: Duration = Duration::from_secs(30);

/// A server process started on an existing directory; killed when dropped. The `Server` it
/// replaced must outlive it (it owns the directory).
pub struct Restarted {
    /// Which implementation.
    pub kind: Kind,
    /// Where it listens (the replaced server's address).
    pub addr: SocketAddr,
    child: Child,
}

impl Restarted {
    /// Process id, for `/proc` figures.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Panics with the log when the process is no longer running.
    pub fn check_alive(&mut self, root: &Path) {
        if let Ok(Some(st)) = self.child.try_wait() {
            let log = fs::read_to_string(root.join("restart.log")).unwrap_or_default();
            panic!(
                "{:?} server exited after restart ({st}); log:\n{log}",
                self.kind
            );
        }
    }

    /// Stops it with SIGTERM, killing it if it does not exit in time.
    fn stop(mut self) {
        term(self.child.id());
        let deadline = Instant::now() + EXIT_WITHIN;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        eprintln!("{:?} server ignored SIGTERM; killed", self.kind);
    }
}

impl Drop for Restarted {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends SIGTERM to `pid`.
fn term(pid: u32) {
    // SAFETY: kill(2) with a pid of a child of this process; no memory is involved.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGTERM);
    }
}

/// True once `pid` has exited (a zombie waiting to be reaped, or gone).
fn exited(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

/// Stops a `Server` with SIGTERM (its directory stays), killing it if it does not exit in time.
pub fn stop_server(s: &mut Server) {
    term(s.pid());
    let deadline = Instant::now() + EXIT_WITHIN;
    while !exited(s.pid()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    s.stop();
}

/// The command that serves `s`'s directory again on its port.
fn command(bin: &Path, s: &Server) -> Command {
    let mut c = match s.kind {
        Kind::Reference => {
            let mut c = Command::new(require("docker-registry", "docker-registry"));
            c.arg("serve").arg(s.root().join("config.yml"));
            c
        }
        Kind::Ours => {
            let mut c = Command::new(bin);
            c.arg("serve")
                .arg("--listen")
                .arg(s.addr.to_string())
                .arg("--data-dir")
                .arg(s.data_dir())
                .arg("--insecure-no-auth")
                .arg("--log-level")
                .arg("Error");
            c
        }
    };
    // As servers.rs starts them: a clean environment, so the caller's REGISTRY_*/ACR_* variables
    // do not change the settings.
    c.env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", s.root())
        .current_dir(s.root());
    c
}

/// Starts a fresh process on `s`'s directory (`s` must be stopped); returns it and the seconds
/// from spawn to its first 200 on `GET /v2/`.
fn start(bin: &Path, s: &Server) -> (Restarted, f64) {
    let log_path = s.root().join("restart.log");
    let log = fs::File::create(&log_path)
        .unwrap_or_else(|e| panic!("creating {}: {e}", log_path.display()));
    let err = log
        .try_clone()
        .unwrap_or_else(|e| panic!("restart log: {e}"));
    let mut cmd = command(bin, s);
    let started = Instant::now();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let mut p = Restarted {
        kind: s.kind,
        addr: s.addr,
        child,
    };
    while started.elapsed() < READY_WITHIN {
        p.check_alive(s.root());
        let ok = Conn::new(p.addr)
            .request("GET", "/v2/", &[], &[])
            .is_ok_and(|r| r.status() == 200);
        if ok {
            return (p, started.elapsed().as_secs_f64());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    panic!(
        "{:?} server did not answer within {READY_WITHIN:?} after restart",
        s.kind
    );
}

/// Stops the populated server `s` and restarts it on its directory `rounds` times; returns the
/// last process (left running) and every startup time in seconds.
pub fn restart(bin: &Path, s: &mut Server, rounds: usize) -> (Restarted, Vec<f64>) {
    stop_server(s);
    starts(bin, s, rounds)
}

/// Stops `p`, a process serving `s`'s directory, and restarts it `rounds` times, as `restart`.
pub fn restart_again(bin: &Path, s: &Server, p: Restarted, rounds: usize) -> (Restarted, Vec<f64>) {
    p.stop();
    starts(bin, s, rounds)
}

/// Starts a process on the stopped `s`'s directory `rounds` times, stopping each but the last.
fn starts(bin: &Path, s: &Server, rounds: usize) -> (Restarted, Vec<f64>) {
    let (mut p, secs) = start(bin, s);
    let mut times = vec![secs];
    for _ in 1..rounds {
        p.stop();
        let (next, secs) = start(bin, s);
        p = next;
        times.push(secs);
    }
    for secs in &times {
        println!("    {:?}: startup {secs:.3} s", s.kind);
    }
    (p, times)
}
