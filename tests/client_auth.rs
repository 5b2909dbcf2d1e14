//! Real clients against a registry with authentication on: `docker login` then push and pull
//! with client tokens, `podman login` and a Kubernetes-style `config.json` (`auths` with a
//! base64 `auth`) through `--authfile`, and `skopeo --creds`/`--dest-creds`. A pull-only
//! token's push is refused by each client, anonymous requests are refused, and every digest
//! read back equals what was pushed.

mod common;

use std::path::Path;

use base64::Engine;
use common::clients::docker::{Dockerd, CMD_LIMIT};
use common::clients::podman::Podman;
use common::clients::require_root;
use common::clients::skopeo::Skopeo;
use common::{oci, run_bounded, Registry};
use serde_json::{json, Value};

/// Repository every token here is scoped to; other repositories stay out of reach.
const REPO: &str = "auth/app";

/// A registry with two tokens on `auth/*`: (registry, pusher password, puller password).
fn registry_with_tokens() -> (Registry, String, String) {
    let reg = Registry::start_authenticated(&[]);
    let read = ["content/read", "metadata/read"];
    let write = ["content/read", "metadata/read", "content/write"];
    let pusher = reg.add_token("pusher", "auth/*", &write);
    let puller = reg.add_token("puller", "auth/*", &read);
    (reg, pusher, puller)
}

/// GETs `REPO`'s manifest `reference` with Basic credentials; returns (status, digest header).
fn manifest_digest(reg: &Registry, reference: &str, user: &str, pw: &str) -> (u16, String) {
    let url = format!("{}/v2/{REPO}/manifests/{reference}", reg.url());
    let accept = "application/vnd.oci.image.manifest.v1+json, \
                  application/vnd.docker.distribution.manifest.v2+json";
    let r = common::http()
        .get(&url)
        .header("Accept", accept)
        .basic_auth(user, Some(pw))
        .send()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = r.status().as_u16();
    let digest = r.headers().get("Docker-Content-Digest");
    let digest = digest.and_then(|v| v.to_str().ok()).unwrap_or_default();
    let digest = digest.to_owned();
    if status == 200 {
        let body = r.bytes().unwrap_or_else(|e| panic!("body of {url}: {e}"));
        assert_eq!(oci::sha256(&body), digest, "{url}: body and digest differ");
    }
    (status, digest)
}

/// Layer digests of `REPO`'s manifest `reference`.
fn layer_digests(reg: &Registry, reference: &str, user: &str, pw: &str) -> Vec<String> {
    let url = format!("{}/v2/{REPO}/manifests/{reference}", reg.url());
    let accept = "application/vnd.oci.image.manifest.v1+json, \
                  application/vnd.docker.distribution.manifest.v2+json";
    let r = common::http().get(&url).header("Accept", accept);
    let r = r.basic_auth(user, Some(pw)).send();
    let m: Value = r
        .and_then(|r| r.json())
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    let layers = m["layers"].as_array().cloned().unwrap_or_default();
    let digests: Vec<String> = layers
        .iter()
        .filter_map(|l| l["digest"].as_str().map(str::to_owned))
        .collect();
    assert!(!digests.is_empty(), "no layers in {m}");
    digests
}

/// Asserts from the server's log that every digest reached `repo` by a mount, not an upload.
fn assert_mounted(reg: &Registry, repo: &str, digests: &[String]) {
    let log = reg.log();
    for d in digests {
        let mounted = format!("blob mounted repository={repo} digest={d}");
        let uploaded = format!("blob uploaded repository={repo} digest={d}");
        assert!(
            log.contains(&mounted),
            "{d} was not mounted into {repo}:\n{log}"
        );
        assert!(!log.contains(&uploaded), "{d} was uploaded to {repo} again");
    }
}

/// True if the client's error output says the registry refused for lack of rights.
fn refused(err: &str) -> bool {
    let e = err.to_ascii_lowercase();
    [
        "denied",
        "unauthorized",
        "insufficient scopes",
        "authentication required",
    ]
    .iter()
    .any(|w| e.contains(w))
}

/// A one-file root filesystem tarball for `docker import` / `podman import`.
fn tarball(dir: &Path, text: &[u8]) -> String {
    let path = dir.join("rootfs.tar");
    std::fs::write(&path, oci::tar_one_file("hello.txt", text))
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path.display().to_string()
}

