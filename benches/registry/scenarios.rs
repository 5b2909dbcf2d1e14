//! The single-server measurements, each run on the reference server then on ours with the same
//! content and load: blob push (monolithic, chunked), blob pull at several concurrencies with
//! the server's CPU cost, manifest GET/HEAD by tag, and tags/list of a large repository.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use crate::content::{self, Image};
use crate::http::{Conn, ACCEPT_MANIFESTS};
use crate::load::{self, Until};
use crate::proc;
use crate::report::{Better, Report};
use crate::servers::Server;
use crate::Config;

/// Repository the blob push and pull use.
const BLOB_REPO: &str = "bench/blobs";
/// Repository the manifest requests use.
pub const APP_REPO: &str = "bench/app";
/// Repository with many tags.
const TAGS_REPO: &str = "bench/tags";
/// Concurrency of the manifest and tags/list load.
pub const CONCURRENCY: usize = 16;
/// The manifest GET row's name (the operations rows compare against it).
pub const MANIFEST_GET_ROW: &str = "manifest GET by tag, 16 clients";

/// The median of some figures (NaN for none).
pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// A figure per server: index 0 is the reference, 1 is ours.
type PerServer = [Vec<f64>; 2];

/// Adds the medians of `figures` as one row.
fn add(report: &mut Report, metric: String, unit: &'static str, f: PerServer, b: Better) {
    let [r, o] = f;
    report.add(metric, unit, Some(median(r)), Some(median(o)), b);
}

/// A fresh connection, already open, to `s`.
fn connect(s: &Server) -> Conn {
    let mut c = Conn::new(s.addr);
    c.open()
        .unwrap_or_else(|e| panic!("connecting to {:?} at {}: {e}", s.kind, s.addr));
    c
}

/// Pushes a `cfg.blob_size` blob monolithically and in `cfg.chunk_size` chunks, a new blob
/// (same size, other content) each round; returns the digest of the last one, kept for pulls.
pub fn push(servers: &mut [Server; 2], dir: &Path, cfg: &Config, report: &mut Report) -> String {
    let mut data = content::pseudo_random(cfg.blob_size, 1);
    let mut mono: PerServer = Default::default();
    let mut chunked: PerServer = Default::default();
    let mut disk = Vec::new();
    let mut digest = String::new();
    let mut serial = 0u64;
    for round in 1..=cfg.rounds {
        for chunks in [false, true] {
            serial += 1;
            data[..8].copy_from_slice(&serial.to_le_bytes());
            digest = content::sha256(&data);
            for (i, s) in servers.iter_mut().enumerate() {
                let mut c = connect(s);
                proc::settle_disk();
                let t = Instant::now();
                if chunks {
                    content::push_chunked(&mut c, BLOB_REPO, &data, &digest, cfg.chunk_size);
                } else {
                    content::push_monolithic(&mut c, BLOB_REPO, &data, &digest);
                }
                let mbps = data.len() as f64 / 1e6 / t.elapsed().as_secs_f64();
                content::check_blob_size(&mut c, BLOB_REPO, &digest, data.len());
                s.check_alive();
                let how = if chunks { "chunked" } else { "monolithic" };
                println!("    push {how} round {round}: {:?} {mbps:.1} MB/s", s.kind);
                let figures = if chunks { &mut chunked } else { &mut mono };
                figures[i].push(mbps);
            }
        }
        disk.push(disk_write(dir, &data));
    }
    let mib = cfg.blob_size >> 20;
    let chunk = cfg.chunk_size >> 20;
    add(
        report,
        format!("push {mib} MiB blob, monolithic"),
        "MB/s",
        mono,
        Better::Higher,
    );
    let what = format!("push {mib} MiB blob, {chunk} MiB chunks");
    add(report, what, "MB/s", chunked, Better::Higher);
    report.add(
        format!(
            "disk alone: {DISK_PROBE_COPIES} × {mib} MiB, fdatasync each (durable push ceiling)"
        ),
        "MB/s",
        None,
        Some(median(disk)),
        Better::Higher,
    );
    for s in servers.iter() {
        content::check_blob_digest(&mut connect(s), BLOB_REPO, &digest);
    }
    digest
}

/// How many copies of the blob the disk probe writes back to back: one alone can ride the
/// virtual disk's write burst, several show the rate it sustains.
const DISK_PROBE_COPIES: usize = 4;

