//! Operations rows: what serving `/acr/v1/metrics` costs the hot path (manifest GET with a
//! scraper at work, and against the previous run), and a garbage-collection pass over many
//! blobs, side by side with the reference's `docker-registry garbage-collect`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::content::{self, Image};
use crate::http::{Conn, ACCEPT_MANIFESTS};
use crate::load::{self, Until};
use crate::proc;
use crate::report::{Better, Report};
use crate::scenarios::{manifest_load, median, APP_REPO, CONCURRENCY, MANIFEST_GET_ROW};
use crate::servers::{self, Server};
use crate::Config;

/// Repository the GC content lives in.
const GC_REPO: &str = "bench/gc";

/// The ours figure of `metric` in a results file written by an earlier run, if any.
pub fn previous_ours(results: &Path, metric: &str) -> Option<f64> {
    let text = std::fs::read_to_string(results).ok()?;
    let prefix = format!("| {metric} |");
    let line = text.lines().find(|l| l.starts_with(&prefix))?;
    let cells: Vec<&str> = line.split('|').map(str::trim).collect();
    // | metric | unit | reference | ours | ratio |
    cells.get(4)?.parse().ok()
}

/// Manifest GET by tag on ours while `/acr/v1/metrics` is scraped every second, against ours
/// unscraped in this run and against the same row of the previous run.
pub fn metrics_cost(ours: &mut Server, cfg: &Config, report: &mut Report, previous: Option<f64>) {
    let unscraped = report
        .rows
        .iter()
        .find(|r| r.metric == MANIFEST_GET_ROW)
        .and_then(|r| r.ours);
    let path = format!("/v2/{APP_REPO}/manifests/v1");
    // The manifest the single-server part pushed, read once for its length.
    let len = Conn::new(ours.addr)
        .request("GET", &path, &[("Accept", ACCEPT_MANIFESTS)], &[])
        .map(|r| r.body.len() as u64)
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let stop = AtomicBool::new(false);
    let mut rps = Vec::new();
    for _ in 0..cfg.rounds {
        let l = std::thread::scope(|s| {
            s.spawn(|| scrape_every_second(ours.addr, &stop));
            let l = manifest_load(ours.addr, "GET", &path, len, cfg.load);
            stop.store(true, Ordering::Relaxed);
            l
        });
        stop.store(false, Ordering::Relaxed);
        ours.check_alive();
        println!(
            "    manifest GET, metrics scraped every second: {:.0} req/s",
            l.rps()
        );
        rps.push(l.rps());
    }
    let scraped = median(rps);
    report.add(
        format!("{MANIFEST_GET_ROW}, /acr/v1/metrics scraped every 1 s (reference column: ours unscraped)"),
        "req/s",
        unscraped,
        Some(scraped),
        Better::Higher,
    );
    report.add(
        format!("{MANIFEST_GET_ROW}: this run (reference column: the previous run's)"),
        "req/s",
        previous,
        unscraped,
        Better::Higher,
    );
}

