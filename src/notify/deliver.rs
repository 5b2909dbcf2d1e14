//! One endpoint's delivery: read the event log after its cursor, filter, POST in order, and
//! move the cursor only once the endpoint answered 2xx — so nothing is lost across restarts or
//! while the endpoint is down (at least once, in order).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::config::Endpoint;
use super::envelope::{notices, Envelope, Notice, Source};
use crate::storage::metadata::{Event, StateKey};
use crate::storage::Store;

/// Log events read at once.
const PAGE: usize = 256;
/// Events in one POST at most.
pub const BATCH: usize = 32;
/// The first pause after a failure; it doubles up to the endpoint's `max_backoff`.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);

/// Why a POST or a log read failed (one line, never a URL or header value).
#[derive(Debug, thiserror::Error)]
enum DeliverError {
    #[error("{0}")]
    Http(String),
    #[error("the endpoint answered {0}")]
    Status(reqwest::StatusCode),
    #[error("event log: {0}")]
    Store(String),
}

/// One endpoint's delivery task.
pub struct Worker {
    /// The store whose event log is delivered.
    pub store: Arc<Store>,
    /// The endpoint.
    pub endpoint: Endpoint,
    /// The shared HTTP client.
    pub client: reqwest::Client,
    /// The `source` of the events.
    pub source: Arc<Source>,
    /// The newest event's sequence number, as last polled.
    pub newest: watch::Receiver<i64>,
}

impl Worker {
    /// Delivers until the task is aborted (endpoint removed or changed) or the log poller stops.
    pub async fn run(mut self) {
        let mut cursor = self.start().await;
        let mut failing = false;
        loop {
            let page = match self.page(cursor).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(endpoint = %self.endpoint.name, error = %e, "notifications: cannot read the event log");
                    tokio::time::sleep(FIRST_BACKOFF).await;
                    continue;
                }
            };
            let Some(last) = page.last().map(|e| e.seq) else {
                if self.newest.wait_for(|n| *n > cursor).await.is_err() {
                    return;
                }
                continue;
            };
            let selected: Vec<Notice> = notices(&page, &self.source)
                .into_iter()
                .filter(|n| self.endpoint.selects(n))
                .collect();
            for batch in selected.chunks(BATCH) {
                self.deliver(batch, &mut failing).await;
                cursor = batch.last().map_or(cursor, |n| n.seq);
                self.save(cursor).await;
            }
            // Events nobody selected move the cursor too, so they are not read again.
            if cursor < last {
                cursor = last;
                self.save(cursor).await;
            }
        }
    }

    /// The stored cursor; a new endpoint starts at the log's current end (history is not
    /// replayed) and stores that start at once, so what follows is delivered even after a
    /// restart.
    async fn start(&self) -> i64 {
        let name = self.endpoint.name.clone();
        let mut pause = FIRST_BACKOFF;
        loop {
            let (s, n) = (self.store.clone(), name.clone());
            let r = blocking(move || {
                let key = StateKey::NotifyCursor(&n);
                if let Some(v) = s.meta.sync_state(&key)? {
                    if let Ok(c) = v.parse::<i64>() {
                        return Ok((c, false));
                    }
                }
                let end = s.meta.newest_event_seq()?;
                s.meta.set_sync_state(&key, Some(&end.to_string()))?;
                Ok((end, true))
            })
            .await;
            match r {
                Ok((cursor, fresh)) => {
                    let how = if fresh { "new endpoint" } else { "resuming" };
                    tracing::info!(endpoint = %name, after = cursor, "notifications: {how}: delivering events after {cursor}");
                    return cursor;
                }
                Err(e) => {
                    tracing::warn!(endpoint = %name, error = %e, "notifications: cannot read the delivery cursor");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(self.endpoint.max_backoff);
                }
            }
        }
    }

    async fn page(&self, cursor: i64) -> Result<Vec<Event>, DeliverError> {
        let s = self.store.clone();
        blocking(move || s.meta.events_after(cursor, PAGE)).await
    }

    /// Stores the cursor; a failure only means those events may be delivered again after a
    /// restart.
    async fn save(&self, cursor: i64) {
        let (s, n) = (self.store.clone(), self.endpoint.name.clone());
        let r = blocking(move || {
            let key = StateKey::NotifyCursor(&n);
            s.meta.set_sync_state(&key, Some(&cursor.to_string()))
        })
        .await;
        if let Err(e) = r {
            tracing::warn!(endpoint = %self.endpoint.name, error = %e, "notifications: cannot store the delivery cursor");
        }
    }

    /// POSTs one batch until the endpoint takes it, pausing longer after each failure. One
    /// line when the endpoint starts failing and one when it recovers.
    async fn deliver(&self, batch: &[Notice], failing: &mut bool) {
        let name = &self.endpoint.name;
        let body = match serde_json::to_vec(&Envelope { events: batch }) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(endpoint = %name, error = %e, "notifications: cannot encode events; skipped");
                return;
            }
        };
        let mut pause = FIRST_BACKOFF;
        loop {
            match self.post(body.clone()).await {
                Ok(()) => {
                    if std::mem::take(failing) {
                        tracing::info!(endpoint = %name, "notifications: endpoint recovered");
                    }
                    tracing::debug!(endpoint = %name, events = batch.len(), last = batch.last().map_or(0, |n| n.seq), "notifications delivered");
                    return;
                }
                Err(e) => {
                    if !std::mem::replace(failing, true) {
                        tracing::info!(endpoint = %name, error = %e, "notifications: endpoint failing; retrying with backoff until it answers");
                    } else {
                        tracing::debug!(endpoint = %name, error = %e, retry_in = ?pause, "notifications: still failing");
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(self.endpoint.max_backoff);
                }
            }
        }
    }

    async fn post(&self, body: Vec<u8>) -> Result<(), DeliverError> {
        let ep = &self.endpoint;
        let mut req = self
            .client
            .post(ep.url.clone())
            .timeout(ep.timeout)
            .header(reqwest::header::CONTENT_TYPE, ep.content_type.as_str());
        for (k, v) in &ep.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let resp = req
            .body(body)
            .send()
            .await
            .map_err(|e| DeliverError::Http(e.without_url().to_string()))?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(DeliverError::Status(resp.status()))
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, crate::storage::StorageError> + Send + 'static,
) -> Result<T, DeliverError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(|e| DeliverError::Store(e.to_string())),
        Err(e) => Err(DeliverError::Store(e.to_string())),
    }
}
