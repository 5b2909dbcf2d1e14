//! Test content (pseudo-random blobs, OCI images) and the push protocol both servers speak:
//! `POST` + one `PUT ?digest=` with the body ("monolithic"; the reference server ignores a
//! body sent with the `POST`), `POST` + in-order `PATCH`es + `PUT` (chunked), manifest `PUT`.

use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

use crate::http::{location_path, Conn, ACCEPT_MANIFESTS};

/// OCI image manifest media type.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image config media type.
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Uncompressed OCI layer media type.
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";

/// `sha256:<hex>` of bytes.
pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Deterministic pseudo-random bytes (xorshift64): incompressible, never all zeros.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A blob with its digest.
pub struct Blob {
    /// Content.
    pub bytes: Vec<u8>,
    /// `sha256:` digest.
    pub digest: String,
    /// Media type used in descriptors.
    media_type: &'static str,
}

impl Blob {
    /// A blob of `bytes`, digest computed.
    fn new(media_type: &'static str, bytes: Vec<u8>) -> Blob {
        let digest = sha256(&bytes);
        Blob {
            bytes,
            digest,
            media_type,
        }
    }

    /// Its OCI descriptor.
    fn descriptor(&self) -> Value {
        json!({"mediaType": self.media_type, "digest": self.digest, "size": self.bytes.len()})
    }
}

/// An OCI image: its manifest bytes and digest, config and layers.
pub struct Image {
    /// Exact manifest bytes.
    pub manifest: Vec<u8>,
    /// Digest of the manifest bytes.
    pub digest: String,
    /// Config first, then the layers.
    pub blobs: Vec<Blob>,
}

impl Image {
    /// An image with `layers` layers, each an uncompressed tar of one pseudo-random file of
    /// `layer_size` bytes (`seed` varies the content): real enough for `docker pull` to unpack.
    pub fn new(layers: usize, layer_size: usize, seed: u64) -> Image {
        let layers: Vec<Blob> = (0..layers)
            .map(|i| {
                Blob::new(
                    OCI_LAYER,
                    tar_of(pseudo_random(layer_size, seed + i as u64)),
                )
            })
            .collect();
        let diff: Vec<&str> = layers.iter().map(|l| l.digest.as_str()).collect();
        let config = json!({"architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": diff}});
        let config = Blob::new(OCI_CONFIG, config.to_string().into_bytes());
        let manifest = json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config.descriptor(),
            "layers": layers.iter().map(Blob::descriptor).collect::<Vec<_>>(),
        })
        .to_string()
        .into_bytes();
        let mut blobs = vec![config];
        blobs.extend(layers);
        Image {
            digest: sha256(&manifest),
            manifest,
            blobs,
        }
    }

    /// Pushes every blob (monolithic), not the manifest.
    pub fn push_blobs(&self, c: &mut Conn, repo: &str) {
        for b in &self.blobs {
            push_monolithic(c, repo, &b.bytes, &b.digest);
        }
    }

    /// Bytes a copy of the image moves: the manifest and every blob.
    pub fn payload_bytes(&self) -> u64 {
        let blobs: usize = self.blobs.iter().map(|b| b.bytes.len()).sum();
        (self.manifest.len() + blobs) as u64
    }

    /// Pushes every blob then the manifest under `tag`.
    pub fn push(&self, c: &mut Conn, repo: &str, tag: &str) {
        self.push_blobs(c, repo);
        put_manifest(c, repo, tag, &self.manifest);
    }

    /// Checks every blob is at a server with its size, and the manifest under `tag`.
    pub fn check(&self, c: &mut Conn, repo: &str, tag: &str) {
        check_manifest(c, repo, tag, &self.digest);
        for b in &self.blobs {
            check_blob_size(c, repo, &b.digest, b.bytes.len());
        }
    }
}

/// Starts an upload session; returns the path of its `Location`.
fn start_upload(c: &mut Conn, repo: &str) -> String {
    let path = format!("/v2/{repo}/blobs/uploads/");
    let r = c
        .request("POST", &path, &[], &[])
        .unwrap_or_else(|e| panic!("POST {path}: {e}"));
    assert_eq!(r.status(), 202, "POST {path}: {}", r.text());
    location(&r, &path)
}

/// The `Location` of an upload response as a path, or a panic naming the request.
fn location(r: &crate::http::Response, what: &str) -> String {
    r.header("location")
        .map(location_path)
        .unwrap_or_else(|| panic!("{what}: answered {} without Location", r.status()))
}

/// Appends `?digest=` (or `&digest=`) to an upload location.
fn with_digest(location: &str, digest: &str) -> String {
    let sep = if location.contains('?') { '&' } else { '?' };
    format!("{location}{sep}digest={digest}")
}

/// Pushes a blob with `POST` then one `PUT ?digest=` carrying the whole body; panics unless
/// the server answers 201.
pub fn push_monolithic(c: &mut Conn, repo: &str, data: &[u8], digest: &str) {
    let loc = start_upload(c, repo);
    let path = with_digest(&loc, digest);
    let ct = [("Content-Type", "application/octet-stream")];
    let r = c
        .request("PUT", &path, &ct, data)
        .unwrap_or_else(|e| panic!("PUT {path}: {e}"));
    assert_eq!(r.status(), 201, "PUT {path}: {}", r.text());
}

