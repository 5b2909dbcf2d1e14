//! A private certificate authority and server certificates for HTTPS tests (rcgen).

use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use tempfile::TempDir;

/// A private certificate authority.
pub struct Ca(pub CertifiedIssuer<'static, KeyPair>);

impl Ca {
    /// A self-signed CA named `name`.
    pub fn new(name: &str) -> Self {
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap_or_else(|e| panic!("key: {e}"));
        Ca(CertifiedIssuer::self_signed(p, key).unwrap_or_else(|e| panic!("CA: {e}")))
    }

    /// Writes the CA certificate as `name` in `dir`; returns its path.
    pub fn write(&self, dir: &Path, name: &str) -> PathBuf {
        write(dir, name, &self.0.pem())
    }

    /// A server certificate for 127.0.0.1 and localhost: (certificate PEM, key PEM).
    pub fn server(&self) -> (String, String) {
        self.server_for(&["127.0.0.1", "localhost"])
    }

    /// A server certificate for `names` (host names or IP addresses): (certificate PEM, key PEM).
    pub fn server_for(&self, names: &[&str]) -> (String, String) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut p = CertificateParams::new(names).unwrap_or_else(|e| panic!("{e}"));
        p.distinguished_name.push(DnType::CommonName, "registry");
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().unwrap_or_else(|e| panic!("key: {e}"));
        let cert = p.signed_by(&key, &self.0).unwrap_or_else(|e| panic!("{e}"));
        (cert.pem(), key.serialize_pem())
    }
}

/// Writes `text` to `dir/name`; returns the path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, text).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
    p
}

/// A CA and a server certificate signed by it, in a temporary directory.
pub struct Pki {
    /// Keeps the directory alive.
    pub dir: TempDir,
    /// The CA certificate.
    pub ca: PathBuf,
    /// The server certificate.
    pub cert: PathBuf,
    /// The server key.
    pub key: PathBuf,
}

/// A fresh CA (`ca.crt`) and a server certificate and key for 127.0.0.1/localhost.
pub fn pki(cert_name: &str, key_name: &str) -> Pki {
    let dir = TempDir::new().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let ca = Ca::new("test CA one");
    let (cert, key) = ca.server();
    Pki {
        ca: ca.write(dir.path(), "ca.crt"),
        cert: write(dir.path(), cert_name, &cert),
        key: write(dir.path(), key_name, &key),
        dir,
    }
}
