//! The "edge link" scenario: the parents (a reference registry, and a root of ours for
//! push-up) in a network namespace of their own, reached over a veth whose rate `tc tbf` limits
//! in both directions and whose round trip the project's delay relay raises, at the issue's
//! settings (the last also with the link cut every 30 s). At each: the same 5-layer image is
//! mirrored with `skopeo copy` and with our sync, pulled by `docker pull` through our
//! fetch-through and through `docker-registry` as a pull-through cache, and pushed up with
//! `skopeo copy` and with our push-up. Each is reported as link efficiency: payload bytes ÷
//! (rate × time). tbf counts packet headers too, so a full link carries about 0.95 of its rate
//! as payload.
//!
//! While working on one figure, `EDGE_SETTING=<name>` keeps only the setting of that name (as the
//! rows print it, e.g. `5 Mbit/s, 600 ms`) and `EDGE_ROWS=mirror,pull,push` the kinds of rows to
//! run; both unset run everything.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::content::Image;
use crate::delay::DelayRelay;
use crate::docker::Dockerd;
use crate::http::Conn;
use crate::mirror::{policy, skopeo_copy_within, status, synced};
use crate::proc;
use crate::report::{Better, Report};
use crate::servers::{require, Server};
use crate::Config;

/// The parent's namespace and the veth ends (names unique to the benchmark).
const NS: &str = "crb-edge";
const HOST_IF: &str = "crbe-h";
const NS_IF: &str = "crbe-p";
/// The link's /24: the host end and the parent's end.
const HOST_IP: Ipv4Addr = Ipv4Addr::new(10, 216, 0, 1);
const NS_IP: Ipv4Addr = Ipv4Addr::new(10, 216, 0, 2);

/// One link setting.
struct Setting {
    mbit: u32,
    rtt: Duration,
    layers: usize,
    layer_size: usize,
    /// Cut every connection this often.
    cut: Option<Duration>,
}

impl Setting {
    fn name(&self) -> String {
        let base = format!("{} Mbit/s, {} ms", self.mbit, self.rtt.as_millis());
        match self.cut {
            Some(c) => format!("{base}, cut every {} s", c.as_secs()),
            None => base,
        }
    }

    /// The longest a transfer of `bytes` may take before it counts as not finishing: six times
    /// the link's time for it, at least two minutes.
    fn limit(&self, bytes: f64) -> Duration {
        Duration::from_secs_f64((6.0 * bytes / self.rate_bytes()).max(120.0))
    }

    /// Payload bytes per second at the link's rate.
    fn rate_bytes(&self) -> f64 {
        f64::from(self.mbit) * 1e6 / 8.0
    }
}

/// The settings (40 MiB at 5 Mbit/s, the last with cuts), or tiny ones for a smoke run.
fn settings(cfg: &Config) -> Vec<Setting> {
    let ms = Duration::from_millis;
    let setting = |mbit, rtt, layer_size, cut| Setting {
        mbit,
        rtt: ms(rtt),
        layers: 5,
        layer_size,
        cut,
    };
    if cfg.smoke {
        return vec![
            setting(50, 20, 256 << 10, None),
            setting(50, 20, 256 << 10, Some(Duration::from_secs(2))),
        ];
    }
    let cut = Some(Duration::from_secs(30));
    vec![
        setting(50, 20, 40 << 20, None),
        setting(20, 150, 40 << 20, None),
        setting(5, 600, 8 << 20, None),
        setting(5, 600, 8 << 20, cut),
    ]
}

