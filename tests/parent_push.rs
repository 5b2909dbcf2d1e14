//! Pushing with the parent client to both kinds of parent: a connected-registry root (bearer
//! tokens from a scope map) and distribution 2.8 (htpasswd Basic). Blobs go up in 1 MiB chunks
//! streamed from a file, the config by cross-repository mount, the manifest by digest and tag;
//! an upload resumes from its serialized session on a fresh client; a chunk at a wrong offset is
//! refused (ours) or detected (distribution ignores `Content-Range`); deletes by digest and tag;
//! missing rights and wrong passwords are classified without the password in any message.

mod common;

use std::path::{Path, PathBuf};

use bytes::Bytes;
use common::distribution::DockerRegistry;
use common::{oci, Registry};
use connected_registry::sync::parent::{
    BlobStream, DeleteResult, MountResult, ParentClient, ParentError, UploadSession,
};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

const MIB: u64 = 1 << 20;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"))
}

/// A token on `p/*` with `actions` (scope map and token named `name`); returns its password
/// once the registry accepts it.
fn token(reg: &Registry, name: &str, actions: &[&str]) -> String {
    reg.add_token(name, "p/*", actions)
}

fn client(host: &str, user: &str, pw: &str) -> ParentClient {
    ParentClient::new(host, "http", user, pw, None).unwrap_or_else(|e| panic!("client: {e}"))
}

/// `len` bytes of `path` from `offset`, streamed 64 KiB at a time (never all in memory).
fn file_body(path: &Path, offset: u64, len: u64) -> reqwest::Body {
    let state = (path.to_owned(), None::<tokio::fs::File>, len);
    let stream = futures_util::stream::unfold(state, move |(path, file, left)| async move {
        if left == 0 {
            return None;
        }
        let mut f = match file {
            Some(f) => f,
            None => {
                let mut f = tokio::fs::File::open(&path).await.ok()?;
                f.seek(std::io::SeekFrom::Start(offset)).await.ok()?;
                f
            }
        };
        let mut buf = vec![0u8; left.min(64 * 1024) as usize];
        let r = f.read_exact(&mut buf).await.map(|_| Bytes::from(buf));
        Some((r, (path, Some(f), left - left.min(64 * 1024))))
    });
    reqwest::Body::wrap_stream(stream)
}

/// Sends `path` from `s.offset` on in 1 MiB chunks up to `end`.
async fn send_chunks(c: &ParentClient, s: &mut UploadSession, path: &Path, end: u64) {
    while s.offset < end {
        let (at, len) = (s.offset, MIB.min(end - s.offset));
        let r = c.upload_chunk(s, file_body(path, at, len), len).await;
        r.unwrap_or_else(|e| panic!("chunk at {at}: {e}"));
        assert_eq!(s.offset, at + len);
    }
}

async fn drain(mut s: BlobStream) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(c) = s.chunk().await.unwrap_or_else(|e| panic!("chunk: {e}")) {
        out.extend_from_slice(&c);
    }
    out
}

