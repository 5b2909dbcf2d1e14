//! Side-by-side benchmark of connected-registry against Debian's `docker-registry` (the CNCF
//! distribution reference server), both on loopback without authentication, with filesystem
//! storage in fresh directories, measured in the same run one after the other.
//!
//! `cargo bench --bench registry` runs the full benchmark (minutes); `-- --smoke` shrinks every
//! size and duration so the run takes seconds and only proves everything still works (it fails
//! on a failed request or a wrong digest, never on a timing). `scripts/bench.sh` wraps both.
//! Results: a table on stdout and `target/bench/results.md`.

mod contended;
mod content;
mod delay;
mod docker;
mod edge;
mod http;
mod load;
mod mirror;
mod operations;
mod proc;
mod relay;
mod report;
mod scale;
mod scenarios;
mod servers;
mod tree;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use report::{Better, Report};
use servers::Server;

/// Sizes and durations of one run.
#[derive(Debug, Clone)]
pub struct Config {
    /// A smoke run (tiny sizes).
    pub smoke: bool,
    /// The pushed and pulled blob.
    pub blob_size: usize,
    /// Chunk size of the chunked push.
    pub chunk_size: usize,
    /// Repetitions of the push, pull and mirror measurements (medians are reported).
    pub rounds: usize,
    /// About how many bytes each pull measurement moves.
    pub pull_bytes: u64,
    /// Duration of each manifest and tags/list load.
    pub load: Duration,
    /// Tags of the tags/list and no-change sync repositories.
    pub tags: usize,
    /// Layers of the mirrored image.
    pub mirror_layers: usize,
    /// Size of each mirrored layer.
    pub mirror_layer_size: usize,
    /// How long the servers sit idle after start before their RSS is read.
    pub idle_wait: Duration,
    /// Run only this part (`--only`); `None` runs them all.
    pub only: Option<String>,
}

/// The parts of a run, in order; `--only` picks one.
const PARTS: [&str; 6] = ["single", "mirror", "tree", "edge", "gc", "scale"];

impl Config {
    /// Whether `part` runs.
    fn runs(&self, part: &str) -> bool {
        self.only.as_deref().is_none_or(|o| o == part)
    }

    /// The full benchmark, as the issue specifies it.
    fn full() -> Config {
        Config {
            smoke: false,
            blob_size: 256 << 20,
            chunk_size: 8 << 20,
            rounds: 3,
            pull_bytes: 4 << 30,
            load: Duration::from_secs(10),
            tags: 1000,
            mirror_layers: 5,
            mirror_layer_size: 40 << 20,
            idle_wait: Duration::from_secs(2),
            only: None,
        }
    }

    /// Everything shrunk so a run takes seconds.
    fn smoke() -> Config {
        Config {
            smoke: true,
            blob_size: 8 << 20,
            chunk_size: 2 << 20,
            rounds: 1,
            pull_bytes: 16 << 20,
            load: Duration::from_millis(500),
            tags: 50,
            mirror_layers: 5,
            mirror_layer_size: 1 << 20,
            idle_wait: Duration::from_millis(200),
            only: None,
        }
    }
}

/// How to run the benchmark.
const USAGE: &str =
    "usage: cargo bench --bench registry [-- [--smoke] [--only single|mirror|tree|edge|gc|scale]]   \
     (or scripts/bench.sh [--smoke] [--only PART])";

/// Parses the arguments: `Some(config)`, or `None` when there is nothing to do: `cargo test`
/// runs bench targets without `--bench` (passing its own options, e.g. `--test-threads=2`,
/// which are ignored then), and the benchmark is not a test.
fn parse_args() -> Option<Config> {
    let (mut bench, mut smoke, mut unknown) = (false, false, Vec::new());
    let mut only = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--bench" => bench = true,
            "--smoke" => smoke = true,
            "--only" => match args.next() {
                Some(p) if PARTS.contains(&p.as_str()) => only = Some(p),
                other => {
                    eprintln!("--only takes one of {PARTS:?}, not {other:?}\n{USAGE}");
                    std::process::exit(2);
                }
            },
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            _ => unknown.push(a),
        }
    }
    if !bench && !smoke {
        return None;
    }
    if !unknown.is_empty() {
        eprintln!("unknown arguments {unknown:?}\n{USAGE}");
        std::process::exit(2);
    }
    let mut cfg = if smoke {
        Config::smoke()
    } else {
        Config::full()
    };
    cfg.only = only;
    Some(cfg)
}

/// The connected-registry binary cargo built for this bench (`target/release/` under
/// `cargo bench`) and the target directory it lives in.
fn server_binary() -> (PathBuf, PathBuf) {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_connected-registry"));
    if !bin.is_file() {
        panic!(
            "{} is missing: run `cargo build --release` (scripts/bench.sh does)",
            bin.display()
        );
    }
    let target = bin
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("target"));
    (bin, target)
}

