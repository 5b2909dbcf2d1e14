//! The "edge link" scenario: the parent (a reference registry) in a network namespace of its
//! own, reached over a veth whose rate `tc tbf` limits in both directions and whose round trip
//! the project's delay relay raises. At each setting the same 5-layer image is mirrored with
//! `skopeo copy` and with our sync, and each is reported as link efficiency: payload bytes ÷
//! (rate × time). tbf counts packet headers too, so a full link carries about 0.95 of its rate
//! as payload.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::content::Image;
use crate::delay::DelayRelay;
use crate::http::Conn;
use crate::mirror::{policy, skopeo_copy, synced, wait_status};
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
}

impl Setting {
    fn name(&self) -> String {
        format!("{} Mbit/s, {} ms", self.mbit, self.rtt.as_millis())
    }

    /// Payload bytes per second at the link's rate.
    fn rate_bytes(&self) -> f64 {
        f64::from(self.mbit) * 1e6 / 8.0
    }
}

/// The three settings (40 MiB at 5 Mbit/s), or one tiny one for a smoke run.
fn settings(cfg: &Config) -> Vec<Setting> {
    let ms = Duration::from_millis;
    if cfg.smoke {
        return vec![Setting {
            mbit: 50,
            rtt: ms(20),
            layers: 5,
            layer_size: 256 << 10,
        }];
    }
    vec![
        Setting {
            mbit: 50,
            rtt: ms(20),
            layers: 5,
            layer_size: 40 << 20,
        },
        Setting {
            mbit: 20,
            rtt: ms(150),
            layers: 5,
            layer_size: 40 << 20,
        },
        Setting {
            mbit: 5,
            rtt: ms(600),
            layers: 5,
            layer_size: 8 << 20,
        },
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

/// Mirrors the same image over the link at each setting with `skopeo copy` and with our sync.
pub fn edge_link(bin: &Path, run_dir: &Path, cfg: &Config, report: &mut Report) {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        panic!("the edge link scenario needs root (network namespaces and tc): run scripts/bench.sh as root");
    }
    let link = Link::create();
    let parent = Server::reference_in(run_dir, NS, NS_IP);
    for (i, s) in settings(cfg).into_iter().enumerate() {
        let repo = format!("edge/app{i}");
        let image = Image::new(s.layers, s.layer_size, 500 + 10 * i as u64);
        // Pushed before the link is shaped: only the mirroring crosses the slow link.
        image.push(&mut Conn::new(parent.addr), &repo, "v1");
        let payload = image.payload_bytes() as f64;
        link.shape(s.mbit);
        let relay = DelayRelay::start(parent.addr, s.rtt / 2);
        let upstream = relay.addr.to_string();

        let target = Server::reference(run_dir);
        proc::settle_disk();
        let t = Instant::now();
        skopeo_copy(
            run_dir,
            &format!("{upstream}/{repo}:v1"),
            &format!("{}/{repo}:v1", target.host()),
        );
        let skopeo = t.elapsed().as_secs_f64();
        image.check(&mut Conn::new(target.addr), &repo, "v1");
        drop(target);

        proc::settle_disk();
        let t = Instant::now();
        let p = policy(&repo, "1s");
        let mut child = Server::ours(bin, run_dir, Some((&upstream, &p)));
        wait_status(&mut child, "edge mirror", |st| synced(st, &repo, 1));
        let ours = t.elapsed().as_secs_f64();
        image.check(&mut Conn::new(child.addr), &repo, "v1");
        drop(child);
        drop(relay);
        link.unshape();

        let eff = |secs: f64| payload / (s.rate_bytes() * secs);
        println!(
            "    {}: skopeo copy {skopeo:.1} s (efficiency {:.2}), our sync {ours:.1} s ({:.2})",
            s.name(),
            eff(skopeo),
            eff(ours)
        );
        let mib = payload / f64::from(1 << 20);
        let what = format!("edge link {}: mirror {mib:.0} MiB", s.name());
        report.add(
            format!("{what}, link efficiency (skopeo copy vs. our sync)"),
            "ratio",
            Some(eff(skopeo)),
            Some(eff(ours)),
            Better::Higher,
        );
    }
    drop(parent);
    drop(link);
}
