//! Building and pushing OCI content over HTTP, and writing OCI image layouts for clients.

use std::path::Path;

use reqwest::blocking::Client;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256, Sha512};

/// OCI image manifest media type.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index media type.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image config media type.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Uncompressed OCI layer media type.
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";

/// `sha256:<hex>` of bytes.
pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// `sha512:<hex>` of bytes.
pub fn sha512(bytes: &[u8]) -> String {
    format!("sha512:{}", hex::encode(Sha512::digest(bytes)))
}

/// Deterministic pseudo-random bytes (xorshift) so tests are reproducible.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A one-file tar archive (ustar), enough for a real image layer.
pub fn tar_one_file(name: &str, content: &[u8]) -> Vec<u8> {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    let field = |h: &mut [u8; 512], off: usize, len: usize, v: u64| {
        let s = format!("{:0width$o}\0", v, width = len - 1);
        h[off..off + len].copy_from_slice(s.as_bytes());
    };
    field(&mut h, 100, 8, 0o644);
    field(&mut h, 108, 8, 0);
    field(&mut h, 116, 8, 0);
    field(&mut h, 124, 12, content.len() as u64);
    field(&mut h, 136, 12, 1_700_000_000);
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u64 = h.iter().map(|b| *b as u64).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    let mut out = h.to_vec();
    out.extend_from_slice(content);
    out.resize(out.len().div_ceil(512) * 512 + 1024, 0);
    out
}

/// A blob plus its descriptor fields.
#[derive(Clone, Debug)]
pub struct Blob {
    /// Media type used in descriptors.
    pub media_type: String,
    /// Content.
    pub bytes: Vec<u8>,
    /// `sha256:` digest.
    pub digest: String,
}

impl Blob {
    /// A blob of bytes with a media type.
    pub fn new(media_type: &str, bytes: Vec<u8>) -> Self {
        let digest = sha256(&bytes);
        Blob {
            media_type: media_type.into(),
            bytes,
            digest,
        }
    }

    /// Its descriptor.
    pub fn descriptor(&self) -> Value {
        json!({"mediaType": self.media_type, "digest": self.digest, "size": self.bytes.len()})
    }
}

/// A manifest (image, index or artifact) and everything it needs.
#[derive(Clone, Debug)]
pub struct Manifest {
    /// Media type.
    pub media_type: String,
    /// Exact bytes.
    pub bytes: Vec<u8>,
    /// Digest of the bytes.
    pub digest: String,
    /// Blobs it references (config and layers).
    pub blobs: Vec<Blob>,
}

impl Manifest {
    /// Wraps bytes.
    pub fn new(media_type: &str, body: &Value, blobs: Vec<Blob>) -> Self {
        let bytes = serde_json::to_vec(body).unwrap_or_default();
        let digest = sha256(&bytes);
        Manifest {
            media_type: media_type.into(),
            bytes,
            digest,
            blobs,
        }
    }

    /// Its descriptor, with an optional platform.
    pub fn descriptor(&self, platform: Option<(&str, &str)>) -> Value {
        let mut d =
            json!({"mediaType": self.media_type, "digest": self.digest, "size": self.bytes.len()});
        if let Some((os, arch)) = platform {
            d["platform"] = json!({"os": os, "architecture": arch});
        }
        d
    }
}

/// A runnable-looking single-layer image for `arch` with a file holding `content`.
pub fn image(arch: &str, content: &[u8]) -> Manifest {
    let layer = Blob::new(OCI_LAYER, tar_one_file("hello.txt", content));
    let config = json!({
        "architecture": arch, "os": "linux",
        "config": {"Cmd": ["/hello.txt"]},
        "rootfs": {"type": "layers", "diff_ids": [layer.digest]},
    });
    let config = Blob::new(OCI_CONFIG, serde_json::to_vec(&config).unwrap_or_default());
    let body = json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": config.descriptor(), "layers": [layer.descriptor()],
    });
    Manifest::new(OCI_MANIFEST, &body, vec![config, layer])
}

