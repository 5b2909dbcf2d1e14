//! containerd as a real client: a private `containerd` (own root, state, socket and config)
//! pulls, with `ctr --plain-http`, a single image and a multi-arch index pushed by the
//! harness, by tag and by digest, and must end up with exactly the pushed digests and blobs;
//! then `ctr images push` copies the index into another repository, byte for byte.

mod common;

use std::time::Instant;

use common::clients::containerd::{Containerd, SNAPSHOTTER};
use common::clients::require_root;
use common::oci::{self, Manifest};
use common::Registry;

/// The whitespace-separated columns of the row of a `ctr` table whose first column is `first`.
fn row(table: &str, first: &str) -> Vec<String> {
    table
        .lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .find(|cols| cols.first().map(String::as_str) == Some(first))
        .unwrap_or_else(|| panic!("no row for {first} in:\n{table}"))
}

/// Pulls `reference` and checks that `ctr images ls` / `check` agree with what was pushed.
fn pull_and_check(ct: &Containerd, reg: &Registry, reference: &str, root: &Manifest, all: bool) {
    let mut pull = vec![
        "images",
        "pull",
        "--plain-http",
        "--snapshotter",
        SNAPSHOTTER,
    ];
    if all {
        pull.push("--all-platforms");
    }
    pull.push(reference);
    ct.ok(reg, &pull);

    let ls = ct.ok(reg, &["images", "ls"]);
    let cols = row(&ls, reference);
    assert_eq!(
        cols.get(1),
        Some(&root.media_type),
        "type of {reference}:\n{ls}"
    );
    assert_eq!(
        cols.get(2),
        Some(&root.digest),
        "digest of {reference}:\n{ls}"
    );

    let check = ct.ok(reg, &["images", "check", "--snapshotter", SNAPSHOTTER]);
    let cols = row(&check, reference);
    assert_eq!(
        cols.get(2),
        Some(&root.digest),
        "digest of {reference}:\n{check}"
    );
    assert_eq!(
        cols.get(3).map(String::as_str),
        Some("complete"),
        "{reference}:\n{check}"
    );
    let unpacked = cols.last().map(String::as_str);
    assert_eq!(unpacked, Some("true"), "{reference} not unpacked:\n{check}");
}

/// Asserts containerd's content store holds every manifest and blob of `manifests`.
fn assert_content(ct: &Containerd, reg: &Registry, manifests: &[&Manifest]) {
    let content = ct.ok(reg, &["content", "ls", "--quiet"]);
    let have: Vec<&str> = content.lines().map(str::trim).collect();
    for m in manifests {
        for d in std::iter::once(&m.digest).chain(m.blobs.iter().map(|b| &b.digest)) {
            assert!(
                have.contains(&d.as_str()),
                "{d} missing from content store:\n{content}"
            );
        }
    }
}

#[test]
fn ctr_pulls_single_images_and_multi_arch_indexes() {
    require_root();
    let started = Instant::now();
    let reg = Registry::start();
    let c = common::http();
    let base = reg.url();

    let single = oci::image("amd64", b"single image for containerd");
    oci::push(&c, &base, "ctr/single", "v1", &single);
    let amd64 = oci::image("amd64", b"multi-arch: amd64");
    let arm64 = oci::image("arm64", b"multi-arch: arm64");
    let index = oci::index(&[(&amd64, "linux", "amd64"), (&arm64, "linux", "arm64")]);
    for m in [&amd64, &arm64] {
        oci::push(&c, &base, "ctr/multi", &m.digest, m);
    }
    oci::push(&c, &base, "ctr/multi", "v1", &index);

    let ct = Containerd::start();
    let host = reg.host();

    let by_tag = format!("{host}/ctr/single:v1");
    pull_and_check(&ct, &reg, &by_tag, &single, false);
    assert_content(&ct, &reg, &[&single]);

    let by_digest = format!("{host}/ctr/single@{}", single.digest);
    pull_and_check(&ct, &reg, &by_digest, &single, false);

    let multi = format!("{host}/ctr/multi:v1");
    pull_and_check(&ct, &reg, &multi, &index, true);
    assert_content(&ct, &reg, &[&index, &amd64, &arm64]);
    let ls = ct.ok(&reg, &["images", "ls"]);
    let platforms = "linux/amd64,linux/arm64";
    assert!(
        row(&ls, &multi).iter().any(|c| c == platforms),
        "platforms of {multi}:\n{ls}"
    );

    let multi_digest = format!("{host}/ctr/multi@{}", index.digest);
    pull_and_check(&ct, &reg, &multi_digest, &index, true);

    // containerd pushes too: the index it holds goes to a new repository, unchanged.
    let pushed = format!("{host}/ctr/pushed:v2");
    ct.ok(&reg, &["images", "push", "--plain-http", &pushed, &multi]);
    let r = c
        .get(format!("{base}/v2/ctr/pushed/manifests/v2"))
        .header("Accept", oci::OCI_INDEX)
        .send()
        .unwrap_or_else(|e| panic!("GET pushed index: {e}"));
    assert_eq!(r.status().as_u16(), 200, "GET pushed index");
    let body = r
        .bytes()
        .unwrap_or_else(|e| panic!("GET pushed index: {e}"));
    assert_eq!(
        body.as_ref(),
        index.bytes.as_slice(),
        "pushed index differs"
    );
    for m in [&amd64, &arm64] {
        let paths = std::iter::once(format!("manifests/{}", m.digest))
            .chain(m.blobs.iter().map(|b| format!("blobs/{}", b.digest)));
        for path in paths {
            let r = c
                .head(format!("{base}/v2/ctr/pushed/{path}"))
                .send()
                .unwrap_or_else(|e| panic!("HEAD {path}: {e}"));
            assert_eq!(r.status().as_u16(), 200, "{path} not in ctr/pushed");
        }
    }

    drop(ct);
    eprintln!("containerd round trip took {:?}", started.elapsed());
}
