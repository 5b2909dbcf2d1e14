//! One suite every blob backend must pass (run here against the local backend): what is placed
//! reads back exactly, placing never replaces, claims keep collection away, and listing finds
//! everything once.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;

use super::BlobBackend;
use crate::registry::Digest;
use crate::storage::BlobReader;

/// A staged file holding `bytes`, as a verified upload leaves it; its digest.
fn stage(dir: &Path, name: &str, bytes: &[u8]) -> (std::path::PathBuf, Digest) {
    let path = dir.join(name);
    let mut f = std::fs::File::create(&path).unwrap_or_else(|e| panic!("{e}"));
    f.write_all(bytes).unwrap_or_else(|e| panic!("{e}"));
    f.sync_all().unwrap_or_else(|e| panic!("{e}"));
    (path, Digest::sha256_of(bytes))
}

/// Runs the whole suite against `backend`, staging files in `staging`.
pub fn run(backend: &dyn BlobBackend, staging: &Path) {
    absent_blobs_are_none(backend, staging);
    placed_blobs_read_back(backend, staging);
    large_blobs_arrive_whole(backend, staging);
    placing_twice_keeps_the_first(backend, staging);
    listing_finds_each_blob_once(backend, staging);
    removal_frees_the_bytes(backend, staging);
}

fn absent_blobs_are_none(b: &dyn BlobBackend, staging: &Path) {
    let (_, d) = stage(staging, "absent", b"never placed");
    assert_eq!(b.size(&d).ok(), Some(None));
    assert!(matches!(b.open_blob(&d), Ok(None)));
    assert_eq!(b.remove(&d).ok(), Some(None));
}

/// Places `bytes` as a new blob and opens it, checking its size both ways.
fn place_and_open(b: &dyn BlobBackend, staging: &Path, name: &str, bytes: &[u8]) -> BlobReader {
    let (path, d) = stage(staging, name, bytes);
    drop(b.place(&path, &d).unwrap_or_else(|e| panic!("{e}")));
    assert_eq!(b.size(&d).ok(), Some(Some(bytes.len() as u64)));
    let r = b
        .open_blob(&d)
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("{d} not readable"));
    assert_eq!(r.len(), bytes.len() as u64);
    r
}

fn placed_blobs_read_back(b: &dyn BlobBackend, staging: &Path) {
    let bytes: Vec<u8> = (0..300_000u32).map(|i| (i * 31 % 253) as u8).collect();
    let r = place_and_open(b, staging, "big", &bytes);
    for (pos, want) in [(0usize, 10usize), (4095, 70_000), (bytes.len() - 1, 1)] {
        let got = r
            .read_exact_at(pos as u64, want)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(&got[..], &bytes[pos..pos + want], "{pos}+{want}");
    }
    assert!(
        r.read_exact_at(bytes.len() as u64 - 5, 10).is_err(),
        "past the end"
    );
}

/// Larger than a backend's upload part (8 MiB for object stores), read across the boundaries.
fn large_blobs_arrive_whole(b: &dyn BlobBackend, staging: &Path) {
    let bytes: Vec<u8> = (0..(17 * 1024 * 1024 + 12_345u32))
        .map(|i| (i % 251) as u8)
        .collect();
    let r = place_and_open(b, staging, "large", &bytes);
    let part = 8 * 1024 * 1024;
    for pos in [part - 100, 2 * part - 100, bytes.len() - 200] {
        let got = r
            .read_exact_at(pos as u64, 200)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(&got[..], &bytes[pos..pos + 200], "at {pos}");
    }
}

fn placing_twice_keeps_the_first(b: &dyn BlobBackend, staging: &Path) {
    let (first, d) = stage(staging, "twice-1", b"same bytes");
    drop(b.place(&first, &d).unwrap_or_else(|e| panic!("{e}")));
    let reader = b
        .open_blob(&d)
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("placed"));
    let (second, d2) = stage(staging, "twice-2", b"same bytes");
    assert_eq!(d, d2);
    let claim = b.place(&second, &d2).unwrap_or_else(|e| panic!("{e}"));
    // The existing blob is claimed: collection leaves it until the claim is dropped.
    assert_eq!(
        b.remove(&d).ok(),
        Some(None),
        "claimed blobs are not removed"
    );
    drop(claim);
    assert_eq!(
        &reader.read_exact_at(0, 10).unwrap_or_default()[..],
        b"same bytes"
    );
    assert!(!second.exists(), "the staged copy is dropped");
}

fn listing_finds_each_blob_once(b: &dyn BlobBackend, staging: &Path) {
    let mut placed = BTreeSet::new();
    for i in 0..40 {
        let (path, d) = stage(
            staging,
            &format!("list-{i}"),
            format!("blob {i}").as_bytes(),
        );
        drop(b.place(&path, &d).unwrap_or_else(|e| panic!("{e}")));
        placed.insert(d.to_string());
    }
    let mut seen = Vec::new();
    b.for_each_batch(7, &mut |batch| {
        assert!(
            !batch.is_empty() && batch.len() <= 7,
            "batch of {}",
            batch.len()
        );
        seen.extend(batch.iter().map(|d| d.to_string()));
        Ok(())
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let unique: BTreeSet<_> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "listed twice");
    assert!(placed.is_subset(&unique), "listing missed some");
}

fn removal_frees_the_bytes(b: &dyn BlobBackend, staging: &Path) {
    let (path, d) = stage(staging, "gone", b"twelve bytes");
    drop(b.place(&path, &d).unwrap_or_else(|e| panic!("{e}")));
    assert_eq!(b.remove(&d).ok(), Some(Some(12)));
    assert_eq!(b.size(&d).ok(), Some(None));
    assert_eq!(b.remove(&d).ok(), Some(None));
}

#[test]
fn the_local_backend_conforms() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let staging = dir.path().join("staging");
    std::fs::create_dir(&staging).unwrap_or_else(|e| panic!("{e}"));
    let backend = super::LocalBlobs::open(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    run(&backend, &staging);
}
