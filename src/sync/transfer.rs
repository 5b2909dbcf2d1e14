//! Blob downloads from the parent: one per digest however many ask, in ranged chunks that
//! resume from the last byte written (`partial/`), within the bandwidth limit.
//!
//! Readers (fetch-through clients) can follow a download while it is written: the state says
//! how many bytes of the partial file are on disk and, once known, the blob's size.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{watch, Semaphore};

use super::error::SyncError;
use super::limiter::Limiter;
use super::parent::ParentClient;
use super::status::{DetailCode, Progress};
use crate::registry::Digest;
use crate::storage::writer::BlobWriter;
use crate::storage::StorageError;
use crate::storage::Store;

/// Bytes gathered before the partial file is written, so followers see progress.
const PUBLISH_EVERY: u64 = 256 * 1024;
/// Consecutive failures without progress before a download gives up (the next sync retries).
const MAX_ATTEMPTS: u32 = 6;
/// Pace of progress log lines for long downloads.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// A flag that stops downloads at the next chunk (window closed, shutdown).
pub type Stop = Arc<AtomicBool>;

/// A failure shared with everyone waiting for the same download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Status code (`ParentUnreachable`, `DiskError`, …).
    pub code: DetailCode,
    /// What happened.
    pub message: String,
    /// Whether the parent was unreachable.
    pub offline: bool,
}

/// Where a download stands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FetchState {
    /// Bytes of the partial file written so far (readable by followers).
    pub written: u64,
    /// The blob's size once the parent said it.
    pub total: Option<u64>,
    /// The outcome: the size, or why it failed.
    pub done: Option<Result<u64, Failure>>,
}

/// One download in progress.
pub struct Inflight {
    state: watch::Sender<FetchState>,
}

impl Inflight {
    /// Follows the download's state.
    pub fn subscribe(&self) -> watch::Receiver<FetchState> {
        self.state.subscribe()
    }

    /// Waits for the outcome.
    pub async fn wait(&self) -> Result<u64, Failure> {
        let mut rx = self.subscribe();
        loop {
            if let Some(done) = rx.borrow_and_update().done.clone() {
                return done;
            }
            if rx.changed().await.is_err() {
                return Err(Failure {
                    code: DetailCode::SyncStopped,
                    message: "download abandoned".into(),
                    offline: false,
                });
            }
        }
    }
}

/// Tunables that follow the policy.
#[derive(Debug, Clone, Copy)]
pub struct TransferSettings {
    /// Bytes per ranged request.
    pub chunk_size: u64,
    /// Downloads at once.
    pub max_parallel: usize,
}

/// All downloads of one registry.
pub struct Transfers {
    store: Arc<Store>,
    runtime: tokio::runtime::Handle,
    /// The shared bandwidth limit.
    pub limiter: Limiter,
    settings: Mutex<(TransferSettings, Arc<Semaphore>)>,
    inflight: Mutex<HashMap<String, Arc<Inflight>>>,
}

/// What a download needs to know.
pub struct Job {
    /// Who to ask.
    pub parent: ParentClient,
    /// Repository to ask in.
    pub repo: String,
    /// The blob.
    pub digest: Digest,
    /// Its size, when a manifest said it.
    pub size: Option<u64>,
    /// Counters of the repository sync that wants it.
    pub progress: Option<Arc<Progress>>,
    /// Stops the download at the next chunk.
    pub stop: Stop,
}

impl Transfers {
    /// Downloads into `store`, running on `runtime`.
    pub fn new(store: Arc<Store>, runtime: tokio::runtime::Handle, s: TransferSettings) -> Self {
        Transfers {
            store,
            runtime,
            limiter: Limiter::new(None),
            settings: Mutex::new((s, Arc::new(Semaphore::new(s.max_parallel.max(1))))),
            inflight: Mutex::new(HashMap::new()),
        }
    }

    /// Applies new tunables; running downloads keep their old slot.
    pub fn configure(&self, s: TransferSettings, rate: Option<u64>) {
        self.limiter.set_rate(rate);
        if let Ok(mut g) = self.settings.lock() {
            if g.0.max_parallel != s.max_parallel {
                g.1 = Arc::new(Semaphore::new(s.max_parallel.max(1)));
            }
            g.0 = s;
        }
    }

    fn current(&self) -> (TransferSettings, Arc<Semaphore>) {
        match self.settings.lock() {
            Ok(g) => (g.0, g.1.clone()),
            Err(p) => {
                let g = p.into_inner();
                (g.0, g.1.clone())
            }
        }
    }

