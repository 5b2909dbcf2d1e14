//! Trust from IoT Edge: the workload API's trust bundle (or, in local development, the
//! `EdgeModuleCACertificateFile`) is what edgeHub's certificate, and a nested parent's, chain to.

use std::sync::Arc;

use rustls::crypto::ring;
use rustls::version::{TLS12, TLS13};
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

/// The certificates of a PEM bundle; an error when it holds none that can be used.
pub fn certificates(pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err("the trust bundle holds no PEM certificate".into());
    }
    Ok(certs)
}

/// A TLS client configuration trusting only the bundle's certificates (edgeHub's chain ends
/// at the IoT Edge CA, never at a public root).
pub fn client_config(pem: &str) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certificates(pem)?);
    if added == 0 {
        return Err("no certificate of the trust bundle can be a trust anchor".into());
    }
    let config = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_protocol_versions(&[&TLS13, &TLS12])
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