/// MB/s of writing `data` `DISK_PROBE_COPIES` times to a new file, fdatasyncing after each: the
/// most a server that acknowledges a push only once it is on disk can sustain here (the
/// reference does not fsync, so its pushes never wait for the disk).
fn disk_write(dir: &Path, data: &[u8]) -> f64 {
    let path = dir.join("disk-probe");
    proc::settle_disk();
    let t = Instant::now();
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&path)?;
        for _ in 0..DISK_PROBE_COPIES {
            f.write_all(data)?;
            f.sync_data()?;
        }
        Ok(())
    };
    write().unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    let bytes = (data.len() * DISK_PROBE_COPIES) as f64;
    let mbps = bytes / 1e6 / t.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&path);
    proc::settle_disk();
    println!("    disk alone: {mbps:.1} MB/s");
    mbps
}

/// Client counts of the pull rows.
const PULL_CLIENTS: [usize; 3] = [1, 4, 16];

/// Pulls blob `digest` with 1, 4 and 16 clients; reports aggregate MB/s and the server's CPU
/// seconds per GB served.
pub fn pull(servers: &mut [Server; 2], cfg: &Config, digest: &str, report: &mut Report) {
    pull_rows(servers, cfg, digest, report, "", &mut |measure| measure());
}

/// The pull rows, each measurement run through `around` (which may set the machine up around
/// it and must call it once); `suffix` is appended to every row's name.
pub fn pull_rows(
    servers: &mut [Server; 2],
    cfg: &Config,
    digest: &str,
    report: &mut Report,
    suffix: &str,
    around: &mut dyn FnMut(&mut dyn FnMut()),
) {
    for clients in PULL_CLIENTS {
        let mut rate: PerServer = Default::default();
        let mut cpu: PerServer = Default::default();
        for round in 1..=cfg.rounds {
            for (i, s) in servers.iter_mut().enumerate() {
                let mut figures = (f64::NAN, f64::NAN);
                around(&mut || figures = pull_once(s, cfg, digest, clients));
                let (mbps, per_gb) = figures;
                println!(
                    "    pull c={clients}{suffix} round {round}: {:?} {mbps:.1} MB/s, \
                     {per_gb:.3} CPU s/GB",
                    s.kind
                );
                rate[i].push(mbps);
                cpu[i].push(per_gb);
            }
        }
        let mib = cfg.blob_size >> 20;
        let what = format!("pull {mib} MiB blob, {clients} clients{suffix}");
        add(report, what.clone(), "MB/s", rate, Better::Higher);
        let what = format!("{what}, server CPU");
        add(report, what, "s/GB", cpu, Better::Lower);
    }
}

/// One pull measurement of blob `digest` from `s` by `clients` clients, each pulling it whole
/// until together they moved about `cfg.pull_bytes`: (MB/s, the server's CPU seconds per GB).
fn pull_once(s: &mut Server, cfg: &Config, digest: &str, clients: usize) -> (f64, f64) {
    let path = format!("/v2/{BLOB_REPO}/blobs/{digest}");
    let size = cfg.blob_size as u64;
    // Every run moves about `pull_bytes`, at least one whole blob per client.
    let per_client = (cfg.pull_bytes / (clients as u64 * size)).max(1);
    let cpu0 = proc::cpu_seconds(s.pid());
    let l = load::run(s.addr, clients, Until::Count(per_client), |c| {
        let mut n = 0u64;
        let head = c
            .send("GET", &path, &[], &[], &mut |b| n += b.len() as u64)
            .map_err(|e| format!("GET {path}: {e}"))?;
        if head.status != 200 || n != size {
            return Err(format!("GET {path}: {} with {n} bytes", head.status));
        }
        Ok(n)
    });
    let cpu_s = proc::cpu_seconds(s.pid()) - cpu0;
    s.check_alive();
    (l.mbps(), cpu_s / (l.bytes as f64 / 1e9))
}

