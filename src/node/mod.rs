//! A running registry's parts wired together: the policy hub and its sources (file, module
//! twin, command line, parent), the status, and the sync slot — a registry becomes a child when
//! a connection string is known (environment first, else the module twin), and a changed
//! connection string or trust bundle starts a new sync service without a process restart.
//! The notifier starts with the node and follows the policy in force.

pub mod module;
pub mod policy;
pub mod tls;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::config::{ConnectionString, Settings};
use crate::hierarchy::link;
use crate::storage::Store;
use crate::sync::policy::hub::Flags;
use crate::sync::policy::{FilePolicy, PolicyHub};
use crate::sync::status::Status;
use crate::sync::{SyncService, SyncSlot};

/// The connection strings known and the one in force.
#[derive(Default)]
struct Connections {
    /// `ACR_REGISTRY_CONNECTION_STRING`: wins over the twin.
    env: Option<ConnectionString>,
    /// The module twin's `connectionString`.
    twin: Option<ConnectionString>,
    /// What the sync in force was started with (and with which parent CA file).
    running: Option<(ConnectionString, Option<PathBuf>)>,
}

/// The registry's shared parts.
pub struct Node {
    /// The content store.
    pub store: Arc<Store>,
    /// The policy sources and the policy in force.
    pub hub: Arc<PolicyHub>,
    /// The sync service in force.
    pub slot: Arc<SyncSlot>,
    /// What the registry reports (sync and configuration conditions).
    pub status: Arc<Status>,
    login_server: Option<String>,
    parent_hostname: Option<String>,
    endpoint_override: Option<String>,
    /// CA file (PEM) trusted for the parent: `--parent-ca` and the IoT Edge trust bundle.
    parent_ca: Mutex<Option<PathBuf>>,
    connections: Mutex<Connections>,
}

impl Node {
    /// The parts for `settings`, with the policy file already read; starts the notifier.
    pub fn new(store: Arc<Store>, settings: &Settings, file: FilePolicy) -> Arc<Node> {
        let flags = Flags {
            mode: settings.mode_from_flag.then_some(settings.mode),
            log_level: settings.log_level_flag.clone(),
        };
        let hub = PolicyHub::new(file, flags);
        let mode = format!("{:?}", hub.current().mode);
        crate::notify::start(
            store.clone(),
            hub.subscribe(),
            settings.access.login_server.clone(),
        );
        Arc::new(Node {
            store,
            hub,
            slot: Arc::new(SyncSlot::default()),
            status: Arc::new(Status::new(&mode, "")),
            login_server: settings.access.login_server.clone(),
            parent_hostname: settings.parent_hostname.clone(),
            endpoint_override: settings.parent_endpoint_override.clone(),
            parent_ca: Mutex::new(settings.parent_ca.clone()),
            connections: Mutex::new(Connections {
                env: settings.parent.clone(),
                ..Connections::default()
            }),
        })
    }

    /// Parses a connection string as the environment's is (with `$IOTEDGE_PARENTHOSTNAME` and
    /// `ACR_PARENT_GATEWAY_ENDPOINT` applied).
    pub fn parse_connection(&self, text: &str) -> Result<ConnectionString, String> {
        ConnectionString::parse(
            text,
            self.parent_hostname.as_deref(),
            self.endpoint_override.as_deref(),
        )
        .map_err(|e| {
            e.to_string()
                .replace("ACR_REGISTRY_CONNECTION_STRING", "connectionString")
        })
    }

    /// Sets the twin's connection string and puts the one in force that should be.
    pub fn set_twin_connection(&self, conn: Option<ConnectionString>) -> Result<(), String> {
        let previous = std::mem::replace(&mut lock(&self.connections).twin, conn);
        self.refresh_sync().inspect_err(|_| {
            lock(&self.connections).twin = previous;
        })
    }

    /// Sets the CA file trusted for the parent from the next start of sync on.
    pub fn use_parent_ca(&self, ca: Option<PathBuf>) {
        *lock(&self.parent_ca) = ca;
    }

    /// Starts sync again as it is (its parent CA file changed on disk).
    pub fn restart_sync(&self) -> Result<(), String> {
        lock(&self.connections).running = None;
        self.refresh_sync()
    }

    /// Starts, replaces or stops sync so it follows the connection string in force.
    pub fn refresh_sync(&self) -> Result<(), String> {
        let ca = lock(&self.parent_ca).clone();
        let mut c = lock(&self.connections);
        let wanted = c.env.clone().or_else(|| c.twin.clone());
        let wanted = wanted.map(|w| (w, ca));
        if wanted == c.running {
            return Ok(());
        }
        let next = match &wanted {
            Some((conn, ca)) => Some(self.start_sync(conn, ca.clone())?),
            None => None,
        };
        if next.is_none() && c.running.is_some() {
            tracing::warn!("no connection string any more: this registry is now a root");
        }
        self.slot.replace(next);
        c.running = wanted;
        Ok(())
    }

    fn start_sync(
        &self,
        conn: &ConnectionString,
        ca: Option<PathBuf>,
    ) -> Result<Arc<SyncService>, String> {
        let svc = SyncService::start(
            self.store.clone(),
            conn,
            self.hub.clone(),
            self.status.clone(),
            ca.as_deref(),
            self.slot.writable.clone(),
        )
        .map_err(|e| e.to_string())?;
        svc.spawn(
            link::Link {
                svc: svc.clone(),
                login_server: self.login_server.clone(),
            }
            .run(),
        );
        Ok(svc)
    }

    /// The login server configured, if any.
    pub fn login_server(&self) -> Option<String> {
        self.login_server.clone()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}
