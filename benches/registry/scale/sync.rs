//! A child of ours mirroring every scale repository from a parent through a counting relay: the
//! first sync, then one more pass that finds nothing new (requests, bytes, seconds). With a
//! connected-registry parent the child learns every tag's digest from its tag listing; the
//! reference has no such listing, so there the child asks for each tag.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::build::Layout;
use crate::content;
use crate::http::Conn;
use crate::mirror::{counted_pass, wait_status_within};
use crate::proc;
use crate::relay::Relay;
use crate::report::{Better, Report};
use crate::servers::Server;

/// Longest the first sync or the no-change pass may take before the benchmark gives up.
const LIMIT: Duration = Duration::from_secs(1800);
/// Pause between status polls: a status of a thousand repositories is not free to build.
const POLL: Duration = Duration::from_millis(50);

/// A ReadOnly policy naming every repository of `layout` (the policy has no wildcard), with a
/// long interval so only the passes the benchmark asks for follow the first one.
fn policy(layout: &Layout) -> String {
    let repos: Vec<String> = (0..layout.repos)
        .map(|r| format!("\"{}\"", layout.repo(r)))
        .collect();
    format!(
        "mode = \"ReadOnly\"\n[sync]\nrepositories = [{}]\ninterval = \"24h\"\n",
        repos.join(", ")
    )
}

/// True when every repository of `layout` is Synced with all its tags and no pass is running.
fn all_synced(st: &Value, layout: &Layout) -> bool {
    let done = st["repositories"].as_array().map_or(0, |a| {
        a.iter()
            .filter(|r| r["state"] == "Synced" && r["tags"] == layout.tags)
            .count()
    });
    done == layout.repos && st["connectionState"] != "Syncing"
}

/// Polls the child's status until `done` holds; panics with it after `LIMIT`.
fn wait(child: &mut Server, what: &str, done: impl FnMut(&Value) -> bool) -> Value {
    wait_status_within(child, what, LIMIT, POLL, done)
}

/// Checks a spread of the child's tags against the digests pushed to the parent.
fn check_some(child: &Server, layout: &Layout) {
    let mut c = Conn::new(child.addr);
    let step = (layout.repos / 7).max(1);
    for r in (0..layout.repos).step_by(step) {
        let t = (r * 31) % layout.tags;
        content::check_manifest(&mut c, &layout.repo(r), &layout.tag(t), layout.digest(r, t));
    }
}

/// Mirrors the scale content from `parent` (`from` names it in the rows) into a fresh child of
/// ours and reports the first sync and a no-change pass.
pub fn no_change_sync(
    bin: &Path,
    run: &Path,
    parent: SocketAddr,
    from: &str,
    l: &Layout,
    report: &mut Report,
) {
    let relay = Relay::start(parent);
    let t = Instant::now();
    let mut child = Server::ours(bin, run, Some((&relay.addr.to_string(), &policy(l))));
    let st = wait(&mut child, "first sync", |st| all_synced(st, l));
    let first = (t.elapsed().as_secs_f64(), relay.counted());
    check_some(&child, l);
    let size = format!("{} repos × {} tags from {from}", l.repos, l.tags);
    println!(
        "    first sync of {size}: {:.1} s, {} requests",
        first.0, first.1.requests
    );
    let again = counted_pass(&mut child, &relay, &st, LIMIT, POLL);
    let peak = proc::peak_rss(child.pid()) as f64 / proc::MIB;
    let mut row = |what: String, unit, v: f64| report.add(what, unit, None, Some(v), Better::Lower);
    row(format!("scale: first sync of {size}"), "s", first.0);
    let requests = first.1.requests as f64;
    row(
        format!("scale: first sync of {size}, requests"),
        "count",
        requests,
    );
    row(
        format!("scale: peak RSS of the child syncing {size}"),
        "MiB",
        peak,
    );
    let requests = again.1.requests as f64;
    row(
        format!("scale: no-change sync of {size}, requests"),
        "count",
        requests,
    );
    let kib = (again.1.up + again.1.down) as f64 / 1024.0;
    row(
        format!("scale: no-change sync of {size}, bytes both ways"),
        "KiB",
        kib,
    );
    row(
        format!("scale: no-change sync of {size}, time"),
        "s",
        again.0,
    );
}
