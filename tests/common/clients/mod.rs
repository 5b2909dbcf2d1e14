//! Real container clients, each on private state under a temporary directory.

pub mod containerd;
pub mod docker;
pub mod podman;
pub mod skopeo;

use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};

/// Fails the test unless it runs as root (the daemons need it); never skips.
pub fn require_root() {
    let uid = std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or_else(|e| panic!("cannot read /proc/self: {e}"));
    assert_eq!(
        uid, 0,
        "client tests must run as root: they start their own daemons"
    );
}

/// Sends `signal` to `pid` with the `kill` program.
pub fn signal(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status();
}

/// True while `pid` is a live (non-zombie) process whose command line mentions `marker`.
pub fn alive_with(pid: u32, marker: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains(marker))
        .unwrap_or(false)
}