/// An image with arbitrary layers (random content), for protocol and crash tests.
pub fn image_with_layers(layers: Vec<Vec<u8>>) -> Manifest {
    let layers: Vec<Blob> = layers
        .into_iter()
        .map(|b| Blob::new(OCI_LAYER, b))
        .collect();
    let diff: Vec<&str> = layers.iter().map(|l| l.digest.as_str()).collect();
    let config = json!({"architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": diff}});
    let config = Blob::new(OCI_CONFIG, serde_json::to_vec(&config).unwrap_or_default());
    let body = json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config.descriptor(),
        "layers": layers.iter().map(Blob::descriptor).collect::<Vec<_>>(),
    });
    let mut blobs = vec![config];
    blobs.extend(layers);
    Manifest::new(OCI_MANIFEST, &body, blobs)
}

/// An index over manifests with their (os, arch).
pub fn index(children: &[(&Manifest, &str, &str)]) -> Manifest {
    let body = json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": children.iter().map(|(m, os, a)| m.descriptor(Some((os, a)))).collect::<Vec<_>>(),
    });
    Manifest::new(OCI_INDEX, &body, Vec::new())
}

/// An artifact (e.g. a signature) whose `subject` is `subject`.
pub fn referrer(subject: &Manifest, artifact_type: &str, payload: &[u8]) -> Manifest {
    let empty = Blob::new("application/vnd.oci.empty.v1+json", b"{}".to_vec());
    let layer = Blob::new("application/octet-stream", payload.to_vec());
    let body = json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": artifact_type,
        "config": empty.descriptor(), "layers": [layer.descriptor()],
        "subject": subject.descriptor(None),
        "annotations": {"org.opencontainers.image.created": "2026-01-01T00:00:00Z"},
    });
    Manifest::new(OCI_MANIFEST, &body, vec![empty, layer])
}

/// Pushes a blob monolithically; panics unless 201.
pub fn push_blob(c: &Client, base: &str, repo: &str, blob: &Blob) {
    let r = c
        .post(format!(
            "{base}/v2/{repo}/blobs/uploads/?digest={}",
            blob.digest
        ))
        .header("Content-Type", "application/octet-stream")
        .body(blob.bytes.clone())
        .send()
        .unwrap_or_else(|e| panic!("push blob: {e}"));
    assert_eq!(r.status().as_u16(), 201, "push blob: {:?}", r.text());
}

/// PUTs a manifest; returns the response.
pub fn put_manifest(
    c: &Client,
    base: &str,
    repo: &str,
    reference: &str,
    m: &Manifest,
) -> reqwest::blocking::Response {
    c.put(format!("{base}/v2/{repo}/manifests/{reference}"))
        .header("Content-Type", m.media_type.clone())
        .body(m.bytes.clone())
        .send()
        .unwrap_or_else(|e| panic!("put manifest: {e}"))
}

/// Pushes blobs then the manifest under `reference`; panics unless 201.
pub fn push(c: &Client, base: &str, repo: &str, reference: &str, m: &Manifest) {
    for b in &m.blobs {
        push_blob(c, base, repo, b);
    }
    let r = put_manifest(c, base, repo, reference, m);
    assert_eq!(r.status().as_u16(), 201, "put manifest: {:?}", r.text());
}

/// Writes an OCI image layout (`oci-layout`, `index.json`, `blobs/`) holding `roots` by tag.
pub fn write_layout(dir: &Path, roots: &[(&str, &Manifest)], extra: &[&Manifest]) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap_or_else(|e| panic!("{e}"));
    let put = |digest: &str, bytes: &[u8]| {
        let hex = digest.trim_start_matches("sha256:");
        std::fs::write(blobs.join(hex), bytes).unwrap_or_else(|e| panic!("{e}"));
    };
    for m in roots.iter().map(|(_, m)| *m).chain(extra.iter().copied()) {
        put(&m.digest, &m.bytes);
        for b in &m.blobs {
            put(&b.digest, &b.bytes);
        }
    }
    let entries: Vec<Value> = roots
        .iter()
        .map(|(tag, m)| {
            let mut d = m.descriptor(None);
            d["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
            d
        })
        .collect();
    let index = json!({"schemaVersion": 2, "manifests": entries});
    std::fs::write(dir.join("index.json"), index.to_string()).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)
        .unwrap_or_else(|e| panic!("{e}"));
}
