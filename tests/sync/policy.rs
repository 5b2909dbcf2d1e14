//! The sync policy at work: platform and tag filters, deletion mirroring, live policy changes,
//! invalid policies, schedule windows, the bandwidth limit and a disk that fills during sync.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::common::faultproxy::FaultProxy;
use crate::common::oci::{self, Manifest};
use crate::common::{self, Registry};
use crate::{
    blob_sha, child, connection_string, manifest_digest, policy_file, policy_for, status, tags,
    tail, wait_for,
};

/// Burst of the bandwidth limiter, in seconds of the configured rate (src/sync/limiter.rs).
const LIMITER_BURST_SECONDS: f64 = 0.25;

/// Polls `cond` every 100 ms *without* asking for a sync; panics with status and log after `limit`.
fn poll_until(reg: &Registry, what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        if Instant::now() > deadline {
            panic!(
                "{what}: not within {limit:?}\nstatus: {}\nlog:\n{}",
                status(reg),
                tail(&reg.log(), 60)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Pushes `m` under `reference` to a connected-registry root without authentication.
fn push(parent: &Registry, repo: &str, reference: &str, m: &Manifest) {
    oci::push(&common::http(), &parent.url(), repo, reference, m);
}

/// `state` and `lastError` of `repo` in the child's status (empty state when not listed).
fn repo_state(reg: &Registry, repo: &str) -> (String, Option<String>) {
    let st = status(reg);
    let entry = st["repositories"]
        .as_array()
        .and_then(|a| a.iter().find(|r| r["name"] == repo).cloned())
        .unwrap_or(Value::Null);
    let state = entry["state"].as_str().unwrap_or_default().to_owned();
    (state, entry["lastError"].as_str().map(str::to_owned))
}

/// `(code, message)` of every status detail of the child.
fn details(reg: &Registry) -> Vec<(String, String)> {
    let st = status(reg);
    st["statusDetails"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|d| {
                    let s = |k: &str| d[k].as_str().unwrap_or_default().to_owned();
                    (s("code"), s("message"))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Repositories listed by `GET /v2/_catalog`.
fn catalog(base: &str) -> Vec<String> {
    let url = format!("{base}/v2/_catalog");
    let v: Value = common::http()
        .get(&url)
        .send()
        .and_then(|r| r.json())
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    serde_json::from_value(v["repositories"].clone()).unwrap_or_default()
}

/// Status code of `GET /v2/<repo>/tags/list`.
fn tags_code(base: &str, repo: &str) -> u16 {
    let url = format!("{base}/v2/{repo}/tags/list");
    common::http()
        .get(&url)
        .send()
        .map(|r| r.status().as_u16())
        .unwrap_or_else(|e| panic!("{url}: {e}"))
}

/// Wall-clock seconds since the Unix epoch (UTC, as cron schedules are evaluated).
fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// Writes `text` to the policy file of a running child (it applies it without a restart).
fn rewrite_policy(reg: &Registry, text: &str) {
    std::fs::write(policy_file(reg), text).unwrap_or_else(|e| panic!("policy file: {e}"));
}

/// Every manifest and blob of `m` (an image) is served by `base` with the right digests.
fn assert_image_served(base: &str, repo: &str, reference: &str, m: &Manifest) {
    assert_eq!(
        manifest_digest(base, repo, reference),
        (200, m.digest.clone()),
        "{repo}:{reference}"
    );
    for b in &m.blobs {
        assert_eq!(
            blob_sha(base, repo, &b.digest),
            (200, b.digest.clone()),
            "{repo} blob {}",
            b.digest
        );
    }
}

#[test]
fn platform_filter_stores_only_the_selected_index_children() {
    let parent = Registry::start();
    let repo = "plat/app";
    let amd = oci::image("amd64", b"only for amd64\n");
    let arm = oci::image("arm64", b"only for arm64\n");
    let index = oci::index(&[(&amd, "linux", "amd64"), (&arm, "linux", "arm64")]);
    push(&parent, repo, &amd.digest, &amd);
    push(&parent, repo, &arm.digest, &arm);
    push(&parent, repo, "multi", &index);

    let target = format!("127.0.0.1:{}", parent.port);
    let proxy = FaultProxy::start(target.parse().unwrap_or_else(|e| panic!("{e}")));
    let policy = policy_for(&[repo], "platforms = [\"linux/arm64\"]");
    let reg = child(&proxy.host(), "unused", &policy, &[]);
    let base = reg.url();
    wait_for(&reg, "the index synced", Duration::from_secs(20), || {
        tags(&base, repo) == ["multi"]
    });
    // The child never even asked the parent for the amd64 image.
    let asked: Vec<String> = proxy
        .requests()
        .into_iter()
        .filter(|r| amd.blobs.iter().any(|b| r.contains(&b.digest)) || r.contains(&amd.digest))
        .collect();
    assert!(asked.is_empty(), "amd64 content was fetched: {asked:?}");

    // From here on only what was stored can be served: fetch-through cannot reach the parent.
    proxy.set_down(true);
    assert_eq!(
        manifest_digest(&base, repo, "multi"),
        (200, index.digest.clone())
    );
    assert_image_served(&base, repo, &arm.digest, &arm);
    assert_eq!(manifest_digest(&base, repo, &amd.digest).0, 404);
    for b in &amd.blobs {
        let url = format!("{base}/v2/{repo}/blobs/{}", b.digest);
        let code = common::http()
            .head(&url)
            .send()
            .map(|r| r.status().as_u16())
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(code, 404, "amd64 blob {} is stored", b.digest);
    }
}

#[test]
fn tag_filters_include_and_exclude() {
    let parent = Registry::start();
    let repo = "tagged/app";
    for tag in ["v1", "v2-rc", "latest", "v3"] {
        push(&parent, repo, tag, &oci::image("amd64", tag.as_bytes()));
    }
    let policy = policy_for(&[repo], "tags = { include = \"^v\", exclude = \"-rc\" }");
    let reg = child(&parent.host(), "unused", &policy, &[]);
    let base = reg.url();
    wait_for(
        &reg,
        "the repository synced",
        Duration::from_secs(20),
        || repo_state(&reg, repo).0 == "Synced",
    );
    assert_eq!(tags(&base, repo), ["v1", "v3"]);
    // Filtered-out tags are not fetched through on demand either.
    for tag in ["v2-rc", "latest"] {
        assert_eq!(manifest_digest(&base, repo, tag).0, 404, "{tag}");
    }
    assert_eq!(status(&reg)["repositories"][0]["tags"], 2);
}

#[test]
fn deletions_and_dropped_repositories_are_mirrored_without_restart() {
    let parent = Registry::start();
    let (keep, drop_) = ("keep/app", "drop/app");
    let v1 = oci::image("amd64", b"keep v1\n");
    let v2 = oci::image("amd64", b"keep v2\n");
    push(&parent, keep, "v1", &v1);
    push(&parent, keep, "v2", &v2);
    push(&parent, drop_, "v1", &oci::image("amd64", b"drop v1\n"));
    let reg = child(
        &parent.host(),
        "unused",
        &policy_for(&[keep, drop_], ""),
        &[],
    );
    let base = reg.url();
    let pid = reg.pid();
    wait_for(
        &reg,
        "both repositories synced",
        Duration::from_secs(20),
        || tags(&base, keep) == ["v1", "v2"] && tags(&base, drop_) == ["v1"],
    );

    // A tag deleted at the parent goes away here with the next sync.
    let url = format!("{}/v2/{keep}/manifests/v2", parent.url());
    let r = common::http().delete(&url).send();
    let code = r.map(|r| r.status().as_u16()).unwrap_or(0);
    assert_eq!(code, 202, "DELETE {url}");
    poll_until(
        &reg,
        "the deleted tag removed",
        Duration::from_secs(10),
        || tags(&base, keep) == ["v1"],
    );

    // A repository dropped from the policy file is removed, with no restart and no trigger.
    rewrite_policy(&reg, &policy_for(&[keep], ""));
    poll_until(
        &reg,
        "the dropped repository removed",
        Duration::from_secs(10),
        || !catalog(&base).iter().any(|r| r == drop_),
    );
    assert!(
        tags_code(&base, drop_) == 404 || tags(&base, drop_).is_empty(),
        "{drop_} still has tags"
    );
    // Nor is it fetched through any more.
    assert_eq!(manifest_digest(&base, drop_, "v1").0, 404);
    assert!(catalog(&base).iter().any(|r| r == keep));
    assert_image_served(&base, keep, "v1", &v1);
    assert_eq!(reg.pid(), pid, "the child was restarted");
    assert!(reg.log().contains("sync policy changed"), "{}", reg.log());
}

/// Runs a child `serve` with `policy` as its config file, expecting it to fail at once; its stderr.
fn serve_with_policy_fails(dir: &Path, parent_host: &str, policy: &str) -> String {
    let file = dir.join("policy.toml");
    std::fs::write(&file, policy).unwrap_or_else(|e| panic!("{e}"));
    let mut cmd = Command::new(common::BIN);
    cmd.arg("serve")
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--insecure-no-auth")
        .arg("--config")
        .arg(&file)
        .env(
            "ACR_REGISTRY_CONNECTION_STRING",
            connection_string(parent_host, "unused"),
        )
        .env_remove("RUST_LOG");
    let started = Instant::now();
    let out = common::run_bounded(&mut cmd, Duration::from_secs(30));
    assert!(!out.status.success(), "serve accepted:\n{policy}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "an invalid policy took {:?} to be refused",
        started.elapsed()
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn invalid_policy_is_refused_at_startup_and_ignored_while_running() {
    let parent = Registry::start();
    let repo = "inv/app";
    let tmp = tempfile::TempDir::new().unwrap_or_else(|e| panic!("{e}"));
    let cases = [
        ("chunk_size_mb = 0", "sync.chunk_size_mb"),
        ("tags = { include = \"(\" }", "sync.tags.include"),
        ("tags = { exclude = \"[z-a]\" }", "sync.tags.exclude"),
        ("bandwidth_limit = \"fast\"", "sync.bandwidth_limit"),
        ("platforms = [\"linux\"]", "sync.platforms"),
        ("schedule = \"*/10 * * * * *\"", "sync.window"),
        ("intervall = \"1s\"", "intervall"),
    ];
    for (line, key) in cases {
        let err = serve_with_policy_fails(tmp.path(), &parent.host(), &policy_for(&[repo], line));
        let errors: Vec<&str> = err
            .lines()
            .filter(|l| l.starts_with("connected-registry: error:"))
            .collect();
        assert_eq!(errors.len(), 1, "{line}: not one error line:\n{err}");
        assert!(
            errors[0].contains(key),
            "{line}: the error does not name {key}:\n{err}"
        );
        // Nothing else follows the error line (a multi-line message would).
        let after = err.split("connected-registry: error:").nth(1).unwrap_or("");
        assert!(
            after.trim_end().lines().count() == 1,
            "{line}: the error spans lines:\n{err}"
        );
    }

    // A running child keeps its last good policy, says why, and recovers once fixed.
    push(&parent, repo, "v1", &oci::image("amd64", b"inv v1\n"));
    let good = policy_for(&[repo], "");
    let reg = child(&parent.host(), "unused", &good, &[]);
    let base = reg.url();
    wait_for(&reg, "v1 synced", Duration::from_secs(20), || {
        tags(&base, repo) == ["v1"]
    });
    rewrite_policy(&reg, &policy_for(&[repo], "max_parallel = 0"));
    poll_until(
        &reg,
        "PolicyInvalid reported",
        Duration::from_secs(10),
        || {
            details(&reg).iter().any(|(c, m)| {
                c == "PolicyInvalid" && m.contains("sync.max_parallel") && !m.contains('\n')
            })
        },
    );
    push(&parent, repo, "v2", &oci::image("amd64", b"inv v2\n"));
    poll_until(
        &reg,
        "v2 synced under the old policy",
        Duration::from_secs(10),
        || tags(&base, repo) == ["v1", "v2"],
    );
    assert!(details(&reg).iter().any(|(c, _)| c == "PolicyInvalid"));
    // Fixed back to exactly the policy in force: the detail goes away all the same.
    rewrite_policy(&reg, &good);
    poll_until(
        &reg,
        "PolicyInvalid cleared",
        Duration::from_secs(10),
        || !details(&reg).iter().any(|(c, _)| c == "PolicyInvalid"),
    );
}

#[test]
fn a_schedule_syncs_only_inside_its_windows() {
    let parent = Registry::start();
    let repo = "sched/app";
    // Windows open at every tenth second for 3 s. The interval paces passes inside a window;
    // a long one must not make the next window's opening wait.
    let policy = format!(
        "mode = \"ReadOnly\"\n[sync]\nrepositories = [\"{repo}\"]\ninterval = \"1h\"\n\
         schedule = \"*/10 * * * * *\"\nwindow = \"PT3S\"\n"
    );
    let reg = child(&parent.host(), "unused", &policy, &[]);
    let base = reg.url();
    // A first (empty) pass inside a window, so the next one is an hour of interval away.
    poll_until(
        &reg,
        "the first window's pass",
        Duration::from_secs(15),
        || repo_state(&reg, repo).0 == "Synced",
    );

    // Wait for a moment just after a window closed: second % 10 in [4, 5.5).
    let deadline = Instant::now() + Duration::from_secs(12);
    while !(4.0..5.5).contains(&(unix_now() % 10.0)) {
        assert!(Instant::now() < deadline, "the clock did not reach a gap");
        std::thread::sleep(Duration::from_millis(50));
    }
    push(&parent, repo, "v1", &oci::image("amd64", b"scheduled\n"));
    let pushed = unix_now();
    let st = status(&reg);
    let next = st["nextSyncTime"].as_str().unwrap_or_default();
    let next = chrono::DateTime::parse_from_rfc3339(next).map(|t| t.timestamp());
    let window_start = (pushed / 10.0).ceil() * 10.0;
    assert_eq!(
        next,
        Ok(window_start as i64),
        "nextSyncTime is not the next window's start: {st}"
    );
    // No window is open (a report made just before the last one closed may still name its end).
    let end = st["windowEnd"].as_str().unwrap_or_default();
    let end = chrono::DateTime::parse_from_rfc3339(end).map(|t| t.timestamp() as f64);
    assert!(
        end.is_err() || end.is_ok_and(|e| e <= pushed),
        "a window is open between windows: {st}"
    );

    // No trigger: the tag shows up only once the next window opens.
    let deadline = Instant::now() + Duration::from_secs(12);
    let appeared = loop {
        if tags(&base, repo) == ["v1"] {
            break unix_now();
        }
        assert!(
            Instant::now() < deadline,
            "not synced in the next window\nstatus: {}\nlog:\n{}",
            status(&reg),
            tail(&reg.log(), 40)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let phase = appeared % 10.0;
    println!(
        "pushed at second {:.2}, synced at second {phase:.2} ({:.2} s later)",
        pushed % 10.0,
        appeared - pushed
    );
    assert!(
        phase < 3.0 + 1.0,
        "synced outside a window (second {phase:.2})"
    );
    assert!(
        appeared >= window_start,
        "synced {:.2} s before the window opened",
        window_start - appeared
    );
}

#[test]
fn bandwidth_limit_is_a_lower_bound_on_transfer_time() {
    let parent = Registry::start();
    let repo = "slow/app";
    let rate = 2_000_000.0; // 2MB/s
    let reg = child(
        &parent.host(),
        "unused",
        &policy_for(&[repo], "bandwidth_limit = \"2MB/s\""),
        &[],
    );
    let base = reg.url();
    wait_for(
        &reg,
        "the empty repository synced",
        Duration::from_secs(20),
        || repo_state(&reg, repo).0 == "Synced",
    );
    let layer_len = 8 << 20;
    let img = oci::image_with_layers(vec![oci::pseudo_random(layer_len, 7)]);
    push(&parent, repo, "v1", &img);
    let started = Instant::now();
    // The tags list is local only (a manifest GET could be fetched through at full speed).
    wait_for(&reg, "the image synced", Duration::from_secs(30), || {
        tags(&base, repo) == ["v1"]
    });
    let elapsed = started.elapsed().as_secs_f64();
    let bytes: usize = img.blobs.iter().map(|b| b.bytes.len()).sum();
    let floor = (bytes as f64 - rate * LIMITER_BURST_SECONDS) / rate;
    println!("{bytes} bytes at 2MB/s took {elapsed:.2} s (lower bound {floor:.2} s)");
    assert!(
        elapsed >= floor,
        "{elapsed:.2} s is faster than the limit allows ({floor:.2} s)"
    );
    assert_image_served(&base, repo, "v1", &img);
}

/// A tmpfs mounted for a test and lazily unmounted on drop (even on panic).
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. `24m`) on `dir`; needs root.
    fn mount(dir: &Path, size: &str) -> Self {
        let uid = Command::new("id").arg("-u").output();
        let root = uid.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
        assert!(
            root,
            "the disk-full sync test mounts a tmpfs and must run as root"
        );
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{e}"));
        common::run_ok(
            Command::new(common::require("mount"))
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(dir),
            Duration::from_secs(30),
        );
        Tmpfs {
            dir: dir.to_path_buf(),
        }
    }

    /// Changes the size of the mounted tmpfs.
    fn resize(&self, size: &str) {
        common::run_ok(
            Command::new(common::require("mount"))
                .args(["-o", &format!("remount,size={size}")])
                .arg(&self.dir),
            Duration::from_secs(30),
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// A child like `crate::child` whose data directory is a symlink to `data` on the tmpfs `fs`.
fn child_on(fs: &Tmpfs, parent_host: &str, policy: &str) -> Registry {
    let tmp = tempfile::TempDir::new().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let file = tmp.path().join("policy.toml");
    std::fs::write(&file, policy).unwrap_or_else(|e| panic!("policy: {e}"));
    let data = fs.dir.join("data");
    std::fs::create_dir_all(&data).unwrap_or_else(|e| panic!("{e}"));
    std::os::unix::fs::symlink(&data, tmp.path().join("data")).unwrap_or_else(|e| panic!("{e}"));
    let args = vec![
        "--insecure-no-auth".to_owned(),
        "--config".to_owned(),
        file.display().to_string(),
    ];
    let cs = connection_string(parent_host, "unused");
    Registry::start_in(
        tmp,
        args,
        vec![("ACR_REGISTRY_CONNECTION_STRING".into(), cs)],
    )
}

#[test]
fn disk_full_during_sync_is_reported_and_recovers_without_restart() {
    let parent = Registry::start();
    let small = oci::image_with_layers(vec![oci::pseudo_random(1 << 20, 11)]);
    let big = oci::image_with_layers(vec![oci::pseudo_random(40 << 20, 12)]);
    push(&parent, "small", "v1", &small);
    push(&parent, "big", "v1", &big);

    let mnt = tempfile::TempDir::new().unwrap_or_else(|e| panic!("{e}"));
    let fs = Tmpfs::mount(&mnt.path().join("fs"), "24m");
    let reg = child_on(&fs, &parent.host(), &policy_for(&["small", "big"], ""));
    let base = reg.url();
    let pid = reg.pid();
    let started = Instant::now();
    poll_until(&reg, "DiskError reported", Duration::from_secs(30), || {
        let disk = details(&reg).iter().any(|(c, _)| c == "DiskError");
        let (state, error) = repo_state(&reg, "big");
        let failed = state == "Failed" && error.is_some_and(|e| e.contains("DiskError"));
        let st = status(&reg);
        (st["connectionState"] == "Unhealthy" && disk) || failed
    });
    println!(
        "disk full reported after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(tags(&base, "small"), ["v1"]);
    assert_image_served(&base, "small", "v1", &small);
    assert!(
        tags(&base, "big").is_empty(),
        "big:v1 tagged without its layer"
    );

    fs.resize("96m");
    let resized = Instant::now();
    poll_until(
        &reg,
        "big:v1 synced after resize",
        Duration::from_secs(40),
        || tags(&base, "big") == ["v1"],
    );
    poll_until(&reg, "DiskError cleared", Duration::from_secs(10), || {
        !details(&reg).iter().any(|(c, _)| c == "DiskError")
    });
    println!(
        "converged {:.1} s after the resize",
        resized.elapsed().as_secs_f64()
    );
    assert_image_served(&base, "big", "v1", &big);
    assert_image_served(&base, "small", "v1", &small);
    assert_eq!(reg.pid(), pid, "the child was restarted");
    drop(reg);
    drop(fs);
}
