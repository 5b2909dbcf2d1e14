//! ISA-95 style layered networks for whole-process tests: a chain of Linux network namespaces
//! below the test's own (host) namespace, each joined only to the layer directly above it by a
//! veth pair on a /24 of its own. Nothing routes between non-adjacent layers: no namespace
//! forwards (`ip_forward` is forced off) and none has a default route, so a layer reaches
//! exactly the two links it sits on and nothing else (not even the host's loopback).
//!
//! Layer 0 is the host namespace; layers 1..=n are namespaces. Link `i` joins layer `i-1`
//! (address `up_addr(i)`, `x.x.x.1`) and layer `i` (address `addr(i)`, `x.x.x.2`). The layer
//! above is not blocked from connecting down either: the links are plain routed /24s.
//!
//! Declare the `Net` before anything that runs inside it, so that it is dropped after them: a
//! namespace outlives `ip netns del` while a process still runs in it.

use std::ffi::OsStr;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{require, run_bounded};

/// Every name this harness gives starts with this (namespaces and veth ends alike).
const PREFIX: &str = "crx";
/// The /16 the links' /24s are taken from (`layers.rs` uses 10.213, kept apart).
const NET16: &str = "10.214";
/// Made unreachable in the host namespace while a chain exists: the host has a default route,
/// and without this its packets to a deeper layer's address would leave the machine (where
/// this sandbox's gateway even answers any TCP connection, so it would seem to "reach" it).
/// The links' connected /24s are more specific and win.
const GUARD: &str = "10.214.0.0/16";
/// Linux limits interface names to 15 bytes (IFNAMSIZ − 1).
const IFNAMSIZ_MAX: usize = 15;
/// Limit for one `ip` invocation.
const IP_LIMIT: Duration = Duration::from_secs(10);

/// Distinguishes the `Net`s of one process (two digits in every name).
static INSTANCE: AtomicU32 = AtomicU32::new(0);
/// Serialises allocation within this process (the abstract socket below does it across
/// processes, but binding it twice from one process would just fail, not wait).
static ALLOC: Mutex<()> = Mutex::new(());

/// One veth pair between layer `i-1` (upper end) and layer `i` (lower end).
struct Link {
    /// Namespace of the upper end (`None`: the host namespace).
    upper_ns: Option<String>,
    /// Namespace of the lower end.
    lower_ns: String,
    upper_if: String,
    lower_if: String,
    upper_addr: String,
    lower_addr: String,
}

/// A chain of network namespaces below the host namespace; deleted (with their veths) on drop.
pub struct Net {
    /// `links[i-1]` joins layer `i-1` and layer `i`.
    links: Vec<Link>,
}

/// A command running `program` in namespace `ns` (`nsenter --net`), or plainly for `None`.
///
/// Not `ip netns exec`: that also gives the program a mount namespace with a fresh /sys, which
/// hides /sys/fs/cgroup, and dockerd then refuses to start ("Devices cgroup isn't mounted").
/// `nsenter --net` changes the network namespace only: same mounts, same files (sockets and
/// logs are seen from the host), and it execs the program in place, so the child's pid is the
/// program's own and killing the child kills the program.
pub fn in_ns(ns: Option<&str>, program: impl AsRef<OsStr>) -> Command {
    match ns {
        None => Command::new(program),
        Some(ns) => {
            let mut c = Command::new(require("nsenter"));
            // `ip netns add` binds the namespace there (iproute2's NETNS_RUN_DIR).
            c.arg(format!("--net=/run/netns/{ns}"))
                .arg("--")
                .arg(program);
            c
        }
    }
}

/// The HTTP status `url` answers with to curl run in namespace `ns` (`None`: no HTTP answer at
/// all — unreachable, refused, timed out or a TLS failure). `extra` goes to curl before the URL
/// (e.g. `["--cacert", path]` or `["-k"]`). Bounded: connect 2 s, whole request 5 s.
pub fn curl_status(ns: Option<&str>, url: &str, extra: &[&OsStr]) -> Option<u16> {
    let mut c = in_ns(ns, require("curl"));
    c.args(["-s", "-o", "/dev/null", "--noproxy", "*"])
        .args(["--connect-timeout", "2", "-m", "5", "-w", "%{http_code}"])
        .args(extra)
        .arg(url);
    let out = run_bounded(&mut c, Duration::from_secs(15));
    let code: u16 = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
    // curl prints 000 when no response came.
    (code != 0).then_some(code)
}

