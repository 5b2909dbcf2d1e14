//! HTTPS with rustls: certificate loading and live reload.
//!
//! The certificate chain and private key are PEM files (the key in PKCS#8, PKCS#1 or SEC1). They
//! are re-read, without a restart, when their modification time, size or inode changes; the check
//! runs on handshakes, at most once per second. A replacement that does not load (half written,
//! key not matching the certificate) is ignored with one warning and the old certificate is served.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use rustls::crypto::{ring, CryptoProvider};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::version::{TLS12, TLS13};
use rustls::ServerConfig;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// How often, at most, handshakes look at the files for a replacement.
pub const RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Why the certificate or key cannot be used; every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The certificate file holds no usable PEM certificate.
    #[error("invalid certificate file {path}: {problem}")]
    Certificate {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// The key file holds no usable PEM private key.
    #[error("invalid private key file {path}: {problem}")]
    Key {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(rustls::Error),
}

/// Builds the HTTPS server configuration (ring, TLS 1.3 and 1.2, ALPN `http/1.1`) around a
/// resolver that reloads `cert` and `key` when they are replaced; fails if they do not load now.
pub fn server_config(cert: &Path, key: &Path) -> Result<ServerConfig, TlsError> {
    let provider = Arc::new(ring::default_provider());
    let resolver = ReloadingCert::new(cert, key, provider.clone(), RELOAD_CHECK_INTERVAL)?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&TLS13, &TLS12])
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Reads a PEM certificate chain (leaf first) and its PEM private key, checking that they match.
pub fn load_certified_key(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.to_owned(),
            source,
        })
    };
    let cert_err = |problem: String| TlsError::Certificate {
        path: cert.to_owned(),
        problem,
    };
    let key_err = |problem: String| TlsError::Key {
        path: key.to_owned(),
        problem,
    };
    let chain = CertificateDer::pem_slice_iter(&read(cert)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_err(pem_problem(&e, "CERTIFICATE")))?;
    if chain.is_empty() {
        return Err(cert_err("no PEM CERTIFICATE section found".into()));
    }
    let der = PrivateKeyDer::from_pem_slice(&read(key)?)
        .map_err(|e| key_err(pem_problem(&e, "PRIVATE KEY (PKCS#8, PKCS#1 or SEC1)")))?;
    let signing = provider
        .key_provider
        .load_private_key(der)
        .map_err(|e| key_err(e.to_string()))?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok(certified)
        }
        Err(rustls::Error::InconsistentKeys(_)) => Err(key_err(format!(
            "does not match the certificate in {}",
            cert.display()
        ))),
        Err(e) => Err(cert_err(e.to_string())),
    }
}

/// One readable line for a PEM parse error.
fn pem_problem(e: &pem::Error, what: &str) -> String {
    match e {
        pem::Error::NoItemsFound => format!("no PEM {what} section found"),
        pem::Error::MissingSectionEnd { .. } => "PEM section has no END line (truncated?)".into(),
        pem::Error::IllegalSectionStart { .. } => "malformed PEM BEGIN line".into(),
        pem::Error::Base64Decode(m) => format!("bad base64 in PEM section: {m}"),
        other => other.to_string(),
    }
}

/// What identifies one version of a file: modification time, size and inode.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp(Option<SystemTime>, u64, u64);

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let ino = std::os::unix::fs::MetadataExt::ino(&m);
    #[cfg(not(unix))]
    let ino = 0;
    Some(Stamp(m.modified().ok(), m.len(), ino))
}

/// Bookkeeping of the reload check, touched by one handshake at a time.
#[derive(Debug)]
struct Watch {
    /// When the files were last looked at.
    checked: Instant,
    /// The versions the served certificate was loaded from.
    loaded: (Option<Stamp>, Option<Stamp>),
    /// The versions a warning was already logged for.
    warned: Option<(Option<Stamp>, Option<Stamp>)>,
}

/// A [`ResolvesServerCert`] serving one certificate and picking up replaced files by itself.
#[derive(Debug)]
pub struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    interval: Duration,
    current: RwLock<Arc<CertifiedKey>>,
    watch: Mutex<Watch>,
}

impl ReloadingCert {
    /// Loads the files now (failing if they are unusable); later replacements are checked for at
    /// most once per `interval`.
    pub fn new(
        cert: &Path,
        key: &Path,
        provider: Arc<CryptoProvider>,
        interval: Duration,
    ) -> Result<Self, TlsError> {
        let loaded = (stamp(cert), stamp(key));
        let certified = load_certified_key(cert, key, &provider)?;
        Ok(ReloadingCert {
            cert: cert.to_owned(),
            key: key.to_owned(),
            provider,
            interval,
            current: RwLock::new(Arc::new(certified)),
            watch: Mutex::new(Watch {
                checked: Instant::now(),
                loaded,
                warned: None,
            }),
        })
    }

    /// The certificate to present, after reloading the files if they changed and it is time.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.refresh();
        match self.current.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Reloads when due and the files changed; a handshake finding another one checking skips.
    fn refresh(&self) {
        let Ok(mut watch) = self.watch.try_lock() else {
            return;
        };
        if watch.checked.elapsed() < self.interval {
            return;
        }
        watch.checked = Instant::now();
        // Stamps are taken before reading so that a write finishing after the read is noticed.
        let now = (stamp(&self.cert), stamp(&self.key));
        if now == watch.loaded {
            return;
        }
        match load_certified_key(&self.cert, &self.key, &self.provider) {
            Ok(certified) => {
                match self.current.write() {
                    Ok(mut c) => *c = Arc::new(certified),
                    Err(poisoned) => *poisoned.into_inner() = Arc::new(certified),
                }
                watch.loaded = now;
                watch.warned = None;
                tracing::info!(cert = %self.cert.display(), "reloaded TLS certificate");
            }
            Err(e) => {
                if watch.warned.as_ref() != Some(&now) {
                    tracing::warn!(error = %e, "new TLS certificate not loaded; still serving the previous one");
                    watch.warned = Some(now);
                }
            }
        }
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

#[cfg(test)]
mod tests;