/// Manifest GET and HEAD by tag from 16 clients for `cfg.load`: req/s, p50 and p99.
pub fn manifests(servers: &mut [Server; 2], cfg: &Config, report: &mut Report) {
    let image = Image::new(1, 4096, 100);
    for s in servers.iter() {
        let mut c = connect(s);
        image.push(&mut c, APP_REPO, "v1");
        content::check_manifest(&mut c, APP_REPO, "v1", &image.digest);
    }
    let path = format!("/v2/{APP_REPO}/manifests/v1");
    let len = image.manifest.len() as u64;
    for method in ["GET", "HEAD"] {
        let mut rps: PerServer = Default::default();
        let mut p50: PerServer = Default::default();
        let mut p99: PerServer = Default::default();
        for (i, s) in servers.iter_mut().enumerate() {
            let expect = if method == "GET" { len } else { 0 };
            let l = manifest_load(s.addr, method, &path, expect, cfg.load);
            s.check_alive();
            let (a, b) = (l.percentile_ms(0.5), l.percentile_ms(0.99));
            println!(
                "    manifest {method}: {:?} {:.0} req/s, p50 {a:.3} ms, p99 {b:.3} ms",
                s.kind,
                l.rps()
            );
            rps[i].push(l.rps());
            p50[i].push(a);
            p99[i].push(b);
        }
        let what = format!("manifest {method} by tag, {CONCURRENCY} clients");
        add(report, what.clone(), "req/s", rps, Better::Higher);
        add(report, format!("{what}, p50"), "ms", p50, Better::Lower);
        add(report, format!("{what}, p99"), "ms", p99, Better::Lower);
    }
}

/// `method` on a manifest `path` from `CONCURRENCY` clients for `time`; every answer must be
/// 200 with `expect` body bytes.
pub fn manifest_load(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    expect: u64,
    time: std::time::Duration,
) -> load::Load {
    load::run(addr, CONCURRENCY, Until::Time(time), |c| {
        let mut n = 0u64;
        let head = c
            .send(
                method,
                path,
                &[("Accept", ACCEPT_MANIFESTS)],
                &[],
                &mut |b| n += b.len() as u64,
            )
            .map_err(|e| format!("{method} {path}: {e}"))?;
        if head.status != 200 || n != expect {
            return Err(format!("{method} {path}: {} with {n} bytes", head.status));
        }
        Ok(n)
    })
}

/// Tags one manifest `cfg.tags` times (sequential PUTs, timed), then lists the tags from 16
/// clients for `cfg.load`.
pub fn tags_list(servers: &mut [Server; 2], cfg: &Config, report: &mut Report) {
    let image = Image::new(1, 1024, 200);
    let mut put: PerServer = Default::default();
    for (i, s) in servers.iter_mut().enumerate() {
        let mut c = connect(s);
        image.push_blobs(&mut c, TAGS_REPO);
        let t = Instant::now();
        for n in 0..cfg.tags {
            content::put_manifest(&mut c, TAGS_REPO, &format!("t{n:05}"), &image.manifest);
        }
        let rate = cfg.tags as f64 / t.elapsed().as_secs_f64();
        println!("    tag PUT x{}: {:?} {rate:.0} req/s", cfg.tags, s.kind);
        put[i].push(rate);
        let listed = content::tags(&mut c, TAGS_REPO);
        assert_eq!(listed.len(), cfg.tags, "{:?}: tags/list", s.kind);
    }
    let what = "manifest PUT under a new tag, 1 client".to_owned();
    add(report, what, "req/s", put, Better::Higher);
    let path = format!("/v2/{TAGS_REPO}/tags/list");
    let mut rps: PerServer = Default::default();
    for (i, s) in servers.iter_mut().enumerate() {
        let l = load::run(s.addr, CONCURRENCY, Until::Time(cfg.load), |c| {
            let r = c
                .request("GET", &path, &[], &[])
                .map_err(|e| format!("GET {path}: {e}"))?;
            if r.status() != 200 || r.body.len() < cfg.tags * 6 {
                return Err(format!(
                    "GET {path}: {} with {} bytes",
                    r.status(),
                    r.body.len()
                ));
            }
            Ok(r.body.len() as u64)
        });
        s.check_alive();
        println!(
            "    tags/list: {:?} {:.0} req/s, p99 {:.3} ms",
            s.kind,
            l.rps(),
            l.percentile_ms(0.99)
        );
        rps[i].push(l.rps());
    }
    let what = format!("tags/list of {} tags, {CONCURRENCY} clients", cfg.tags);
    add(report, what, "req/s", rps, Better::Higher);
}