/// Runs `ip` (or `tc`) with `args`, panicking with its error output on failure.
fn run(program: &str, args: &[&str]) {
    let out = Command::new(require(program, "iproute2"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The parent's namespace and its veth to the host; removed when dropped.
struct Link;

impl Link {
    fn create() -> Link {
        // Leftovers of an interrupted run would make every step below fail.
        let _ = Command::new("ip").args(["netns", "del", NS]).output();
        let _ = Command::new("ip").args(["link", "del", HOST_IF]).output();
        run("ip", &["netns", "add", NS]);
        run(
            "ip",
            &[
                "link", "add", HOST_IF, "type", "veth", "peer", "name", NS_IF,
            ],
        );
        run("ip", &["link", "set", NS_IF, "netns", NS]);
        run(
            "ip",
            &["addr", "add", &format!("{HOST_IP}/24"), "dev", HOST_IF],
        );
        run("ip", &["link", "set", HOST_IF, "up"]);
        let ns = ["netns", "exec", NS, "ip"];
        run(
            "ip",
            &[
                &ns[..],
                &["addr", "add", &format!("{NS_IP}/24"), "dev", NS_IF],
            ]
            .concat(),
        );
        run("ip", &[&ns[..], &["link", "set", NS_IF, "up"]].concat());
        run("ip", &[&ns[..], &["link", "set", "lo", "up"]].concat());
        Link
    }

    /// Limits both directions to `mbit` (a short queue, so the round trip stays the relay's).
    fn shape(&self, mbit: u32) {
        let rate = format!("{mbit}mbit");
        let tbf = [
            "root", "tbf", "rate", &rate, "burst", "64kb", "latency", "100ms",
        ];
        run(
            "tc",
            &[&["qdisc", "replace", "dev", HOST_IF][..], &tbf[..]].concat(),
        );
        let ns = ["netns", "exec", NS, "tc", "qdisc", "replace", "dev", NS_IF];
        run("ip", &[&ns[..], &tbf[..]].concat());
    }

    /// Removes the limits.
    fn unshape(&self) {
        let _ = Command::new("tc")
            .args(["qdisc", "del", "dev", HOST_IF, "root"])
            .output();
        let ns = [
            "netns", "exec", NS, "tc", "qdisc", "del", "dev", NS_IF, "root",
        ];
        let _ = Command::new("ip").args(ns).output();
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", HOST_IF]).output();
        let _ = Command::new("ip").args(["netns", "del", NS]).output();
    }
}

/// What one setting's measurements share.
struct Run<'a> {
    bin: &'a Path,
    dir: &'a Path,
    s: &'a Setting,
    image: &'a Image,
    /// The reference parent's end of the link (through the delay relay).
    parent: String,
    /// That relay, which notes when the child's first request reached it.
    relay: &'a DelayRelay,
    /// The push-up parent's end of the link (through the delay relay).
    up: String,
    repo: String,
}

impl Run<'_> {
    /// Payload bytes of the image.
    fn payload(&self) -> f64 {
        self.image.payload_bytes() as f64
    }

    /// Link efficiency of moving the image in `secs`.
    fn efficiency(&self, secs: Option<f64>) -> Option<f64> {
        secs.map(|t| self.payload() / (self.s.rate_bytes() * t))
    }

    fn limit(&self) -> Duration {
        self.s.limit(self.payload())
    }

    /// `skopeo copy` (retrying on a cut link, as its users would), timed; `None` when it
    /// failed or did not finish in time.
    fn skopeo(&self, src: &str, dst: &str) -> Option<f64> {
        let retries: &[&str] = match self.s.cut {
            Some(_) => &["--retry-times", "10"],
            None => &[],
        };
        proc::settle_disk();
        let t = Instant::now();
        match skopeo_copy_within(self.dir, src, dst, retries, self.limit()) {
            Ok(()) => Some(t.elapsed().as_secs_f64()),
            Err(e) => {
                println!("    skopeo copy {src} -> {dst}: {e}");
                None
            }
        }
    }
}

/// Mirrors, pulls and pushes the same image over the link at each setting.
pub fn edge_link(bin: &Path, run_dir: &Path, cfg: &Config, report: &mut Report) {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        panic!("the edge link scenario needs root (network namespaces and tc): run scripts/bench.sh as root");
    }
    require("dockerd", "docker.io");
    let link = Link::create();
    let parent = Server::reference_in(run_dir, NS, NS_IP);
    let up = Server::ours_in(bin, run_dir, NS, NS_IP);
    let only = |var: &str, name: &str| std::env::var(var).map_or(true, |v| v == name);
    let rows = |kind: &str| {
        std::env::var("EDGE_ROWS").map_or(true, |v| v.split(',').any(|k| k.trim() == kind))
    };
    for (i, s) in settings(cfg).into_iter().enumerate() {
        if !only("EDGE_SETTING", &s.name()) {
            continue;
        }
        let repo = format!("edge/app{i}");
        let image = Image::new(s.layers, s.layer_size, 500 + 10 * i as u64);
        // Pushed before the link is shaped: only what is measured crosses the slow link.
        image.push(&mut Conn::new(parent.addr), &repo, "v1");
        link.shape(s.mbit);
        let relay = DelayRelay::start(parent.addr, s.rtt / 2);
        let up_relay = DelayRelay::start(up.addr, s.rtt / 2);
        let cutters = s
            .cut
            .map(|every| (relay.cut_every(every), up_relay.cut_every(every)));
        let run = Run {
            bin,
            dir: run_dir,
            s: &s,
            image: &image,
            parent: relay.addr.to_string(),
            relay: &relay,
            up: up_relay.addr.to_string(),
            repo,
        };
        println!("  -- {}", s.name());
        if rows("mirror") {
            mirror_rows(&run, report);
        }
        if rows("pull") {
            pull_rows(&run, report);
        }
        if rows("push") {
            push_rows(&run, &up, report);
        }
        drop(cutters);
        drop(relay);
        drop(up_relay);
        link.unshape();
    }
    drop(up);
    drop(parent);
    drop(link);
}

