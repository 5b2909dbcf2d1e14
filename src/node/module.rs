//! The registry as an IoT Edge module: identity and trust from the workload API, the module
//! twin's desired properties as a policy source (persisted, so a restart without edgeHub keeps
//! them), and the status as reported properties.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Map, Value};

use super::{lock, Node};
use crate::config::iot_edge::{ModuleCredentials, ModuleEnv};
use crate::edge::sas::Signer;
use crate::edge::trust;
use crate::edge::twin::config::DesiredConfig;
use crate::edge::twin::{TwinHost, TwinWorker};
use crate::edge::workload::WorkloadClient;
use crate::hierarchy::report::{Report, StorageReport};
use crate::storage::metadata::StateKey;
use crate::sync::status::DetailCode;

/// The parent CA file written in the data directory: `--parent-ca` and the trust bundle.
const PARENT_CA_FILE: &str = "edge-parent-ca.pem";
/// How long startup waits for the workload API's trust bundle.
const TRUST_WAIT: Duration = Duration::from_secs(10);
/// How often a missing trust bundle is asked for again.
const TRUST_RETRY: Duration = Duration::from_secs(10);
/// How often the trust bundle is fetched again (the IoT Edge CA can be renewed).
const TRUST_REFRESH: Duration = Duration::from_secs(300);
/// How long the storage figures of a report are reused (summing content is one query over
/// every blob).
const STORAGE_FRESH: Duration = Duration::from_secs(30);

/// The module side of the twin.
pub struct Module {
    node: Arc<Node>,
    /// Version of the desired properties in force.
    applied: Mutex<Option<u64>>,
    /// The twin's policy keys in force (restored when a later document fails to apply).
    policy: Mutex<Option<toml::Table>>,
    /// The last storage figures and when they were taken.
    storage: Mutex<Option<(std::time::Instant, StorageReport)>>,
}

/// Persisted desired properties.
#[derive(serde::Serialize, serde::Deserialize)]
struct Saved {
    version: u64,
    desired: Map<String, Value>,
}

impl Module {
    /// Starts the module's IoT Edge parts: trust (workload API or CA file, the last bundle when
    /// the daemon is unreachable), the persisted desired properties, and the twin worker on a
    /// thread of its own. Sync must be started (`refresh_sync`) after this returns.
    pub async fn start(
        node: Arc<Node>,
        env: ModuleEnv,
        data_dir: &Path,
        token_ttl: Duration,
    ) -> Arc<Module> {
        let module = Arc::new(Module {
            node: node.clone(),
            applied: Mutex::new(None),
            policy: Mutex::new(None),
            storage: Mutex::new(None),
        });
        let (signer, bundle) = match &env.credentials {
            ModuleCredentials::Workload {
                socket,
                generation_id,
                api_version,
            } => {
                let w =
                    WorkloadClient::new(socket.clone(), &env.module_id, generation_id, api_version);
                let bundle = module.trust_bundle(&w).await;
                (Signer::Workload(w), bundle)
            }
            ModuleCredentials::Key { key, ca_file } => {
                let bundle = ca_file
                    .as_ref()
                    .and_then(|f| std::fs::read_to_string(f).ok());
                (Signer::Key(key.clone()), bundle)
            }
        };
        if let Some(pem) = &bundle {
            // Sync starts later, after the kept desired properties are back: a first pass under
            // the file's policy alone could drop what the twin asked to mirror.
            module.trust_parent(pem, data_dir, false);
        }
        module.restore();
        let worker = TwinStarter {
            module: module.clone(),
            env,
            signer,
            bundle,
            token_ttl,
            data_dir: data_dir.to_owned(),
        };
        if let Err(e) = std::thread::Builder::new()
            .name("module-twin".into())
            .spawn(move || worker.run())
        {
            tracing::error!(error = %e, "module twin: cannot start its thread");
        }
        module
    }

    /// The workload API's trust bundle, kept for restarts; the kept one when the daemon does not
    /// answer.
    async fn trust_bundle(&self, w: &WorkloadClient) -> Option<String> {
        match self.fetch_trust(w).await {
            Ok(pem) => Some(pem),
            Err(_) => self
                .node
                .store
                .meta
                .sync_state(&StateKey::EdgeTrustBundle)
                .ok()
                .flatten(),
        }
    }

