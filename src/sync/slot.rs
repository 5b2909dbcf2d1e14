//! The sync service in force, if any: a registry becomes a child when a connection string
//! arrives (from the environment at start, or later from the module twin), and a new
//! connection string replaces the service without a restart of the process.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use super::SyncService;

/// Holds the current sync service; readers take a cheap clone of the `Arc`.
pub struct SyncSlot {
    current: RwLock<Option<Arc<SyncService>>>,
    /// Whether clients may write: a root always, a child as its policy's mode says.
    pub writable: Arc<AtomicBool>,
}

impl Default for SyncSlot {
    fn default() -> Self {
        SyncSlot {
            current: RwLock::new(None),
            writable: Arc::new(AtomicBool::new(true)),
        }
    }
}

impl SyncSlot {
    /// The sync service in force (`None`: this registry is a root).
    pub fn get(&self) -> Option<Arc<SyncService>> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Puts `next` in force and stops the service it replaces (its downloads keep their partial
    /// files); with no service left the registry is a root and clients may write.
    pub fn replace(&self, next: Option<Arc<SyncService>>) {
        if next.is_none() {
            self.writable.store(true, Ordering::Relaxed);
        }
        let old = match self.current.write() {
            Ok(mut g) => std::mem::replace(&mut *g, next),
            Err(p) => std::mem::replace(&mut *p.into_inner(), next),
        };
        if let Some(old) = old {
            old.shutdown();
        }
    }
}
