//! `connected-registry sync now` and `connected-registry status`, run beside a running child
//! on its data directory, like the other management commands.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{self, oci, run_ok, Registry, BIN};
use crate::{child, policy_for, status, synced_with};

const REPO: &str = "manual/app";

/// Runs a management command on the child's data directory; returns its JSON output.
fn cli(reg: &Registry, args: &[&str]) -> Value {
    let out = run_ok(
        Command::new(BIN)
            .args(args)
            .arg("--data-dir")
            .arg(&reg.data),
        Duration::from_secs(30),
    );
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?} printed non-JSON ({e}): {out}"))
}

#[test]
fn sync_now_from_the_command_line_and_status_from_the_data_directory() {
    let root = Registry::start();
    // Continuous sync once an hour: only `sync now` brings new content early.
    let policy = policy_for(&[REPO], "").replace("\"1s\"", "\"1h\"");
    let reg = child(&root.host(), "unused", &policy, &[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while status(&reg)["syncPasses"].as_u64().unwrap_or(0) < 1 {
        assert!(Instant::now() < deadline, "the first sync pass never ended");
        std::thread::sleep(Duration::from_millis(50));
    }
    let image = oci::image("amd64", b"synced on request\n");
    oci::push(&common::http(), &root.url(), REPO, "v1", &image);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!synced_with(&reg, REPO, "v1"), "synced before anyone asked");

    let asked = cli(&reg, &["sync", "now"]);
    assert_eq!(asked["sync"], "requested", "{asked}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !synced_with(&reg, REPO, "v1") {
        assert!(
            Instant::now() < deadline,
            "sync now was not carried out:\n{}",
            crate::tail(&reg.log(), 30)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let saved = cli(&reg, &["status"]);
    assert_eq!(saved["connectionState"], "Online", "{saved}");
    assert!(saved["lastSyncTime"].is_string(), "{saved}");
    let repo = &saved["repositories"][0];
    assert_eq!(repo["name"], REPO, "{saved}");
    assert_eq!(repo["state"], "Synced", "{saved}");
    assert_eq!(repo["tags"], 1, "{saved}");
    assert!(
        saved["parent"]
            .as_str()
            .is_some_and(|p| p.contains(&root.host())),
        "{saved}"
    );
}
