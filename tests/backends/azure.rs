//! `serve --blob-store az://<container>` against a real Azurite: the container is created, real
//! clients push (skopeo, and a chunked upload by hand) and pull back exactly what they pushed,
//! ranged reads work, no blob lands in the data directory, and a restart serves the same blobs.

use std::path::Path;

use connected_registry::testing::Azurite;
use tempfile::TempDir;

use crate::common::clients::skopeo::Skopeo;
use crate::common::{http, oci, Registry};

const REPO: &str = "factory/line-1";
const CONTAINER: &str = "registry";

/// Bytes of all files under `dir`.
fn bytes_under(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => bytes_under(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Uploads `bytes` in three PATCH chunks and a closing PUT; panics unless each step succeeds.
fn chunked_upload(base: &str, repo: &str, bytes: &[u8]) -> String {
    let c = http();
    let digest = oci::sha256(bytes);
    let r = c
        .post(format!("{base}/v2/{repo}/blobs/uploads/"))
        .send()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status().as_u16(), 202, "start: {:?}", r.text());
    let mut location = r.headers()["location"]
        .to_str()
        .unwrap_or_default()
        .to_owned();
    let third = bytes.len() / 3;
    for (i, piece) in bytes.chunks(third + 1).enumerate() {
        let start = i * (third + 1);
        let end = start + piece.len() - 1;
        let url = if location.starts_with('/') {
            format!("{base}{location}")
        } else {
            location.clone()
        };
        let r = c
            .patch(url)
            .header("Content-Type", "application/octet-stream")
            .header("Content-Range", format!("{start}-{end}"))
            .body(piece.to_vec())
            .send()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.status().as_u16(), 202, "chunk {i}: {:?}", r.text());
        location = r.headers()["location"]
            .to_str()
            .unwrap_or_default()
            .to_owned();
    }
    let sep = if location.contains('?') { '&' } else { '?' };
    let url = if location.starts_with('/') {
        format!("{base}{location}{sep}digest={digest}")
    } else {
        format!("{location}{sep}digest={digest}")
    };
    let r = c.put(url).send().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status().as_u16(), 201, "finish: {:?}", r.text());
    digest
}

/// GETs a blob (with an optional `Range`); (status, bytes).
fn get_blob(base: &str, digest: &str, range: Option<&str>) -> (u16, Vec<u8>) {
    let mut req = http().get(format!("{base}/v2/{REPO}/blobs/{digest}"));
    if let Some(r) = range {
        req = req.header("Range", r);
    }
    let r = req.send().unwrap_or_else(|e| panic!("{e}"));
    let status = r.status().as_u16();
    (status, r.bytes().map(|b| b.to_vec()).unwrap_or_default())
}

#[test]
fn blobs_live_in_azure_storage_and_real_clients_push_and_pull_them() {
    let azure_dir = TempDir::new().unwrap_or_else(|e| panic!("{e}"));
    let azurite = Azurite::start(azure_dir.path());
    let tmp = TempDir::new().unwrap_or_else(|e| panic!("{e}"));
    let data = tmp.path().join("data");
    let args = [
        "--insecure-no-auth",
        "--blob-store",
        &format!("az://{CONTAINER}"),
    ];
    let env = vec![
        ("AZURE_STORAGE_USE_EMULATOR".to_owned(), "true".to_owned()),
        ("AZURITE_BLOB_STORAGE_URL".to_owned(), azurite.url()),
    ];
    let mut reg = Registry::start_in(tmp, args.iter().map(|s| s.to_string()).collect(), env);
    let base = reg.url();

    // skopeo pushes an image whose layer spans several object upload parts.
    let layer = oci::pseudo_random(12 * 1024 * 1024 + 4321, 7);
    let image = oci::image_with_layers(vec![layer.clone()]);
    let layout = TempDir::new().unwrap_or_else(|e| panic!("{e}"));
    oci::write_layout(layout.path(), &[("v1", &image)], &[]);
    let skopeo = Skopeo::new();
    let src = format!("oci:{}:v1", layout.path().display());
    skopeo.copy(&src, &format!("docker://{}/{REPO}:v1", reg.host()), false);
    // A blob arriving in chunks through an upload session.
    let chunked = oci::pseudo_random(3 * 1024 * 1024 + 17, 9);
    let chunked_digest = chunked_upload(&base, REPO, &chunked);

    // Everything comes back exactly, through skopeo and by hand, whole and in ranges.
    let out = TempDir::new().unwrap_or_else(|e| panic!("{e}"));
    let dst = format!("oci:{}:v1", out.path().display());
    skopeo.copy(&format!("docker://{}/{REPO}:v1", reg.host()), &dst, false);
    for b in &image.blobs {
        let hex = b.digest.trim_start_matches("sha256:");
        let pulled = std::fs::read(out.path().join("blobs/sha256").join(hex))
            .unwrap_or_else(|e| panic!("{}: {e}", b.digest));
        assert!(pulled == b.bytes, "{} came back different", b.digest);
    }
    assert!(get_blob(&base, &chunked_digest, None) == (200, chunked.clone()));
    let layer_digest = oci::sha256(&layer);
    let (status, part) = get_blob(&base, &layer_digest, Some("bytes=8388000-8389000"));
    assert_eq!(status, 206);
    assert!(part == layer[8_388_000..=8_389_000], "the range differs");

    // The bytes are in Azure storage, none in the data directory.
    assert_eq!(
        bytes_under(&data.join("blobs")),
        0,
        "blob files in the data directory"
    );
    let stored = bytes_under(azure_dir.path());
    let pushed = (layer.len() + chunked.len()) as u64;
    assert!(
        stored >= pushed,
        "Azurite holds {stored} bytes, {pushed} pushed"
    );
    assert!(
        reg.log().contains(&format!("az://{CONTAINER}")),
        "{}",
        reg.log()
    );

    // A restart finds the same container and serves the same blobs.
    reg.restart();
    let base = reg.url();
    assert!(get_blob(&base, &layer_digest, None) == (200, layer));
    assert!(get_blob(&base, &chunked_digest, None) == (200, chunked));
}

#[test]
fn an_unusable_blob_store_setting_stops_the_start_with_a_clear_message() {
    let tmp = TempDir::new().unwrap_or_else(|e| panic!("{e}"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_connected-registry"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--blob-store",
            "s3://bucket",
        ])
        .arg("--data-dir")
        .arg(tmp.path().join("data"))
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started with s3://");
    assert!(
        err.contains("blob_store") && err.contains("not supported yet"),
        "{err}"
    );
}
