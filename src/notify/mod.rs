//! Notifications: every push, delete and sync-made change of the event log POSTed to the
//! configured endpoints in distribution's envelope, filtered with ACR's patterns.
//!
//! The endpoints come from the policy in force (`[[notifications]]` of the file, the module
//! twin's `notifications`, the root's `--notifications` patterns; see `sync::policy::hub`).
//! One task follows the policy and runs one [`deliver::Worker`] per endpoint, each with its own
//! cursor in the sync state table; one poller watches the log's newest sequence number so the
//! workers wake promptly on new events.

pub mod config;
pub mod deliver;
pub mod envelope;
pub mod pattern;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use config::{ContentType, Endpoint};
pub use pattern::{Pattern, PatternError};

use crate::storage::Store;
use crate::sync::policy::SyncPolicy;
use envelope::Source;

/// How often the log's newest sequence number is read while some endpoint waits.
const POLL: Duration = Duration::from_millis(250);
/// Time to connect to an endpoint.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What a notification says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// A manifest pushed or a tag set (or moved).
    Push,
    /// A manifest or a tag deleted.
    Delete,
}

/// Starts the notifier on the current Tokio runtime (none: nothing is started); it follows
/// `policy` until the process stops. `login_server` is the events' `source.addr`.
pub fn start(
    store: Arc<Store>,
    policy: watch::Receiver<Arc<SyncPolicy>>,
    login_server: Option<String>,
) {
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => {
            rt.spawn(run(store, policy, login_server));
        }
        Err(_) => tracing::warn!("notifications not started: no async runtime"),
    }
}

/// Runs one delivery task per configured endpoint, started, replaced and stopped as the policy
/// changes.
pub async fn run(
    store: Arc<Store>,
    mut policy: watch::Receiver<Arc<SyncPolicy>>,
    login_server: Option<String>,
) {
    let client = match http_client() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "notifications disabled: cannot build the HTTP client");
            return;
        }
    };
    let (newest, _) = watch::channel(0_i64);
    let poller = tokio::spawn(poll_newest(store.clone(), newest.clone()));
    let mut running: HashMap<String, (Endpoint, JoinHandle<()>)> = HashMap::new();
    let mut source: Option<Arc<Source>> = None;
    loop {
        let wanted = policy.borrow_and_update().notifications.clone();
        if !wanted.is_empty() && source.is_none() {
            source = Some(Arc::new(load_source(&store, login_server.clone()).await));
        }
        running.retain(|name, (e, task)| {
            let keep = wanted.iter().any(|w| w == e) && !task.is_finished();
            if !keep {
                task.abort();
                tracing::info!(endpoint = %name, "notifications: endpoint stopped");
            }
            keep
        });
        for e in wanted {
            if running.contains_key(&e.name) {
                continue;
            }
            let worker = deliver::Worker {
                store: store.clone(),
                endpoint: e.clone(),
                client: client.clone(),
                source: source.clone().unwrap_or_default(),
                newest: newest.subscribe(),
            };
            running.insert(e.name.clone(), (e, tokio::spawn(worker.run())));
        }
        if policy.changed().await.is_err() {
            break;
        }
    }
    for (_, (_, task)) in running {
        task.abort();
    }
    poller.abort();
}

/// The instance id (made once per data directory) and the login server.
async fn load_source(store: &Arc<Store>, addr: Option<String>) -> Source {
    let s = store.clone();
    let instance_id = tokio::task::spawn_blocking(move || crate::hierarchy::link::instance_id(&s))
        .await
        .unwrap_or_default();
    Source { instance_id, addr }
}

/// Publishes the log's newest sequence number while some worker waits on it.
async fn poll_newest(store: Arc<Store>, tx: watch::Sender<i64>) {
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if tx.receiver_count() == 0 {
            continue;
        }
        let s = store.clone();
        if let Ok(Ok(n)) = tokio::task::spawn_blocking(move || s.meta.newest_event_seq()).await {
            tx.send_if_modified(|old| std::mem::replace(old, n) != n);
        }
    }
}

/// One client for every endpoint: rustls, no redirects (a redirect is not a delivery).
fn http_client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .user_agent(concat!("connected-registry/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(CONNECT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
}
