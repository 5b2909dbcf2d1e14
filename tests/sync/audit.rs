//! `sync.audit_logs`: with it, the child logs one audit line per sync action; without it, none.

use std::time::Duration;

use crate::common::{self, oci, Registry};
use crate::{child, policy_for, wait_for};

const REPO: &str = "audit/app";

fn audit_lines(reg: &Registry) -> Vec<String> {
    reg.log()
        .lines()
        .filter(|l| l.contains(" INFO audit event=\"sync_"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn sync_actions_are_audited_only_when_the_policy_asks() {
    let root = Registry::start();
    let audited = child(
        &root.host(),
        "unused",
        &policy_for(&[REPO], "audit_logs = true"),
        &[],
    );
    let quiet = child(&root.host(), "unused", &policy_for(&[REPO], ""), &[]);
    let img = oci::image("amd64", b"audited on the way down\n");
    oci::push(&common::http(), &root.url(), REPO, "v1", &img);
    for reg in [&audited, &quiet] {
        wait_for(reg, "the image synced", Duration::from_secs(60), || {
            crate::synced_with(reg, REPO, "v1")
        });
    }

    let lines = audit_lines(&audited);
    let has = |event: &str, more: &[&str]| {
        lines.iter().any(|l| {
            l.contains(&format!("event=\"{event}\"")) && more.iter().all(|m| l.contains(m))
        })
    };
    let repo = format!("repo=\"{REPO}\"");
    let manifest = format!("digest=\"{}\"", img.digest);
    assert!(
        has("sync_manifest_stored", &[&repo, &manifest]),
        "{lines:#?}"
    );
    assert!(
        has("sync_tag_set", &[&repo, "tag=\"v1\"", &manifest]),
        "{lines:#?}"
    );
    for b in &img.blobs {
        let blob = format!("digest=\"{}\"", b.digest);
        let size = format!("size={}", b.bytes.len());
        assert!(
            has("sync_blob_downloaded", &[&repo, &blob, &size]),
            "{lines:#?}"
        );
    }
    assert!(audit_lines(&quiet).is_empty(), "{:#?}", audit_lines(&quiet));
}
