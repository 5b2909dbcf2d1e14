//! end-4 … end-6, end-11: every upload flavour, status, cancel, mount, digests.

use reqwest::blocking::Response;

use crate::common::oci;
use crate::{error_code, header, Env};

/// Opens a session and returns its absolute Location.
fn open(e: &Env, repo: &str) -> String {
    let r =
        e.c.post(e.u(&format!("/v2/{repo}/blobs/uploads/")))
            .send()
            .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    assert_eq!(header(&r, "range"), "0-0");
    assert!(!header(&r, "docker-upload-uuid").is_empty());
    absolute(e, &header(&r, "location"))
}

fn absolute(e: &Env, loc: &str) -> String {
    if loc.starts_with("http") {
        loc.to_owned()
    } else {
        e.u(loc)
    }
}

fn with_digest(loc: &str, digest: &str) -> String {
    let sep = if loc.contains('?') { '&' } else { '?' };
    format!("{loc}{sep}digest={digest}")
}

fn patch(e: &Env, loc: &str, body: &[u8], range: Option<(usize, usize)>) -> Response {
    let mut rq =
        e.c.patch(loc)
            .header("Content-Type", "application/octet-stream")
            .body(body.to_vec());
    if let Some((a, b)) = range {
        rq = rq.header("Content-Range", format!("{a}-{b}"));
    }
    rq.send().unwrap()
}

fn assert_blob(e: &Env, repo: &str, bytes: &[u8]) {
    let d = oci::sha256(bytes);
    let r = e.get(&format!("/v2/{repo}/blobs/{d}"));
    assert_eq!(r.status().as_u16(), 200, "blob {d} in {repo}");
    assert_eq!(r.bytes().unwrap().as_ref(), bytes);
}

#[test]
fn monolithic_uploads_post_and_post_put() {
    let e = Env::start();
    let a = oci::Blob::new(oci::OCI_LAYER, oci::pseudo_random(100_000, 1));
    oci::push_blob(&e.c, &e.reg.url(), "up/mono", &a);
    assert_blob(&e, "up/mono", &a.bytes);

    let b = oci::pseudo_random(50_000, 2);
    let loc = open(&e, "up/mono");
    let r =
        e.c.put(with_digest(&loc, &oci::sha256(&b)))
            .body(b.clone())
            .send()
            .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    assert_eq!(header(&r, "docker-content-digest"), oci::sha256(&b));
    let loc = absolute(&e, &header(&r, "location"));
    assert_eq!(
        e.c.get(loc).send().unwrap().bytes().unwrap().as_ref(),
        b.as_slice()
    );
}

#[test]
fn streamed_and_chunked_uploads_with_status() {
    let e = Env::start();
    let data = oci::pseudo_random(5 * 1024 * 1024 + 3, 3);
    // Streamed: one PATCH without Content-Range.
    let loc = open(&e, "up/stream");
    let r = patch(&e, &loc, &data, None);
    assert_eq!(r.status().as_u16(), 202);
    assert_eq!(header(&r, "range"), format!("0-{}", data.len() - 1));
    let loc = absolute(&e, &header(&r, "location"));
    let r =
        e.c.put(with_digest(&loc, &oci::sha256(&data)))
            .send()
            .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    assert_blob(&e, "up/stream", &data);

    // Chunked: in order, with a status check between chunks and a last chunk on PUT.
    let mut loc = open(&e, "up/chunks");
    let chunk = 1024 * 1024;
    let mut off = 0;
    while off + chunk < data.len() {
        let r = patch(
            &e,
            &loc,
            &data[off..off + chunk],
            Some((off, off + chunk - 1)),
        );
        assert_eq!(r.status().as_u16(), 202, "chunk at {off}");
        off += chunk;
        assert_eq!(header(&r, "range"), format!("0-{}", off - 1));
        loc = absolute(&e, &header(&r, "location"));
        let st = e.c.get(&loc).send().unwrap();
        assert_eq!(st.status().as_u16(), 204);
        assert_eq!(header(&st, "range"), format!("0-{}", off - 1));
        assert!(!header(&st, "location").is_empty());
    }
    let r =
        e.c.put(with_digest(&loc, &oci::sha256(&data)))
            .header("Content-Range", format!("{off}-{}", data.len() - 1))
            .body(data[off..].to_vec())
            .send()
            .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    assert_blob(&e, "up/chunks", &data);
}

#[test]
fn out_of_order_and_repeated_chunks_are_416() {
    let e = Env::start();
    let data = oci::pseudo_random(30_000, 4);
    let loc = open(&e, "up/order");
    let r = patch(&e, &loc, &data[10_000..20_000], Some((10_000, 19_999)));
    assert_eq!(r.status().as_u16(), 416, "out of order");
    let r = patch(&e, &loc, &data[..10_000], Some((0, 9_999)));
    assert_eq!(r.status().as_u16(), 202);
    let r = patch(&e, &loc, &data[..10_000], Some((0, 9_999)));
    assert_eq!(r.status().as_u16(), 416, "repeated");
    let st = e.c.get(&loc).send().unwrap();
    assert_eq!(
        header(&st, "range"),
        "0-9999",
        "a refused chunk leaves the session intact"
    );
    let r = patch(&e, &loc, &data[10_000..], Some((10_000, 29_999)));
    assert_eq!(r.status().as_u16(), 202);
    let r =
        e.c.put(with_digest(&loc, &oci::sha256(&data)))
            .send()
            .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    assert_blob(&e, "up/order", &data);
}

