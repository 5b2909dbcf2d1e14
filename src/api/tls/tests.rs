use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::crypto::ring;

use super::*;

/// A CA and a leaf it signed: (ca pem, leaf pem, leaf key pem).
fn ca_and_leaf(name: &str) -> (String, String, String) {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec![name.to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    (ca.pem(), leaf.pem(), key.serialize_pem())
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

#[test]
fn loads_a_chain_leaf_first() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, leaf, key) = ca_and_leaf("localhost");
    let c = write(dir.path(), "tls.crt", &format!("{leaf}{ca}"));
    let k = write(dir.path(), "tls.key", &key);
    let ck = load_certified_key(&c, &k, &provider()).unwrap();
    assert_eq!(ck.cert.len(), 2);
    assert!(server_config(&c, &k).is_ok());
}

/// The content of a PKCS#8 key's `privateKey` OCTET STRING: for EC keys, the SEC1 key.
fn inner_key(pkcs8: &[u8]) -> Vec<u8> {
    fn tlv(d: &[u8]) -> (u8, &[u8], &[u8]) {
        let (len, header) = match d[1] {
            l if l < 0x80 => (l as usize, 2),
            l => {
                let n = (l & 0x7f) as usize;
                let len = d[2..2 + n].iter().fold(0, |a, b| a << 8 | *b as usize);
                (len, 2 + n)
            }
        };
        (d[0], &d[header..header + len], &d[header + len..])
    }
    let (_, mut body, _) = tlv(pkcs8);
    loop {
        let (tag, content, rest) = tlv(body);
        if tag == 0x04 {
            return content.to_vec();
        }
        body = rest;
    }
}

#[test]
fn loads_a_sec1_key() {
    use base64::Engine as _;
    let dir = tempfile::tempdir().unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let b64 = base64::engine::general_purpose::STANDARD.encode(inner_key(&key.serialize_der()));
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|l| std::str::from_utf8(l).unwrap())
        .collect();
    let sec1 = format!(
        "-----BEGIN EC PRIVATE KEY-----\n{}\n-----END EC PRIVATE KEY-----\n",
        lines.join("\n")
    );
    let c = write(dir.path(), "tls.crt", &cert.pem());
    let k = write(dir.path(), "tls.key", &sec1);
    load_certified_key(&c, &k, &provider()).unwrap();
}

#[test]
fn rejects_garbage_truncation_and_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let (_, leaf, key) = ca_and_leaf("localhost");
    let (_, _, other_key) = ca_and_leaf("localhost");
    let c = write(dir.path(), "tls.crt", &leaf);
    let k = write(dir.path(), "tls.key", &key);
    let garbage = write(dir.path(), "garbage", "this is not PEM\n");
    let half = write(dir.path(), "half", &leaf[..leaf.len() / 2]);
    let wrong = write(dir.path(), "wrong.key", &other_key);
    let p = provider();

    let e = load_certified_key(&garbage, &k, &p).unwrap_err();
    assert!(matches!(e, TlsError::Certificate { .. }), "{e}");
    assert!(e.to_string().contains("garbage"), "{e}");
    let e = load_certified_key(&half, &k, &p).unwrap_err();
    assert!(e.to_string().contains("truncated"), "{e}");
    let e = load_certified_key(&c, &garbage, &p).unwrap_err();
    assert!(matches!(e, TlsError::Key { .. }), "{e}");
    let e = load_certified_key(&c, &c, &p).unwrap_err();
    assert!(e.to_string().contains("no PEM PRIVATE KEY"), "{e}");
    let e = load_certified_key(&c, &wrong, &p).unwrap_err();
    assert!(e.to_string().contains("does not match"), "{e}");
    let e = load_certified_key(&dir.path().join("missing"), &k, &p).unwrap_err();
    assert!(matches!(e, TlsError::Read { .. }), "{e}");
    assert!(!e.to_string().contains('\n'));
}

#[test]
fn reloads_replaced_files_and_keeps_the_old_on_bad_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (_, leaf1, key1) = ca_and_leaf("one.test");
    let (_, leaf2, key2) = ca_and_leaf("two.test");
    let c = write(dir.path(), "tls.crt", &leaf1);
    let k = write(dir.path(), "tls.key", &key1);
    let r = ReloadingCert::new(&c, &k, provider(), Duration::ZERO).unwrap();
    let first = r.current();
    assert!(
        Arc::ptr_eq(&first, &r.current()),
        "unchanged files are not re-read"
    );

    // Only the certificate replaced: the pair does not match, the old one stays.
    write(dir.path(), "tls.crt.new", &leaf2);
    std::fs::rename(dir.path().join("tls.crt.new"), &c).unwrap();
    assert_eq!(r.current().cert, first.cert);
    // The key follows: the new pair is served.
    write(dir.path(), "tls.key.new", &key2);
    std::fs::rename(dir.path().join("tls.key.new"), &k).unwrap();
    let second = r.current();
    assert_ne!(second.cert, first.cert);
    // A half-written certificate is ignored.
    write(dir.path(), "tls.crt", &leaf1[..100]);
    assert_eq!(r.current().cert, second.cert);
}

#[test]
fn checks_at_most_once_per_interval() {
    let dir = tempfile::tempdir().unwrap();
    let (_, leaf1, key1) = ca_and_leaf("one.test");
    let (_, leaf2, key2) = ca_and_leaf("two.test");
    let c = write(dir.path(), "tls.crt", &leaf1);
    let k = write(dir.path(), "tls.key", &key1);
    let r = ReloadingCert::new(&c, &k, provider(), Duration::from_secs(3600)).unwrap();
    let first = r.current();
    write(dir.path(), "tls.crt", &leaf2);
    write(dir.path(), "tls.key", &key2);
    assert!(Arc::ptr_eq(&first, &r.current()));
}