    /// A fresh trust bundle from the workload API, kept when it changed; a failure is logged
    /// and shown in the status.
    async fn fetch_trust(&self, w: &WorkloadClient) -> Result<String, String> {
        let status = &self.node.status;
        let pem = match tokio::time::timeout(TRUST_WAIT, w.trust_bundle()).await {
            Ok(Ok(pem)) => pem,
            failed => {
                let why = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => "the workload API did not answer".to_owned(),
                };
                tracing::warn!(error = %why, "trust bundle unavailable; using the kept one, if any");
                status.detail(DetailCode::TrustBundleUnavailable, why.clone());
                return Err(why);
            }
        };
        let meta = &self.node.store.meta;
        let key = StateKey::EdgeTrustBundle;
        if meta.sync_state(&key).ok().flatten().as_deref() != Some(pem.as_str()) {
            if let Err(e) = meta.set_sync_state(&key, Some(&pem)) {
                tracing::warn!(error = %e, "could not keep the trust bundle");
            }
        }
        status.clear_details(|c| c == DetailCode::TrustBundleUnavailable);
        Ok(pem)
    }

    /// Trusts the bundle (with `--parent-ca`) for the parent's HTTPS; `running` restarts sync
    /// when the bundle changed.
    fn trust_parent(&self, bundle: &str, data_dir: &Path, running: bool) {
        let own = lock(&self.node.parent_ca)
            .clone()
            .filter(|p| !p.ends_with(PARENT_CA_FILE));
        let mut pem = own
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default();
        if !pem.is_empty() && !pem.ends_with('\n') {
            pem.push('\n');
        }
        pem.push_str(bundle);
        let path = data_dir.join(PARENT_CA_FILE);
        let same = std::fs::read_to_string(&path).is_ok_and(|old| old == pem);
        if !same {
            if let Err(e) = write_synced(&path, &pem) {
                tracing::error!(error = %e, file = %path.display(), "cannot write the parent CA file");
                return;
            }
        }
        self.node.use_parent_ca(Some(path));
        if !running {
            return;
        }
        // The parent client reads the file when sync starts: a changed bundle restarts it once.
        let result = if same {
            self.node.refresh_sync()
        } else {
            self.node.restart_sync()
        };
        if let Err(e) = result {
            tracing::error!(error = %e, "sync could not restart with the new trust bundle");
        }
    }

    /// Puts the persisted desired properties back in force.
    fn restore(&self) {
        let meta = &self.node.store.meta;
        let saved = meta.sync_state(&StateKey::EdgeTwin).ok().flatten();
        let Some(saved) = saved.and_then(|t| serde_json::from_str::<Saved>(&t).ok()) else {
            return;
        };
        match self.apply(&saved.desired) {
            Ok(()) => {
                *lock(&self.applied) = Some(saved.version);
                tracing::info!(
                    version = saved.version,
                    "module twin: last desired properties restored"
                );
            }
            Err(e) => {
                tracing::warn!(error = %e, "module twin: kept desired properties no longer apply")
            }
        }
    }

    fn apply(&self, doc: &Map<String, Value>) -> Result<(), String> {
        let cfg = DesiredConfig::parse(doc)?;
        let conn = match &cfg.connection_string {
            Some(text) => Some(self.node.parse_connection(text)?),
            None => None,
        };
        let previous = lock(&self.policy).clone();
        self.node
            .hub
            .set_twin(Some(cfg.policy.clone()))
            .map_err(|e| e.to_string())?;
        if let Err(e) = self.node.set_twin_connection(conn) {
            let _ = self.node.hub.set_twin(previous);
            return Err(e);
        }
        *lock(&self.policy) = Some(cfg.policy);
        Ok(())
    }

    fn storage(&self) -> StorageReport {
        let mut g = lock(&self.storage);
        if let Some((at, s)) = g.as_ref() {
            if at.elapsed() < STORAGE_FRESH {
                return s.clone();
            }
        }
        let s = StorageReport {
            used_bytes: self.node.store.meta.content_bytes().unwrap_or(0),
            free_bytes: self.node.store.free_bytes().unwrap_or(0),
        };
        *g = Some((std::time::Instant::now(), s.clone()));
        s
    }

    fn save(&self, version: u64, doc: &Map<String, Value>) {
        let saved = Saved {
            version,
            desired: doc.clone(),
        };
        let text = serde_json::to_string(&saved).unwrap_or_default();
        let meta = &self.node.store.meta;
        if let Err(e) = meta.set_sync_state(&StateKey::EdgeTwin, Some(&text)) {
            tracing::warn!(error = %e, "module twin: could not keep the desired properties");
        }
    }
}

impl TwinHost for Module {
    fn apply_desired(&self, version: u64, doc: &Map<String, Value>) -> Result<(), String> {
        let status = &self.node.status;
        match self.apply(doc) {
            Ok(()) => {
                *lock(&self.applied) = Some(version);
                self.save(version, doc);
                status.clear_details(|c| c == DetailCode::DesiredPropertiesInvalid);
                Ok(())
            }
            Err(e) => {
                let why = format!("desired properties version {version} not applied: {e}");
                status.detail(DetailCode::DesiredPropertiesInvalid, why.clone());
                Err(why)
            }
        }
    }

