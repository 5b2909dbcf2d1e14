//! Pacing of push-up chunks on a far link. The protocol makes a blob's next chunk wait for the
//! answer to its last, so two blobs take turns; but a chunk's last byte is "sent" as soon as the
//! socket (or a proxy) has buffered it, long before it has crossed the link. Handing the turn on
//! at that moment puts both blobs' chunks on the wire together; they drain together and both
//! then wait a round trip with the link idle. So the send slot is held until the chunk has had
//! time to cross the link at the rate seen, and the other blob's chunk follows it just as it
//! drains, while this one waits for its answer.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// About how long one chunk should take on the wire: a cut link costs about this much again.
const CHUNK_TIME: Duration = Duration::from_secs(2);
/// Smallest chunk (short of a blob's last): smaller ones say nothing about the link's rate.
pub const MIN_CHUNK: u64 = 256 << 10;
/// The first chunk of a pass, before the link's rate is known.
const FIRST_CHUNK: u64 = 1 << 20;
/// The share of a chunk's crossing time after which the slot is handed on. The rate is learnt
/// from answers, which include the parent's own time (its fsync), so it runs a little slow;
/// handing on a little early keeps the link full, and the next chunk only queues behind the
/// tail of this one.
const HANDOFF: f64 = 0.85;

/// One chunk's hold on the send slot, ended by its signals (see `Pacer::slot`).
pub struct Turn {
    /// Told when the body's last byte has been handed over.
    pub last_byte: oneshot::Sender<()>,
    /// Dropped when the chunk's request is over.
    pub answered: oneshot::Sender<()>,
}

/// What the pacer has learnt about the link, and the one send slot.
pub struct Pacer {
    sending: Arc<Semaphore>,
    /// Bytes per second on the wire seen so far (0: not yet).
    rate: Mutex<f64>,
    /// The shortest answer to a small request: the round trip, at most.
    rtt: Mutex<Option<Duration>>,
}

impl Default for Pacer {
    fn default() -> Self {
        Pacer {
            sending: Arc::new(Semaphore::new(1)),
            rate: Mutex::new(0.0),
            rtt: Mutex::new(None),
        }
    }
}

impl Pacer {
    /// The next chunk's size: about `CHUNK_TIME` on the wire, between `MIN_CHUNK` and `most`.
    pub fn chunk_len(&self, most: u64) -> u64 {
        let most = most.max(MIN_CHUNK);
        let rate = self.rate();
        if rate <= 0.0 {
            return FIRST_CHUNK.min(most);
        }
        let fit = (rate * CHUNK_TIME.as_secs_f64()) as u64;
        fit.clamp(MIN_CHUNK, most)
    }

    /// Waits for the send slot for a chunk of `len` bytes. The turn's `last_byte` goes into
    /// the chunk's body, which signals its last byte; its `answered` is dropped when the chunk's
    /// request is over. The slot is freed once the last byte is out and most of the chunk has
    /// had time to cross the link (`HANDOFF`), or at the answer if that comes first (the rate
    /// seen may be stale, after a cut link), and at once if the body fails.
    pub async fn slot(&self, len: u64) -> Option<Turn> {
        let permit = self.sending.clone().acquire_owned().await.ok()?;
        let rate = self.rate();
        let until = (rate > 0.0)
            .then(|| Instant::now() + Duration::from_secs_f64(HANDOFF * len as f64 / rate));
        let (last_byte, sent) = oneshot::channel();
        let (answered, over) = oneshot::channel();
        tokio::spawn(hold(permit, sent, over, until));
        Some(Turn {
            last_byte,
            answered,
        })
    }

    /// Folds the time a small request took (a few hundred bytes each way) into the round trip.
    pub fn learn_round_trip(&self, took: Duration) {
        if let Ok(mut r) = self.rtt.lock() {
            *r = Some(r.map_or(took, |r| r.min(took)));
        }
    }

