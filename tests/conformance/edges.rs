//! Edges a client that follows the spec to the letter runs into: references outside the grammar,
//! automatic mounts, tags given on a push by digest, and manifests pushed under a sha512 digest.

use crate::common::oci;
use crate::{error_code, header, Env};

/// All values of a response header, in order.
fn headers(r: &reqwest::blocking::Response, name: &str) -> Vec<String> {
    r.headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_owned))
        .collect()
}

#[test]
fn references_outside_the_grammar_are_unknown_manifests() {
    let e = Env::start();
    let image = oci::image("amd64", b"a real image next door");
    oci::push(&e.c, &e.reg.url(), "edge/app", "v1", &image);
    let long = "t".repeat(200);
    for r in [".INVALID", "-dash", "sha256:zz", "md5:abc", "a:b", &long] {
        let path = format!("/v2/edge/app/manifests/{r}");
        let got = e.get(&path);
        assert_eq!(got.status().as_u16(), 404, "GET {path}");
        assert_eq!(error_code(got), "MANIFEST_UNKNOWN", "GET {path}");
        assert_eq!(e.head(&path).status().as_u16(), 404, "HEAD {path}");
        let got = e.delete(&path);
        assert_eq!(got.status().as_u16(), 404, "DELETE {path}");
        assert_eq!(error_code(got), "MANIFEST_UNKNOWN", "DELETE {path}");
        // Pushing under such a reference stays a client error.
        let got = oci::put_manifest(&e.c, &e.reg.url(), "edge/app", r, &image);
        assert_eq!(got.status().as_u16(), 400, "PUT {path}");
        let code = error_code(got);
        assert!(
            code == "MANIFEST_INVALID" || code == "DIGEST_INVALID",
            "PUT {path}: {code}"
        );
    }
    // Nothing stored was touched.
    assert_eq!(e.get("/v2/edge/app/manifests/v1").status().as_u16(), 200);
    let tags: serde_json::Value = e.get("/v2/edge/app/tags/list").json().unwrap();
    assert_eq!(tags["tags"], serde_json::json!(["v1"]));
}

#[test]
fn automatic_mount_links_a_blob_stored_in_another_repository() {
    let e = Env::start();
    let blob = oci::Blob::new(oci::OCI_LAYER, oci::pseudo_random(20_000, 13));
    oci::push_blob(&e.c, &e.reg.url(), "auto/src", &blob);
    let mount = |repo: &str, digest: &str| {
        e.c.post(e.u(&format!("/v2/{repo}/blobs/uploads/?mount={digest}")))
            .send()
            .unwrap()
    };
    let r = mount("auto/dst", &blob.digest);
    assert_eq!(r.status().as_u16(), 201);
    assert_eq!(header(&r, "docker-content-digest"), blob.digest);
    assert!(header(&r, "location").ends_with(&format!("/v2/auto/dst/blobs/{}", blob.digest)));
    let got = e.get(&format!("/v2/auto/dst/blobs/{}", blob.digest));
    assert_eq!(got.bytes().unwrap().as_ref(), blob.bytes.as_slice());

    // Unknown anywhere: an upload session, as without `mount`.
    let r = mount("auto/dst", &oci::sha256(b"nowhere"));
    assert_eq!(r.status().as_u16(), 202);
    assert!(header(&r, "location").contains("/v2/auto/dst/blobs/uploads/"));
    // A malformed digest is the client's error.
    let r = mount("auto/dst", "sha256:nope");
    assert_eq!(r.status().as_u16(), 400);
    assert_eq!(error_code(r), "DIGEST_INVALID");
}

#[test]
fn tags_given_on_a_push_by_digest_are_applied_and_echoed() {
    let e = Env::start();
    let image = oci::image("amd64", b"tagged on push by digest");
    for b in &image.blobs {
        oci::push_blob(&e.c, &e.reg.url(), "tagq/app", b);
    }
    let r = oci::put_manifest(
        &e.c,
        &e.reg.url(),
        "tagq/app",
        &format!("{}?tag=a&tag=b&tag=a", image.digest),
        &image,
    );
    assert_eq!(r.status().as_u16(), 201);
    assert_eq!(headers(&r, "oci-tag"), ["a", "b"]);
    assert_eq!(header(&r, "docker-content-digest"), image.digest);
    for t in ["a", "b"] {
        let got = e.get(&format!("/v2/tagq/app/manifests/{t}"));
        assert_eq!(header(&got, "docker-content-digest"), image.digest);
    }
    // A bad tag refuses the whole push.
    let r = oci::put_manifest(
        &e.c,
        &e.reg.url(),
        "tagq/app",
        &format!("{}?tag=ok&tag=-bad", image.digest),
        &image,
    );
    assert_eq!(r.status().as_u16(), 400);
    assert_eq!(e.get("/v2/tagq/app/manifests/ok").status().as_u16(), 404);
    // A push by tag names its tag too.
    let r = oci::put_manifest(&e.c, &e.reg.url(), "tagq/app", "c", &image);
    assert_eq!(headers(&r, "oci-tag"), ["c"]);
}

#[test]
fn a_manifest_pushed_by_sha512_keeps_that_digest() {
    let e = Env::start();
    let image = oci::image("amd64", b"addressed by sha512");
    for b in &image.blobs {
        oci::push_blob(&e.c, &e.reg.url(), "d512/app", b);
    }
    let d512 = oci::sha512(&image.bytes);
    let r = oci::put_manifest(
        &e.c,
        &e.reg.url(),
        "d512/app",
        &format!("{d512}?tag=v1"),
        &image,
    );
    assert_eq!(r.status().as_u16(), 201);
    assert_eq!(header(&r, "docker-content-digest"), d512);
    assert!(header(&r, "location").ends_with(&format!("/manifests/{d512}")));
    assert_eq!(headers(&r, "oci-tag"), ["v1"]);
    for reference in ["v1", d512.as_str()] {
        let got = e.get(&format!("/v2/d512/app/manifests/{reference}"));
        assert_eq!(got.status().as_u16(), 200, "{reference}");
        assert_eq!(header(&got, "docker-content-digest"), d512, "{reference}");
        assert_eq!(got.bytes().unwrap().as_ref(), image.bytes.as_slice());
        let head = e.head(&format!("/v2/d512/app/manifests/{reference}"));
        assert_eq!(
            header(&head, "docker-content-digest"),
            d512,
            "HEAD {reference}"
        );
    }
    // The same bytes under the wrong sha512 are refused.
    let wrong = oci::sha512(b"other bytes");
    let r = oci::put_manifest(&e.c, &e.reg.url(), "d512/app", &wrong, &image);
    assert_eq!(r.status().as_u16(), 400);
    assert_eq!(error_code(r), "DIGEST_INVALID");
}