#[test]
fn cancel_and_digest_mismatch_leave_nothing_visible() {
    let e = Env::start();
    let loc = open(&e, "up/cancel");
    patch(&e, &loc, b"some bytes", None);
    assert_eq!(e.c.delete(&loc).send().unwrap().status().as_u16(), 204);
    let r = e.c.get(&loc).send().unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert_eq!(error_code(r), "BLOB_UPLOAD_UNKNOWN");

    let wrong = oci::sha256(b"something else");
    let r =
        e.c.post(e.u(&format!("/v2/up/cancel/blobs/uploads/?digest={wrong}")))
            .body(b"actual bytes".to_vec())
            .send()
            .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert_eq!(error_code(r), "DIGEST_INVALID");
    assert_eq!(
        e.head(&format!("/v2/up/cancel/blobs/{wrong}"))
            .status()
            .as_u16(),
        404
    );
    let actual = oci::sha256(b"actual bytes");
    assert_eq!(
        e.head(&format!("/v2/up/cancel/blobs/{actual}"))
            .status()
            .as_u16(),
        404
    );

    let loc = open(&e, "up/cancel");
    patch(&e, &loc, b"actual bytes", None);
    let r = e.c.put(with_digest(&loc, &wrong)).send().unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert_eq!(
        e.head(&format!("/v2/up/cancel/blobs/{actual}"))
            .status()
            .as_u16(),
        404
    );
}

#[test]
fn cross_repository_mount() {
    let e = Env::start();
    let blob = oci::Blob::new(oci::OCI_LAYER, oci::pseudo_random(10_000, 5));
    oci::push_blob(&e.c, &e.reg.url(), "src/repo", &blob);
    let r =
        e.c.post(e.u(&format!(
            "/v2/dst/repo/blobs/uploads/?mount={}&from=src/repo",
            blob.digest
        )))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    assert_eq!(header(&r, "docker-content-digest"), blob.digest);
    assert_blob(&e, "dst/repo", &blob.bytes);
    let missing = oci::sha256(b"not here");
    let r =
        e.c.post(e.u(&format!(
            "/v2/dst/repo/blobs/uploads/?mount={missing}&from=src/repo"
        )))
        .send()
        .unwrap();
    assert_eq!(
        r.status().as_u16(),
        202,
        "unknown blob: fall back to an upload session"
    );
    assert!(header(&r, "location").contains("/v2/dst/repo/blobs/uploads/"));
}

#[test]
fn zero_byte_and_sha512_blobs() {
    let e = Env::start();
    let empty = oci::Blob::new(oci::OCI_LAYER, Vec::new());
    oci::push_blob(&e.c, &e.reg.url(), "up/zero", &empty);
    let r = e.get(&format!("/v2/up/zero/blobs/{}", empty.digest));
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(header(&r, "content-length"), "0");

    use sha2::Digest as _;
    let data = oci::pseudo_random(70_000, 6);
    let d512 = format!("sha512:{}", hex::encode(sha2::Sha512::digest(&data)));
    let r =
        e.c.post(e.u(&format!("/v2/up/512/blobs/uploads/?digest={d512}")))
            .body(data.clone())
            .send()
            .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let r = e.get(&format!("/v2/up/512/blobs/{d512}"));
    assert_eq!(header(&r, "docker-content-digest"), d512);
    assert_eq!(r.bytes().unwrap().as_ref(), data.as_slice());
    let loc = open(&e, "up/512");
    patch(&e, &loc, &data, None);
    let r = e.c.put(with_digest(&loc, &d512)).send().unwrap();
    assert_eq!(r.status().as_u16(), 201, "sha512 through a session");
}

#[test]
fn locations_honour_forwarded_headers() {
    let e = Env::start();
    let r =
        e.c.post(e.u("/v2/fw/app/blobs/uploads/"))
            .header("X-Forwarded-Host", "gateway.example:8443")
            .header("X-Forwarded-Proto", "https")
            .send()
            .unwrap();
    let loc = header(&r, "location");
    assert!(
        loc.starts_with("https://gateway.example:8443/v2/fw/app/blobs/uploads/"),
        "{loc}"
    );
}

#[test]
fn concurrent_pushes_of_one_blob_store_it_once() {
    let e = Env::start();
    let blob = oci::Blob::new(oci::OCI_LAYER, oci::pseudo_random(2 * 1024 * 1024, 8));
    let base = e.reg.url();
    std::thread::scope(|s| {
        for i in 0..8 {
            let (blob, base) = (blob.clone(), base.clone());
            s.spawn(move || {
                let c = crate::common::http();
                oci::push_blob(&c, &base, &format!("many/r{i}"), &blob);
            });
        }
    });
    for i in 0..8 {
        assert_blob(&e, &format!("many/r{i}"), &blob.bytes);
    }
    let hex = blob.digest.trim_start_matches("sha256:");
    let stored: Vec<_> = walk(&e.reg.data)
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy() == hex))
        .collect();
    assert_eq!(stored.len(), 1, "one copy on disk: {stored:?}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}
