//! skopeo (containers/image) against the real binary: a multi-arch index and a referrer
//! artifact copied from an OCI layout, read back byte-identical over HTTP and with skopeo,
//! copied out to a layout, between repositories and registries with digests kept, tags
//! listed, and manifests deleted.

mod common;

use std::path::Path;
use std::time::Instant;

use common::clients::skopeo::Skopeo;
use common::oci::{self, Manifest};
use common::Registry;
use reqwest::blocking::Response;
use serde_json::Value;

const SIG_TYPE: &str = "application/vnd.example.signature.v1";

fn json(text: &str, what: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{what} is not JSON ({e}): {text}"))
}

fn get(url: &str) -> Response {
    let accept = format!("{},{}", oci::OCI_INDEX, oci::OCI_MANIFEST);
    let r = common::http().get(url).header("Accept", accept).send();
    r.unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

/// GETs a manifest; asserts 200, exact bytes and the Docker-Content-Digest header.
fn assert_manifest(base: &str, repo: &str, reference: &str, want: &Manifest) {
    let r = get(&format!("{base}/v2/{repo}/manifests/{reference}"));
    assert_eq!(r.status().as_u16(), 200, "GET {repo}:{reference}");
    let header = r.headers().get("Docker-Content-Digest").cloned();
    let body = r.bytes().unwrap_or_else(|e| panic!("body: {e}"));
    assert_eq!(oci::sha256(&body), want.digest, "{repo}:{reference}");
    let header = header.and_then(|v| v.to_str().ok().map(str::to_owned));
    assert_eq!(header, Some(want.digest.clone()), "Docker-Content-Digest");
}

/// Asserts a manifest is gone: 404 with MANIFEST_UNKNOWN.
fn assert_manifest_unknown(base: &str, repo: &str, reference: &str) {
    let r = get(&format!("{base}/v2/{repo}/manifests/{reference}"));
    assert_eq!(r.status().as_u16(), 404, "{repo}:{reference} still served");
    let body: Value = r.json().unwrap_or_else(|e| panic!("error body: {e}"));
    assert_eq!(body["errors"][0]["code"], "MANIFEST_UNKNOWN", "{body}");
}

/// GETs the referrers of `subject`, optionally filtered: (descriptors, OCI-Filters-Applied).
fn referrers(base: &str, repo: &str, subject: &str, filter: Option<&str>) -> (Vec<Value>, bool) {
    let mut url = format!("{base}/v2/{repo}/referrers/{subject}");
    if let Some(f) = filter {
        url = format!("{url}?artifactType={f}");
    }
    let r = get(&url);
    assert_eq!(r.status().as_u16(), 200, "GET {url}");
    let filtered = r
        .headers()
        .get("OCI-Filters-Applied")
        .map(|v| v.as_bytes().to_vec());
    let body: Value = r.json().unwrap_or_else(|e| panic!("referrers body: {e}"));
    assert_eq!(body["mediaType"], oci::OCI_INDEX, "{body}");
    let list = body["manifests"].as_array().cloned().unwrap_or_default();
    (list, filtered.as_deref() == Some(b"artifactType"))
}

/// Asserts an OCI layout holds `root` under `tag`, and every manifest and blob of `all`.
fn assert_layout(dir: &Path, tag: &str, root: &Manifest, all: &[&Manifest]) {
    let text = std::fs::read_to_string(dir.join("index.json"))
        .unwrap_or_else(|e| panic!("{}/index.json: {e}", dir.display()));
    let index = json(&text, "index.json");
    let entries = index["manifests"].as_array().cloned().unwrap_or_default();
    let entry = entries
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap_or_else(|| panic!("no `{tag}` in {text}"));
    assert_eq!(entry["digest"], root.digest.as_str(), "{tag} in {text}");
    for m in all {
        let blobs = m.blobs.iter().map(|b| (&b.digest, &b.bytes));
        for (digest, want) in blobs.chain([(&m.digest, &m.bytes)]) {
            let path = dir.join("blobs").join(digest.replacen(':', "/", 1));
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(&bytes, want, "{} differs", path.display());
        }
    }
}

struct Content {
    amd: Manifest,
    arm: Manifest,
    index: Manifest,
    sig: Manifest,
}

fn content() -> Content {
    let amd = oci::image("amd64", b"hello from amd64\n");
    let arm = oci::image("arm64", b"hello from arm64\n");
    let index = oci::index(&[(&amd, "linux", "amd64"), (&arm, "linux", "arm64")]);
    let sig = oci::referrer(&index, SIG_TYPE, b"not really a signature");
    Content {
        amd,
        arm,
        index,
        sig,
    }
}

/// Pushes the children by digest, the index as `multi` and the referrer by digest, over HTTP.
fn push_all(base: &str, repo: &str, c: &Content) {
    let http = common::http();
    for m in [&c.amd, &c.arm] {
        oci::push(&http, base, repo, &m.digest, m);
    }
    oci::push(&http, base, repo, "multi", &c.index);
    oci::push(&http, base, repo, &c.sig.digest, &c.sig);
}

#[test]
fn copies_index_and_referrer_from_layout_and_back() {
    let started = Instant::now();
    let (sk, r, c) = (Skopeo::new(), Registry::start(), content());
    let (base, host) = (r.url(), r.host());
    let src = r.scratch().join("src");
    let roots = [("multi", &c.index), ("sig", &c.sig)];
    oci::write_layout(&src, &roots, &[&c.amd, &c.arm]);
    let src = |tag: &str| format!("oci:{}:{tag}", src.display());
    let dst = |tag: &str| format!("docker://{host}/skopeo/app:{tag}");

    sk.copy(&src("multi"), &dst("multi"), true);
    // An artifact with an empty config and a subject: skopeo 1.9.3 copies it as it is.
    sk.copy(&src("sig"), &dst("sig"), false);

    // Everything byte-identical to the layout.
    assert_manifest(&base, "skopeo/app", "multi", &c.index);
    assert_manifest(&base, "skopeo/app", "sig", &c.sig);
    for m in [&c.index, &c.amd, &c.arm, &c.sig] {
        assert_manifest(&base, "skopeo/app", &m.digest, m);
    }

    // The referrers API lists the artifact, with and without a filter.
    for filter in [None, Some(SIG_TYPE)] {
        let (list, filtered) = referrers(&base, "skopeo/app", &c.index.digest, filter);
        assert_eq!(filtered, filter.is_some(), "OCI-Filters-Applied");
        assert_eq!(list.len(), 1, "referrers ({filter:?}): {list:?}");
        assert_eq!(list[0]["digest"], c.sig.digest.as_str());
        assert_eq!(list[0]["artifactType"], SIG_TYPE);
        assert_eq!(list[0]["mediaType"], oci::OCI_MANIFEST);
        assert_eq!(list[0]["size"], c.sig.bytes.len());
    }
    let other = Some("application/x-other");
    let (list, _) = referrers(&base, "skopeo/app", &c.index.digest, other);
    assert!(list.is_empty(), "filter for another type: {list:?}");

    // skopeo reads it back: raw bytes, a child's config, the index for another arch, tags.
    let raw = sk.docker_ok(&["inspect", "--raw"], &dst("multi"));
    assert!(raw.as_bytes() == c.index.bytes, "index: {raw}");
    let child = |m: &Manifest| format!("docker://{host}/skopeo/app@{}", m.digest);
    let raw = sk.docker_ok(&["inspect", "--raw"], &child(&c.amd));
    assert!(raw.as_bytes() == c.amd.bytes, "child: {raw}");
    let info = json(&sk.docker_ok(&["inspect"], &child(&c.arm)), "inspect");
    assert_eq!(info["Digest"], c.arm.digest.as_str(), "{info}");
    assert_eq!(info["Architecture"], "arm64", "{info}");
    assert_eq!(info["Os"], "linux", "{info}");
    assert_eq!(info["Layers"][0], c.arm.blobs[1].digest.as_str(), "{info}");
    let arm64 = ["--override-arch", "arm64", "inspect"];
    let info = json(&sk.docker_ok(&arm64, &dst("multi")), "inspect for arm64");
    assert_eq!(info["Architecture"], "arm64", "{info}");
    let tags = sk.tags(&format!("docker://{host}/skopeo/app"));
    assert_eq!(tags, ["multi", "sig"]);

    // And copies everything out to a new layout with the same digests.
    let out = r.scratch().join("out");
    let out_ref = |tag: &str| format!("oci:{}:{tag}", out.display());
    sk.copy(&dst("multi"), &out_ref("multi"), true);
    sk.copy(&dst("sig"), &out_ref("sig"), false);
    assert_layout(&out, "multi", &c.index, &[&c.index, &c.amd, &c.arm]);
    assert_layout(&out, "sig", &c.sig, &[&c.sig]);
    eprintln!("layout round trip took {:?}", started.elapsed());
}

#[test]
fn copies_between_repositories_and_registries_keeping_digests() {
    let started = Instant::now();
    let (sk, c) = (Skopeo::new(), content());
    let (one, two) = (Registry::start(), Registry::start());
    push_all(&one.url(), "skopeo/src", &c);
    let at = |r: &Registry, repo_tag: &str| format!("docker://{}/{repo_tag}", r.host());

    // Same registry, another repository (blobs may be mounted), then another registry.
    let copy = at(&one, "skopeo/copy:multi");
    sk.copy(&at(&one, "skopeo/src:multi"), &copy, true);
    sk.copy(&copy, &at(&two, "skopeo/mirror:multi"), true);
    for (r, repo) in [(&one, "skopeo/copy"), (&two, "skopeo/mirror")] {
        assert_manifest(&r.url(), repo, "multi", &c.index);
        for m in [&c.amd, &c.arm] {
            assert_manifest(&r.url(), repo, &m.digest, m);
        }
    }
    // A single child by digest, and the referrer artifact by digest.
    let child = at(&one, &format!("skopeo/src@{}", c.arm.digest));
    sk.copy(&child, &at(&two, "skopeo/single:arm64"), false);
    assert_manifest(&two.url(), "skopeo/single", "arm64", &c.arm);
    let sig = at(&one, &format!("skopeo/src@{}", c.sig.digest));
    sk.copy(&sig, &at(&two, "skopeo/mirror:sig"), false);
    assert_manifest(&two.url(), "skopeo/mirror", "sig", &c.sig);
    let filter = Some(SIG_TYPE);
    let (list, _) = referrers(&two.url(), "skopeo/mirror", &c.index.digest, filter);
    assert_eq!(list.len(), 1, "referrers on the mirror: {list:?}");
    assert_eq!(list[0]["digest"], c.sig.digest.as_str());
    // Blobs came along.
    for b in c.amd.blobs.iter().chain(&c.arm.blobs).chain(&c.sig.blobs) {
        let url = format!("{}/v2/skopeo/mirror/blobs/{}", two.url(), b.digest);
        let got = get(&url);
        assert_eq!(got.status().as_u16(), 200, "GET {url}");
        let bytes = got.bytes().unwrap_or_else(|e| panic!("body {url}: {e}"));
        assert_eq!(bytes.as_ref(), b.bytes.as_slice(), "{url}");
    }
    assert_eq!(sk.tags(&at(&two, "skopeo/mirror")), ["multi", "sig"]);
    eprintln!("copies took {:?}", started.elapsed());
}

#[test]
fn deletes_manifests_by_tag_and_digest() {
    let (sk, r, c) = (Skopeo::new(), Registry::start(), content());
    let (base, host) = (r.url(), r.host());
    push_all(&base, "skopeo/del", &c);
    let image = |reference: &str| format!("docker://{host}/skopeo/del{reference}");

    // By tag: skopeo resolves the tag and deletes the manifest it points to.
    sk.docker_ok(&["delete"], &image(":multi"));
    assert_manifest_unknown(&base, "skopeo/del", "multi");
    assert_manifest_unknown(&base, "skopeo/del", &c.index.digest);
    let (ok, out, _) = sk.docker(&["inspect"], &image(":multi"));
    assert!(!ok, "inspect of a deleted tag succeeded: {out}");
    // Children stay until deleted by digest.
    assert_manifest(&base, "skopeo/del", &c.amd.digest, &c.amd);
    let amd = image(&format!("@{}", c.amd.digest));
    sk.docker_ok(&["delete"], &amd);
    assert_manifest_unknown(&base, "skopeo/del", &c.amd.digest);
    assert_manifest(&base, "skopeo/del", &c.arm.digest, &c.arm);
    // Deleting again is an error, not a silent success.
    let (ok, out, _) = sk.docker(&["delete"], &amd);
    assert!(!ok, "second delete of {amd} succeeded: {out}");
    assert!(sk.tags(&image("")).is_empty(), "tags left");
}
