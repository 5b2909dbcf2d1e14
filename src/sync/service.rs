//! The sync service of a child registry: its own small runtime, the parent client, downloads,
//! and the scheduler that follows the policy hub. It runs the applier that puts each new policy
//! in force and the scheduler. The HTTP edge asks it for fetch-through and manual syncs.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use super::engine::Engine;
use super::parent::ParentClient;
use super::policy::{PolicyHub, SyncPolicy};
use super::scheduler::Signals;
use super::status::Status;
use super::transfer::{TransferSettings, Transfers};
use crate::config::{ConnectionString, Mode};
use crate::storage::Store;

/// Worker threads of the sync runtime: downloads are I/O bound, a gateway has few cores.
const SYNC_THREADS: usize = 2;

/// Why sync could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The parent client could not be built (bad CA file, bad endpoint).
    #[error("parent: {0}")]
    Parent(#[from] super::parent::ParentError),
    /// The sync runtime could not start.
    #[error("sync runtime: {0}")]
    Runtime(#[from] std::io::Error),
}

/// Everything a child registry's sync shares.
pub struct SyncService {
    /// The local store.
    pub store: Arc<Store>,
    /// The parent.
    pub parent: ParentClient,
    /// Blob downloads.
    pub transfers: Arc<Transfers>,
    /// What the registry reports.
    pub status: Arc<Status>,
    /// Whether clients may write (follows the policy's mode; shared with the HTTP edge).
    pub writable: Arc<AtomicBool>,
    /// The policy sources and the policy in force.
    pub hub: Arc<PolicyHub>,
    /// What the scheduler is asked to do.
    pub signals: Arc<Signals>,
    /// Sync passes.
    pub engine: Arc<Engine>,
    /// The connection string's registry name.
    pub name: String,
    runtime: tokio::runtime::Handle,
    stop_runtime: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
}

impl SyncService {
    /// Starts sync for a child of `conn`: builds the parent client and runs the scheduler, which
    /// follows `hub`'s policy, on a runtime of its own. `status` and `writable` outlive it (a new
    /// connection string starts a new service on the same ones).
    pub fn start(
        store: Arc<Store>,
        conn: &ConnectionString,
        hub: Arc<PolicyHub>,
        status: Arc<Status>,
        parent_ca: Option<&Path>,
        writable: Arc<AtomicBool>,
    ) -> Result<Arc<Self>, StartError> {
        let policy = hub.current();
        let parent = ParentClient::new(
            &conn.parent_endpoint,
            &conn.protocol,
            &conn.sync_token_name,
            &conn.sync_token_password,
            parent_ca,
        )?;
        let (runtime, stop) = runtime_thread()?;
        let settings = TransferSettings {
            chunk_size: policy.chunk_size,
            max_parallel: policy.max_parallel,
        };
        let transfers = Arc::new(Transfers::new(store.clone(), runtime.clone(), settings));
        transfers.limiter.set_rate(policy.bandwidth_limit);
        status.set_parent(parent.base_url());
        let engine = Arc::new(Engine {
            store: store.clone(),
            parent: parent.clone(),
            transfers: transfers.clone(),
            status: status.clone(),
        });
        let svc = Arc::new(SyncService {
            store,
            parent,
            transfers,
            status,
            writable,
            hub: hub.clone(),
            signals: Arc::new(Signals::default()),
            engine: engine.clone(),
            name: conn.registry_name.clone(),
            runtime: runtime.clone(),
            stop_runtime: Mutex::new(Some(stop)),
        });
        svc.put_in_force(&policy);
        tracing::info!(
            parent = %svc.parent.base_url(),
            repositories = ?policy.repositories.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
            mode = ?policy.mode,
            "sync enabled"
        );
        runtime.spawn(apply_policies(svc.clone(), hub.subscribe()));
        runtime.spawn(super::scheduler::run(
            engine,
            hub.subscribe(),
            svc.signals.clone(),
        ));
        Ok(svc)
    }

    /// The policy in force.
    pub fn policy(&self) -> Arc<SyncPolicy> {
        self.hub.current()
    }

    /// Puts the side effects of a policy in force: transfer settings, whether clients may
    /// write, what the status shows.
    fn put_in_force(&self, policy: &SyncPolicy) {
        self.transfers.configure(
            TransferSettings {
                chunk_size: policy.chunk_size,
                max_parallel: policy.max_parallel,
            },
            policy.bandwidth_limit,
        );
        self.writable
            .store(policy.mode == Mode::ReadWrite, Ordering::Relaxed);
        self.status.set_mode(&format!("{:?}", policy.mode));
        let names: Vec<String> = policy
            .repositories
            .iter()
            .map(|r| r.as_str().to_owned())
            .collect();
        self.status.set_repositories(&names);
    }

    /// Whether `repo` is synced from the parent (and so may be fetched through).
    pub fn serves(&self, repo: &str) -> bool {
        self.policy().includes_repository(repo)
    }

    /// Recomputes the outbox figures from the event log (blocking; cheap queries).
    pub fn refresh_outbox(&self, error: Option<Option<String>>) {
        self.engine.refresh_outbox(&self.policy(), error);
    }

    /// Asks for a sync now.
    pub fn request_sync(&self) {
        self.signals.request_manual();
    }

    /// Runs `fut` on the sync runtime and waits for it (from any runtime).
    pub async fn run<T: Send + 'static>(
        &self,
        fut: impl std::future::Future<Output = T> + Send + 'static,
    ) -> Option<T> {
        self.runtime.spawn(fut).await.ok()
    }

    /// Starts `fut` on the sync runtime without waiting for it.
    pub fn spawn(&self, fut: impl std::future::Future<Output = ()> + Send + 'static) {
        self.runtime.spawn(fut);
    }

    /// Stops the sync runtime (downloads keep their partial files for next time).
    pub fn shutdown(&self) {
        if let Ok(mut g) = self.stop_runtime.lock() {
            if let Some(tx) = g.take() {
                let _ = tx.send(());
            }
        }
    }
}

/// Puts every new policy in force.
async fn apply_policies(svc: Arc<SyncService>, mut rx: watch::Receiver<Arc<SyncPolicy>>) {
    while rx.changed().await.is_ok() {
        let p = rx.borrow_and_update().clone();
        tracing::info!(
            repositories = p.repositories.len(),
            mode = ?p.mode,
            from_parent = p.feed,
            "sync policy changed: applied"
        );
        svc.put_in_force(&p);
    }
}

/// A multi-threaded runtime on its own thread, so sync never competes with request handling
/// and is dropped outside any async context.
fn runtime_thread() -> std::io::Result<(tokio::runtime::Handle, tokio::sync::oneshot::Sender<()>)> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(SYNC_THREADS)
        .thread_name("sync")
        .enable_all()
        .build()?;
    let handle = rt.handle().clone();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("sync-runtime".into())
        .spawn(move || {
            rt.block_on(async {
                let _ = rx.await;
            });
            rt.shutdown_timeout(Duration::from_secs(2));
        })?;
    Ok((handle, tx))
}