/// Adds an efficiency row and prints both figures.
fn row(run: &Run, report: &mut Report, what: &str, who: [&str; 2], secs: [Option<f64>; 2]) {
    let [r, o] = secs.map(|t| run.efficiency(t));
    let shown = |t: Option<f64>, e: Option<f64>| match (t, e) {
        (Some(t), Some(e)) => format!("{t:.1} s (efficiency {e:.2})"),
        _ => "did not finish".to_owned(),
    };
    println!(
        "    {what}: {} {}, {} {}",
        who[0],
        shown(secs[0], r),
        who[1],
        shown(secs[1], o)
    );
    let mib = run.payload() / f64::from(1 << 20);
    report.add(
        format!(
            "edge link {}: {what} {mib:.0} MiB, link efficiency ({} vs. {})",
            run.s.name(),
            who[0],
            who[1]
        ),
        "ratio",
        r,
        o,
        Better::Higher,
    );
}

/// The image mirrored by `skopeo copy` into a loopback reference registry and by our sync;
/// with the round trips our sync spent from its first request to its first layer byte.
fn mirror_rows(run: &Run, report: &mut Report) {
    let target = Server::reference(run.dir);
    let src = format!("{}/{}:v1", run.parent, run.repo);
    let skopeo = run.skopeo(&src, &format!("{}/{}:v1", target.host(), run.repo));
    if skopeo.is_some() {
        run.image
            .check(&mut Conn::new(target.addr), &run.repo, "v1");
    }
    drop(target);

    proc::settle_disk();
    let t = Instant::now();
    let p = policy(&run.repo, "1s");
    // Round trips count from the child's first request, not from its process start.
    run.relay.watch_first_request();
    let mut child = Server::ours(run.bin, run.dir, Some((&run.parent, &p)));
    let mut first_byte = None;
    let done = wait_until(&mut child, run.limit(), |st| {
        if first_byte.is_none() && bytes_done(st, &run.repo) > 0 {
            first_byte = run.relay.first_request().map(|at| at.elapsed());
        }
        synced(st, &run.repo, 1)
    });
    let ours = done.then(|| t.elapsed().as_secs_f64());
    if done {
        run.image.check(&mut Conn::new(child.addr), &run.repo, "v1");
    }
    drop(child);
    row(
        run,
        report,
        "mirror",
        ["skopeo copy", "our sync"],
        [skopeo, ours],
    );
    if let Some(fb) = first_byte {
        let trips = fb.as_secs_f64() / run.s.rtt.as_secs_f64();
        println!(
            "    our sync: first layer byte after {:.2} s ({trips:.1} round trips)",
            fb.as_secs_f64()
        );
        report.add(
            format!(
                "edge link {}: our sync, round trips before the first layer byte",
                run.s.name()
            ),
            "RTT",
            None,
            Some(trips),
            Better::Lower,
        );
    }
}

