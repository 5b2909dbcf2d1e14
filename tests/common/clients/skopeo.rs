//! skopeo with private policy, registries.conf, auth file and temp dir: nothing from /etc.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;

use crate::common::{require, run_bounded};

/// Limit for any single skopeo command.
pub const LIMIT: Duration = Duration::from_secs(90);
/// A policy that accepts any image (nothing is signed in tests).
pub const POLICY: &str = r#"{"default":[{"type":"insecureAcceptAnything"}]}"#;

/// skopeo with private policy, registries.conf, auth file and temp dir: nothing from /etc.
pub struct Skopeo {
    bin: PathBuf,
    dir: TempDir,
}

impl Skopeo {
    pub fn new() -> Self {
        let bin = require("skopeo");
        let dir = TempDir::new().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let p = dir.path();
        let write = |name: &str, text: &str| {
            std::fs::write(p.join(name), text).unwrap_or_else(|e| panic!("write {name}: {e}"))
        };
        write("policy.json", POLICY);
        write("registries.conf", "unqualified-search-registries = []\n");
        write("auth.json", "{}");
        for d in ["registries.d", "tmp"] {
            std::fs::create_dir_all(p.join(d)).unwrap_or_else(|e| panic!("mkdir {d}: {e}"));
        }
        Skopeo { bin, dir }
    }

    /// Runs skopeo with `args`; (success, stdout, stderr).
    pub fn output(&self, args: &[&str]) -> (bool, String, String) {
        let p = self.dir.path();
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--policy").arg(p.join("policy.json"));
        cmd.arg("--registries.d").arg(p.join("registries.d"));
        cmd.arg("--tmpdir").arg(p.join("tmp"));
        cmd.args(["--command-timeout", "80s"]).args(args);
        cmd.env("CONTAINERS_REGISTRIES_CONF", p.join("registries.conf"));
        cmd.env("REGISTRY_AUTH_FILE", p.join("auth.json"));
        // Go never proxies loopback addresses; this is belt and braces.
        cmd.env("NO_PROXY", "127.0.0.1")
            .env("no_proxy", "127.0.0.1");
        let out = run_bounded(&mut cmd, LIMIT);
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (out.status.success(), text(&out.stdout), text(&out.stderr))
    }

    /// Runs and fails the test unless skopeo exits 0; returns stdout.
    pub fn run(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.output(args);
        assert!(ok, "skopeo {args:?} failed\nstdout: {out}\nstderr: {err}");
        out
    }

    /// `skopeo copy --preserve-digests` (`--all` for indexes) without TLS.
    pub fn copy(&self, from: &str, to: &str, all: bool) {
        let mut args = vec!["copy", "--preserve-digests"];
        args.extend(["--src-tls-verify=false", "--dest-tls-verify=false"]);
        if all {
            args.push("--all");
        }
        self.run(&[args.as_slice(), &[from, to]].concat());
    }

    /// `skopeo <cmd...> --tls-verify=false <image>` (inspect, delete, list-tags).
    pub fn docker(&self, cmd: &[&str], image: &str) -> (bool, String, String) {
        self.output(&[cmd, &["--tls-verify=false", image]].concat())
    }

    /// Like `docker` but fails the test unless skopeo exits 0; returns stdout.
    pub fn docker_ok(&self, cmd: &[&str], image: &str) -> String {
        let (ok, out, err) = self.docker(cmd, image);
        assert!(ok, "skopeo {cmd:?} {image} failed: {out}\n{err}");
        out
    }

    /// `skopeo list-tags`, sorted.
    pub fn tags(&self, repo: &str) -> Vec<String> {
        let out = self.docker_ok(&["list-tags"], repo);
        let list: Value =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("list-tags: {e}: {out}"));
        let tags = serde_json::from_value::<Vec<String>>(list["Tags"].clone());
        let mut tags = tags.unwrap_or_else(|e| panic!("{e}: {list}"));
        tags.sort_unstable();
        tags
    }
}
