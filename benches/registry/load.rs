//! Concurrent load: worker threads, one keep-alive connection each, started together; every
//! request's latency is kept (µs) for percentiles.

use std::net::SocketAddr;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use crate::http::Conn;

/// When each worker stops.
#[derive(Debug, Clone, Copy)]
pub enum Until {
    /// Issue requests until this much time passed.
    Time(Duration),
    /// Issue this many requests.
    Count(u64),
}

/// What a load run did.
#[derive(Debug, Default)]
pub struct Load {
    /// Requests completed.
    pub requests: u64,
    /// Body bytes the operations reported.
    pub bytes: u64,
    /// From the common start to the last worker's end.
    pub elapsed: Duration,
    /// Latency of every request in µs, sorted.
    pub latencies_us: Vec<u32>,
}

impl Load {
    /// Requests per second.
    pub fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    /// Body throughput in MB/s (10^6 bytes).
    pub fn mbps(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.elapsed.as_secs_f64()
    }

    /// The `q` quantile (0..=1) of latency in milliseconds.
    pub fn percentile_ms(&self, q: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latencies_us.len() - 1) as f64 * q).round() as usize;
        self.latencies_us[i] as f64 / 1000.0
    }
}

/// Runs `op` from `workers` threads against `addr` until `until`; `op` returns the body bytes
/// it moved or an error, which ends the run with a panic naming it.
pub fn run<F>(addr: SocketAddr, workers: usize, until: Until, op: F) -> Load
where
    F: Fn(&mut Conn) -> Result<u64, String> + Sync,
{
    let barrier = Barrier::new(workers + 1);
    let (start, results) = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                let (barrier, op) = (&barrier, &op);
                s.spawn(move || worker(addr, barrier, until, op))
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        let results: Vec<_> = handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("a load worker panicked".into()))
            })
            .collect();
        (start, results)
    });
    let elapsed = start.elapsed();
    let mut load = Load {
        elapsed,
        ..Load::default()
    };
    for r in results {
        let (bytes, lat) = r.unwrap_or_else(|e| panic!("load against {addr} failed: {e}"));
        load.requests += lat.len() as u64;
        load.bytes += bytes;
        load.latencies_us.extend(lat);
    }
    load.latencies_us.sort_unstable();
    load
}

/// One worker: connects, waits for the others, then loops `op`.
fn worker<F>(
    addr: SocketAddr,
    barrier: &Barrier,
    until: Until,
    op: &F,
) -> Result<(u64, Vec<u32>), String>
where
    F: Fn(&mut Conn) -> Result<u64, String>,
{
    let mut conn = Conn::new(addr);
    let opened = conn.open().map_err(|e| format!("connect: {e}"));
    barrier.wait();
    opened?;
    let begin = Instant::now();
    let mut latencies = Vec::with_capacity(1 << 16);
    let mut bytes = 0;
    loop {
        match until {
            Until::Time(d) if begin.elapsed() >= d => break,
            Until::Count(n) if latencies.len() as u64 >= n => break,
            _ => {}
        }
        let t = Instant::now();
        bytes += op(&mut conn)?;
        latencies.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
    }
    Ok((bytes, latencies))
}
