//! Docker as a real client: a private `dockerd` (own data, exec root and socket) imports an
//! image offline, pushes it to the registry, pushes a second tag into another repository
//! (cross-repository blob mount) and pulls everything back by tag and by digest.

mod common;

use std::time::Instant;

use common::clients::docker::Dockerd;
use common::clients::require_root;
use common::{oci, require, Registry};
use serde_json::Value;

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