/// Runs `ip` with `args` (after `-n ns` when given); panics with its output unless it succeeds.
fn ip(ns: Option<&str>, args: &[&str]) {
    let mut c = Command::new(require("ip"));
    if let Some(ns) = ns {
        c.args(["-n", ns]);
    }
    c.args(args);
    let out = run_bounded(&mut c, IP_LIMIT);
    assert!(
        out.status.success(),
        "ip {ns:?} {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// `ip`'s standard output (empty on failure): for reading state.
fn ip_out(ns: Option<&str>, args: &[&str]) -> String {
    let mut c = Command::new(require("ip"));
    if let Some(ns) = ns {
        c.args(["-n", ns]);
    }
    c.args(args);
    let out = run_bounded(&mut c, IP_LIMIT);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `ip` ignoring failure, never panicking (cleanup, also from `Drop`); bounded.
fn ip_quiet(ns: Option<&str>, args: &[&str]) {
    let mut c = Command::new("ip");
    if let Some(ns) = ns {
        c.args(["-n", ns]);
    }
    let child = c
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let Ok(mut child) = child else { return };
    let deadline = Instant::now() + IP_LIMIT;
    while !matches!(child.try_wait(), Ok(Some(_))) {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Holds the cross-process allocation lock while alive: an abstract unix socket, which only one
/// process can bind and which the kernel releases when its holder dies (no stale lock files).
struct AllocLock {
    _held: UnixListener,
}

impl AllocLock {
    /// Takes the lock, waiting `limit` at most (`None` then).
    fn take(limit: Duration) -> Option<Self> {
        let addr = SocketAddr::from_abstract_name(b"connected-registry-tests-netns").ok()?;
        let deadline = Instant::now() + limit;
        loop {
            match UnixListener::bind_addr(&addr) {
                Ok(l) => return Some(AllocLock { _held: l }),
                Err(_) if Instant::now() > deadline => return None,
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

/// The pid a name of ours was made by (`crx{pid}{kk}{role}{layer}`), if it is one of ours.
fn owner(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?;
    let role = rest.find(|c: char| !c.is_ascii_digit())?;
    let (digits, tail) = rest.split_at(role);
    let mut tail = tail.chars();
    if !matches!(tail.next(), Some('n' | 'u' | 'd')) {
        return None;
    }
    let layer = tail.as_str();
    if layer.is_empty() || !layer.bytes().all(|b| b.is_ascii_digit()) || digits.len() < 3 {
        return None;
    }
    digits[..digits.len() - 2].parse().ok()
}

/// True if `pid` is no live process (its names are leftovers).
fn dead(pid: u32) -> bool {
    pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Names of the host namespace's interfaces (`ip -o link` lines: "7: crx1234500u1@if2: …").
fn host_links() -> Vec<String> {
    ip_out(None, &["-o", "link", "show"])
        .lines()
        .filter_map(|l| l.split(": ").nth(1)?.split('@').next())
        .map(str::to_owned)
        .collect()
}

/// Deletes namespaces and host-side veths left by test processes that died without dropping
/// their `Net` (SIGKILL, abort); an owner still alive (or a pid reused since) is left alone.
fn remove_leftovers() {
    let dead = |name: &str| owner(name).is_some_and(dead);
    for name in host_links() {
        if dead(&name) {
            ip_quiet(None, &["link", "del", &name]);
        }
    }
    // `ip netns list` lines: "crx1234500n1 (id: 3)" or just the name.
    for line in ip_out(None, &["netns", "list"]).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        if dead(name) {
            ip_quiet(None, &["netns", "del", name]);
        }
    }
}

/// The third octets of `10.214.x.0/24` subnets that have an address in the host namespace.
fn subnets_in_use() -> Vec<u8> {
    let text = ip_out(None, &["-o", "-4", "addr", "show"]);
    let prefix = format!("{NET16}.");
    text.split_whitespace()
        .filter_map(|w| w.strip_prefix(&prefix))
        .filter_map(|rest| rest.split('.').next()?.parse().ok())
        .collect()
}

impl Net {
    /// Creates `n` namespaces (layers 1..=n), layer `i` joined only to layer `i-1` (layer 0
    /// being the host namespace), `lo` up everywhere, forwarding off, no default routes.
    pub fn chain(n: usize) -> Self {
        assert!((1..=99).contains(&n), "a chain has 1 to 99 layers, not {n}");
        let pid = std::process::id();
        let k = INSTANCE.fetch_add(1, Ordering::Relaxed) % 100;
        let base = format!("{PREFIX}{pid}{k:02}");
        let name = |role: char, i: usize| {
            let s = format!("{base}{role}{i}");
            assert!(s.len() <= IFNAMSIZ_MAX, "name {s} too long");
            s
        };
        // Declared before the locks so that, should a step below panic, the locks are released
        // before `Drop` deletes what exists so far (it takes them again).
        let mut net = Net { links: Vec::new() };
        // Held until every address is on: another process scanning meanwhile must see them.
        let _local = ALLOC.lock().unwrap_or_else(|e| e.into_inner());
        let _global = AllocLock::take(Duration::from_secs(60))
            .unwrap_or_else(|| panic!("netns allocation lock still held by another process"));
        remove_leftovers();
        ip(None, &["route", "replace", "unreachable", GUARD]);
        // A /24 per link: from a start derived from the pid (so concurrent test binaries start
        // far apart), the next ones not in use on the host. Only link 1 touches the host
        // namespace, but keeping the whole chain's subnets apart keeps addresses unambiguous.
        let used = subnets_in_use();
        let start = (pid as usize * 7 + k as usize * 61) % 256;
        let octets: Vec<u8> = (0..256)
            .map(|j| ((start + j) % 256) as u8)
            .filter(|x| !used.contains(x))
            .take(n)
            .collect();
        assert_eq!(
            octets.len(),
            n,
            "not enough free {NET16}.x.0/24 subnets on this host (in use: {used:?})"
        );
        for i in 1..=n {
            let ns = name('n', i);
            // A namespace of the same name can only be from a dead process with our pid.
            ip_quiet(None, &["netns", "del", &ns]);
            ip(None, &["netns", "add", &ns]);
            let upper_ns = (i > 1).then(|| name('n', i - 1));
            let net24 = format!("{NET16}.{}", octets[i - 1]);
            let link = Link {
                upper_ns,
                lower_ns: ns.clone(),
                upper_if: name('u', i),
                lower_if: name('d', i),
                upper_addr: format!("{net24}.1"),
                lower_addr: format!("{net24}.2"),
            };
            if link.upper_ns.is_none() {
                ip_quiet(None, &["link", "del", &link.upper_if]);
            }
            // Pushed now so that a panic below still deletes what exists so far (`Drop`).
            net.links.push(link);
            let link = &net.links[i - 1];
            ip(Some(&ns), &["link", "set", "lo", "up"]);
            // New namespaces copy IPv4 settings from the host's, where dockerd may have turned
            // forwarding on: force it off so a middle layer never routes between its links.
            let mut sh = net.command(i, "sh");
            sh.args([
                "-c",
                "echo 0 > /proc/sys/net/ipv4/ip_forward && cat /proc/sys/net/ipv4/ip_forward",
            ]);
            let out = run_bounded(&mut sh, IP_LIMIT);
            assert_eq!(
                String::from_utf8_lossy(&out.stdout).trim(),
                "0",
                "cannot turn forwarding off in {ns}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let up = link.upper_ns.as_deref();
            let (uif, dif) = (&link.upper_if, &link.lower_if);
            ip(
                up,
                &[
                    "link", "add", uif, "type", "veth", "peer", "name", dif, "netns", &ns,
                ],
            );
            let (upper_cidr, lower_cidr) = (
                format!("{}/24", link.upper_addr),
                format!("{}/24", link.lower_addr),
            );
            ip(up, &["addr", "add", &upper_cidr, "dev", uif]);
            ip(Some(&ns), &["addr", "add", &lower_cidr, "dev", dif]);
            ip(up, &["link", "set", uif, "up"]);
            ip(Some(&ns), &["link", "set", dif, "up"]);
        }
        for i in 1..=n {
            net.wait_link_up(i);
        }
        net
    }

    /// How many namespaces (layers below the host) the chain has.
    pub fn layers(&self) -> usize {
        self.links.len()
    }

    /// Layer `i`'s namespace name (`None` for layer 0, the host namespace).
    pub fn ns(&self, i: usize) -> Option<&str> {
        match i {
            0 => None,
            _ => Some(&self.link(i).lower_ns),
        }
    }

    /// Where layer `i` (1..=n) reaches the layer above: layer `i-1`'s end of link `i`.
    pub fn up_addr(&self, i: usize) -> &str {
        &self.link(i).upper_addr
    }

    /// Layer `i`'s (1..=n) own address on its uplink (where layer `i-1` reaches it).
    pub fn addr(&self, i: usize) -> &str {
        &self.link(i).lower_addr
    }

    /// Layer `i`'s (0..n) address on its downlink: where layer `i+1` reaches it, so where a
    /// parent serving the layer below listens. Same as `up_addr(i + 1)`.
    pub fn down_addr(&self, i: usize) -> &str {
        self.up_addr(i + 1)
    }

    fn link(&self, i: usize) -> &Link {
        assert!(
            (1..=self.links.len()).contains(&i),
            "no link {i}: the chain has layers 0..={}",
            self.links.len()
        );
        &self.links[i - 1]
    }

    /// Takes link `i` (between layers `i-1` and `i`) down at both ends: a cut uplink. Both
    /// ends lose the link's route at once, so connecting across fails fast (network
    /// unreachable) instead of timing out, and established connections see errors on send;
    /// addresses stay assigned, so servers listening on them keep listening.
    pub fn cut(&self, i: usize) {
        let l = self.link(i);
        ip(l.upper_ns.as_deref(), &["link", "set", &l.upper_if, "down"]);
        ip(Some(&l.lower_ns), &["link", "set", &l.lower_if, "down"]);
    }

    /// Brings link `i` up again at both ends and waits (bounded) until it carries traffic: the
    /// kernel re-adds the /24 route itself when an interface with an address comes up.
    pub fn restore(&self, i: usize) {
        let l = self.link(i);
        ip(l.upper_ns.as_deref(), &["link", "set", &l.upper_if, "up"]);
        ip(Some(&l.lower_ns), &["link", "set", &l.lower_if, "up"]);
        self.wait_link_up(i);
    }

    /// Waits (5 s at most) until both ends of link `i` are operationally up and routed.
    fn wait_link_up(&self, i: usize) {
        let l = self.link(i);
        let deadline = Instant::now() + Duration::from_secs(5);
        let net24 = l.upper_addr.trim_end_matches(".1");
        let ready = |ns: Option<&str>, dev: &str| {
            ip_out(ns, &["-o", "link", "show", "dev", dev]).contains("state UP")
                && ip_out(ns, &["-4", "route", "show", "dev", dev]).contains(net24)
        };
        while !(ready(l.upper_ns.as_deref(), &l.upper_if) && ready(Some(&l.lower_ns), &l.lower_if))
        {
            assert!(
                Instant::now() < deadline,
                "link {i} ({} – {}) not up in 5 s",
                l.upper_if,
                l.lower_if
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A command running `program` inside layer `i` (a plain command for layer 0).
    pub fn command(&self, i: usize, program: impl AsRef<OsStr>) -> Command {
        in_ns(self.ns(i), program)
    }

    /// The HTTP status `url` answers with to curl run in layer `i` (`-k`: certificates are not
    /// checked); `None` when nothing answered.
    pub fn status(&self, i: usize, url: &str) -> Option<u16> {
        curl_status(self.ns(i), url, &["-k".as_ref()])
    }

    /// True when an HTTP server answers `url` (with any status) from inside layer `i`.
    pub fn reaches(&self, i: usize, url: &str) -> bool {
        self.status(i, url).is_some()
    }

    /// Waits until `url` answers (any status) from inside layer `i`; false after `limit`.
    pub fn wait_reaches(&self, i: usize, url: &str, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if self.reaches(i, url) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // Deleting one end of a veth deletes the pair; done explicitly because a namespace
        // that still holds a process survives `ip netns del`, and with it its links (the host
        // end of link 1 keeping its address in the host namespace).
        for l in self.links.iter().rev() {
            ip_quiet(l.upper_ns.as_deref(), &["link", "del", &l.upper_if]);
            ip_quiet(None, &["netns", "del", &l.lower_ns]);
        }
        // The last chain on the machine takes the guard route away again.
        let _local = ALLOC.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(_global) = AllocLock::take(Duration::from_secs(10)) {
            let live = |name: &String| owner(name).is_some_and(|pid| !dead(pid));
            if !host_links().iter().any(live) {
                ip_quiet(None, &["route", "del", "unreachable", GUARD]);
            }
        }
    }
}