/// Everything both parents must do; `ours` selects the connected-registry expectations.
async fn exercise(host: &str, user: &str, pw: &str, ours: bool, scratch: &Path) {
    let c = client(host, user, pw);
    let img = oci::image_with_layers(vec![oci::pseudo_random(5 << 20, 1)]);
    let (config, layer) = (&img.blobs[0], &img.blobs[1]);
    let file: PathBuf = scratch.join("layer");
    std::fs::write(&file, &layer.bytes).unwrap();
    let size = layer.bytes.len() as u64;

    // The config goes to another repository first, then is mounted.
    let s = c.start_upload("p/src").await.unwrap();
    assert_eq!(s.offset, 0);
    let body = Some((
        reqwest::Body::from(config.bytes.clone()),
        config.bytes.len() as u64,
    ));
    c.finish_upload(&s, &config.digest, body).await.unwrap();
    assert_eq!(c.blob_exists("p/app", &config.digest).await.unwrap(), None);
    let m = c
        .mount_blob("p/app", &config.digest, "p/src")
        .await
        .unwrap();
    assert_eq!(m, MountResult::Mounted);
    let n = config.bytes.len() as u64;
    assert_eq!(
        c.blob_exists("p/app", &config.digest).await.unwrap(),
        Some(n)
    );
    let missing = format!("sha256:{}", "0".repeat(64));
    match c.mount_blob("p/app", &missing, "p/src").await.unwrap() {
        MountResult::Upload(s) => c.cancel_upload(&s).await,
        MountResult::Mounted => panic!("mounted a blob that does not exist"),
    }

    // The layer: start, 5 × PATCH of 1 MiB streamed from the file, finish.
    let mut s = c.start_upload("p/app").await.unwrap();
    send_chunks(&c, &mut s, &file, size).await;
    c.finish_upload(&s, &layer.digest, None).await.unwrap();
    assert_eq!(
        c.blob_exists("p/app", &layer.digest).await.unwrap(),
        Some(size)
    );

    let bytes = Bytes::from(img.bytes.clone());
    let d = c.put_manifest("p/app", &img.digest, oci::OCI_MANIFEST, bytes.clone());
    assert_eq!(d.await.unwrap(), img.digest);
    for tag in ["v1", "v2"] {
        let d = c.put_manifest("p/app", tag, oci::OCI_MANIFEST, bytes.clone());
        assert_eq!(d.await.unwrap(), img.digest);
    }
    let got = c.manifest("p/app", "v1").await.unwrap().unwrap();
    assert_eq!(
        (got.digest.as_str(), &got.bytes[..]),
        (img.digest.as_str(), &img.bytes[..])
    );
    for b in &img.blobs {
        let stream = c.blob("p/app", &b.digest, 0, None).await.unwrap().unwrap();
        assert_eq!(oci::sha256(&drain(stream).await), b.digest);
    }

    // A manifest whose layer the parent lacks is refused with the parent's code.
    let orphan = oci::image("arm64", b"never uploaded");
    let e = c.put_manifest(
        "p/app",
        "orphan",
        oci::OCI_MANIFEST,
        orphan.bytes.clone().into(),
    );
    let e = e.await.unwrap_err();
    assert!(
        matches!(&e, ParentError::Protocol(m) if m.contains("MANIFEST_BLOB_UNKNOWN")),
        "{e}"
    );

    // Resume: two chunks, the session survives only in its serialized form, a fresh client
    // asks where it stands and another fresh one (no token yet) goes on.
    let mut s = c.start_upload("p/resume").await.unwrap();
    send_chunks(&c, &mut s, &file, 2 * MIB).await;
    let saved = serde_json::to_string(&s).unwrap();
    drop(s);
    let restored: UploadSession = serde_json::from_str(&saved).unwrap();
    let status = client(host, user, pw)
        .upload_status(&restored)
        .await
        .unwrap();
    let mut s = status.unwrap_or_else(|| panic!("upload forgotten"));
    assert_eq!(s.offset, 2 * MIB);
    let fresh = client(host, user, pw);
    send_chunks(&fresh, &mut s, &file, size).await;
    fresh.finish_upload(&s, &layer.digest, None).await.unwrap();
    let exists = fresh.blob_exists("p/resume", &layer.digest).await;
    assert_eq!(exists.unwrap(), Some(size));

    // A chunk claiming the wrong offset.
    let mut s = c.start_upload("p/wrong").await.unwrap();
    send_chunks(&c, &mut s, &file, 2 * MIB).await;
    let mut bad = s.clone();
    bad.offset = 3 * MIB;
    let e = c
        .upload_chunk(&mut bad, file_body(&file, 3 * MIB, MIB), MIB)
        .await
        .unwrap_err();
    assert!(matches!(e, ParentError::Protocol(_)), "{e:?}");
    if ours {
        // 416: nothing written, the upload goes on where it was.
        assert!(e.to_string().contains("wrong offset"), "{e}");
        let st = c.upload_status(&s).await.unwrap().unwrap();
        assert_eq!(st.offset, 2 * MIB);
        send_chunks(&c, &mut s, &file, size).await;
        c.finish_upload(&s, &layer.digest, None).await.unwrap();
    } else {
        // Distribution appended the chunk at 2 MiB anyway; the client noticed and took the
        // parent's word. The older location now carries a stale `_state`: 404, start over.
        assert!(e.to_string().contains("ignored Content-Range"), "{e}");
        assert_eq!(bad.offset, 3 * MIB);
        let st = c.upload_status(&bad).await.unwrap().unwrap();
        assert_eq!(st.offset, 3 * MIB);
        assert_eq!(c.upload_status(&s).await.unwrap(), None);
        c.cancel_upload(&st).await;
        assert_eq!(c.upload_status(&st).await.unwrap(), None);
    }

    // Deletes: a tag (ours only), then the digest, then again.
    let by_tag = c.delete_manifest("p/app", "v1").await.unwrap();
    let want = if ours {
        DeleteResult::Deleted
    } else {
        DeleteResult::Unsupported
    };
    assert_eq!(by_tag, want);
    assert_eq!(c.manifest("p/app", "v1").await.unwrap().is_some(), !ours);
    let r = c.delete_manifest("p/app", &img.digest).await.unwrap();
    assert_eq!(r, DeleteResult::Deleted);
    assert!(c.manifest("p/app", &img.digest).await.unwrap().is_none());
    assert!(c.manifest("p/app", "v2").await.unwrap().is_none());
    let r = c.delete_manifest("p/app", &img.digest).await.unwrap();
    assert_eq!(r, DeleteResult::NotFound);

    // A wrong password.
    let wrong = format!("{pw}-wrong");
    let e = client(host, user, &wrong)
        .put_manifest("p/app", "v3", oci::OCI_MANIFEST, bytes.clone())
        .await
        .unwrap_err();
    assert!(matches!(e, ParentError::Unauthorized(_)), "{e:?}");
    assert!(!format!("{e} {e:?}").contains(&wrong), "{e}");
}

#[test]
fn pushes_to_a_connected_registry() {
    let reg = Registry::start_authenticated(&[]);
    let rw = [
        "content/read",
        "content/write",
        "content/delete",
        "metadata/read",
    ];
    let pw = token(&reg, "sync", &rw);
    let ro_pw = token(&reg, "ro", &["content/read", "metadata/read"]);
    let rt = runtime();
    rt.block_on(exercise(&reg.host(), "sync", &pw, true, reg.scratch()));

    // A token without content/write: our server issues a token without push, then 403.
    let img = oci::image("amd64", b"ro");
    let ro = client(&reg.host(), "ro", &ro_pw);
    let errors = rt.block_on(async {
        let e1 = ro.start_upload("p/app").await.unwrap_err();
        let put = ro.put_manifest("p/app", "ro", oci::OCI_MANIFEST, img.bytes.clone().into());
        let e2 = put.await.unwrap_err();
        let e3 = ro.delete_manifest("p/app", "v2").await.unwrap_err();
        vec![e1, e2, e3]
    });
    for e in &errors {
        assert!(matches!(e, ParentError::Denied(_)), "{e:?}");
        assert!(!e.to_string().contains(&ro_pw));
    }
    assert!(!reg.log().contains(&pw));
}

#[test]
fn pushes_to_distribution() {
    let reg = DockerRegistry::start_with_users(&[("sync", "pw")]);
    let scratch = tempfile::TempDir::new().unwrap();
    runtime().block_on(exercise(&reg.host(), "sync", "pw", false, scratch.path()));
}
