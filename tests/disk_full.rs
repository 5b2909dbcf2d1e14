//! Disk full on a small tmpfs: the failing write gets an error, nothing partial shows, stored
//! content keeps being served, and the registry recovers by itself once space is freed.

mod common;

use common::oci;
use common::tmpfs::{fill, Tmpfs};

fn free_bytes(reg: &common::Registry) -> u64 {
    let v: serde_json::Value = common::http()
        .get(format!("{}/acr/v1/_health", reg.url()))
        .send()
        .and_then(|r| r.json())
        .unwrap_or_else(|e| panic!("health: {e}"));
    v["freeDiskBytes"].as_u64().unwrap_or(u64::MAX)
}

fn assert_served(c: &reqwest::blocking::Client, base: &str, repo: &str, img: &oci::Manifest) {
    let r = c
        .get(format!("{base}/v2/{repo}/manifests/v1"))
        .send()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(oci::sha256(&r.bytes().unwrap_or_default()), img.digest);
    for b in &img.blobs {
        let r = c
            .get(format!("{base}/v2/{repo}/blobs/{}", b.digest))
            .send()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.status().as_u16(), 200);
        assert_eq!(oci::sha256(&r.bytes().unwrap_or_default()), b.digest);
    }
}

#[test]
fn disk_full_fails_cleanly_and_recovers_without_restart() {
    let tmp = tempfile::TempDir::new().unwrap_or_else(|e| panic!("{e}"));
    let mnt = tmp.path().join("mnt");
    let fs = Tmpfs::mount(&mnt, "24m");
    let data = mnt.join("data");
    let mut reg = common::Registry::start_at(tmp, data, &[]);
    let c = common::http();
    let base = reg.url();

    let stored = oci::image_with_layers(vec![oci::pseudo_random(2 * 1024 * 1024, 1)]);
    oci::push(&c, &base, "full/app", "v1", &stored);

    // 1. A blob bigger than the disk: an error, never a 201, and nothing visible afterwards.
    let huge = oci::Blob::new(oci::OCI_LAYER, oci::pseudo_random(40 * 1024 * 1024, 2));
    let r = c
        .post(format!(
            "{base}/v2/full/app/blobs/uploads/?digest={}",
            huge.digest
        ))
        .body(huge.bytes.clone())
        .send();
    if let Ok(r) = r {
        assert_eq!(
            r.status().as_u16(),
            507,
            "a write that hit ENOSPC must say so"
        );
    }
    let head = c
        .head(format!("{base}/v2/full/app/blobs/{}", huge.digest))
        .send();
    assert_eq!(head.map(|r| r.status().as_u16()).unwrap_or(0), 404);
    assert_served(&c, &base, "full/app", &stored);
    assert!(
        free_bytes(&reg) > 10 * 1024 * 1024,
        "the failed upload's bytes were not released"
    );

    // 2. A chunked session when the disk fills mid-way keeps its accepted bytes.
    let chunk = oci::pseudo_random(1024 * 1024, 3);
    let whole = [chunk.clone(), chunk.clone()].concat();
    let r = c
        .post(format!("{base}/v2/full/app/blobs/uploads/"))
        .send()
        .unwrap_or_else(|e| panic!("{e}"));
    let loc = r.headers()["location"]
        .to_str()
        .unwrap_or_default()
        .to_owned();
    let r = c
        .patch(&loc)
        .header("Content-Range", "0-1048575")
        .body(chunk.clone())
        .send()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status().as_u16(), 202);
    let filler = fill(&mnt);
    let r = c
        .patch(&loc)
        .header("Content-Range", "1048576-2097151")
        .body(chunk.clone())
        .send();
    if let Ok(r) = r {
        assert_eq!(r.status().as_u16(), 507);
    }
    // A manifest while full: refused, and the metadata stays consistent.
    let other = oci::image_with_layers(vec![]);
    let r = oci::put_manifest(&c, &base, "full/app", "v2", &other);
    assert!(
        r.status().as_u16() >= 400,
        "manifest accepted on a full disk without its config"
    );
    assert_served(&c, &base, "full/app", &stored);
    let st = c.get(&loc).send().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        st.headers()["range"].to_str().unwrap_or_default(),
        "0-1048575"
    );

    // 3. Space comes back: the same process carries on.
    std::fs::remove_file(&filler).unwrap_or_else(|e| panic!("{e}"));
    let r = c
        .patch(&loc)
        .header("Content-Range", "1048576-2097151")
        .body(chunk)
        .send()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status().as_u16(), 202);
    let r = c
        .put(format!("{loc}?digest={}", oci::sha256(&whole)))
        .send()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status().as_u16(), 201);
    oci::push(&c, &base, "full/app", "v2", &other);
    assert_served(&c, &base, "full/app", &stored);

    // 4. And a restart finds a healthy database with everything in it.
    reg.restart();
    assert_served(&c, &reg.url(), "full/app", &stored);
    drop(reg);
    drop(fs);
}

#[test]
fn metadata_writes_on_a_full_disk_fail_and_recover() {
    let tmp = tempfile::TempDir::new().unwrap_or_else(|e| panic!("{e}"));
    let mnt = tmp.path().join("mnt");
    let fs = Tmpfs::mount(&mnt, "16m");
    let mut reg = common::Registry::start_at(tmp, mnt.join("data"), &[]);
    let c = common::http();
    let base = reg.url();
    let stored = oci::image_with_layers(vec![oci::pseudo_random(100_000, 4)]);
    oci::push(&c, &base, "meta/app", "v1", &stored);
    let next = oci::image_with_layers(vec![oci::pseudo_random(1000, 5)]);
    for b in &next.blobs {
        oci::push_blob(&c, &base, "meta/app", b);
    }
    let filler = fill(&mnt);
    // Many tags: the database must grow and cannot.
    let mut refused = 0;
    for i in 0..200 {
        let r = oci::put_manifest(&c, &base, "meta/app", &format!("t{i}"), &next);
        match r.status().as_u16() {
            201 => {}
            507 | 500 => refused += 1,
            s => panic!("unexpected {s}"),
        }
        if refused > 3 {
            break;
        }
    }
    assert!(refused > 0, "a full disk never refused a metadata write");
    assert_served(&c, &base, "meta/app", &stored);
    std::fs::remove_file(&filler).unwrap_or_else(|e| panic!("{e}"));
    let r = oci::put_manifest(&c, &base, "meta/app", "after", &next);
    assert_eq!(
        r.status().as_u16(),
        201,
        "did not recover once space was freed"
    );
    reg.restart();
    assert_served(&c, &reg.url(), "meta/app", &stored);
    let r = c
        .get(format!("{}/v2/meta/app/manifests/after", reg.url()))
        .send()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status().as_u16(), 200);
    drop(reg);
    drop(fs);
}
