//! A shared bandwidth limit for everything sync downloads (a token bucket).

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Largest burst allowed, as a fraction of a second's worth of bytes.
const BURST_SECONDS: f64 = 0.25;

struct Bucket {
    rate: Option<u64>,
    tokens: f64,
    last: Instant,
}

/// Paces byte transfers to at most `rate` bytes per second across all callers.
pub struct Limiter {
    bucket: Mutex<Bucket>,
}

impl Limiter {
    /// A limiter at `rate` bytes per second (`None`: unlimited).
    pub fn new(rate: Option<u64>) -> Self {
        Limiter {
            bucket: Mutex::new(Bucket {
                rate,
                tokens: 0.0,
                last: Instant::now(),
            }),
        }
    }

    /// Changes the rate (a policy change).
    pub fn set_rate(&self, rate: Option<u64>) {
        if let Ok(mut b) = self.bucket.lock() {
            b.rate = rate;
            b.tokens = 0.0;
            b.last = Instant::now();
        }
    }

    /// How long the caller must wait before sending `n` more bytes; the bytes are booked.
    fn reserve(&self, n: u64) -> Duration {
        let Ok(mut b) = self.bucket.lock() else {
            return Duration::ZERO;
        };
        let Some(rate) = b.rate.filter(|r| *r > 0) else {
            return Duration::ZERO;
        };
        let rate = rate as f64;
        let now = Instant::now();
        let elapsed = now.duration_since(b.last).as_secs_f64();
        b.last = now;
        b.tokens = (b.tokens + elapsed * rate).min(rate * BURST_SECONDS);
        b.tokens -= n as f64;
        if b.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-b.tokens / rate)
        }
    }

    /// Waits until `n` bytes may pass.
    pub async fn take(&self, n: u64) {
        let wait = self.reserve(n);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlimited_never_waits_and_limited_books_debt() {
        let l = Limiter::new(None);
        assert!(l.reserve(1 << 30).is_zero());
        let l = Limiter::new(Some(1000));
        let w = l.reserve(2000);
        assert!(w >= Duration::from_millis(1900), "{w:?}");
        let w2 = l.reserve(1000);
        assert!(
            w2 >= Duration::from_millis(2900),
            "debt accumulates: {w2:?}"
        );
        l.set_rate(None);
        assert!(l.reserve(1 << 20).is_zero());
    }
}
