//! Faults between child and parent: a link cut every few MiB, a child killed mid-download, a
//! parent that goes away and comes back (DESIGN §6: resume from the last byte, `Offline`).

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::distribution::DockerRegistry;
use crate::common::faultproxy::FaultProxy;
use crate::common::{oci, Registry};
use crate::{blob_sha, child, manifest_digest, policy_for, status, sync_now, tags, tail, wait_for};

/// Download chunk size the children here are configured with (`chunk_size_mb = 4`).
const CHUNK: u64 = 4 << 20;
/// Response headers and small metadata (tag lists, manifests, config) allowed besides the layer.
const OVERHEAD: u64 = 64 << 10;
/// Headers of one more response, allowed per cut (each cut costs one request more).
const PER_CUT: u64 = 4 << 10;

/// The child's `repositories[]` entry for `repo` in its status report (`Null` when absent).
fn repo_status(s: &Value, repo: &str) -> Value {
    let repos = s["repositories"].as_array().cloned().unwrap_or_default();
    repos
        .into_iter()
        .find(|r| r["name"] == repo)
        .unwrap_or_default()
}

/// Whether the status report carries a detail with `code`.
fn has_detail(s: &Value, code: &str) -> bool {
    s["statusDetails"]
        .as_array()
        .is_some_and(|d| d.iter().any(|x| x["code"] == code))
}

/// Sizes of the files in `<data>/partial/` (empty when there is no such directory).
fn partial_sizes(data: &Path) -> Vec<u64> {
    let Ok(dir) = std::fs::read_dir(data.join("partial")) else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .collect()
}

/// Waits until a sync pass stored `repo` here with `n` tags, by the status only: asking the
/// child for the manifest would fetch it through from the parent and prove nothing.
fn wait_synced(reg: &Registry, repo: &str, n: u64, limit: Duration) {
    let what = format!("{repo} Synced with {n} tags");
    wait_for(reg, &what, limit, || {
        let r = repo_status(&status(reg), repo);
        r["state"] == "Synced" && r["tags"] == n
    });
}

/// Asserts the child serves `repo:tag` as `m` with all its blobs, byte for byte.
fn assert_served(reg: &Registry, repo: &str, tag: &str, m: &oci::Manifest) {
    let got = manifest_digest(&reg.url(), repo, tag);
    assert_eq!(got, (200, m.digest.clone()), "{repo}:{tag} at the child");
    for b in &m.blobs {
        let got = blob_sha(&reg.url(), repo, &b.digest);
        assert_eq!(got, (200, b.digest.clone()), "blob {} of {repo}", b.digest);
    }
}

#[test]
fn a_large_layer_syncs_through_a_link_cut_every_few_mib() {
    let started = Instant::now();
    let parent = DockerRegistry::start();
    let layer = oci::pseudo_random(100 << 20, 0xC0FFEE);
    let size = layer.len() as u64;
    let image = oci::image_with_layers(vec![layer]);
    parent.push("big/app", "v1", &image);

    let proxy = FaultProxy::start(parent.addr());
    proxy.set_cut_every(Some(6 << 20));
    let policy = policy_for(&["big/app"], "chunk_size_mb = 4");
    let reg = child(&proxy.host(), "unused", &policy, &[]);
    // A cut is resumed inside the download: the repository's sync never fails over it.
    let mut failed = None;
    wait_for(&reg, "big/app Synced", Duration::from_secs(120), || {
        let r = repo_status(&status(&reg), "big/app");
        if r["state"] == "Failed" {
            failed.get_or_insert(r.clone());
        }
        r["state"] == "Synced" && r["tags"] == 1
    });
    let (cuts, down) = (proxy.cuts(), proxy.bytes_down());
    let synced_after = started.elapsed();
    assert_served(&reg, "big/app", "v1", &image);
    let log = reg.log();
    let resumed = log.matches("blob download interrupted; resuming").count();
    assert!(
        failed.is_none() && !log.contains("blob download failed"),
        "a link cut failed the download instead of resuming it: {failed:?}\n{}",
        tail(&log, 20)
    );

    assert!(cuts >= 10, "only {cuts} cuts for a {size}-byte layer");
    let bound = size + cuts * CHUNK + OVERHEAD + cuts * PER_CUT;
    assert!(
        down <= bound,
        "{down} bytes came through the proxy; a {size}-byte layer cut {cuts} times with \
         {CHUNK}-byte chunks allows {size} + {cuts}×{CHUNK} + {OVERHEAD} + {cuts}×{PER_CUT} \
         = {bound} (over by {})",
        down - bound
    );
    eprintln!(
        "cut {cuts} times, resumed {resumed} times: {down} bytes down for a {size}-byte layer \
         (bound {bound}); synced after {synced_after:?}"
    );
}

