//! Mirroring from a parent (a reference registry): the time our child takes to mirror a
//! multi-layer image against `skopeo copy` between two reference registries, and what a sync
//! that finds nothing new costs on the wire for a repository with many tags.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::content::{self, Image};
use crate::http::Conn;
use crate::proc;
use crate::relay::{Counted, Relay};
use crate::report::{Better, Report};
use crate::scenarios::median;
use crate::servers::{require, Server};
use crate::Config;

/// The mirrored image's repository and tag.
const IMAGE_REPO: &str = "mirror/app";
/// The repository with many tags.
const MANY_REPO: &str = "mirror/many";
/// Longest a mirror or a sync pass may take before the benchmark gives up.
const LIMIT: Duration = Duration::from_secs(600);

/// A ReadOnly policy for `repo` with the given pause between passes.
pub fn policy(repo: &str, interval: &str) -> String {
    format!("mode = \"ReadOnly\"\n[sync]\nrepositories = [\"{repo}\"]\ninterval = \"{interval}\"\n")
}

/// `GET /acr/v1/status` of a child.
pub fn status(s: &Server) -> Value {
    let r = Conn::new(s.addr)
        .request("GET", "/acr/v1/status", &[], &[])
        .unwrap_or_else(|e| panic!("GET /acr/v1/status: {e}"));
    assert_eq!(r.status(), 200, "GET /acr/v1/status: {}", r.text());
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("status is not JSON ({e})"))
}

/// True when the status shows `repo` Synced with `tags` tags.
pub fn synced(st: &Value, repo: &str, tags: usize) -> bool {
    st["repositories"].as_array().is_some_and(|a| {
        a.iter()
            .any(|r| r["name"] == repo && r["state"] == "Synced" && r["tags"] == tags)
    })
}

/// Polls the child's status every 10 ms until `done` holds; panics with it after `LIMIT`.
pub fn wait_status(s: &mut Server, what: &str, done: impl FnMut(&Value) -> bool) -> Value {
    wait_status_within(s, what, LIMIT, Duration::from_millis(10), done)
}

/// `wait_status` with its own limit and pause between polls (a status of many repositories
/// is not free to build).
pub fn wait_status_within(
    s: &mut Server,
    what: &str,
    limit: Duration,
    poll: Duration,
    mut done: impl FnMut(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        s.check_alive();
        let st = status(s);
        if done(&st) {
            return st;
        }
        if Instant::now() > deadline {
            panic!(
                "{what}: not within {limit:?}; status: {st}\nlog:\n{}",
                s.log_tail()
            );
        }
        std::thread::sleep(poll);
    }
}

/// Runs `skopeo copy` from `src` to `dst` (`host:port/repo:tag`), bounded by `LIMIT`.
pub fn skopeo_copy(run: &Path, src: &str, dst: &str) {
    if let Err(e) = skopeo_copy_within(run, src, dst, &[], LIMIT) {
        panic!("{e}");
    }
}

/// Runs `skopeo copy` with `extra` options, killed after `limit`; the error says what failed.
pub fn skopeo_copy_within(
    run: &Path,
    src: &str,
    dst: &str,
    extra: &[&str],
    limit: Duration,
) -> Result<(), String> {
    let skopeo = require("skopeo", "skopeo");
    let (out, err) = (run.join("skopeo.out"), run.join("skopeo.err"));
    let file = |p: &Path| {
        std::fs::File::create(p).unwrap_or_else(|e| panic!("creating {}: {e}", p.display()))
    };
    // --preserve-digests: byte-exact like our sync (and no recompression of tar layers);
    // --insecure-policy: no /etc/containers/policy.json needed.
    let mut cmd = Command::new(skopeo);
    cmd.args(["copy", "--insecure-policy", "--preserve-digests"])
        .args(["--src-tls-verify=false", "--dest-tls-verify=false"])
        .args(extra)
        .arg(format!("docker://{src}"))
        .arg(format!("docker://{dst}"))
        .env("TMPDIR", run)
        .stdin(Stdio::null())
        .stdout(file(&out))
        .stderr(file(&err));
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Ok(Some(st)) = child.try_wait() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{cmd:?} did not finish within {limit:?}"));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    if !status.success() {
        return Err(format!(
            "{cmd:?} failed ({status}):\n{}",
            std::fs::read_to_string(&err).unwrap_or_default()
        ));
    }
    Ok(())
}