/// GETs the metrics once a second until `stop`; every answer must be 200.
fn scrape_every_second(addr: std::net::SocketAddr, stop: &AtomicBool) {
    let mut c = Conn::new(addr);
    while !stop.load(Ordering::Relaxed) {
        let r = c
            .request("GET", "/acr/v1/metrics", &[], &[])
            .unwrap_or_else(|e| panic!("GET /acr/v1/metrics: {e}"));
        assert_eq!(r.status(), 200, "GET /acr/v1/metrics: {}", r.text());
        for _ in 0..10 {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Images, layers per image of the GC content: 1,000 × (99 layers + config) = 100,000 blobs,
/// half of them freed by deleting every other image.
fn gc_content(cfg: &Config) -> (u64, usize) {
    if cfg.smoke {
        (20, 9)
    } else {
        (1000, 99)
    }
}

/// Pushes the GC content to `s` and deletes every other image; returns the blobs pushed.
fn populate(s: &mut Server, cfg: &Config) -> u64 {
    let (images, layers) = gc_content(cfg);
    let next = AtomicU64::new(0);
    let started = Instant::now();
    let per_worker = images.div_ceil(CONCURRENCY as u64);
    load::run(s.addr, CONCURRENCY, Until::Count(per_worker), |c| {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= images {
            return Ok(0);
        }
        let image = Image::new(layers, 64, i * 1000 + 1);
        image.push(c, GC_REPO, &format!("t{i}"));
        Ok(0)
    });
    // Deleted one at a time once every push is in: the reference answers 500 to a manifest
    // DELETE racing pushes to the same repository.
    let mut c = Conn::new(s.addr);
    for i in (1..images).step_by(2) {
        let digest = Image::new(layers, 64, i * 1000 + 1).digest;
        delete_manifest(&mut c, &digest).unwrap_or_else(|e| panic!("{e}"));
    }
    s.check_alive();
    let blobs = images * (layers as u64 + 1);
    println!(
        "    {:?}: {blobs} blobs in {images} images pushed, every other image deleted, in {:.0} s",
        s.kind,
        started.elapsed().as_secs_f64()
    );
    blobs
}

fn delete_manifest(c: &mut Conn, digest: &str) -> Result<(), String> {
    let path = format!("/v2/{GC_REPO}/manifests/{digest}");
    let r = c
        .request("DELETE", &path, &[], &[])
        .map_err(|e| format!("DELETE {path}: {e}"))?;
    if r.status() != 202 {
        return Err(format!("DELETE {path}: {} {}", r.status(), r.text()));
    }
    Ok(())
}

/// Runs a command to completion; its wall time and peak RSS (from the kernel's accounting of
/// that child alone).
#[allow(clippy::zombie_processes)] // wait4 below reaps it (and reads its rusage)
fn timed(cmd: &mut Command) -> (Duration, f64) {
    let started = Instant::now();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child, writing into the two locals above.
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let took = started.elapsed();
    assert_eq!(waited, pid, "wait4 for {cmd:?} failed");
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{cmd:?} failed (status {status})"
    );
    (took, usage.ru_maxrss as f64 / 1024.0)
}

/// Bytes under a directory.
fn du(p: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(p) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => du(&e.path()),
            _ => e.metadata().map(|m| m.len()).unwrap_or(0),
        })
        .sum()
}

/// One GC pass over the GC content on each server: the reference's offline
/// `docker-registry garbage-collect` (server stopped, as it requires) and ours `gc run`
/// (server running, as it allows).
pub fn gc_pass(bin: &Path, run: &Path, cfg: &Config, report: &mut Report) {
    let mut reference = Server::reference(run);
    let blobs = populate(&mut reference, cfg);
    reference.stop();
    let config = reference.root().join("config.yml");
    let data = reference.root().join("data");
    let before = du(&data);
    let program = servers::require("docker-registry", "docker-registry");
    let (r_time, r_rss) = timed(Command::new(program).arg("garbage-collect").arg(&config));
    println!(
        "    reference garbage-collect: {:.2} s, peak RSS {r_rss:.1} MiB, freed {} KiB",
        r_time.as_secs_f64(),
        before.saturating_sub(du(&data)) / 1024
    );
    drop(reference);
    proc::settle_disk();

    let mut ours = Server::ours(bin, run, None);
    populate(&mut ours, cfg);
    let policy = ours.root().join("gc.toml");
    std::fs::write(&policy, "[gc]\nenabled = false\ngrace = \"PT0S\"\n")
        .unwrap_or_else(|e| panic!("writing {}: {e}", policy.display()));
    let data = ours.data_dir();
    let before = du(&data.join("blobs"));
    let (o_time, o_rss) = timed(
        Command::new(bin)
            .args(["gc", "run", "--data-dir"])
            .arg(&data)
            .arg("--config")
            .arg(&policy),
    );
    let freed = before.saturating_sub(du(&data.join("blobs")));
    println!(
        "    connected-registry gc run: {:.2} s, peak RSS {o_rss:.1} MiB, freed {} KiB",
        o_time.as_secs_f64(),
        freed / 1024
    );
    assert!(freed > 0, "gc run freed nothing");
    ours.check_alive();
    // What is still tagged still serves.
    let mut c = Conn::new(ours.addr);
    let kept = Image::new(gc_content(cfg).1, 64, 1);
    content::check_manifest(&mut c, GC_REPO, "t0", &kept.digest);
    let what = format!("GC pass over {blobs} blobs, half unreferenced");
    report.add(
        format!("{what}: time"),
        "s",
        Some(r_time.as_secs_f64()),
        Some(o_time.as_secs_f64()),
        Better::Lower,
    );
    report.add(
        format!("{what}: peak RSS"),
        "MiB",
        Some(r_rss),
        Some(o_rss),
        Better::Lower,
    );
}