    /// Folds the time a chunk of `len` bytes took, sending to answer, into the rate on the wire
    /// (the round trip taken off).
    pub fn learn_chunk(&self, len: u64, took: Duration) {
        if len < MIN_CHUNK || took.is_zero() {
            return; // too small to say anything about the link
        }
        let rtt = self.rtt.lock().ok().and_then(|r| *r).unwrap_or_default();
        // Never less than half the whole time: a round trip seen on a quiet moment may be long
        // past.
        let wire = took.saturating_sub(rtt).max(took / 2);
        let seen = len as f64 / wire.as_secs_f64();
        if let Ok(mut r) = self.rate.lock() {
            *r = if *r <= 0.0 { seen } else { (*r + seen) / 2.0 };
        }
    }

    fn rate(&self) -> f64 {
        self.rate.lock().map(|r| *r).unwrap_or(0.0)
    }
}

/// Holds the send slot until the body's last byte and then until `until` or the answer; a
/// body that failed (its sender dropped unsent) frees it at once.
async fn hold(
    permit: OwnedSemaphorePermit,
    sent: oneshot::Receiver<()>,
    over: oneshot::Receiver<()>,
    until: Option<Instant>,
) {
    if sent.await.is_ok() {
        if let Some(t) = until {
            tokio::select! {
                _ = tokio::time::sleep_until(t) => {}
                _ = over => {}
            }
        }
    }
    drop(permit);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_follow_the_rate_on_the_wire() {
        let p = Pacer::default();
        assert_eq!(p.chunk_len(8 << 20), FIRST_CHUNK);
        assert_eq!(p.chunk_len(1), MIN_CHUNK);
        p.learn_round_trip(Duration::from_millis(900));
        p.learn_round_trip(Duration::from_millis(600));
        // 1.2 MB in 2.6 s with a 0.6 s round trip: 600 kB/s on the wire.
        p.learn_chunk(1_200_000, Duration::from_millis(2600));
        assert_eq!(p.chunk_len(8 << 20), 1_200_000);
        assert_eq!(p.chunk_len(1 << 20), 1 << 20);
        // A small chunk teaches nothing.
        p.learn_chunk(1000, Duration::from_secs(10));
        assert_eq!(p.chunk_len(8 << 20), 1_200_000);
    }

    /// The slot is held past the last byte until most of the chunk has crossed the link
    /// (`HANDOFF` of its time), and freed at once when the body failed.
    #[tokio::test]
    async fn the_slot_is_held_until_the_chunk_has_crossed() {
        let p = Pacer::default();
        p.learn_chunk(1_000_000, Duration::from_millis(100)); // 10 MB/s
        let t0 = Instant::now();
        let first = p.slot(2_000_000).await;
        let _answer_pending = first.map(|t| {
            let _ = t.last_byte.send(()); // the last byte went at once
            t.answered
        });
        let second = p.slot(1_000_000).await;
        // 2 MB at 10 MB/s: 200 ms on the wire, handed on at 170 ms.
        assert!(
            t0.elapsed() >= Duration::from_millis(165),
            "{:?}",
            t0.elapsed()
        );
        drop(second); // a failed body
        let t1 = Instant::now();
        let third = p.slot(1_000_000).await;
        assert!(
            t1.elapsed() < Duration::from_millis(100),
            "{:?}",
            t1.elapsed()
        );
        drop(third);
    }

    /// A stale rate (a chunk that spanned a cut link) cannot hold the slot past the answer.
    #[tokio::test]
    async fn the_answer_frees_the_slot_whatever_the_rate_says() {
        let p = Pacer::default();
        p.learn_chunk(1_000_000, Duration::from_secs(100)); // 10 kB/s: a 1 MB chunk "takes" 85 s
        let t0 = Instant::now();
        if let Some(t) = p.slot(1_000_000).await {
            let _ = t.last_byte.send(());
            drop(t.answered); // the parent answered
        }
        let _next = p.slot(1_000_000).await;
        assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    }
}
