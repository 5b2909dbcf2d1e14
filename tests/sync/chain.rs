//! A three-level chain root → child → grandchild (each a connected-registry, the grandchild's
//! parent being the child) delivers an image pushed at the root to a client of the grandchild.

use std::time::Duration;

use crate::common::clients::skopeo::Skopeo;
use crate::common::{self, oci, Registry};
use crate::{child, manifest_digest, policy_for, wait_for};

const REPO: &str = "chain/app";

#[test]
fn an_image_pushed_at_the_root_reaches_a_client_of_the_grandchild() {
    let root = Registry::start();
    let policy = policy_for(&[REPO], "");
    let middle = child(&root.host(), "unused", &policy, &[]);
    let leaf = child(&middle.host(), "unused", &policy, &[]);
    let amd = oci::image("amd64", b"from the top of the chain\n");
    let arm = oci::image("arm64", b"from the top of the chain, arm\n");
    let index = oci::index(&[(&amd, "linux", "amd64"), (&arm, "linux", "arm64")]);
    let http = common::http();
    oci::push(&http, &root.url(), REPO, &amd.digest, &amd);
    oci::push(&http, &root.url(), REPO, &arm.digest, &arm);
    oci::push(&http, &root.url(), REPO, "v1", &index);
    wait_for(
        &leaf,
        "the image at the grandchild",
        Duration::from_secs(60),
        || crate::synced_with(&leaf, REPO, "v1"),
    );
    let sk = Skopeo::new();
    let out = leaf.scratch().join("out");
    sk.run(&[
        "copy",
        "--all",
        "--preserve-digests",
        "--src-tls-verify=false",
        &format!("docker://{}/{REPO}:v1", leaf.host()),
        &format!("oci:{}:v1", out.display()),
    ]);
    let text = std::fs::read_to_string(out.join("index.json")).unwrap_or_default();
    assert!(
        text.contains(&index.digest),
        "grandchild served another index: {text}"
    );
    for m in [&amd, &arm] {
        for b in &m.blobs {
            let file = out
                .join("blobs/sha256")
                .join(b.digest.trim_start_matches("sha256:"));
            assert!(
                file.is_file(),
                "{} missing at the grandchild's client",
                b.digest
            );
        }
    }
    // The middle registry holds it too (it mirrored, not just relayed).
    assert_eq!(
        manifest_digest(&middle.url(), REPO, "v1"),
        (200, index.digest.clone())
    );
}
