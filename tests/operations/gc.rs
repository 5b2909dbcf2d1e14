//! Online garbage collection against the real binary: exactly the unreferenced blobs go (bytes
//! on disk before and after), what is tagged still pulls with skopeo, passes running all the
//! time never take a blob an acknowledged image needs, and `kill -9` mid-pass loses nothing.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::clients::skopeo::Skopeo;
use crate::common::oci::{self, Manifest};
use crate::common::{self, run_ok, Registry, BIN};

/// A registry whose file sets `[gc]` as given (scheduled passes off unless `gc` turns them on).
fn registry_with_gc(gc: &str) -> Registry {
    let tmp = tempfile::TempDir::new().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let config = tmp.path().join("config.toml");
    std::fs::write(&config, format!("[gc]\n{gc}\n")).unwrap_or_else(|e| panic!("config: {e}"));
    let data = tmp.path().join("data");
    let config = config.display().to_string();
    Registry::start_at(tmp, data, &["--config", &config])
}

fn config_of(reg: &Registry) -> String {
    reg.scratch().join("config.toml").display().to_string()
}

/// `connected-registry gc run` on the registry's data directory and file; its JSON.
fn gc_run(reg: &Registry, extra: &[&str]) -> Value {
    let mut cmd = Command::new(BIN);
    cmd.args(["gc", "run", "--data-dir"])
        .arg(&reg.data)
        .args(["--config", &config_of(reg)])
        .args(extra);
    let out = run_ok(&mut cmd, Duration::from_secs(120));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("gc run printed non-JSON ({e}): {out}"))
}

/// Bytes of the blob files under a data directory.
fn blob_bytes(data: &Path) -> u64 {
    fn walk(p: &Path) -> u64 {
        let Ok(entries) = std::fs::read_dir(p) else {
            return 0;
        };
        entries
            .flatten()
            .map(|e| match e.file_type() {
                Ok(t) if t.is_dir() => walk(&e.path()),
                _ => e.metadata().map(|m| m.len()).unwrap_or(0),
            })
            .sum()
    }
    walk(&data.join("blobs"))
}

fn layer(seed: u64) -> Vec<u8> {
    oci::tar_one_file("f", &oci::pseudo_random(20_000 + seed as usize * 10, seed))
}

/// Checks that `repo:reference` serves `m` and every blob with its digest.
fn verify(reg: &Registry, repo: &str, reference: &str, m: &Manifest) {
    let c = common::http();
    let url = format!("{}/v2/{repo}/manifests/{reference}", reg.url());
    let r = c
        .get(url)
        .header("Accept", oci::OCI_MANIFEST)
        .send()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status().as_u16(), 200, "{repo}:{reference}");
    let body = r.bytes().unwrap_or_default();
    assert_eq!(oci::sha256(&body), m.digest, "{repo}:{reference}");
    for b in &m.blobs {
        let url = format!("{}/v2/{repo}/blobs/{}", reg.url(), b.digest);
        let r = c.get(url).send().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.status().as_u16(), 200, "{repo} blob {}", b.digest);
        let bytes = r.bytes().unwrap_or_default();
        assert_eq!(oci::sha256(&bytes), b.digest, "{repo} blob {}", b.digest);
    }
}

