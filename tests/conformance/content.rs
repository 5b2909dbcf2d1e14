//! end-7 … end-9: manifest kinds, validation, tags on PUT, deletes.

use serde_json::json;

use crate::common::oci;
use crate::{error_code, header, Env};

const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

fn put_raw(
    e: &Env,
    repo: &str,
    reference: &str,
    ct: &str,
    body: &[u8],
) -> reqwest::blocking::Response {
    e.c.put(e.u(&format!("/v2/{repo}/manifests/{reference}")))
        .header("Content-Type", ct)
        .body(body.to_vec())
        .send()
        .unwrap()
}

#[test]
fn docker_schema2_manifest_and_list_round_trip_byte_exact() {
    let e = Env::start();
    let config = oci::Blob::new(
        DOCKER_CONFIG,
        br#"{"architecture":"amd64","os":"linux"}"#.to_vec(),
    );
    let layer = oci::Blob::new(DOCKER_LAYER, oci::pseudo_random(4096, 9));
    for b in [&config, &layer] {
        oci::push_blob(&e.c, &e.reg.url(), "d/app", b);
    }
    // Pretty-printed on purpose: the bytes must come back exactly as pushed.
    let body = serde_json::to_vec_pretty(&json!({
        "schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
        "config": config.descriptor(), "layers": [layer.descriptor()],
    }))
    .unwrap();
    let r = put_raw(&e, "d/app", "v1", DOCKER_MANIFEST, &body);
    assert_eq!(r.status().as_u16(), 201);
    let digest = oci::sha256(&body);
    assert_eq!(header(&r, "docker-content-digest"), digest);
    let got = e.get("/v2/d/app/manifests/v1");
    assert_eq!(header(&got, "content-type"), DOCKER_MANIFEST);
    assert_eq!(got.bytes().unwrap().as_ref(), body.as_slice());

    let list = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": DOCKER_LIST,
        "manifests": [{"mediaType": DOCKER_MANIFEST, "digest": digest, "size": body.len(),
                       "platform": {"architecture": "amd64", "os": "linux"}}],
    }))
    .unwrap();
    assert_eq!(
        put_raw(&e, "d/app", "multi", DOCKER_LIST, &list)
            .status()
            .as_u16(),
        201
    );
    let got = e.get("/v2/d/app/manifests/multi");
    assert_eq!(header(&got, "content-type"), DOCKER_LIST);
    assert_eq!(got.bytes().unwrap().as_ref(), list.as_slice());
}

#[test]
fn oci_index_may_be_sparse_and_put_by_digest_takes_tags() {
    let e = Env::start();
    let amd = oci::image("amd64", b"a");
    let arm = oci::image("arm64", b"b");
    oci::push(&e.c, &e.reg.url(), "i/app", &amd.digest, &amd);
    let idx = oci::index(&[(&amd, "linux", "amd64"), (&arm, "linux", "arm64")]);
    let r =
        e.c.put(e.u(&format!("/v2/i/app/manifests/{}?tag=a&tag=b", idx.digest)))
            .header("Content-Type", oci::OCI_INDEX)
            .body(idx.bytes.clone())
            .send()
            .unwrap();
    assert_eq!(
        r.status().as_u16(),
        201,
        "arm64 child missing: sparse index allowed"
    );
    for tag in ["a", "b"] {
        let r = e.get(&format!("/v2/i/app/manifests/{tag}"));
        assert_eq!(header(&r, "docker-content-digest"), idx.digest);
        assert_eq!(header(&r, "content-type"), oci::OCI_INDEX);
    }
    let r = put_raw(
        &e,
        "i/app",
        &oci::sha256(b"other"),
        oci::OCI_INDEX,
        &idx.bytes,
    );
    assert_eq!(
        r.status().as_u16(),
        400,
        "digest reference must match the body"
    );
    assert_eq!(error_code(r), "DIGEST_INVALID");
}

#[test]
fn invalid_manifests_get_spec_codes_and_store_nothing() {
    let e = Env::start();
    let img = oci::image("amd64", b"v");
    let r = put_raw(&e, "v/app", "v1", oci::OCI_MANIFEST, &img.bytes);
    assert_eq!(r.status().as_u16(), 400);
    assert_eq!(
        error_code(r),
        "MANIFEST_BLOB_UNKNOWN",
        "blobs not pushed yet"
    );
    assert_eq!(e.get("/v2/v/app/manifests/v1").status().as_u16(), 404);

    for b in &img.blobs {
        oci::push_blob(&e.c, &e.reg.url(), "v/app", b);
    }
    let r = put_raw(&e, "v/app", "v1", oci::OCI_MANIFEST, b"{not json");
    assert_eq!(error_code(r), "MANIFEST_INVALID");
    let r = put_raw(&e, "v/app", "v1", DOCKER_MANIFEST, &img.bytes);
    assert_eq!(error_code(r), "MANIFEST_INVALID", "media type mismatch");
    let r = put_raw(&e, "v/app", ".badtag", oci::OCI_MANIFEST, &img.bytes);
    assert_eq!(r.status().as_u16(), 400);

    let mut big = img.bytes.clone();
    big.pop();
    big.extend(
        format!(
            r#","annotations":{{"x":"{}"}}}}"#,
            "a".repeat(4 * 1024 * 1024)
        )
        .bytes(),
    );
    let r = put_raw(&e, "v/app", "big", oci::OCI_MANIFEST, &big);
    assert_eq!(r.status().as_u16(), 413);
    assert_eq!(e.get("/v2/v/app/manifests/big").status().as_u16(), 404);
    assert_eq!(
        put_raw(&e, "v/app", "v1", oci::OCI_MANIFEST, &img.bytes)
            .status()
            .as_u16(),
        201
    );
}

#[test]
fn deletes_of_tags_manifests_and_blobs() {
    let e = Env::start();
    let img = oci::image("amd64", b"del");
    oci::push(&e.c, &e.reg.url(), "x/app", "v1", &img);
    oci::push(&e.c, &e.reg.url(), "x/app", "v2", &img);

    assert_eq!(e.delete("/v2/x/app/manifests/v1").status().as_u16(), 202);
    assert_eq!(e.get("/v2/x/app/manifests/v1").status().as_u16(), 404);
    assert_eq!(
        e.get("/v2/x/app/manifests/v2").status().as_u16(),
        200,
        "other tag intact"
    );
    let r = e.delete("/v2/x/app/manifests/v1");
    assert_eq!(r.status().as_u16(), 404);

    let path = format!("/v2/x/app/manifests/{}", img.digest);
    assert_eq!(e.delete(&path).status().as_u16(), 202);
    assert_eq!(e.get(&path).status().as_u16(), 404);
    assert_eq!(
        e.get("/v2/x/app/manifests/v2").status().as_u16(),
        404,
        "its tags go too"
    );
    let tags: serde_json::Value = e.get("/v2/x/app/tags/list").json().unwrap();
    assert_eq!(tags["tags"], json!([]));

    let blob = format!("/v2/x/app/blobs/{}", img.blobs[1].digest);
    assert_eq!(e.delete(&blob).status().as_u16(), 202);
    assert_eq!(e.head(&blob).status().as_u16(), 404);
    let r = e.delete(&blob);
    assert_eq!(r.status().as_u16(), 404);
    assert_eq!(error_code(r), "BLOB_UNKNOWN");
}
