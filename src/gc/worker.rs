//! Scheduled passes: one at every occurrence of `gc.schedule` while `gc.enabled`, following the
//! policy in force (file, twin, root) without a restart.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use super::PassError;
use crate::node::Node;
use crate::storage::metadata::LeaseName;

/// Longest single sleep, so a clock change or a suspended gateway is noticed within it.
const MAX_SLEEP: Duration = Duration::from_secs(300);

/// Runs scheduled passes until the process stops.
pub async fn run(node: Arc<Node>, upload_max_age: Duration) {
    let mut policy = node.hub.subscribe();
    loop {
        let gc = policy.borrow_and_update().gc.clone();
        let next = gc
            .enabled
            .then(|| gc.schedule.next_start(Utc::now()))
            .flatten();
        let Some(next) = next else {
            // Disabled (or a pattern that never fires again): wait for a new policy.
            if policy.changed().await.is_err() {
                return;
            }
            continue;
        };
        let wait = (next - Utc::now()).to_std().unwrap_or(Duration::ZERO);
        tokio::select! {
            changed = policy.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = tokio::time::sleep(wait.min(MAX_SLEEP)) => {
                if Utc::now() >= next {
                    pass(&node, upload_max_age).await;
                }
            }
        }
    }
}

/// One scheduled pass on the blocking pool; a pass already running (`gc run`) skips this one.
async fn pass(node: &Arc<Node>, upload_max_age: Duration) {
    let options = super::options(
        &node.hub.current(),
        upload_max_age,
        node.slot.get().is_some(),
        false,
    );
    let store = node.store.clone();
    let leased = move || match store.meta.try_lease(LeaseName::Gc) {
        Ok(Some(_lease)) => Some(super::run_pass(&store, &options, false)),
        Ok(None) => None,
        Err(e) => Some(Err(PassError::from(e))),
    };
    match tokio::task::spawn_blocking(leased).await {
        Ok(None) => {
            tracing::info!("scheduled garbage collection skipped: another replica runs it")
        }
        Ok(Some(Ok(_))) => {}
        Ok(Some(Err(PassError::Busy))) => {
            tracing::info!("scheduled garbage collection skipped: another pass is running")
        }
        Ok(Some(Err(e))) => tracing::warn!(error = %e, "garbage collection pass failed"),
        Err(e) => tracing::warn!(error = %e, "garbage collection task failed"),
    }
}