/// The first line a program prints for `--version`.
fn version(program: &str) -> String {
    std::process::Command::new(program)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Idle RSS of both servers shortly after their start.
fn idle_rss(servers: &[Server; 2], cfg: &Config, report: &mut Report) {
    std::thread::sleep(cfg.idle_wait);
    let [r, o] = servers
        .each_ref()
        .map(|s| proc::rss(s.pid()) as f64 / proc::MIB);
    report.add(
        "idle RSS after start",
        "MiB",
        Some(r),
        Some(o),
        Better::Lower,
    );
}

/// Prints both servers' RSS now (to see which phase drives the peak).
fn rss_now(servers: &[Server; 2], phase: &str) {
    let [r, o] = servers
        .each_ref()
        .map(|s| proc::rss(s.pid()) as f64 / proc::MIB);
    println!("    RSS after {phase}: reference {r:.1} MiB, connected-registry {o:.1} MiB");
}

/// Runs every measurement, prints the table and writes `target/bench/results.md`.
fn main() {
    let Some(cfg) = parse_args() else {
        println!("registry bench: nothing to do under `cargo test`; {USAGE}");
        return;
    };
    let (bin, target) = server_binary();
    servers::require("docker-registry", "docker-registry");
    servers::require("skopeo", "skopeo");
    let run = servers::run_dir(&target);
    let started = Instant::now();
    let mode = if cfg.smoke { "smoke" } else { "full" };
    let header = vec![
        (
            "date".to_owned(),
            chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
        ),
        ("mode".to_owned(), mode.to_owned()),
        ("machine".to_owned(), proc::machine()),
        ("CPU".to_owned(), proc::cpu_model()),
        ("cores".to_owned(), proc::cores().to_string()),
        (
            "connected-registry".to_owned(),
            format!("{} ({})", env!("CARGO_PKG_VERSION"), bin.display()),
        ),
        ("reference".to_owned(), version("docker-registry")),
        ("skopeo".to_owned(), version("skopeo")),
        ("rounds".to_owned(), format!("{} (medians)", cfg.rounds)),
    ];
    for (k, v) in &header {
        println!("{k}: {v}");
    }
    let mut report = Report::default();
    // A partial run writes its own file, so the full table is not overwritten by a part of it.
    let results = target.join("bench").join(match &cfg.only {
        Some(part) => format!("results-{part}.md"),
        None => "results.md".to_owned(),
    });
    let previous_get = operations::previous_ours(&results, scenarios::MANIFEST_GET_ROW);
    if cfg.runs("single") {
        single(&bin, run.path(), &cfg, &mut report, previous_get);
    }
    if cfg.runs("mirror") {
        println!("== mirroring from a reference parent");
        let parent = Server::reference(run.path());
        mirror::mirror(&bin, run.path(), &parent, &cfg, &mut report);
        mirror::no_change_sync(&bin, run.path(), &parent, &cfg, &mut report);
    }
    if cfg.runs("tree") {
        println!("== a child defined by a connected-registry parent (the tree)");
        tree::tree(&bin, run.path(), &cfg, &mut report);
    }
    if cfg.runs("edge") {
        println!("== edge link: parent in a network namespace behind a rate-limited, delayed link");
        edge::edge_link(&bin, run.path(), &cfg, &mut report);
    }
    if cfg.runs("gc") {
        println!("== garbage collection");
        operations::gc_pass(&bin, run.path(), &cfg, &mut report);
    }
    if cfg.runs("scale") {
        println!("== scale: 1,000 repositories x 100 tags");
        scale::scale(&bin, run.path(), &cfg, &mut report);
    }
    finish(report, header, started, &results, mode);
    drop(run);
}

/// The single-server measurements on a reference server and ours, alternating.
fn single(bin: &Path, run: &Path, cfg: &Config, report: &mut Report, previous_get: Option<f64>) {
    println!("== single server: reference (docker-registry) then connected-registry, alternating");
    let mut pair = [Server::reference(run), Server::ours(bin, run, None)];
    idle_rss(&pair, cfg, report);
    let digest = scenarios::push(&mut pair, run, cfg, report);
    rss_now(&pair, "push");
    scenarios::pull(&mut pair, cfg, &digest, report);
    rss_now(&pair, "pull");
    contended::pull_contended(&mut pair, cfg, &digest, report);
    scenarios::manifests(&mut pair, cfg, report);
    rss_now(&pair, "manifest load");
    scenarios::tags_list(&mut pair, cfg, report);
    rss_now(&pair, "tags/list");
    operations::metrics_cost(&mut pair[1], cfg, report, previous_get);
    let [r, o] = pair
        .each_ref()
        .map(|s| proc::peak_rss(s.pid()) as f64 / proc::MIB);
    report.add(
        "peak RSS over the run above",
        "MiB",
        Some(r),
        Some(o),
        Better::Lower,
    );
}

/// Prints the table and writes it to `results`.
fn finish(
    report: Report,
    mut header: Vec<(String, String)>,
    started: Instant,
    results: &Path,
    mode: &str,
) {
    let took = started.elapsed();
    header.push((
        "run time".to_owned(),
        format!("{:.0} s", took.as_secs_f64()),
    ));
    println!("\n{}", report.text());
    report.write(results, &header);
    println!(
        "written to {} ({mode} run, {:.0} s)",
        results.display(),
        took.as_secs_f64()
    );
}
