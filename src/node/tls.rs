//! HTTPS with a server certificate issued by the IoT Edge workload API (`--tls-from-workload`),
//! as the API proxy gets its own: written to the data directory, served through the reloading
//! certificate resolver, and renewed before it expires.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::config::iot_edge::{ModuleCredentials, ModuleEnv};
use crate::edge::workload::WorkloadClient;

/// Folder of the data directory holding the issued certificate and key.
const TLS_DIR: &str = "edge-tls";
/// How long startup waits for a certificate.
const ISSUE_WAIT: Duration = Duration::from_secs(20);
/// Validity asked for (the daemon decides; the api-proxy asks for 90 days too).
const ASKED_VALIDITY: chrono::TimeDelta = chrono::TimeDelta::days(90);
/// Pause before asking again after a failed renewal.
const RETRY: Duration = Duration::from_secs(30);

/// The certificate files and how to renew them.
pub struct WorkloadTls {
    /// The certificate chain file.
    pub cert: PathBuf,
    /// The private key file.
    pub key: PathBuf,
    client: WorkloadClient,
    common_name: String,
    expires: Option<DateTime<Utc>>,
}

impl WorkloadTls {
    /// Asks the workload API for a certificate for `common_name` and writes it; when the daemon
    /// does not answer, the certificate written last time is served until it can be renewed.
    pub async fn obtain(
        env: &ModuleEnv,
        data_dir: &Path,
        common_name: &str,
    ) -> Result<WorkloadTls, String> {
        let ModuleCredentials::Workload {
            socket,
            generation_id,
            api_version,
        } = &env.credentials
        else {
            return Err(
                "--tls-from-workload needs the IoT Edge workload API (IOTEDGE_WORKLOADURI)".into(),
            );
        };
        let dir = data_dir.join(TLS_DIR);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut t = WorkloadTls {
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
            client: WorkloadClient::new(socket.clone(), &env.module_id, generation_id, api_version),
            common_name: common_name.to_owned(),
            expires: None,
        };
        match tokio::time::timeout(ISSUE_WAIT, t.issue()).await {
            Ok(Ok(())) => Ok(t),
            failed => {
                let why = match failed {
                    Ok(Err(e)) => e,
                    _ => "the workload API did not answer".into(),
                };
                if t.cert.is_file() && t.key.is_file() {
                    tracing::warn!(error = %why, "server certificate not renewed at start; serving the last one");
                    Ok(t)
                } else {
                    Err(format!(
                        "no server certificate from the workload API: {why}"
                    ))
                }
            }
        }
    }

    async fn issue(&mut self) -> Result<(), String> {
        let asked = (Utc::now() + ASKED_VALIDITY).to_rfc3339();
        let issued = self
            .client
            .server_cert(&self.common_name, &asked)
            .await
            .map_err(|e| e.to_string())?;
        // Key first: a handshake that sees the new certificate with the old key would fail,
        // and the resolver keeps the old pair until both load and match.
        write_private(&self.key, &issued.key_pem)?;
        write_private(&self.cert, &issued.cert_pem)?;
        self.expires = DateTime::parse_from_rfc3339(&issued.expiration)
            .ok()
            .map(|t| t.with_timezone(&Utc));
        tracing::info!(
            common_name = %self.common_name,
            expires = %issued.expiration,
            "server certificate issued by the workload API"
        );
        Ok(())
    }

    /// Renews the certificate when 80 % of its life has passed, for ever.
    pub async fn renew(mut self) {
        loop {
            let wait = match self.expires {
                Some(t) => {
                    let left = (t - Utc::now()).to_std().unwrap_or_default();
                    left.mul_f64(0.8)
                }
                None => RETRY,
            };
            tokio::time::sleep(wait.max(Duration::from_secs(1))).await;
            if let Err(e) = self.issue().await {
                tracing::warn!(error = %e, "server certificate renewal failed; retrying");
                self.expires = None;
            }
        }
    }
}

/// Writes a file only its owner can read, atomically (a reader sees the old or the new one).
fn write_private(path: &Path, text: &str) -> Result<(), String> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension("new");
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| format!("{}: {e}", path.display()))
}