    /// The download of `job.digest`, joining one already running or starting it.
    pub fn fetch(self: &Arc<Self>, job: Job) -> Arc<Inflight> {
        let key = job.digest.to_string();
        let Ok(mut map) = self.inflight.lock() else {
            let (tx, _) = watch::channel(FetchState::default());
            return Arc::new(Inflight { state: tx });
        };
        if let Some(i) = map.get(&key) {
            if let Some(p) = &job.progress {
                p.need(job.size.unwrap_or(0));
            }
            return i.clone();
        }
        let (tx, _) = watch::channel(FetchState::default());
        let inflight = Arc::new(Inflight { state: tx });
        map.insert(key.clone(), inflight.clone());
        drop(map);
        let me = self.clone();
        let i = inflight.clone();
        self.runtime.spawn(async move {
            let result = me.download(&job, &i).await;
            let done = result.map_err(|e| Failure {
                code: e.code(),
                message: e.to_string(),
                offline: e.is_offline(),
            });
            if let Err(f) = &done {
                tracing::warn!(digest = %job.digest, repo = %job.repo, code = f.code.as_str(), error = %f.message, "blob download failed");
            }
            if let Ok(mut map) = me.inflight.lock() {
                map.remove(&key);
            }
            i.state.send_modify(|s| s.done = Some(done));
        });
        inflight
    }

    /// Downloads one blob to completion (or failure) and stores it.
    async fn download(&self, job: &Job, inflight: &Inflight) -> Result<u64, SyncError> {
        let (settings, slots) = self.current();
        let _slot = slots
            .acquire_owned()
            .await
            .map_err(|_| SyncError::Stopped("shutting down"))?;
        // Off the async workers: a blob backend may block (an object store's request).
        if let Some(size) = super::local(|| self.store.blob_size(&job.digest))? {
            self.store.discard_download(&job.digest);
            return Ok(size);
        }
        if let Some(p) = &job.progress {
            p.need(job.size.unwrap_or(0));
        }
        let mut writer = super::local(|| self.store.download_writer(&job.digest))?;
        let mut total = job.size;
        let mut failures = 0u32;
        let mut log = Logger::new(writer.offset());
        loop {
            let offset = writer.offset();
            inflight.state.send_modify(|s| {
                s.written = offset;
                s.total = total;
            });
            if total.is_some_and(|t| offset >= t) {
                break;
            }
            if job.stop.load(Ordering::Relaxed) {
                super::local(|| writer.sync())?;
                return Err(SyncError::Stopped("sync window closed"));
            }
            let want = next_request(settings.chunk_size, offset, total);
            match self
                .chunk(job, &mut writer, &mut total, want, inflight, &mut log)
                .await
            {
                Ok(ended) => {
                    failures = 0;
                    super::local(|| writer.sync())?;
                    if ended && total.is_none() {
                        total = Some(writer.offset());
                    }
                }
                Err(e @ SyncError::Storage(StorageError::NoSpace)) => return Err(e),
                Err(e) => {
                    super::local(|| writer.sync())?;
                    let progressed = writer.offset() > offset;
                    // A cut after progress resumes at once; only repeated failures back off.
                    failures = if progressed { 0 } else { failures + 1 };
                    if !e.is_transient() || failures >= MAX_ATTEMPTS {
                        return Err(e);
                    }
                    tracing::info!(digest = %job.digest, offset = writer.offset(), error = %e, "blob download interrupted; resuming");
                    if failures > 0 {
                        let wait = super::backoff::delay(failures, Duration::from_secs(10));
                        tokio::time::sleep(wait).await;
                    }
                }
            }
        }
        let size = super::local(|| self.store.finish_download(writer, &job.digest))?;
        if total.is_some_and(|t| t != size) {
            return Err(SyncError::Invalid(format!(
                "blob {} is {size} bytes, the parent announced {total:?}",
                job.digest
            )));
        }
        log.finish(&job.digest, size);
        Ok(size)
    }

