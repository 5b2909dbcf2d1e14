//! Mirroring a multi-arch image with a signature from both kinds of parent, then pulling it
//! from the child with real clients while the parent is gone: digests equal the parent's.

use serde_json::{json, Value};

use crate::common::clients::containerd::{Containerd, SNAPSHOTTER};
use crate::common::clients::docker::Dockerd;
use crate::common::clients::require_root;
use crate::common::clients::skopeo::Skopeo;
use crate::common::distribution::{self, DockerRegistry};
use crate::common::faultproxy::FaultProxy;
use crate::common::oci::{self, Manifest, OCI_INDEX};
use crate::common::{self, Registry};
use crate::{child, manifest_digest, policy_for, synced_with, tags, wait_for, SYNC_USER};

use std::time::Duration;

const REPO: &str = "mirror/app";
const SIG_TYPE: &str = "application/vnd.example.signature.v1";

/// A two-platform index, its images and a signature referring to the index.
struct Content {
    amd: Manifest,
    arm: Manifest,
    index: Manifest,
    sig: Manifest,
}

fn content() -> Content {
    let amd = oci::image("amd64", b"mirrored for amd64\n");
    let arm = oci::image("arm64", b"mirrored for arm64\n");
    let index = oci::index(&[(&amd, "linux", "amd64"), (&arm, "linux", "arm64")]);
    let sig = oci::referrer(&index, SIG_TYPE, b"a signature");
    Content {
        amd,
        arm,
        index,
        sig,
    }
}

/// Pushes everything; `fallback` also writes the referrers tag schema (`sha256-<hex>` index)
/// for parents without the referrers API.
fn push_all(base: &str, auth: Option<(&str, &str)>, c: &Content, fallback: bool) {
    let http = common::http();
    for m in [&c.amd, &c.arm] {
        distribution::push(&http, base, auth, REPO, &m.digest, m);
    }
    distribution::push(&http, base, auth, REPO, "v1", &c.index);
    distribution::push(&http, base, auth, REPO, &c.sig.digest, &c.sig);
    if fallback {
        let mut d = c.sig.descriptor(None);
        d["artifactType"] = json!(SIG_TYPE);
        let body = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [d]});
        let list = Manifest::new(OCI_INDEX, &body, Vec::new());
        let tag = c.index.digest.replace(':', "-");
        distribution::push(&http, base, auth, REPO, &tag, &list);
    }
}

/// Every manifest and blob of `c` is served by the child with the parent's digests, and the
/// child's referrers API lists the signature.
fn assert_mirrored(reg: &Registry, c: &Content) {
    let base = reg.url();
    assert_eq!(
        manifest_digest(&base, REPO, "v1"),
        (200, c.index.digest.clone())
    );
    for m in [&c.amd, &c.arm, &c.sig] {
        assert_eq!(
            manifest_digest(&base, REPO, &m.digest),
            (200, m.digest.clone())
        );
        for b in &m.blobs {
            let got = crate::blob_sha(&base, REPO, &b.digest);
            assert_eq!(got, (200, b.digest.clone()), "blob {}", b.digest);
        }
    }
    let url = format!("{base}/v2/{REPO}/referrers/{}", c.index.digest);
    let list: Value = common::http()
        .get(&url)
        .send()
        .and_then(|r| r.json())
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    let found = list["manifests"]
        .as_array()
        .is_some_and(|a| a.iter().any(|d| d["digest"] == c.sig.digest.as_str()));
    assert!(found, "signature not among the child's referrers: {list}");
}

/// skopeo copies the whole index out of the child with every digest unchanged.
fn skopeo_pull(reg: &Registry, c: &Content) {
    let sk = Skopeo::new();
    let out = reg.scratch().join("out");
    let src = format!("docker://{}/{REPO}:v1", reg.host());
    sk.run(&[
        "copy",
        "--all",
        "--preserve-digests",
        "--src-tls-verify=false",
        &src,
        &format!("oci:{}:v1", out.display()),
    ]);
    let index = std::fs::read_to_string(out.join("index.json")).unwrap_or_default();
    let index: Value = serde_json::from_str(&index).unwrap_or_default();
    assert_eq!(index["manifests"][0]["digest"], c.index.digest.as_str());
    for m in [&c.amd, &c.arm] {
        for d in std::iter::once(&m.digest).chain(m.blobs.iter().map(|b| &b.digest)) {
            let file = out
                .join("blobs/sha256")
                .join(d.trim_start_matches("sha256:"));
            assert!(file.is_file(), "{d} missing from the copied layout");
        }
    }
}

