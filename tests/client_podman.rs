//! podman against the real binary: an image imported from a tarball (no network) is pushed
//! in OCI and Docker v2s2 form, checked byte for byte over HTTP, removed locally and pulled
//! back by tag and by digest. podman runs as root on private storage, configuration and
//! policy under a temporary directory, so the system's containers and images are never used.

mod common;

use std::path::{Path, PathBuf};
use std::time::Instant;

use common::clients::podman::Podman;
use common::oci;
use common::Registry;
use serde_json::Value;

const DOCKER_V2S2: &str = "application/vnd.docker.distribution.manifest.v2+json";

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
