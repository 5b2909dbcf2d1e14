//! Hostile and malformed requests: spec-shaped errors, never a path outside the store.

use crate::{error_code, header, Env};

#[test]
fn hostile_paths_are_rejected_with_json_errors() {
    let e = Env::start();
    let long = "a".repeat(300);
    let cases = [
        "/v2/../../etc/passwd/manifests/latest",
        "/v2/%2e%2e/%2e%2e/etc/manifests/latest",
        "/v2/a/%2e%2e/b/manifests/latest",
        "/v2/UPPER/manifests/latest",
        "/v2/a//b/manifests/latest",
        "/v2/a/manifests/..",
        "/v2/a/manifests/%2e%2e",
        "/v2/a/blobs/sha256:..%2f..%2fetc%2fpasswd",
        "/v2/a/blobs/sha256:abc",
        "/v2/a/blobs/md5:d41d8cd98f00b204e9800998ecf8427e",
        "/v2/a/blobs/uploads/..%2f..%2fdb",
        "/v2/a/blobs/uploads/%2e%2e",
    ];
    for path in cases {
        let r = e.get(path);
        let status = r.status().as_u16();
        assert!((400..500).contains(&status), "{path}: {status}");
        assert!(
            header(&r, "content-type").starts_with("application/json"),
            "{path}"
        );
        let code = error_code(r);
        assert!(!code.is_empty(), "{path}: no error code");
    }
    let r = e.get(&format!("/v2/{long}/manifests/latest"));
    assert_eq!(r.status().as_u16(), 400);
    assert_eq!(error_code(r), "NAME_INVALID");
    let r = e.get("/v2/a/blobs/sha256:abc");
    assert_eq!(error_code(r), "DIGEST_INVALID");
    // A reference outside the grammar names no manifest (see `edges`).
    let r = e.get(&format!("/v2/a/manifests/{}", "t".repeat(200)));
    assert_eq!(r.status().as_u16(), 404);
}

#[test]
fn huge_headers_and_bad_methods_do_not_hurt() {
    let e = Env::start();
    let r =
        e.c.get(e.u("/v2/"))
            .header("X-Junk", "j".repeat(256 * 1024))
            .send();
    if let Ok(r) = r {
        assert!(
            r.status().is_client_error(),
            "huge header accepted: {}",
            r.status()
        );
    }
    let r = e.c.patch(e.u("/v2/a/manifests/latest")).send().unwrap();
    assert_eq!(r.status().as_u16(), 405);
    assert_eq!(error_code(r), "UNSUPPORTED");
    let r =
        e.c.post(e.u("/v2/a/blobs/uploads/?digest=sha256:zz"))
            .body("x")
            .send()
            .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert_eq!(error_code(r), "DIGEST_INVALID");
    let r =
        e.c.get(e.u("/v2/a/blobs/uploads/not-a-session"))
            .send()
            .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    // Still healthy after all that.
    assert_eq!(e.get("/acr/v1/_health").status().as_u16(), 200);
    assert_eq!(e.get("/v2/").status().as_u16(), 200);
}

#[test]
fn health_reports_version_and_free_disk() {
    let e = Env::start();
    let r = e.get("/acr/v1/_health");
    assert_eq!(r.status().as_u16(), 200);
    let v: serde_json::Value = r.json().unwrap();
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert!(v["freeDiskBytes"].as_u64().unwrap_or(0) > 0);
}
