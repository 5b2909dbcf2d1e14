//! The pull rows again while a bounded CPU burner keeps every core busy, as on a gateway whose
//! cores also run other modules: one thread per core spinning on arithmetic at normal priority,
//! started before and stopped after each measurement, so the server and the reference both get
//! only their fair share of the machine. The burner runs in this process, so in the same
//! scheduling group as both servers: the kernel shares the cores among their threads.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::proc;
use crate::report::Report;
use crate::scenarios;
use crate::servers::Server;
use crate::Config;

/// Appended to the pull rows' names.
const SUFFIX: &str = ", cores busy";

/// The blob pull at each client count with every core busy with other work.
pub fn pull_contended(servers: &mut [Server; 2], cfg: &Config, digest: &str, report: &mut Report) {
    let cores = proc::cores();
    // A safety net only: a measurement takes seconds; the burner never outlives this.
    let limit = Duration::from_secs(if cfg.smoke { 30 } else { 180 });
    println!("  -- the pull again with {cores} burner threads (one per core) spinning");
    scenarios::pull_rows(servers, cfg, digest, report, SUFFIX, &mut |measure| {
        let burner = Burner::start(cores, limit);
        measure();
        if burner.stop() {
            eprintln!(
                "    warning: the burner hit its {limit:?} deadline before the measurement ended"
            );
        }
    });
}

/// Spinning threads; stopped (and joined) when stopped explicitly, dropped (on a panic too), or
/// at their deadline, whichever comes first.
struct Burner {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<bool>>,
}

impl Burner {
    /// Starts `n` spinning threads that stop by themselves after `limit`.
    fn start(n: usize, limit: Duration) -> Burner {
        let stop = Arc::new(AtomicBool::new(false));
        let deadline = Instant::now() + limit;
        let threads = (0..n)
            .map(|i| {
                let stop = stop.clone();
                std::thread::Builder::new()
                    .name(format!("burner-{i}"))
                    .spawn(move || spin(&stop, deadline))
                    .unwrap_or_else(|e| panic!("starting a burner thread: {e}"))
            })
            .collect();
        Burner { stop, threads }
    }

    /// Stops and joins the threads; true when any of them had already hit its deadline.
    fn stop(mut self) -> bool {
        self.halt()
    }

    /// Signals every thread to stop and waits for them (they check every millisecond or so).
    fn halt(&mut self) -> bool {
        self.stop.store(true, Ordering::Relaxed);
        // `fold`, not `any`: every thread is joined, not just those up to the first `true`.
        self.threads
            .drain(..)
            .map(|t| t.join().unwrap_or(false))
            .fold(false, |a, b| a | b)
    }
}

impl Drop for Burner {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Spins on integer arithmetic until `stop` is set or `deadline` passes; true on the deadline.
fn spin(stop: &AtomicBool, deadline: Instant) -> bool {
    let mut x = 0x9e37_79b9_7f4a_7c15_u64;
    loop {
        // About a millisecond of work between checks: stops promptly, checks cost nothing.
        for _ in 0..500_000 {
            x = std::hint::black_box(x.rotate_left(5) ^ x.wrapping_mul(0x5851_f42d_4c95_7f2d));
        }
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        if Instant::now() >= deadline {
            return true;
        }
    }
}
