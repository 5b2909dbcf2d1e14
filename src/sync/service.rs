//! The sync service of a child registry: its own small runtime, the parent client, the policy
//! in force, downloads and status. The HTTP edge asks it for fetch-through; the scheduler
//! drives pull-down.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::Notify;

use super::parent::ParentClient;
use super::policy::{PolicyFile, SyncPolicy};
use super::status::Status;
use super::transfer::{TransferSettings, Transfers};
use crate::config::{ConnectionString, Mode};
use crate::storage::Store;

/// Worker threads of the sync runtime: downloads are I/O bound, a gateway has few cores.
const SYNC_THREADS: usize = 2;

/// Why sync could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The sync policy file is invalid (the message names the key).
    #[error("{0}")]
    Policy(#[from] crate::config::ConfigError),
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
    policy: RwLock<Arc<SyncPolicy>>,
    runtime: tokio::runtime::Handle,
    /// Wakes the scheduler for an immediate sync (`POST /acr/v1/sync`).
    pub trigger: Notify,
    /// Set when a sync was asked for and not yet started.
    pub requested: AtomicBool,
    stop_runtime: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
}

impl SyncService {
    /// Starts sync for a child of `conn`: loads the policy (an invalid file is a startup error),
    /// builds the parent client and runs the scheduler on a runtime of its own.
    pub fn start(
        store: Arc<Store>,
        conn: &ConnectionString,
        config_file: Option<PathBuf>,
        parent_ca: Option<PathBuf>,
        mode_override: Option<Mode>,
    ) -> Result<Arc<Self>, StartError> {
        let mut file = PolicyFile::new(config_file);
        let mut policy = match file.poll() {
            Some(r) => r?,
            None => SyncPolicy::default(),
        };
        if let Some(m) = mode_override {
            policy.mode = m;
        }
        let parent = ParentClient::new(
            &conn.parent_endpoint,
            &conn.protocol,
            &conn.sync_token_name,
            &conn.sync_token_password,
            parent_ca.as_deref(),
        )?;
        let (runtime, stop) = runtime_thread()?;
        let settings = TransferSettings {
            chunk_size: policy.chunk_size,
            max_parallel: policy.max_parallel,
        };
        let transfers = Arc::new(Transfers::new(store.clone(), runtime.clone(), settings));
        transfers.limiter.set_rate(policy.bandwidth_limit);
        let status = Arc::new(Status::new(
            &format!("{:?}", policy.mode),
            parent.base_url(),
        ));
        let names: Vec<String> = policy
            .repositories
            .iter()
            .map(|r| r.as_str().to_owned())
            .collect();
        status.set_repositories(&names);
        let svc = Arc::new(SyncService {
            store,
            parent,
            transfers,
            status,
            writable: Arc::new(AtomicBool::new(policy.mode == Mode::ReadWrite)),
            policy: RwLock::new(Arc::new(policy)),
            runtime: runtime.clone(),
            trigger: Notify::new(),
            requested: AtomicBool::new(false),
            stop_runtime: Mutex::new(Some(stop)),
        });
        tracing::info!(
            parent = %svc.parent.base_url(),
            repositories = ?names,
            mode = ?svc.policy().mode,
            "sync enabled"
        );
        runtime.spawn(super::scheduler::run(svc.clone(), file, mode_override));
        Ok(svc)
    }

    /// The policy in force.
    pub fn policy(&self) -> Arc<SyncPolicy> {
        match self.policy.read() {
            Ok(p) => p.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Puts a new policy in force (a changed config file).
    pub fn apply(&self, policy: SyncPolicy) {
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
        match self.policy.write() {
            Ok(mut p) => *p = Arc::new(policy),
            Err(p) => *p.into_inner() = Arc::new(policy),
        }
    }

    /// Whether `repo` is synced from the parent (and so may be fetched through).
    pub fn serves(&self, repo: &str) -> bool {
        self.policy().includes_repository(repo)
    }

    /// Recomputes the outbox figures from the event log (blocking; cheap queries). In
    /// ReadOnly there is no outbox. `error` replaces the last push-up error when given.
    pub fn refresh_outbox(&self, error: Option<Option<String>>) {
        let policy = self.policy();
        if policy.mode != Mode::ReadWrite {
            return;
        }
        let meta = &self.store.meta;
        let (mut count, mut bytes, mut oldest) = (0u64, 0u64, None::<i64>);
        for repo in &policy.repositories {
            let name = repo.as_str();
            let cursor = meta
                .sync_state(&super::pushup::cursor_key(name))
                .ok()
                .flatten()
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or(0);
            if let Ok((n, first)) = meta.outbox_size(name, cursor) {
                count += n;
                oldest = match (oldest, first) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
            bytes += meta.outbox_bytes(name, cursor).unwrap_or(0);
        }
        let age = oldest.map(|t| (crate::storage::fsutil::now_secs() - t).max(0) as u64);
        self.status.set_outbox(count, bytes, age, error);
    }

    /// Asks for a sync now.
    pub fn request_sync(&self) {
        self.requested.store(true, Ordering::SeqCst);
        self.trigger.notify_one();
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
