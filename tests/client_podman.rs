//! podman against the real binary: an image imported from a tarball (no network) is pushed
//! in OCI and Docker v2s2 form, checked byte for byte over HTTP, removed locally and pulled
//! back by tag and by digest. podman runs as root on private storage, configuration and
//! policy under a temporary directory, so the system's containers and images are never used.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::oci;
use common::{require, run_bounded, Registry};
use serde_json::Value;
use tempfile::TempDir;

const LIMIT: Duration = Duration::from_secs(90);
const POLICY: &str = r#"{"default":[{"type":"insecureAcceptAnything"}]}"#;
const DOCKER_V2S2: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// podman with its own storage, containers.conf, registries.conf, policy and auth file.
struct Podman {
    bin: PathBuf,
    dir: TempDir,
}

impl Podman {
    fn new() -> Self {
        let bin = require("podman");
        let me = std::fs::metadata("/proc/self").unwrap_or_else(|e| panic!("/proc/self: {e}"));
        let uid = me.uid();
        assert!(
            uid == 0,
            "this test runs podman as root; run it as root (uid {uid})"
        );
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

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// Runs podman with private storage and configuration; (success, stdout, stderr).
    fn try_run(&self, args: &[&str]) -> (bool, String, String) {
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
    fn run(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.try_run(args);
        assert!(ok, "podman {args:?} failed\nstdout: {out}\nstderr: {err}");
        out.trim().to_owned()
    }

    /// `podman push` (in `format`) with `--digestfile`; returns the digest podman wrote.
    fn push(&self, local: &str, remote: &str, format: Option<&str>) -> String {
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
    fn pull(&self, remote: &str) -> (bool, String, String) {
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
    fn digest_and_id(&self, image: &str) -> (String, String) {
        let out = self.run(&["image", "inspect", "--format", "{{.Digest}} {{.Id}}", image]);
        let split = out
            .split_once(' ')
            .map(|(d, i)| (d.to_owned(), i.to_owned()));
        split.unwrap_or_else(|| panic!("inspect output: {out}"))
    }

    /// Removes every local image and checks none is left.
    fn remove_all(&self) {
        self.run(&["rmi", "--all", "--force"]);
        let left = self.run(&["images", "--quiet", "--all"]);
        assert!(left.is_empty(), "images left after rmi --all: {left}");
    }
}

/// GETs `repo:reference`; checks the body hashes to Docker-Content-Digest and to `digest`,
/// the media type, and that every blob it references is served intact. Returns the manifest.
fn verify_pushed(base: &str, repo: &str, reference: &str, digest: &str, media_type: &str) -> Value {
    let http = common::http();
    let url = format!("{base}/v2/{repo}/manifests/{reference}");
    let accept = format!("{},{DOCKER_V2S2}", oci::OCI_MANIFEST);
    let r = http.get(&url).header("Accept", accept).send();
    let r = r.unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert_eq!(r.status().as_u16(), 200, "GET {url}");
    let header = |name: &str| r.headers().get(name).map(|v| v.as_bytes().to_vec());
    let (content_digest, content_type) = (header("Docker-Content-Digest"), header("Content-Type"));
    let text = |v: Option<Vec<u8>>| String::from_utf8(v.unwrap_or_default()).unwrap_or_default();
    let (content_digest, content_type) = (text(content_digest), text(content_type));
    let body = r.bytes().unwrap_or_else(|e| panic!("body of {url}: {e}"));
    assert_eq!(oci::sha256(&body), digest, "{url}: not podman's digest");
    assert_eq!(content_digest, digest, "{url}: Docker-Content-Digest");
    assert_eq!(content_type, media_type, "{url}: Content-Type");
    let m: Value = serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{url}: {e}"));
    let layers = m["layers"].as_array().cloned().unwrap_or_default();
    assert!(!layers.is_empty(), "{url}: no layers in {m}");
    for d in layers.iter().chain([&m["config"]]) {
        let (bd, size) = (d["digest"].as_str().unwrap_or_default(), d["size"].as_u64());
        let url = format!("{base}/v2/{repo}/blobs/{bd}");
        let r = http
            .get(&url)
            .send()
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(r.status().as_u16(), 200, "GET {url}");
        let bytes = r.bytes().unwrap_or_else(|e| panic!("body of {url}: {e}"));
        assert_eq!(oci::sha256(&bytes), bd, "{url}: content");
        assert_eq!(Some(bytes.len() as u64), size, "{url}: size");
    }
    m
}

fn write_tarball(dir: &Path) -> PathBuf {
    let tar = oci::tar_one_file("hello.txt", b"hello from podman\n");
    let path = dir.join("hello.tar");
    std::fs::write(&path, tar).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    path
}

#[test]
fn pushes_and_pulls_back_by_tag_and_digest() {
    let started = Instant::now();
    let pm = Podman::new();
    let r = Registry::start();
    let (base, host) = (r.url(), r.host());
    let repo = format!("{host}/podman/hello");

    let tarball = write_tarball(r.scratch());
    let tarball = tarball.display().to_string();
    let id = pm.run(&["import", "--quiet", &tarball, "localhost/hello:v1"]);
    let id = id.lines().last().unwrap_or_default().to_owned();
    assert!(id.starts_with("sha256:"), "podman import printed {id:?}");

    // Three pushes of one image: the source's own format, OCI and Docker v2s2.
    let d_default = pm.push("localhost/hello:v1", &format!("{repo}:v1"), None);
    let d_oci = pm.push("localhost/hello:v1", &format!("{repo}:oci"), Some("oci"));
    let d_v2s2 = pm.push("localhost/hello:v1", &format!("{repo}:v2s2"), Some("v2s2"));
    assert_eq!(
        d_default, d_oci,
        "an imported image is OCI, and so is its push"
    );
    assert_ne!(d_oci, d_v2s2, "OCI and v2s2 manifests cannot hash the same");
    for (tag, digest, media_type) in [
        ("v1", &d_default, oci::OCI_MANIFEST),
        ("oci", &d_oci, oci::OCI_MANIFEST),
        ("v2s2", &d_v2s2, DOCKER_V2S2),
    ] {
        let m = verify_pushed(&base, "podman/hello", tag, digest, media_type);
        assert_eq!(m["config"]["digest"], id.as_str(), "not the image: {m}");
        verify_pushed(&base, "podman/hello", digest, digest, media_type);
    }
    let url = format!("{base}/v2/podman/hello/tags/list");
    let tags = common::http()
        .get(&url)
        .send()
        .and_then(|r| r.json::<Value>());
    let tags = tags.unwrap_or_else(|e| panic!("{url}: {e}"));
    let tags = serde_json::from_value::<Vec<String>>(tags["tags"].clone());
    let mut tags = tags.unwrap_or_else(|e| panic!("{url}: {e}"));
    tags.sort_unstable();
    assert_eq!(tags, ["oci", "v1", "v2s2"]);

    // Gone locally, then back from the registry by tag and by digest.
    pm.remove_all();
    let id_hex = id.trim_start_matches("sha256:");
    for (reference, want) in [
        (format!("{repo}:v1"), &d_oci),
        (format!("{repo}@{d_v2s2}"), &d_v2s2),
        (format!("{repo}:v2s2"), &d_v2s2),
        (format!("{repo}@{d_oci}"), &d_oci),
    ] {
        let (ok, out, err) = pm.pull(&reference);
        assert!(ok, "pull {reference} failed: {out}\n{err}");
        let (digest, got_id) = pm.digest_and_id(&reference);
        assert_eq!(&digest, want, "podman's digest of {reference}");
        assert_eq!(got_id, id_hex, "image id of {reference}");
        pm.remove_all();
    }

    // A missing tag fails to pull, and says why.
    let missing = format!("{repo}:missing");
    let (ok, _, err) = pm.pull(&missing);
    assert!(!ok, "pull of {missing} succeeded");
    assert!(err.contains("manifest unknown"), "pull of {missing}: {err}");
    eprintln!("podman round trip took {:?}", started.elapsed());
}