/// Mirrors a `cfg.mirror_layers`-layer image from `parent`: `skopeo copy` into a fresh
/// reference registry, then a fresh child of ours started with a policy naming the repository
/// (timed from its start until its status says Synced with the one tag). A round each.
pub fn mirror(bin: &Path, run: &Path, parent: &Server, cfg: &Config, report: &mut Report) {
    let image = Image::new(cfg.mirror_layers, cfg.mirror_layer_size, 300);
    image.push(&mut Conn::new(parent.addr), IMAGE_REPO, "v1");
    let total_mib = (cfg.mirror_layers * cfg.mirror_layer_size) >> 20;
    let mut times: [Vec<f64>; 2] = Default::default();
    let mut peak = Vec::new();
    let src = format!("{}/{IMAGE_REPO}:v1", parent.host());
    for round in 1..=cfg.rounds {
        let target = Server::reference(run);
        proc::settle_disk();
        let t = Instant::now();
        skopeo_copy(run, &src, &format!("{}/{IMAGE_REPO}:v1", target.host()));
        let secs = t.elapsed().as_secs_f64();
        image.check(&mut Conn::new(target.addr), IMAGE_REPO, "v1");
        println!("    mirror round {round}: skopeo copy {secs:.2} s");
        times[0].push(secs);
        drop(target);

        proc::settle_disk();
        let t = Instant::now();
        let p = policy(IMAGE_REPO, "1s");
        let mut child = Server::ours(bin, run, Some((&parent.host(), &p)));
        wait_status(&mut child, "mirror", |st| synced(st, IMAGE_REPO, 1));
        let secs = t.elapsed().as_secs_f64();
        image.check(&mut Conn::new(child.addr), IMAGE_REPO, "v1");
        peak.push(proc::peak_rss(child.pid()) as f64 / proc::MIB);
        println!("    mirror round {round}: connected-registry sync {secs:.2} s");
        times[1].push(secs);
    }
    let [r, o] = times;
    let what = format!(
        "mirror {}-layer {total_mib} MiB image (skopeo copy vs. our sync)",
        cfg.mirror_layers
    );
    report.add(what, "s", Some(median(r)), Some(median(o)), Better::Lower);
    let what = "peak RSS of the mirroring child";
    report.add(what, "MiB", None, Some(median(peak)), Better::Lower);
}

/// A repository of `cfg.tags` tags (one small manifest) at `parent`, mirrored by a child that
/// reaches the parent through a counting relay: after the first full sync, one more sync pass
/// is asked for and its requests and bytes are reported.
pub fn no_change_sync(bin: &Path, run: &Path, parent: &Server, cfg: &Config, report: &mut Report) {
    let image = Image::new(1, 1024, 400);
    let mut c = Conn::new(parent.addr);
    image.push_blobs(&mut c, MANY_REPO);
    for n in 0..cfg.tags {
        content::put_manifest(&mut c, MANY_REPO, &format!("t{n:05}"), &image.manifest);
    }
    let relay = Relay::start(parent.addr);
    // A long interval: only the passes this benchmark asks for run after the first one.
    let p = policy(MANY_REPO, "24h");
    let t = Instant::now();
    let mut child = Server::ours(bin, run, Some((&relay.addr.to_string(), &p)));
    let st = wait_status(&mut child, "first sync", |st| {
        synced(st, MANY_REPO, cfg.tags) && st["connectionState"] != "Syncing"
    });
    let first = t.elapsed().as_secs_f64();
    let full = relay.counted();
    println!(
        "    first sync of {} tags: {first:.2} s, {} requests, {} bytes",
        cfg.tags,
        full.requests,
        full.up + full.down
    );
    let (secs, n) = counted_pass(&mut child, &relay, &st, LIMIT, Duration::from_millis(10));
    let tags = cfg.tags;
    report.add(
        format!("first sync of {tags} tags"),
        "s",
        None,
        Some(first),
        Better::Lower,
    );
    let what = format!("no-change sync of {tags} tags, requests");
    report.add(what, "count", None, Some(n.requests as f64), Better::Lower);
    let what = format!("no-change sync of {tags} tags, bytes both ways");
    report.add(
        what,
        "KiB",
        None,
        Some((n.up + n.down) as f64 / 1024.0),
        Better::Lower,
    );
    let what = format!("no-change sync of {tags} tags, time");
    report.add(what, "s", None, Some(secs), Better::Lower);
}

/// Asks `child` for a sync pass now (`POST /acr/v1/sync`), panicking unless it is accepted.
pub fn ask_for_pass(child: &Server) {
    let r = Conn::new(child.addr)
        .request("POST", "/acr/v1/sync", &[], &[])
        .unwrap_or_else(|e| panic!("POST /acr/v1/sync: {e}"));
    assert_eq!(r.status(), 202, "POST /acr/v1/sync: {}", r.text());
}

/// Asks `child` (whose status was `st`) for one more pass and waits for it (polling every
/// `poll`, for at most `limit`): its seconds and what went through `relay` meanwhile.
pub fn counted_pass(
    child: &mut Server,
    relay: &Relay,
    st: &Value,
    limit: Duration,
    poll: Duration,
) -> (f64, Counted) {
    let passes = st["syncPasses"].as_u64().unwrap_or(0);
    std::thread::sleep(Duration::from_millis(200));
    relay.reset();
    let t = Instant::now();
    ask_for_pass(child);
    wait_status_within(child, "no-change sync", limit, poll, |st| {
        st["syncPasses"].as_u64().unwrap_or(0) > passes
    });
    let secs = t.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(100));
    let n = relay.counted();
    println!(
        "    no-change sync: {secs:.2} s, {} requests on {} connections, {} bytes up, {} down",
        n.requests, n.connections, n.up, n.down
    );
    (secs, n)
}