/// `docker pull` through `docker-registry` as a pull-through cache and through our
/// fetch-through (a child whose schedule never opens: every byte comes through the fetch).
fn pull_rows(run: &Run, report: &mut Report) {
    let limit = run.limit();
    let image = |host: String| format!("{host}/{}:v1", run.repo);
    let cache = Server::pull_through(run.dir, &format!("http://{}", run.parent));
    let docker = Dockerd::start(run.dir);
    proc::settle_disk();
    let theirs = docker.pull(&image(cache.host()), limit);
    drop(docker);
    drop(cache);

    let p = format!(
        "mode = \"ReadOnly\"\n[sync]\nrepositories = [\"{}\"]\nschedule = \"0 0 0 1 1 *\"\nwindow = \"PT1M\"\n",
        run.repo
    );
    let child = Server::ours(run.bin, run.dir, Some((&run.parent, &p)));
    let docker = Dockerd::start(run.dir);
    proc::settle_disk();
    let ours = docker.pull(&image(child.host()), limit);
    drop(docker);
    drop(child);
    row(
        run,
        report,
        "docker pull",
        ["pull-through cache", "our fetch-through"],
        [theirs, ours],
    );
}

/// The image pushed up to a root of ours: `skopeo copy` from a loopback reference registry,
/// and our push-up from a ReadWrite child it was pushed into.
fn push_rows(run: &Run, up: &Server, report: &mut Report) {
    let source = Server::reference(run.dir);
    let src_repo = format!("{}-src", run.repo);
    run.image.push(&mut Conn::new(source.addr), &src_repo, "v1");
    let skopeo = run.skopeo(
        &format!("{}/{src_repo}:v1", source.host()),
        &format!("{}/{}-skopeo:v1", run.up, run.repo),
    );
    drop(source);

    let repo = format!("{}-up", run.repo);
    let p =
        format!("mode = \"ReadWrite\"\n[sync]\nrepositories = [\"{repo}\"]\ninterval = \"1h\"\n");
    let mut child = Server::ours(run.bin, run.dir, Some((&run.up, &p)));
    let first = wait_until(&mut child, run.limit(), |st| {
        st["syncPasses"].as_u64() >= Some(1)
    });
    assert!(first, "the push-up child's first pass did not end");
    run.image.push(&mut Conn::new(child.addr), &repo, "v1");
    proc::settle_disk();
    let t = Instant::now();
    let r = Conn::new(child.addr).request("POST", "/acr/v1/sync", &[], &[]);
    assert!(
        r.is_ok_and(|r| r.status() == 202),
        "POST /acr/v1/sync failed"
    );
    let done = wait_until(&mut child, run.limit(), |st| {
        st["outbox"]["pendingCount"].as_u64() == Some(0)
    });
    let ours = done.then(|| t.elapsed().as_secs_f64());
    if done {
        run.image.check(&mut Conn::new(up.addr), &repo, "v1");
    }
    drop(child);
    row(
        run,
        report,
        "push-up",
        ["skopeo copy", "our push-up"],
        [skopeo, ours],
    );
}

/// Bytes the child's status shows done for `repo`.
fn bytes_done(st: &Value, repo: &str) -> u64 {
    st["repositories"]
        .as_array()
        .and_then(|a| a.iter().find(|r| r["name"] == repo))
        .and_then(|r| r["bytesDone"].as_u64())
        .unwrap_or(0)
}

/// Polls the child's status every 10 ms until `done` holds (true) or `limit` passes (false).
fn wait_until(s: &mut Server, limit: Duration, mut done: impl FnMut(&Value) -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        s.check_alive();
        if done(&status(s)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    println!("    not within {limit:?}; status: {}", status(s));
    false
}
