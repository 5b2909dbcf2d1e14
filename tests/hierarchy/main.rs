//! A tree of connected registries defined only at its root: configuration and client tokens flow
//! down, content flows both ways, status flows up, one active instance per name, and an idle
//! child costs its parent one request per interval.

#[path = "../common/mod.rs"]
mod common;

mod layers;

use std::time::{Duration, Instant};

use common::{oci, Registry, BIN};
use reqwest::blocking::Client;
use serde_json::Value;

pub use common::client_as;

/// Runs `connected-registry cr …` on `reg`'s data directory; returns stdout.
pub fn cr(reg: &Registry, args: &[&str]) -> String {
    let mut c = std::process::Command::new(BIN);
    c.arg("cr").args(args).arg("--data-dir").arg(&reg.data);
    common::run_ok(&mut c, Duration::from_secs(60))
}

/// The connection string `get-settings` prints for `name`, reaching its parent at `endpoint`.
pub fn settings(reg: &Registry, name: &str, endpoint: &str, protocol: &str) -> String {
    settings_slot(reg, name, endpoint, protocol, "1")
}

/// Like `settings`, generating the password in `slot` (1 or 2) so the other keeps working.
pub fn settings_slot(
    reg: &Registry,
    name: &str,
    endpoint: &str,
    protocol: &str,
    slot: &str,
) -> String {
    let out = cr(
        reg,
        &[
            "get-settings",
            "-n",
            name,
            "--generate-password",
            slot,
            "--parent-protocol",
            protocol,
            "--parent-endpoint",
            endpoint,
            "-o",
            "tsv",
        ],
    );
    out.trim().to_owned()
}