/// Runs a docker command that may fail; (success, stdout + stderr).
fn docker_try(dk: &Dockerd, args: &[&str]) -> (bool, String) {
    let out = run_bounded(&mut dk.cmd(args), CMD_LIMIT);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn docker_login_push_and_pull_with_client_tokens() {
    require_root();
    let (reg, pusher, puller) = registry_with_tokens();
    let dk = Dockerd::start();
    let host = reg.host();
    let image = format!("{host}/{REPO}:docker");
    let tar = tarball(dk.dir.path(), b"pushed by docker with a token\n");
    dk.ok(&reg, &["import", &tar, &image]);

    // Anonymous: refused.
    let (ok, out) = docker_try(&dk, &["push", &image]);
    assert!(!ok && refused(&out), "anonymous push: {out}");

    // A wrong password cannot log in at all.
    let (ok, out) = docker_try(&dk, &["login", "-u", "pusher", "-p", "wrong", &host]);
    assert!(!ok, "login with a wrong password succeeded: {out}");

    // Pull-only token: login works, push is refused.
    dk.ok(&reg, &["login", "-u", "puller", "-p", &puller, &host]);
    let (ok, out) = docker_try(&dk, &["push", &image]);
    assert!(!ok && refused(&out), "pull-only push: {out}");
    assert_eq!(manifest_digest(&reg, "docker", "puller", &puller).0, 404);

    // Push token: push works; the registry serves what docker reports.
    let out = dk.ok(&reg, &["login", "-u", "pusher", "-p", &pusher, &host]);
    assert!(out.contains("Login Succeeded"), "{out}");
    let digest = dk.push(&reg, &image);
    assert_eq!(
        manifest_digest(&reg, "docker", "puller", &puller),
        (200, digest.clone())
    );

    // The same layers pushed to another repository the token can read are mounted, through
    // docker's own challenge and token requests, not sent again.
    let copy = format!("{host}/auth/copy:docker");
    dk.ok(&reg, &["tag", &image, &copy]);
    let out = dk.ok(&reg, &["push", &copy]);
    assert!(out.contains("Mounted from auth/app"), "{out}");
    let layers = layer_digests(&reg, "docker", "puller", &puller);
    assert_mounted(&reg, "auth/copy", &layers);
    dk.ok(&reg, &["rmi", &copy]);

    // Pull back with the pull-only token into an empty image store.
    dk.ok(&reg, &["rmi", &image]);
    dk.ok(&reg, &["login", "-u", "puller", "-p", &puller, &host]);
    let out = dk.ok(&reg, &["pull", &image]);
    assert!(out.contains(&format!("Digest: {digest}")), "{out}");
    dk.ok(&reg, &["rmi", &image]);

    // Logged out, the pull is refused again.
    dk.ok(&reg, &["logout", &host]);
    let (ok, out) = docker_try(&dk, &["pull", &image]);
    assert!(!ok && refused(&out), "anonymous pull: {out}");
    let log = reg.log();
    assert!(!log.contains(&pusher) && !log.contains(&puller), "{log}");
}

#[test]
fn podman_login_and_kubernetes_style_authfile() {
    let (reg, pusher, puller) = registry_with_tokens();
    let pm = Podman::new();
    let host = reg.host();
    let remote = format!("{host}/{REPO}:podman");
    let tar = tarball(reg.scratch(), b"pushed by podman with a token\n");
    pm.run(&["import", "--quiet", &tar, "localhost/auth:v1"]);
    let policy = pm.path("policy.json");
    let push = |authfile: &str| {
        pm.try_run(&[
            "push",
            "--tls-verify=false",
            "--signature-policy",
            &policy,
            "--authfile",
            authfile,
            "localhost/auth:v1",
            &remote,
        ])
    };

    // podman login writes its own auth file; the push token pushes.
    let login_file = pm.path("login.json");
    pm.run(&[
        "login",
        "--tls-verify=false",
        "--authfile",
        &login_file,
        "-u",
        "pusher",
        "-p",
        &pusher,
        &host,
    ]);
    let (ok, out, err) = push(&login_file);
    assert!(ok, "push after podman login: {out}\n{err}");
    let (status, digest) = manifest_digest(&reg, "podman", "pusher", &pusher);
    assert_eq!(status, 200);

    // A Kubernetes image pull secret's `.dockerconfigjson` with the pull-only token.
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("puller:{puller}"));
    let config = json!({"auths": {host.clone(): {"auth": auth}}});
    let k8s_file = pm.path("config.json");
    std::fs::write(&k8s_file, config.to_string()).unwrap_or_else(|e| panic!("{e}"));
    let (ok, out, err) = push(&k8s_file);
    assert!(!ok && refused(&err), "pull-only push: {out}\n{err}");

    pm.remove_all();
    let (ok, out, err) = pm.pull(&remote);
    assert!(
        !ok && refused(&err),
        "pull without credentials: {out}\n{err}"
    );
    let (ok, out, err) = pm.try_run(&[
        "pull",
        "--tls-verify=false",
        "--signature-policy",
        &policy,
        "--authfile",
        &k8s_file,
        &remote,
    ]);
    assert!(ok, "pull with the Kubernetes-style auth file: {out}\n{err}");
    assert_eq!(pm.digest_and_id(&remote).0, digest, "podman's digest");
}

