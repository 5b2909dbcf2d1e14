//! A child of a connected-registry parent that defines it (the tree): what an idle child costs
//! its parent per interval with many repositories and tags (the change feed, not scans), and how
//! long a push at the parent takes to be served by an idle child.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::content::{self, Image};
use crate::http::Conn;
use crate::relay::Relay;
use crate::report::{Better, Report};
use crate::scenarios::median;
use crate::servers::Server;
use crate::Config;

/// How often the child checks in, in seconds (its exchange is held open that long).
const INTERVAL_SECS: u64 = 5;
/// Longest any wait here may take.
const LIMIT: Duration = Duration::from_secs(600);

/// Runs `connected-registry cr …` on `parent`'s data directory.
fn cr(bin: &Path, parent: &Server, args: &[&str]) {
    let out = Command::new(bin)
        .arg("cr")
        .args(args)
        .arg("--data-dir")
        .arg(parent.data_dir())
        .output()
        .unwrap_or_else(|e| panic!("cr {args:?}: {e}"));
    assert!(
        out.status.success(),
        "cr {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Polls every 10 ms, up to `LIMIT`, until `child` serves `repo:tag`.
fn wait_served(what: &str, child: &mut Server, repo: &str, tag: &str) {
    let deadline = Instant::now() + LIMIT;
    while !serves(child, repo, tag) {
        child.check_alive();
        assert!(
            Instant::now() < deadline,
            "{what}: not within {LIMIT:?}\n{}",
            child.log_tail()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether `server` lists `repo:tag` (synced here: a manifest GET would be fetched through).
fn serves(server: &Server, repo: &str, tag: &str) -> bool {
    Conn::new(server.addr)
        .request("GET", &format!("/v2/{repo}/tags/list"), &[], &[])
        .is_ok_and(|r| r.status() == 200 && r.text().contains(&format!("\"{tag}\"")))
}

/// The tree scenario: repositories × tags at a parent of ours that defines the child.
pub fn tree(bin: &Path, run: &Path, cfg: &Config, report: &mut Report) {
    let (repos, tags) = if cfg.smoke { (5, 2) } else { (100, 10) };
    let parent = Server::ours(bin, run, None);
    let names: Vec<String> = (0..repos).map(|r| format!("tree/r{r:03}")).collect();
    let image = Image::new(1, 1024, 500);
    let mut c = Conn::new(parent.addr);
    for repo in &names {
        image.push_blobs(&mut c, repo);
        for t in 0..tags {
            content::put_manifest(&mut c, repo, &format!("t{t:02}"), &image.manifest);
        }
    }
    let interval = format!("PT{INTERVAL_SECS}S");
    let mut args = vec![
        "create",
        "-n",
        "bench",
        "-m",
        "ReadOnly",
        "--sync-interval",
        &interval,
        "--repository",
    ];
    args.extend(names.iter().map(String::as_str));
    cr(bin, &parent, &args);
    let relay = Relay::start(parent.addr);
    // The child's own file names nothing: the parent defines it.
    let policy = "mode = \"ReadOnly\"\n";
    let mut child = Server::ours(bin, run, Some((&relay.addr.to_string(), policy)));
    let last = names.last().cloned().unwrap_or_default();
    let last_tag = format!("t{:02}", tags - 1);
    wait_served("first sync of the tree", &mut child, &last, &last_tag);
    // Let the first pass finish and its status go up before counting.
    std::thread::sleep(Duration::from_secs(INTERVAL_SECS + 1));
    relay.reset();
    let periods = if cfg.smoke { 1 } else { 4 };
    std::thread::sleep(Duration::from_secs(INTERVAL_SECS * periods));
    let n = relay.counted();
    let per = |v: u64| v as f64 / periods as f64;
    println!(
        "    idle child of a connected-registry parent, {repos} repositories × {tags} tags: \
         {} requests, {} bytes in {periods} intervals",
        n.requests,
        n.up + n.down
    );
    let what = format!("idle child, {repos} repos × {tags} tags: requests per interval");
    report.add(what, "count", None, Some(per(n.requests)), Better::Lower);
    let what = format!("idle child, {repos} repos × {tags} tags: bytes per interval");
    report.add(
        what,
        "KiB",
        None,
        Some(per(n.up + n.down) / 1024.0),
        Better::Lower,
    );

    let mut times = Vec::new();
    for round in 1..=cfg.rounds {
        let tag = format!("new{round}");
        let repo = names[round % names.len()].clone();
        std::thread::sleep(Duration::from_millis(500));
        let t = Instant::now();
        content::put_manifest(&mut Conn::new(parent.addr), &repo, &tag, &image.manifest);
        wait_served(
            "a push at the parent served by the child",
            &mut child,
            &repo,
            &tag,
        );
        let secs = t.elapsed().as_secs_f64();
        println!("    push at the parent → served by the idle child, round {round}: {secs:.2} s");
        times.push(secs);
    }
    let what = "push at a connected-registry parent → served by its idle child (one layer)";
    report.add(what, "s", None, Some(median(times)), Better::Lower);
}
