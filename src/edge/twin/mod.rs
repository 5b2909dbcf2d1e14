//! The module twin: desired properties in (a policy source), reported properties out (the
//! registry's status), over MQTT to edgeHub. The registry never depends on it: while edgeHub is
//! down, unreachable or refusing the token, the last applied desired properties stay in force
//! and the worker retries with backoff.

pub mod config;
pub mod desired;
pub mod reported;
mod session;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::config::iot_edge::ModuleEnv;
use crate::edge::sas::Signer;
use crate::sync::backoff;
use desired::Desired;

/// Default token lifetime (the SDKs' hour); the connection is renewed after 80 % of it.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(3600);
/// Least time between two reported patches.
pub const REPORT_EVERY: Duration = Duration::from_secs(5);
/// Longest pause between connection attempts.
const RETRY_CAP: Duration = Duration::from_secs(60);

/// What the twin needs from the registry (the consumer owns the interface).
pub trait TwinHost: Send + Sync + 'static {
    /// Puts desired properties (version `version`) in force; an error (why) leaves the
    /// configuration in force unchanged and is reported.
    fn apply_desired(&self, version: u64, doc: &Map<String, Value>) -> Result<(), String>;
    /// The reported properties as they are now.
    fn reported(&self) -> Map<String, Value>;
    /// The link to edgeHub is up.
    fn link_up(&self);
    /// The link to edgeHub is down (why).
    fn link_down(&self, why: &str);
    /// edgeHub refused the last reported patch (its status), or accepted one (`None`).
    fn reported_rejected(&self, status: Option<u16>);
}

/// The twin worker of one module.
pub struct TwinWorker {
    /// Who the module is and where edgeHub is.
    pub env: ModuleEnv,
    /// Signs tokens.
    pub signer: Signer,
    /// Trusts edgeHub.
    pub tls: Arc<rustls::ClientConfig>,
    /// The registry side.
    pub host: Arc<dyn TwinHost>,
    /// Token lifetime.
    pub token_ttl: Duration,
}

impl TwinWorker {
    /// Connects, follows the twin and reports, reconnecting for ever (with backoff after a
    /// failure, at once for a token renewal).
    pub async fn run(self) {
        let mut desired = Desired::default();
        let mut failures = 0u32;
        loop {
            let session = session::Session {
                env: &self.env,
                signer: &self.signer,
                tls: self.tls.clone(),
                host: &self.host,
                token_ttl: self.token_ttl,
                report_every: REPORT_EVERY,
            };
            match session.run(&mut desired).await {
                Ok(session::End::Renew) => {
                    failures = 0;
                    tracing::info!("module twin: renewing the edgeHub token");
                }
                Err(why) => {
                    failures += 1;
                    let wait = backoff::delay(failures, RETRY_CAP);
                    tracing::warn!(
                        error = %why,
                        retry_in_ms = wait.as_millis() as u64,
                        "module twin: edgeHub unavailable; serving and syncing with the last known configuration"
                    );
                    self.host.link_down(&why);
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}