/// Waits (bounded) until `ok` holds, polling; panics with `what` and `detail()` otherwise.
pub fn wait_for(
    limit: Duration,
    what: &str,
    mut ok: impl FnMut() -> bool,
    detail: impl Fn() -> String,
) {
    let deadline = Instant::now() + limit;
    while !ok() {
        assert!(
            Instant::now() < deadline,
            "{what} within {limit:?}:\n{}",
            detail()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The tags of `repo` at `base` as `c` sees them (empty when unknown).
pub fn tags_as(c: &Client, base: &str, repo: &str) -> Vec<String> {
    c.get(format!("{base}/v2/{repo}/tags/list"))
        .send()
        .ok()
        .filter(|r| r.status().is_success())
        .and_then(|r| r.json::<Value>().ok())
        .and_then(|v| {
            v["tags"].as_array().map(|a| {
                a.iter()
                    .filter_map(|t| t.as_str().map(str::to_owned))
                    .collect()
            })
        })
        .unwrap_or_default()
}

/// The row of `name` in the root's `cr list -o json`.
pub fn listed(root: &Registry, name: &str) -> Value {
    row(&cr(root, &["list"]), name)
}

/// The row of `name` in a `cr list` JSON output (null when absent).
pub fn row(list: &str, name: &str) -> Value {
    let all: Value = serde_json::from_str(list).unwrap_or_else(|e| panic!("{e}: {list}"));
    all.as_array()
        .and_then(|a| a.iter().find(|r| r["name"] == name).cloned())
        .unwrap_or(Value::Null)
}

/// Defines at `root` the ReadWrite registry `middle` and below it the ReadWrite `bottom`, both
/// on `APP` and checking in every 2 s, and a client token `token` (read on `APP`) assigned to
/// `bottom`; returns the token's password.
pub fn define_tree(root: &Registry, middle: &str, bottom: &str, token: &str) -> String {
    let every_2s = [
        "-m",
        "ReadWrite",
        "--repository",
        APP,
        "--sync-interval",
        "PT2S",
    ];
    cr(root, &[&["create", "-n", middle][..], &every_2s].concat());
    cr(
        root,
        &[&["create", "-n", bottom, "-p", middle][..], &every_2s].concat(),
    );
    let read = ["content/read", "metadata/read"];
    let map = root.admin(
        &[
            &["scope-map", "create", "-n", token, "--repository", APP][..],
            &read,
        ]
        .concat(),
    );
    assert_eq!(map["name"], token);
    let t = root.admin(&["token", "create", "-n", token, "--scope-map", token]);
    let pw = t["credentials"]["passwords"][0]["value"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(!pw.is_empty(), "token create printed no password: {t}");
    cr(
        root,
        &["update", "-n", bottom, "--add-client-tokens", token],
    );
    pw
}

const APP: &str = "plant/app";

#[test]
fn a_tree_defined_at_the_root_configures_and_reports() {
    let root = Registry::start_authenticated(&[]);
    let admin = client_as("admin", &root.admin_password());
    // The tree, defined only here: middle (ReadWrite) and below it bottom (ReadWrite), both
    // checking every 2 s; a client token assigned to bottom.
    let floor_pw = define_tree(&root, "middle1", "bottom1", "floor");

    let cs = settings(&root, "middle1", &root.host(), "http");
    let middle = Registry::start_authenticated_env(&[], &[("ACR_REGISTRY_CONNECTION_STRING", &cs)]);
    let cs = settings(&root, "bottom1", &middle.host(), "http");
    let bottom = Registry::start_authenticated_env(&[], &[("ACR_REGISTRY_CONNECTION_STRING", &cs)]);

    // Down: a push at the root reaches the bottom without any policy file there.
    let img = oci::image("amd64", b"from the root\n");
    oci::push(&admin, &root.url(), APP, "v1", &img);
    let bottom_admin = client_as("admin", &bottom.admin_password());
    wait_for(
        Duration::from_secs(60),
        "the root's push at the bottom",
        || tags_as(&bottom_admin, &bottom.url(), APP) == ["v1"],
        || bottom.log(),
    );

    // The client token assigned at the root works at the bottom, not at the middle.
    let floor = client_as("floor", &floor_pw);
    wait_for(
        Duration::from_secs(30),
        "the client token at the bottom",
        || tags_as(&floor, &bottom.url(), APP) == ["v1"],
        || bottom.log(),
    );
    assert!(
        tags_as(&floor, &middle.url(), APP).is_empty(),
        "a token of the bottom works at the middle"
    );

    // Up: a push at the bottom reaches the root.
    let up = oci::image("arm64", b"from the bottom\n");
    oci::push(&bottom_admin, &bottom.url(), APP, "v2", &up);
    wait_for(
        Duration::from_secs(60),
        "the bottom's push at the root",
        || tags_as(&admin, &root.url(), APP).contains(&"v2".to_owned()),
        || format!("{}\n---\n{}", middle.log(), bottom.log()),
    );

    // Disabled at the root, the token stops working at the bottom.
    root.admin(&["token", "update", "-n", "floor", "--status", "disabled"]);
    wait_for(
        Duration::from_secs(30),
        "the disabled token refused at the bottom",
        || tags_as(&floor, &bottom.url(), APP).is_empty(),
        || bottom.log(),
    );

    // Status up: both online with a last sync time, in tree order.
    wait_for(
        Duration::from_secs(30),
        "both registries online at the root",
        || {
            ["middle1", "bottom1"].iter().all(|n| {
                let r = listed(&root, n);
                r["connectionState"] == "Online"
                    && r["parent"]["syncProperties"]["lastSyncTime"].is_string()
            })
        },
        || cr(&root, &["list"]),
    );
    let table = cr(&root, &["list", "-o", "table"]);
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("NAME")
            && lines[0].contains("CONNECTION STATE")
            && lines[0].contains("LAST SYNC (UTC)"),
        "{table}"
    );
    assert!(
        lines[2].starts_with("middle1") && lines[3].starts_with("bottom1"),
        "{table}"
    );
    assert!(
        lines[3].contains("middle1") && lines[3].contains("Online"),
        "{table}"
    );

    // One active instance per name: a second `middle1` is refused until deactivated.
    let cs2 = settings_slot(&root, "middle1", &root.host(), "http", "2");
    let mut second =
        Registry::start_authenticated_env(&[], &[("ACR_REGISTRY_CONNECTION_STRING", &cs2)]);
    let second_status = || {
        common::http()
            .get(format!("{}/acr/v1/status", second.url()))
            .basic_auth("admin", Some(second.admin_password()))
            .send()
            .and_then(|r| r.json::<Value>())
            .unwrap_or(Value::Null)
    };
    wait_for(
        Duration::from_secs(30),
        "the second instance refused",
        || {
            second_status()["statusDetails"]
                .to_string()
                .contains("ALREADY_ACTIVATED")
        },
        || second.log(),
    );
    drop(middle);
    cr(&root, &["deactivate", "-n", "middle1"]);
    wait_for(
        Duration::from_secs(30),
        "the second instance active after deactivate",
        || {
            let s = second_status();
            !s["statusDetails"].to_string().contains("ALREADY_ACTIVATED")
                && s["connectionState"] == "Online"
        },
        || format!("{}\n{}", second_status(), second.log()),
    );
    second.stop_hard();
}