#[test]
fn a_killed_child_resumes_its_download_after_restart() {
    let started = Instant::now();
    let parent = DockerRegistry::start();
    let layer = oci::pseudo_random(60 << 20, 0xBEEF);
    let size = layer.len() as u64;
    let image = oci::image_with_layers(vec![layer]);
    parent.push("big/app", "v1", &image);

    let proxy = FaultProxy::start(parent.addr());
    // A pause before each forwarded read (at most 64 KiB): 60 MiB take several seconds.
    proxy.set_delay(Some(Duration::from_millis(3)));
    let policy = policy_for(&["big/app"], "chunk_size_mb = 4");
    let mut reg = child(&proxy.host(), "unused", &policy, &[]);

    let deadline = Instant::now() + Duration::from_secs(60);
    while partial_sizes(&reg.data).iter().max().copied().unwrap_or(0) < size * 3 / 10 {
        let s = status(&reg);
        assert!(
            Instant::now() < deadline,
            "no partial download past 30 % within 60 s: {s}"
        );
        let r = repo_status(&s, "big/app");
        assert_ne!(
            r["state"], "Synced",
            "finished before the kill: slow the link more"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    reg.stop_hard();
    let at_kill = partial_sizes(&reg.data).into_iter().max().unwrap_or(0);
    assert!(at_kill < size, "{at_kill} of {size} bytes at the kill");
    proxy.reset_counters();
    proxy.set_delay(None);

    reg.restart();
    wait_synced(&reg, "big/app", 1, Duration::from_secs(60));
    let down = proxy.bytes_down();
    assert_served(&reg, "big/app", "v1", &image);
    let bound = size - at_kill + CHUNK + OVERHEAD;
    assert!(
        down <= bound,
        "{down} bytes came through the proxy after the restart; {at_kill} of {size} bytes were \
         on disk, so resuming allows {size} - {at_kill} + {CHUNK} + {OVERHEAD} = {bound}: it \
         started over"
    );
    let left = partial_sizes(&reg.data);
    assert!(
        left.is_empty(),
        "partial/ still holds files of {left:?} bytes"
    );
    eprintln!(
        "killed at {at_kill} of {size} bytes; {down} bytes down after the restart (bound \
         {bound}); {:?}",
        started.elapsed()
    );
}

#[test]
fn offline_parent_keeps_content_served_and_converges_when_back() {
    const PASSWORD: &str = "pw-F4ults-Secret";
    let started = Instant::now();
    let mut parent = DockerRegistry::start_with_users(&[("sync", PASSWORD)]);
    let v1 = oci::image("amd64", b"version one");
    parent.push("repo", "v1", &v1);
    let reg = child(&parent.host(), PASSWORD, &policy_for(&["repo"], ""), &[]);
    wait_synced(&reg, "repo", 1, Duration::from_secs(30));

    parent.stop();
    sync_now(&reg);
    wait_for(
        &reg,
        "Offline, ParentUnreachable",
        Duration::from_secs(30),
        || {
            let s = status(&reg);
            s["connectionState"] == "Offline" && has_detail(&s, "ParentUnreachable")
        },
    );
    // Content is served the whole time; the state stays Offline, but every retry pass shows
    // `Syncing` for a few milliseconds (see the report), so only Online/Unhealthy are refused.
    let mut offline_samples = 0;
    for _ in 0..10 {
        assert_served(&reg, "repo", "v1", &v1);
        assert_eq!(tags(&reg.url(), "repo"), ["v1"], "tags while offline");
        let s = status(&reg);
        let state = s["connectionState"].as_str().unwrap_or_default().to_owned();
        assert!(
            matches!(state.as_str(), "Offline" | "Syncing") && has_detail(&s, "ParentUnreachable"),
            "while the parent is down: {s}"
        );
        assert!(
            !s.to_string().contains(PASSWORD),
            "password in the status: {s}"
        );
        offline_samples += u32::from(state == "Offline");
        std::thread::sleep(Duration::from_millis(150));
    }
    assert!(
        offline_samples >= 5,
        "Offline in only {offline_samples} of 10 samples"
    );

    parent.restart();
    let v2 = oci::image("amd64", b"version two");
    parent.push("repo", "v2", &v2);
    wait_synced(&reg, "repo", 2, Duration::from_secs(30));
    wait_for(
        &reg,
        "Online, no ParentUnreachable",
        Duration::from_secs(30),
        || {
            let s = status(&reg);
            s["connectionState"] == "Online" && !has_detail(&s, "ParentUnreachable")
        },
    );
    assert_served(&reg, "repo", "v1", &v1);
    assert_served(&reg, "repo", "v2", &v2);
    assert_eq!(tags(&reg.url(), "repo"), ["v1", "v2"], "tags when back");
    let s = status(&reg).to_string();
    assert!(!s.contains(PASSWORD), "password in the status: {s}");
    assert!(!reg.log().contains(PASSWORD), "password in the child's log");
    eprintln!("offline and back: {:?}", started.elapsed());
}

#[test]
fn a_complete_partial_left_by_a_crash_is_committed_without_refetching() {
    let parent = DockerRegistry::start();
    let image = oci::image_with_layers(vec![oci::pseudo_random(4 << 20, 7)]);
    parent.push("repo", "v1", &image);
    let proxy = FaultProxy::start(parent.addr());
    // No tag is pulled down: the layer comes by fetch-through, which does not know its size.
    let policy = policy_for(&["repo"], "[sync.tags]\nexclude = \".*\"");
    let mut reg = child(&proxy.host(), "unused", &policy, &[]);
    reg.stop_hard();
    // What a crash after the last byte was written, before the commit, leaves behind.
    let layer = &image.blobs[1];
    let partial = reg
        .data
        .join("partial")
        .join(layer.digest.replace(':', "-"));
    std::fs::write(&partial, &layer.bytes).unwrap_or_else(|e| panic!("{}: {e}", partial.display()));
    proxy.reset_counters();
    reg.restart();
    let got = blob_sha(&reg.url(), "repo", &layer.digest);
    let log = tail(&reg.log(), 20);
    assert_eq!(
        got,
        (200, layer.digest.clone()),
        "layer at the child; log:\n{log}"
    );
    let down = proxy.bytes_down();
    assert!(
        down <= OVERHEAD,
        "{down} bytes came through the proxy for a layer already on disk (allowed {OVERHEAD})"
    );
    // The body may end before the download task has verified and committed the file.
    wait_for(&reg, "partial/ empty", Duration::from_secs(10), || {
        partial_sizes(&reg.data).is_empty()
    });
}
