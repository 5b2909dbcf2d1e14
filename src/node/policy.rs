//! Keeping the policy sources fresh and the process-wide parts of the policy in force: the
//! policy file is re-read when it changes, and the log level follows the policy in force.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::sync::policy::{PolicyFile, PolicyHub, SyncPolicy};
use crate::sync::status::{DetailCode, Status};

/// How often the policy file is looked at.
const FILE_POLL: Duration = Duration::from_secs(1);

/// Re-reads the policy file when it changes and hands it to the hub; an invalid file keeps the
/// previous policy and says so in the status.
pub async fn watch_file(file: PolicyFile, hub: Arc<PolicyHub>, status: Arc<Status>) {
    let file = Arc::new(std::sync::Mutex::new(file));
    loop {
        tokio::time::sleep(FILE_POLL).await;
        let f = file.clone();
        let polled = tokio::task::spawn_blocking(move || match f.lock() {
            Ok(mut g) => g.poll(),
            Err(p) => p.into_inner().poll(),
        })
        .await;
        let Ok(Some(changed)) = polled else {
            continue;
        };
        match changed.and_then(|p| hub.set_file(p)) {
            Ok(()) => {
                // A valid file clears an earlier PolicyInvalid even when it was fixed back to
                // exactly the policy still in force.
                status.clear_details(|c| c == DetailCode::PolicyInvalid);
            }
            Err(e) => {
                tracing::error!(error = %e, "sync policy file invalid: keeping the previous policy");
                status.detail(DetailCode::PolicyInvalid, e.to_string());
            }
        }
    }
}

/// Puts the log level of every new policy in force.
pub async fn apply_log_level(mut rx: watch::Receiver<Arc<SyncPolicy>>) {
    let mut applied: Option<String> = None;
    loop {
        let level = rx.borrow_and_update().log_level.clone();
        if level.is_some() && level != applied {
            if let Some(l) = &level {
                match crate::config::logging::set_level(l) {
                    Ok(()) => tracing::info!(level = %l, "log level changed"),
                    Err(e) => tracing::warn!(error = %e, "log level not applied"),
                }
            }
            applied = level;
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}