    fn reported(&self) -> Map<String, Value> {
        let node = &self.node;
        let sync = node.slot.get();
        if let Some(svc) = &sync {
            // The outbox grows with every client push: count it now.
            svc.refresh_outbox(None);
        }
        let mut report = node.status.report();
        if sync.is_none() {
            // A root has no parent to be connected to: it is Online while it serves.
            report.connection_state = crate::sync::ConnectionState::Online;
            report.mode = "ReadWrite".into();
        }
        let storage = self.storage();
        let r = Report::from_status(&report, node.login_server(), storage);
        let mut map = match serde_json::to_value(r) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        };
        map.insert("appliedDesiredVersion".into(), json!(*lock(&self.applied)));
        map.insert(
            "parent".into(),
            json!(sync.map(|s| s.parent.base_url().to_owned())),
        );
        map
    }

    fn link_up(&self) {
        self.node
            .status
            .clear_details(|c| c == DetailCode::EdgeHubUnavailable);
    }

    fn link_down(&self, why: &str) {
        self.node.status.detail(DetailCode::EdgeHubUnavailable, why);
    }

    fn reported_rejected(&self, status: Option<u16>) {
        match status {
            Some(s) => self.node.status.detail(
                DetailCode::ReportedPropertiesRefused,
                format!("edgeHub refused the reported properties ({s})"),
            ),
            None => self
                .node
                .status
                .clear_details(|c| c == DetailCode::ReportedPropertiesRefused),
        }
    }
}

/// What the twin thread needs to start.
struct TwinStarter {
    module: Arc<Module>,
    env: ModuleEnv,
    signer: Signer,
    bundle: Option<String>,
    token_ttl: Duration,
    data_dir: PathBuf,
}

impl TwinStarter {
    /// Runs the twin worker on a small runtime of its own (its status queries may block).
    fn run(self) {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(error = %e, "module twin: no runtime");
                return;
            }
        };
        rt.block_on(self.work());
    }

    async fn work(mut self) {
        if let Signer::Workload(w) = &self.signer {
            // A bundle kept from an earlier run is used, but asked for again soon.
            let fresh = !self
                .module
                .node
                .status
                .report()
                .status_details
                .iter()
                .any(|d| d.code == DetailCode::TrustBundleUnavailable.as_str());
            tokio::spawn(refresh_trust(
                self.module.clone(),
                w.clone(),
                self.data_dir.clone(),
                fresh,
            ));
        }
        let tls = loop {
            let parsed = self.bundle.as_deref().map(trust::client_config);
            match parsed {
                Some(Ok(tls)) => break tls,
                other => {
                    if let Some(Err(e)) = other {
                        tracing::error!(error = %e, "module twin: the trust bundle is unusable");
                    }
                    tokio::time::sleep(TRUST_RETRY).await;
                    if let Signer::Workload(w) = &self.signer {
                        self.bundle = self.module.trust_bundle(w).await;
                        if let Some(pem) = &self.bundle {
                            self.module.trust_parent(pem, &self.data_dir, true);
                        }
                    }
                }
            }
        };
        TwinWorker {
            env: self.env,
            signer: self.signer,
            tls,
            host: self.module.clone(),
            token_ttl: self.token_ttl,
        }
        .run()
        .await;
    }
}

/// Fetches the trust bundle again from time to time (sooner while it is missing), so a renewed
/// IoT Edge CA reaches the parent client and the status stops saying it is unavailable.
async fn refresh_trust(module: Arc<Module>, w: WorkloadClient, data_dir: PathBuf, mut fresh: bool) {
    loop {
        tokio::time::sleep(if fresh { TRUST_REFRESH } else { TRUST_RETRY }).await;
        let fetched = module.fetch_trust(&w).await;
        fresh = fetched.is_ok();
        if let Ok(pem) = fetched {
            module.trust_parent(&pem, &data_dir, true);
        }
    }
}

/// Writes a small file and makes it durable.
/// The module twin's desired properties the registry last applied, as kept in the data
/// directory (for commands that run beside the server and read the same configuration).
pub fn saved_desired(store: &crate::storage::Store) -> Option<DesiredConfig> {
    let text = store.meta.sync_state(&StateKey::EdgeTwin).ok().flatten()?;
    let saved: Saved = serde_json::from_str(&text).ok()?;
    DesiredConfig::parse(&saved.desired).ok()
}

fn write_synced(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut f = std::fs::File::create(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}
