//! A manifest addressed by sha512 keeps that digest across sync: pulled down from the root to a
//! child, and pushed up from a ReadWrite child to the root, the same bytes under the same digest.

use std::time::Duration;

use crate::common::oci::{self, Manifest};
use crate::common::{self, Registry};
use crate::{child, policy_rw, wait_for};

const REPO: &str = "d512/app";

/// Pushes `m`'s blobs, then `m` by its sha512 digest with `?tag=`; returns the digest.
fn push_sha512(base: &str, m: &Manifest, tag: &str) -> String {
    let c = common::http();
    for b in &m.blobs {
        oci::push_blob(&c, base, REPO, b);
    }
    let d = oci::sha512(&m.bytes);
    let r = oci::put_manifest(&c, base, REPO, &format!("{d}?tag={tag}"), m);
    assert_eq!(r.status().as_u16(), 201);
    d
}

/// `Docker-Content-Digest` of `REPO:reference` at `base` once its body hashes to it by sha512.
fn served_as(base: &str, reference: &str) -> Option<String> {
    let url = format!("{base}/v2/{REPO}/manifests/{reference}");
    let r = common::http()
        .get(&url)
        .header("Accept", oci::OCI_MANIFEST)
        .send()
        .ok()
        .filter(|r| r.status().is_success())?;
    let header = r
        .headers()
        .get("docker-content-digest")?
        .to_str()
        .ok()?
        .to_owned();
    let body = r.bytes().ok()?;
    assert_eq!(oci::sha512(&body), header, "{url}: body and digest differ");
    Some(header)
}

/// Waits (asking `child` to sync) until `base` serves `tag` as `digest`, then checks it is also
/// served by that digest.
fn arrives(child: &Registry, base: &str, tag: &str, digest: &str) {
    let what = format!("{tag} as {digest} at {base}");
    wait_for(child, &what, Duration::from_secs(60), || {
        served_as(base, tag).as_deref() == Some(digest)
    });
    assert_eq!(served_as(base, digest).as_deref(), Some(digest));
}

#[test]
fn sha512_manifests_keep_their_digest_down_and_up() {
    let root = Registry::start();
    let leaf = child(&root.host(), "unused", &policy_rw(&[REPO], ""), &[]);
    let down = oci::image("amd64", b"sha512 from the root");
    let d_down = push_sha512(&root.url(), &down, "down");
    arrives(&leaf, &leaf.url(), "down", &d_down);

    let up = oci::image("amd64", b"sha512 from the child");
    let d_up = push_sha512(&leaf.url(), &up, "up");
    arrives(&leaf, &root.url(), "up", &d_up);
    // No sha256 alias was made at the root on the way.
    let alias = format!("/v2/{REPO}/manifests/{}", up.digest);
    let r = common::http().get(format!("{}{alias}", root.url())).send();
    assert_eq!(r.map(|r| r.status().as_u16()).unwrap_or(0), 404, "{alias}");
}
