//! end-1, end-2, end-3, end-10: base, pulls by tag and digest, HEAD, ranges.

use crate::common::oci;
use crate::{header, Env};

#[test]
fn base_endpoint_answers_with_api_version() {
    let e = Env::start();
    let r = e.get("/v2/");
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        header(&r, "docker-distribution-api-version"),
        "registry/2.0"
    );
    assert_eq!(e.head("/v2/").status().as_u16(), 200);
    assert_eq!(e.get("/v2").status().as_u16(), 200);
}

#[test]
fn manifests_pull_by_tag_and_digest_with_exact_headers() {
    let e = Env::start();
    let img = oci::image("amd64", b"pull");
    oci::push(&e.c, &e.reg.url(), "p/app", "v1", &img);
    for reference in ["v1", img.digest.as_str()] {
        let path = format!("/v2/p/app/manifests/{reference}");
        let r = e.get(&path);
        assert_eq!(r.status().as_u16(), 200);
        assert_eq!(header(&r, "content-type"), oci::OCI_MANIFEST);
        assert_eq!(header(&r, "docker-content-digest"), img.digest);
        assert_eq!(header(&r, "content-length"), img.bytes.len().to_string());
        assert_eq!(r.bytes().unwrap().as_ref(), img.bytes.as_slice());
        let h = e.head(&path);
        assert_eq!(h.status().as_u16(), 200);
        assert_eq!(header(&h, "docker-content-digest"), img.digest);
        assert_eq!(header(&h, "content-length"), img.bytes.len().to_string());
        assert_eq!(header(&h, "content-type"), oci::OCI_MANIFEST);
    }
}

#[test]
fn blobs_pull_with_head_and_ranges() {
    let e = Env::start();
    let blob = oci::Blob::new(oci::OCI_LAYER, oci::pseudo_random(3 * 1024 * 1024 + 17, 7));
    oci::push_blob(&e.c, &e.reg.url(), "p/blob", &blob);
    let path = format!("/v2/p/blob/blobs/{}", blob.digest);
    let r = e.get(&path);
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(header(&r, "docker-content-digest"), blob.digest);
    assert_eq!(header(&r, "accept-ranges"), "bytes");
    assert_eq!(oci::sha256(&r.bytes().unwrap()), blob.digest);
    let h = e.head(&path);
    assert_eq!(h.status().as_u16(), 200);
    assert_eq!(header(&h, "content-length"), blob.bytes.len().to_string());

    let ranged = |range: &str| e.c.get(e.u(&path)).header("Range", range).send().unwrap();
    let r = ranged("bytes=100-1099");
    assert_eq!(r.status().as_u16(), 206);
    let total = blob.bytes.len();
    assert_eq!(
        header(&r, "content-range"),
        format!("bytes 100-1099/{total}")
    );
    assert_eq!(r.bytes().unwrap().as_ref(), &blob.bytes[100..1100]);
    let r = ranged("bytes=-10");
    assert_eq!(r.status().as_u16(), 206);
    assert_eq!(r.bytes().unwrap().as_ref(), &blob.bytes[total - 10..]);
    let r = ranged(&format!("bytes={}-", total - 5));
    assert_eq!(r.bytes().unwrap().as_ref(), &blob.bytes[total - 5..]);
    let r = ranged(&format!("bytes={}-", total + 10));
    assert_eq!(r.status().as_u16(), 416);
    assert_eq!(header(&r, "content-range"), format!("bytes */{total}"));
}

#[test]
fn unknown_content_is_404_with_spec_codes() {
    let e = Env::start();
    let missing = oci::sha256(b"missing");
    let r = e.get(&format!("/v2/nothing/blobs/{missing}"));
    assert_eq!(r.status().as_u16(), 404);
    assert_eq!(crate::error_code(r), "BLOB_UNKNOWN");
    let r = e.get("/v2/nothing/manifests/latest");
    assert_eq!(r.status().as_u16(), 404);
    assert_eq!(crate::error_code(r), "MANIFEST_UNKNOWN");
    assert_eq!(
        e.head("/v2/nothing/manifests/latest").status().as_u16(),
        404
    );
    let img = oci::image("amd64", b"x");
    oci::push(&e.c, &e.reg.url(), "exists", "v1", &img);
    let r = e.get(&format!("/v2/other/blobs/{}", img.blobs[1].digest));
    assert_eq!(
        r.status().as_u16(),
        404,
        "blobs are visible only where linked"
    );
}
