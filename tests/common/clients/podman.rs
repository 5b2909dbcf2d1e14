//! podman as root on private storage, configuration, policy and auth file.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;

use super::require_root;
use crate::common::{require, run_bounded};

/// Limit for any single podman command.
pub const LIMIT: Duration = Duration::from_secs(90);
/// A policy that accepts any image (nothing is signed in tests).
pub const POLICY: &str = r#"{"default":[{"type":"insecureAcceptAnything"}]}"#;

/// podman with its own storage, containers.conf, registries.conf, policy and auth file.
pub struct Podman {
    bin: PathBuf,
    dir: TempDir,
}

impl Podman {
    pub fn new() -> Self {
        let bin = require("podman");
        require_root();
        // A short path: podman puts sockets and locks under it.
        let dir = tempfile::Builder::new().prefix("pm").tempdir_in("/tmp");
        let dir = dir.unwrap_or_else(|e| panic!("tempdir: {e}"));
        let p = dir.path().display();
        let storage =
            format!("[storage]\ndriver = \"vfs\"\nrunroot = \"{p}/rr\"\ngraphroot = \"{p}/r\"\n");
        // With the CNI backend network state stays under network_config_dir; netavark would
        // create /run/containers/networks although no container ever runs here.
        let engine = format!(
            "[engine]\ntmp_dir = \"{p}/t\"\nvolume_path = \"{p}/v\"\nstatic_dir = \"{p}/s\"\n\
             events_logger = \"none\"\ncgroup_manager = \"cgroupfs\"\n\
             [network]\nnetwork_backend = \"cni\"\nnetwork_config_dir = \"{p}/n\"\n"
        );
        let files = [
            ("storage.conf", storage.as_str()),
            ("containers.conf", &engine),
            ("registries.conf", "unqualified-search-registries = []\n"),
            ("policy.json", POLICY),
            ("auth.json", "{}"),
        ];
        for (name, text) in files {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {name}: {e}"));
        }
        std::fs::create_dir_all(dir.path().join("tmp")).unwrap_or_else(|e| panic!("tmp: {e}"));
        Podman { bin, dir }
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// Runs podman with private storage and configuration; (success, stdout, stderr).
    pub fn try_run(&self, args: &[&str]) -> (bool, String, String) {
        let mut cmd = Command::new(&self.bin);
        cmd.args(["--root", &self.path("r"), "--runroot", &self.path("rr")]);
        cmd.args(["--tmpdir", &self.path("t"), "--storage-driver", "vfs"]);
        cmd.args(["--cgroup-manager", "cgroupfs", "--events-backend", "none"]);
        cmd.args(args);
        cmd.env("CONTAINERS_CONF", self.path("containers.conf"));
        cmd.env("CONTAINERS_STORAGE_CONF", self.path("storage.conf"));
        cmd.env("CONTAINERS_REGISTRIES_CONF", self.path("registries.conf"));
        cmd.env("REGISTRY_AUTH_FILE", self.path("auth.json"));
        cmd.env("TMPDIR", self.path("tmp"));
        // Go never proxies loopback addresses; this is belt and braces.
        cmd.env("NO_PROXY", "127.0.0.1")
            .env("no_proxy", "127.0.0.1");
        let out = run_bounded(&mut cmd, LIMIT);
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (out.status.success(), text(&out.stdout), text(&out.stderr))
    }

    /// Runs and fails the test unless podman exits 0; returns trimmed stdout.
    pub fn run(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.try_run(args);
        assert!(ok, "podman {args:?} failed\nstdout: {out}\nstderr: {err}");
        out.trim().to_owned()
    }

    /// `podman push` (in `format`) with `--digestfile`; returns the digest podman wrote.
    pub fn push(&self, local: &str, remote: &str, format: Option<&str>) -> String {
        let file = self.path(&format!("digest-{}", format.unwrap_or("default")));
        let policy = self.path("policy.json");
        let mut args = vec!["push", "--tls-verify=false", "--signature-policy", &policy];
        args.extend(["--digestfile", &file]);
        if let Some(f) = format {
            args.extend(["--format", f]);
        }
        self.run(&[args.as_slice(), &[local, remote]].concat());
        let digest = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("digestfile: {e}"));
        digest.trim().to_owned()
    }

    /// `podman pull`; (success, stdout, stderr).
    pub fn pull(&self, remote: &str) -> (bool, String, String) {
        let policy = self.path("policy.json");
        self.try_run(&[
            "pull",
            "--tls-verify=false",
            "--signature-policy",
            &policy,
            remote,
        ])
    }

    /// `podman image inspect --format '{{.Digest}} {{.Id}}'`.
    pub fn digest_and_id(&self, image: &str) -> (String, String) {
        let out = self.run(&["image", "inspect", "--format", "{{.Digest}} {{.Id}}", image]);
        let split = out
            .split_once(' ')
            .map(|(d, i)| (d.to_owned(), i.to_owned()));
        split.unwrap_or_else(|| panic!("inspect output: {out}"))
    }

    /// Removes every local image and checks none is left.
    pub fn remove_all(&self) {
        self.run(&["rmi", "--all", "--force"]);
        let left = self.run(&["images", "--quiet", "--all"]);
        assert!(left.is_empty(), "images left after rmi --all: {left}");
    }
}