#[test]
fn mirrors_the_reference_registry_and_serves_real_clients_offline() {
    require_root();
    let mut parent = DockerRegistry::start_with_users(&[(SYNC_USER, "pw")]);
    let c = content();
    push_all(&parent.url(), parent.user(), &c, true);
    let reg = child(&parent.host(), "pw", &policy_for(&[REPO], ""), &[]);
    wait_for(&reg, "the index mirrored", Duration::from_secs(60), || {
        synced_with(&reg, REPO, "v1")
            && tags(&reg.url(), REPO).contains(&c.index.digest.replace(':', "-"))
    });
    // Everything below is served by the child alone.
    parent.stop();
    assert_mirrored(&reg, &c);
    skopeo_pull(&reg, &c);

    let image = format!("{}/{REPO}:v1", reg.host());
    let dk = Dockerd::start();
    let out = dk.ok(&reg, &["pull", &image]);
    assert!(
        out.contains(&format!("Digest: {}", c.index.digest)),
        "{out}"
    );
    drop(dk);

    let ct = Containerd::start();
    let pull = ["images", "pull", "--plain-http", "--all-platforms"];
    ct.ok(
        &reg,
        &[&pull[..], &["--snapshotter", SNAPSHOTTER, &image]].concat(),
    );
    let ls = ct.ok(&reg, &["images", "ls"]);
    assert!(
        ls.contains(&c.index.digest),
        "containerd has another digest:\n{ls}"
    );
    let content = ct.ok(&reg, &["content", "ls", "--quiet"]);
    for m in [&c.amd, &c.arm] {
        for d in std::iter::once(&m.digest).chain(m.blobs.iter().map(|b| &b.digest)) {
            assert!(content.contains(d.as_str()), "{d} not pulled by containerd");
        }
    }
    let log = reg.log();
    assert!(
        !log.contains("SyncTokenPassword=pw"),
        "the password was logged"
    );
}

#[test]
fn mirrors_a_connected_registry_root_over_bearer_tokens() {
    let (mut root, pw, admin) = crate::root_with_token(&[REPO], crate::PULL_ACTIONS);
    let c = content();
    push_all(&root.url(), Some(("admin", &admin)), &c, false);
    let proxy = FaultProxy::start(
        format!("127.0.0.1:{}", root.port)
            .parse()
            .unwrap_or_else(|e| panic!("{e}")),
    );
    let reg = child(&proxy.host(), &pw, &policy_for(&[REPO], ""), &[]);
    wait_for(&reg, "the index mirrored", Duration::from_secs(60), || {
        synced_with(&reg, REPO, "v1")
    });
    // The child used the token service and reused its tokens.
    let tokens = proxy.count_requests("GET /acr/oauth2/token");
    let v2 = proxy.count_requests("GET /v2/") + proxy.count_requests("HEAD /v2/");
    assert!(
        tokens >= 1,
        "no bearer token was asked for: {:?}",
        proxy.requests()
    );
    assert!(
        tokens * 3 <= v2,
        "tokens not reused: {tokens} token requests for {v2} requests: {:#?}",
        proxy.requests()
    );
    // A pass that finds nothing new learns every tag's digest from the parent's tag listing:
    // no tag list, no HEAD per tag.
    proxy.reset_counters();
    let passes = |r: &Registry| crate::status(r)["syncPasses"].as_u64().unwrap_or(0);
    let before = passes(&reg);
    wait_for(&reg, "two more passes", Duration::from_secs(30), || {
        passes(&reg) >= before + 2
    });
    let requests = proxy.requests();
    let listing = format!("GET /acr/v1/{REPO}/_tags");
    let per_tag = format!("HEAD /v2/{REPO}/manifests/");
    assert!(
        requests.iter().any(|r| r.starts_with(&listing))
            && !requests
                .iter()
                .any(|r| r.starts_with(&per_tag) || r.contains("/tags/list")),
        "a no-change pass did not use the tag listing alone: {requests:#?}"
    );
    referrers_follow_the_repository_marker(&root, &admin, &proxy, &reg, &c);
    root.stop_hard();
    assert_mirrored(&reg, &c);
    skopeo_pull(&reg, &c);
    let status = crate::status(&reg);
    assert!(
        !status.to_string().contains(&pw),
        "the password is in the status"
    );
    assert!(!reg.log().contains(&pw), "the password is in the log");
}

/// Once a pass has mirrored the repository whole, passes ask the parent's repository marker
/// instead of the referrers of every unchanged image; a signature added to the parent without
/// any tag change moves the marker, and the next pass mirrors it.
fn referrers_follow_the_repository_marker(
    root: &Registry,
    admin: &str,
    proxy: &FaultProxy,
    reg: &Registry,
    c: &Content,
) {
    let passes = |r: &Registry| crate::status(r)["syncPasses"].as_u64().unwrap_or(0);
    proxy.reset_counters();
    let before = passes(reg);
    wait_for(reg, "two quiet passes", Duration::from_secs(30), || {
        passes(reg) >= before + 2
    });
    let requests = proxy.requests();
    let marker = format!("GET /acr/v1/{REPO} ");
    assert!(
        requests.iter().any(|r| r.starts_with(&marker))
            && !requests.iter().any(|r| r.contains("/referrers/")),
        "a no-change pass asked for referrers: {requests:#?}"
    );
    let sig2 = oci::referrer(&c.index, SIG_TYPE, b"a second signature");
    let auth = Some(("admin", admin));
    distribution::push(
        &common::http(),
        &root.url(),
        auth,
        REPO,
        &sig2.digest,
        &sig2,
    );
    let url = format!("{}/v2/{REPO}/referrers/{}", reg.url(), c.index.digest);
    wait_for(
        reg,
        "the new signature mirrored",
        Duration::from_secs(30),
        || {
            let list: Value = common::http()
                .get(&url)
                .send()
                .and_then(|r| r.json())
                .unwrap_or_default();
            list["manifests"]
                .as_array()
                .is_some_and(|a| a.iter().any(|d| d["digest"] == sig2.digest.as_str()))
        },
    );
}
