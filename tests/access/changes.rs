//! Audit lines for token and scope-map changes made by a management command while the server
//! runs: the command logs them, and the server logs what it notices in the records.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::common;

/// Runs a management command against the registry's data directory; returns (stdout, stderr).
fn command(reg: &common::Registry, args: &[&str]) -> (String, String) {
    let out = Command::new(common::BIN)
        .args(args)
        .arg("--data-dir")
        .arg(&reg.data)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    (text(&out.stdout), text(&out.stderr))
}

fn audit_line<'a>(log: &'a str, event: &str, token: &str) -> Option<&'a str> {
    log.lines().find(|l| {
        l.contains(" INFO audit event=")
            && l.contains(&format!("event=\"{event}\""))
            && l.contains(&format!("token={token} "))
    })
}

/// Waits (bounded: 15 s) for the server's log to hold the audit line.
fn wait_server_line(reg: &common::Registry, event: &str, token: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let log = reg.log();
        if let Some(l) = audit_line(&log, event, token) {
            return l.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no {event} line for {token}:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn token_changes_made_elsewhere_are_audited_by_the_command_and_the_server() {
    let reg = common::Registry::start_authenticated(&[]);
    reg.admin(&[
        "scope-map",
        "create",
        "-n",
        "audited",
        "--repository",
        "app",
        "content/read",
    ]);
    let (out, err) = command(
        &reg,
        &["token", "create", "-n", "audited", "--scope-map", "audited"],
    );
    let t: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}"));
    let passwords: Vec<String> = (0..2)
        .map(|i| {
            t["credentials"]["passwords"][i]["value"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert!(passwords.iter().all(|p| p.len() == 43), "{t}");
    let here = audit_line(&err, "token_created", "audited").unwrap_or_else(|| panic!("{err}"));
    assert!(
        here.contains("source=\"local\"") && here.contains("scope_map audited"),
        "{here}"
    );

    let created = wait_server_line(&reg, "token_created", "audited");
    assert!(created.contains("source=\"local\""), "{created}");

    let (_, err) = command(
        &reg,
        &["token", "update", "-n", "audited", "--status", "disabled"],
    );
    assert!(
        audit_line(&err, "token_disabled", "audited").is_some(),
        "{err}"
    );
    wait_server_line(&reg, "token_disabled", "audited");

    let (_, err) = command(
        &reg,
        &[
            "token",
            "credential",
            "generate",
            "-n",
            "audited",
            "--password2",
        ],
    );
    assert!(
        audit_line(&err, "token_password_generated", "audited").is_some(),
        "{err}"
    );
    let generated = wait_server_line(&reg, "token_password_generated", "audited");
    assert!(generated.contains("detail=password2"), "{generated}");

    let log = reg.log();
    for secret in &passwords {
        assert!(!log.contains(secret.as_str()), "a password reached the log");
    }
    assert!(!log.contains("$argon2"), "a password hash reached the log");
}