    /// One ranged request: appends what arrives; true when the parent sent less than asked
    /// (the blob ended).
    async fn chunk(
        &self,
        job: &Job,
        writer: &mut BlobWriter,
        total: &mut Option<u64>,
        want: u64,
        inflight: &Inflight,
        log: &mut Logger,
    ) -> Result<bool, SyncError> {
        let offset = writer.offset();
        let ranged = offset > 0 || total.is_some_and(|t| t > want);
        // Resuming without knowing the size, ask from one byte early: a partial file that
        // already holds the whole blob (a crash before it was committed) then gets 206 with
        // the size instead of 416 on every attempt. The byte is skipped below.
        let back = u64::from(offset > 0 && total.is_none());
        let len = if ranged {
            Some(want.max(1) + back)
        } else {
            None
        };
        let Some(mut stream) = job
            .parent
            .blob(&job.repo, job.digest.as_str(), offset - back, len)
            .await?
        else {
            return Err(SyncError::Parent(super::parent::ParentError::NotFound));
        };
        if let Some(t) = stream.total {
            if total.is_some_and(|known| known != t) {
                return Err(SyncError::Invalid(format!(
                    "the parent says blob {} is {t} bytes, its manifest said {total:?}",
                    job.digest
                )));
            }
            *total = Some(t);
        }
        // A parent that ignores Range resends from the start: skip what we have.
        let mut skip = offset.saturating_sub(stream.start);
        let mut received = 0u64;
        let mut unpublished = 0u64;
        while let Some(mut bytes) = stream.chunk().await? {
            if skip > 0 {
                let n = skip.min(bytes.len() as u64);
                skip -= n;
                bytes = bytes.slice(n as usize..);
            }
            if bytes.is_empty() {
                continue;
            }
            let n = bytes.len() as u64;
            if total.is_some_and(|t| writer.offset() + n > t) {
                return Err(SyncError::Invalid(format!(
                    "the parent sent more than the {total:?} bytes of blob {}",
                    job.digest
                )));
            }
            self.limiter.take(n).await;
            writer.append(&bytes)?;
            received += n;
            unpublished += n;
            if let Some(p) = &job.progress {
                p.advance(n);
            }
            if unpublished >= PUBLISH_EVERY {
                unpublished = 0;
                writer.flush()?;
                let w = writer.offset();
                inflight.state.send_modify(|s| s.written = w);
                log.tick(&job.digest, w, *total);
            }
        }
        writer.flush()?;
        Ok(len.is_some_and(|l| received + back < l) || !ranged)
    }
}

/// Logs a long download's progress at a steady pace, not per chunk.
struct Logger {
    started: Instant,
    last: Instant,
    start_offset: u64,
}

impl Logger {
    fn new(start_offset: u64) -> Self {
        let now = Instant::now();
        Logger {
            started: now,
            last: now,
            start_offset,
        }
    }

    fn tick(&mut self, digest: &Digest, done: u64, total: Option<u64>) {
        if self.last.elapsed() < LOG_EVERY {
            return;
        }
        self.last = Instant::now();
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = (done.saturating_sub(self.start_offset) as f64 / secs) as u64;
        tracing::info!(%digest, done, total = ?total, rate_bytes_per_second = rate, "downloading blob");
    }

    fn finish(&self, digest: &Digest, size: u64) {
        if self.started.elapsed() >= LOG_EVERY {
            tracing::info!(%digest, size, seconds = self.started.elapsed().as_secs(), "blob downloaded");
        }
    }
}

/// Bytes to ask for next: a chunk, or everything left when that is at most an eighth of a chunk
/// more, so a layer just over the chunk size (a tar's padding) does not cost one more round
/// trip for its last bytes — on a far link that is most of a second.
fn next_request(chunk: u64, offset: u64, total: Option<u64>) -> u64 {
    match total {
        Some(t) => {
            let rest = t.saturating_sub(offset);
            if rest <= chunk + chunk / 8 {
                rest
            } else {
                chunk
            }
        }
        None => chunk,
    }
}

#[cfg(test)]
mod tests {
    use super::next_request;

    #[test]
    fn a_small_remainder_travels_with_the_last_chunk() {
        let mib = 1 << 20;
        // 8 MiB of layer plus a tar's padding: one request, not two.
        assert_eq!(
            next_request(8 * mib, 0, Some(8 * mib + 1536)),
            8 * mib + 1536
        );
        // A large blob goes in chunks, and its last one takes the small tail along.
        assert_eq!(next_request(8 * mib, 0, Some(40 * mib)), 8 * mib);
        assert_eq!(
            next_request(8 * mib, 32 * mib, Some(40 * mib + 5)),
            8 * mib + 5
        );
        assert_eq!(next_request(8 * mib, 16 * mib, Some(26 * mib)), 8 * mib);
        // Unknown size: a chunk at a time.
        assert_eq!(next_request(8 * mib, 0, None), 8 * mib);
    }
}