/// Pushes a blob with `POST`, in-order `PATCH`es of `chunk` bytes (with `Content-Range`), then
/// an empty `PUT ?digest=`; panics unless every step succeeds.
pub fn push_chunked(c: &mut Conn, repo: &str, data: &[u8], digest: &str, chunk: usize) {
    let mut loc = start_upload(c, repo);
    for (i, piece) in data.chunks(chunk.max(1)).enumerate() {
        let start = i * chunk;
        let range = format!("{}-{}", start, start + piece.len() - 1);
        let headers = [
            ("Content-Type", "application/octet-stream"),
            ("Content-Range", range.as_str()),
        ];
        let r = c
            .request("PATCH", &loc, &headers, piece)
            .unwrap_or_else(|e| panic!("PATCH {loc}: {e}"));
        assert_eq!(r.status(), 202, "PATCH {loc} ({range}): {}", r.text());
        loc = location(&r, "PATCH");
    }
    let path = with_digest(&loc, digest);
    let r = c
        .request("PUT", &path, &[], &[])
        .unwrap_or_else(|e| panic!("PUT {path}: {e}"));
    assert_eq!(r.status(), 201, "PUT {path}: {}", r.text());
}

/// PUTs manifest bytes under `reference`; panics unless 201.
pub fn put_manifest(c: &mut Conn, repo: &str, reference: &str, manifest: &[u8]) {
    let path = format!("/v2/{repo}/manifests/{reference}");
    let r = c
        .request("PUT", &path, &[("Content-Type", OCI_MANIFEST)], manifest)
        .unwrap_or_else(|e| panic!("PUT {path}: {e}"));
    assert_eq!(r.status(), 201, "PUT {path}: {}", r.text());
}

/// Checks a blob is there with the right size (HEAD); panics otherwise.
pub fn check_blob_size(c: &mut Conn, repo: &str, digest: &str, size: usize) {
    let path = format!("/v2/{repo}/blobs/{digest}");
    let r = c
        .request("HEAD", &path, &[], &[])
        .unwrap_or_else(|e| panic!("HEAD {path}: {e}"));
    assert_eq!(r.status(), 200, "HEAD {path}");
    let len = r.header("content-length").and_then(|l| l.parse().ok());
    assert_eq!(len, Some(size), "HEAD {path}: wrong Content-Length");
}

/// Downloads a blob whole and checks its digest; panics on any difference.
pub fn check_blob_digest(c: &mut Conn, repo: &str, digest: &str) {
    let path = format!("/v2/{repo}/blobs/{digest}");
    let mut h = Sha256::new();
    let head = c
        .send("GET", &path, &[], &[], &mut |b| h.update(b))
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    assert_eq!(head.status, 200, "GET {path}");
    let got = format!("sha256:{}", hex::encode(h.finalize()));
    assert_eq!(got, digest, "GET {path}: the body has another digest");
}

/// Fetches a manifest by tag and checks its digest (body and `Docker-Content-Digest`).
pub fn check_manifest(c: &mut Conn, repo: &str, reference: &str, digest: &str) {
    let path = format!("/v2/{repo}/manifests/{reference}");
    let r = c
        .request("GET", &path, &[("Accept", ACCEPT_MANIFESTS)], &[])
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    assert_eq!(r.status(), 200, "GET {path}: {}", r.text());
    assert_eq!(sha256(&r.body), digest, "GET {path}: wrong manifest");
    assert_eq!(
        r.header("docker-content-digest"),
        Some(digest),
        "GET {path}: wrong Docker-Content-Digest"
    );
}

/// The tags `GET /v2/<repo>/tags/list` returns (one page, as a plain client asks).
pub fn tags(c: &mut Conn, repo: &str) -> Vec<String> {
    let path = format!("/v2/{repo}/tags/list");
    let r = c
        .request("GET", &path, &[], &[])
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    assert_eq!(r.status(), 200, "GET {path}: {}", r.text());
    let v: Value = serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {}", r.text()));
    serde_json::from_value(v["tags"].clone()).unwrap_or_default()
}

/// An uncompressed tar archive holding `data` as the file `data.bin`.
fn tar_of(data: Vec<u8>) -> Vec<u8> {
    let mut header = [0u8; 512];
    let field =
        |h: &mut [u8; 512], at: usize, text: &[u8]| h[at..at + text.len()].copy_from_slice(text);
    field(&mut header, 0, b"data.bin");
    field(&mut header, 100, b"0000644\0");
    field(&mut header, 108, b"0000000\0");
    field(&mut header, 116, b"0000000\0");
    field(
        &mut header,
        124,
        format!("{:011o}\0", data.len()).as_bytes(),
    );
    field(&mut header, 136, b"00000000000\0");
    header[156] = b'0';
    field(&mut header, 257, b"ustar\0");
    field(&mut header, 263, b"00");
    // The checksum is summed with its own field as spaces.
    header[148..156].copy_from_slice(b"        ");
    let sum: u32 = header.iter().map(|b| u32::from(*b)).sum();
    field(&mut header, 148, format!("{sum:06o}\0 ").as_bytes());
    let padded = data.len().div_ceil(512) * 512;
    let mut tar = Vec::with_capacity(512 + padded + 1024);
    tar.extend_from_slice(&header);
    tar.extend_from_slice(&data);
    tar.resize(512 + padded + 1024, 0);
    tar
}