#[test]
fn a_pass_frees_exactly_the_unreferenced_blobs() {
    let reg = registry_with_gc("enabled = false\ngrace = \"PT0S\"");
    let skopeo = Skopeo::new();
    let shared = layer(1);
    let a = oci::image_with_layers(vec![shared.clone(), layer(2)]);
    let b = oci::image_with_layers(vec![shared, layer(3)]);
    let c = oci::image_with_layers(vec![layer(4)]);
    let layout = reg.scratch().join("layout");
    oci::write_layout(&layout, &[("a", &a), ("b", &b), ("c", &c)], &[]);
    let push = |name: &str, to: &str| {
        let from = format!("oci:{}:{name}", layout.display());
        skopeo.copy(&from, &format!("docker://{}/{to}", reg.host()), false);
    };
    push("a", "app:v1");
    push("a", "app:latest");
    push("b", "app:v2");
    push("c", "other:v1");
    push("b", "app:v1"); // re-tagged: v1 moves from a to b; a keeps `latest`
                         // Deleting `a` (by digest, with its tag) frees its config and its own layer; the shared
                         // layer stays for `b`. Deleting `c` frees its config and layer.
    skopeo.run(&[
        "delete",
        "--tls-verify=false",
        &format!("docker://{}/app:latest", reg.host()),
    ]);
    skopeo.run(&[
        "delete",
        "--tls-verify=false",
        &format!("docker://{}/other:v1", reg.host()),
    ]);
    let gone: Vec<&oci::Blob> = [&a.blobs[0], &a.blobs[2], &c.blobs[0], &c.blobs[1]].into();
    let expected: u64 = gone.iter().map(|b| b.bytes.len() as u64).sum();
    // Partial downloads nobody wants: one whose blob is stored, one left idle.
    let partial = reg.data.join("partial");
    let hex = |d: &str| d.trim_start_matches("sha256:").to_owned();
    std::fs::write(
        partial.join(format!("sha256-{}", hex(&b.blobs[1].digest))),
        b"x",
    )
    .unwrap();
    std::fs::write(partial.join(format!("sha256-{}", "ab".repeat(32))), b"half").unwrap();

    let dry = gc_run(&reg, &["--dry-run"]);
    let before = blob_bytes(&reg.data);
    assert_eq!(blob_bytes(&reg.data), before, "a dry run removes nothing");
    let report = gc_run(&reg, &[]);
    let after = blob_bytes(&reg.data);
    assert_eq!(report["blobs"], 4, "{report}");
    assert_eq!(report["bytes"], expected, "{report}");
    assert_eq!(before - after, expected, "bytes on disk");
    assert_eq!(report["partials"], 2, "{report}");
    assert_eq!(report["dry_run"], false);
    for key in ["blobs", "bytes", "manifests", "links"] {
        assert_eq!(dry[key], report[key], "dry run's {key}: {dry}");
    }
    assert!(
        std::fs::read_dir(&partial).unwrap().next().is_none(),
        "partials left"
    );
    // A second pass finds nothing more.
    assert_eq!(gc_run(&reg, &[])["blobs"], 0);

    // Everything tagged still pulls and verifies with a real client.
    for (tag, m) in [("v1", &b), ("v2", &b)] {
        let dir = reg.scratch().join(format!("pulled-{tag}"));
        let to = format!("oci:{}:x", dir.display());
        skopeo.copy(&format!("docker://{}/app:{tag}", reg.host()), &to, false);
        verify(&reg, "app", tag, m);
    }
    // The running server reports the last pass.
    let status: Value = common::client_as("admin", "x")
        .get(format!("{}/acr/v1/status", reg.url()))
        .send()
        .and_then(|r| r.json())
        .unwrap_or_else(|e| panic!("status: {e}"));
    assert_eq!(
        status["garbageCollection"]["lastPass"]["blobs"], 0,
        "{status}"
    );
    let metrics = common::http()
        .get(format!("{}/acr/v1/metrics", reg.url()))
        .send()
        .and_then(|r| r.text())
        .unwrap_or_default();
    assert!(
        metrics.contains(&format!(
            "connected_registry_gc_freed_bytes_total {}",
            expected + 5
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains("connected_registry_gc_passes_total 2"),
        "{metrics}"
    );
}

/// What the pushing clients got acknowledged, and what they deleted since.
#[derive(Default)]
struct Ledger {
    kept: Vec<(String, String, Manifest)>,
}

/// One client: pushes images sharing a layer (mounted from `base`) under `repo`, deleting
/// every third one it pushed; bounded in count and time.
fn pusher(reg: &Registry, id: u64, stop: &AtomicBool, ledger: &Mutex<Ledger>, shared: &oci::Blob) {
    let c = common::http();
    let base = reg.url();
    let repo = format!("load/c{id}");
    for i in 0..400u64 {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let own = layer(1000 * id + i);
        let m = oci::image_with_layers(vec![shared.bytes.clone(), own]);
        let mount = c
            .post(format!(
                "{base}/v2/{repo}/blobs/uploads/?mount={}&from=base",
                shared.digest
            ))
            .send()
            .map(|r| r.status().as_u16());
        if mount.ok() != Some(201) {
            continue;
        }
        for blob in [&m.blobs[0], &m.blobs[2]] {
            oci::push_blob(&c, &base, &repo, blob);
        }
        let tag = format!("t{i}");
        let r = oci::put_manifest(&c, &base, &repo, &tag, &m);
        if r.status().as_u16() != 201 {
            continue; // its blobs lapsed first (grace zero): never acknowledged
        }
        if i % 3 == 2 {
            let url = format!("{base}/v2/{repo}/manifests/{}", m.digest);
            let d = c.delete(url).send().map(|r| r.status().as_u16());
            assert_eq!(d.ok(), Some(202), "delete");
            continue;
        }
        if let Ok(mut l) = ledger.lock() {
            l.kept.push((repo.clone(), tag, m));
        }
    }
}

#[test]
fn passes_running_all_the_time_never_take_an_acknowledged_blob() {
    // A scheduled pass every second, no grace, untagged retention zero: the harshest settings.
    let reg = registry_with_gc(
        "enabled = true\nschedule = \"* * * * * *\"\ngrace = \"PT0S\"\nuntagged_retention = \"PT0S\"",
    );
    let c = common::http();
    let base_image = oci::image_with_layers(vec![layer(7)]);
    oci::push(&c, &reg.url(), "base", "v1", &base_image);
    let shared = base_image.blobs[1].clone();
    let stop = Arc::new(AtomicBool::new(false));
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let deadline = Instant::now() + Duration::from_secs(20);
    std::thread::scope(|s| {
        for id in 0..3 {
            let (reg, stop, ledger, shared) = (&reg, &stop, &ledger, &shared);
            s.spawn(move || pusher(reg, id, stop, ledger, shared));
        }
        // Passes from another process too, as `gc run` beside `serve`.
        let mut runs = 0;
        while Instant::now() < deadline && runs < 200 {
            gc_run(&reg, &[]);
            runs += 1;
        }
        stop.store(true, Ordering::Relaxed);
    });
    let kept = std::mem::take(&mut ledger.lock().unwrap().kept);
    assert!(kept.len() >= 20, "only {} images acknowledged", kept.len());
    gc_run(&reg, &[]);
    for (repo, tag, m) in &kept {
        verify(&reg, repo, tag, m);
    }
    verify(&reg, "base", "v1", &base_image);
    // The schedule fired every second: a pass, or a skip while `gc run` held the lock.
    let log = reg.log();
    let fired = log.matches("garbage collection pass finished").count()
        + log.matches("scheduled garbage collection skipped").count();
    assert!(
        fired >= 5,
        "the schedule fired {fired} times in the server's log"
    );
}

#[test]
fn kill_during_a_pass_loses_nothing_referenced() {
    let reg = registry_with_gc("enabled = false\ngrace = \"PT0S\"");
    let c = common::http();
    let kept = oci::image_with_layers(vec![layer(11), layer(12)]);
    oci::push(&c, &reg.url(), "keep", "v1", &kept);
    let junk = |round: u64| {
        for i in 0..400 {
            let b = oci::Blob::new(oci::OCI_LAYER, oci::pseudo_random(64, round * 1000 + i));
            oci::push_blob(&c, &reg.url(), "junk", &b);
        }
    };
    let mut killed = 0;
    for round in 0..6u64 {
        junk(round);
        let mut child = Command::new(BIN)
            .args(["gc", "run", "--data-dir"])
            .arg(&reg.data)
            .args(["--config", &config_of(&reg)])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("gc run: {e}"));
        std::thread::sleep(Duration::from_millis(20 + 30 * round));
        if child.try_wait().ok().flatten().is_none() {
            killed += 1;
        }
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        verify(&reg, "keep", "v1", &kept);
    }
    assert!(killed >= 1, "no pass was killed while running");
    // Fresh junk: the last killed pass may have finished and taken all of the earlier junk.
    junk(6);
    let report = gc_run(&reg, &[]);
    assert!(report["blobs"].as_u64().unwrap_or(0) > 0, "{report}");
    let referenced: u64 = kept.blobs.iter().map(|b| b.bytes.len() as u64).sum();
    assert_eq!(
        blob_bytes(&reg.data),
        referenced,
        "only the kept image's blobs remain"
    );
    verify(&reg, "keep", "v1", &kept);
}