#[test]
fn skopeo_creds_push_pull_and_refusals() {
    let (reg, pusher, puller) = registry_with_tokens();
    let sk = Skopeo::new();
    let image = oci::image("amd64", b"pushed by skopeo with a token");
    let layout = reg.scratch().join("layout");
    oci::write_layout(&layout, &[("v1", &image)], &[]);
    let src = format!("oci:{}:v1", layout.display());
    let dest = format!("docker://{}/{REPO}:skopeo", reg.host());
    let copy = |creds: Option<&str>| {
        let mut args = vec!["copy", "--preserve-digests", "--dest-tls-verify=false"];
        let creds = creds.map(|c| format!("--dest-creds={c}"));
        args.extend(creds.as_deref());
        sk.output(&[args.as_slice(), &[&src, &dest]].concat())
    };

    let (ok, _, err) = copy(None);
    assert!(!ok && refused(&err), "anonymous copy: {err}");
    let (ok, _, err) = copy(Some(&format!("puller:{puller}")));
    assert!(!ok && refused(&err), "pull-only copy: {err}");
    let (ok, _, err) = copy(Some(&format!("pusher:{pusher}")));
    assert!(ok, "copy with the push token: {err}");
    let served = manifest_digest(&reg, "skopeo", "puller", &puller);
    assert_eq!(served, (200, image.digest.clone()));

    // skopeo remembers where it put the layer and mounts it into another repository the token
    // can read, asking the token service for both repositories itself.
    let copy_dest = format!("docker://{}/auth/copy:skopeo", reg.host());
    let creds = format!("--dest-creds=pusher:{pusher}");
    sk.run(&[
        "copy",
        "--preserve-digests",
        "--dest-tls-verify=false",
        &creds,
        &src,
        &copy_dest,
    ]);
    let layers = layer_digests(&reg, "skopeo", "puller", &puller);
    assert_mounted(&reg, "auth/copy", &layers);

    // Read back with the pull-only token: inspect and copy out to a layout.
    let creds = format!("--creds=puller:{puller}");
    let out = sk.run(&["inspect", "--tls-verify=false", &creds, &dest]);
    let inspected: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(inspected["Digest"], image.digest.as_str());
    let (ok, _, err) = sk.output(&["inspect", "--tls-verify=false", &dest]);
    assert!(!ok && refused(&err), "anonymous inspect: {err}");
    let out_layout = reg.scratch().join("out");
    let out_ref = format!("oci:{}:v1", out_layout.display());
    let src_creds = format!("--src-creds=puller:{puller}");
    sk.run(&[
        "copy",
        "--preserve-digests",
        "--src-tls-verify=false",
        &src_creds,
        &dest,
        &out_ref,
    ]);
    let index = std::fs::read_to_string(out_layout.join("index.json"));
    let index: Value = serde_json::from_str(&index.unwrap_or_default()).unwrap_or_default();
    assert_eq!(index["manifests"][0]["digest"], image.digest.as_str());
}
