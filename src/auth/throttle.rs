//! Slows down password guessing: after repeated failures from one client for one username,
//! further attempts are refused for a growing pause, without touching other clients.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures allowed before pauses start.
const FREE_FAILURES: u32 = 5;
/// Failures older than this are forgotten.
const WINDOW: Duration = Duration::from_secs(300);
/// Longest pause.
const MAX_PAUSE: Duration = Duration::from_secs(60);
/// Entries kept at most (oldest dropped first), so a flood cannot grow memory without bound.
const MAX_ENTRIES: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    last: Instant,
}

/// Failure counts per (client address, username).
#[derive(Debug, Default)]
pub struct Throttle {
    entries: Mutex<HashMap<(IpAddr, String), Entry>>,
}

impl Throttle {
    /// How long this client must still wait before trying this username again, if at all.
    pub fn blocked_for(&self, ip: IpAddr, user: &str) -> Option<Duration> {
        let map = self.entries.lock().ok()?;
        let e = map.get(&(ip, user.to_owned()))?;
        if e.failures < FREE_FAILURES || e.last.elapsed() > WINDOW {
            return None;
        }
        let pause = pause_for(e.failures);
        pause.checked_sub(e.last.elapsed())
    }

    /// Records a failed attempt.
    pub fn failed(&self, ip: IpAddr, user: &str) {
        let Ok(mut map) = self.entries.lock() else {
            return;
        };
        if map.len() >= MAX_ENTRIES {
            let oldest = map
                .iter()
                .min_by_key(|(_, e)| e.last)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                map.remove(&k);
            }
        }
        let e = map.entry((ip, user.to_owned())).or_insert(Entry {
            failures: 0,
            last: Instant::now(),
        });
        if e.last.elapsed() > WINDOW {
            e.failures = 0;
        }
        e.failures += 1;
        e.last = Instant::now();
    }

    /// Forgets failures after a success.
    pub fn succeeded(&self, ip: IpAddr, user: &str) {
        if let Ok(mut map) = self.entries.lock() {
            map.remove(&(ip, user.to_owned()));
        }
    }
}

fn pause_for(failures: u32) -> Duration {
    let exp = failures.saturating_sub(FREE_FAILURES).min(6);
    (Duration::from_secs(1) * 2u32.pow(exp)).min(MAX_PAUSE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_after_repeated_failures_per_client_and_user() {
        let t = Throttle::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..FREE_FAILURES {
            assert!(t.blocked_for(a, "u").is_none());
            t.failed(a, "u");
        }
        assert!(t.blocked_for(a, "u").is_some());
        assert!(t.blocked_for(b, "u").is_none(), "other clients unaffected");
        assert!(t.blocked_for(a, "v").is_none(), "other users unaffected");
        t.succeeded(a, "u");
        assert!(t.blocked_for(a, "u").is_none());
        assert_eq!(pause_for(100), MAX_PAUSE);
    }
}
