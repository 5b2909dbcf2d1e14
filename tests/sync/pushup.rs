//! Push-up (ReadWrite, DESIGN §6): what clients push to a child travels up to its parent —
//! Debian's reference registry (Basic) or a connected-registry root (bearer) — with identical
//! digests, in order per repository, after the parent was away; deletes go up where the parent
//! can delete; an entry older than the message TTL expires and is reported; a tag moved at both
//! ends is a reported conflict the last writer wins; a chain relays a push to its root.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::clients::docker::Dockerd;
use crate::common::clients::require_root;
use crate::common::clients::skopeo::Skopeo;
use crate::common::distribution::{with_auth, DockerRegistry};
use crate::common::faultproxy::FaultProxy;
use crate::common::oci::{self, Manifest};
use crate::common::{self, Registry};
use crate::{child, manifest_digest, policy_rw, status, tags, wait_for, SYNC_USER};

/// Most any single wait here may take; a healthy run needs a few seconds.
const LIMIT: Duration = Duration::from_secs(60);
/// Every manifest media type the parents may hold.
const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
                      application/vnd.oci.image.manifest.v1+json, \
                      application/vnd.docker.distribution.manifest.v2+json, \
                      application/vnd.docker.distribution.manifest.list.v2+json";

/// Status and body-checked digest of `repo:reference` at a parent read with `auth`.
fn parent_manifest(
    base: &str,
    auth: Option<(&str, &str)>,
    repo: &str,
    reference: &str,
) -> (u16, String) {
    let url = format!("{base}/v2/{repo}/manifests/{reference}");
    let req = with_auth(common::http().get(&url), auth).header("Accept", ACCEPT);
    let r = req.send().unwrap_or_else(|e| panic!("{url}: {e}"));
    let code = r.status().as_u16();
    let header = r.headers().get("docker-content-digest");
    let header = header.and_then(|v| v.to_str().ok()).unwrap_or_default();
    let header = header.to_owned();
    if code != 200 {
        return (code, header);
    }
    let body = r.bytes().unwrap_or_else(|e| panic!("{url}: {e}"));
    let digest = oci::sha256(&body);
    assert!(
        header.is_empty() || header == digest,
        "{url}: served as {header}, the body is {digest}"
    );
    (code, digest)
}

/// Sorted tags of `repo` at a parent read with `auth` (empty when the repository is unknown).
fn parent_tags(base: &str, auth: Option<(&str, &str)>, repo: &str) -> Vec<String> {
    let url = format!("{base}/v2/{repo}/tags/list");
    let Ok(r) = with_auth(common::http().get(&url), auth).send() else {
        return Vec::new();
    };
    if !r.status().is_success() {
        return Vec::new();
    }
    let v: Value = r.json().unwrap_or_default();
    let mut t: Vec<String> = serde_json::from_value(v["tags"].clone()).unwrap_or_default();
    t.sort();
    t
}

/// Asserts that the parent serves `repo:tag` as `digest` and every blob it names byte-exact.
fn assert_parent_serves(base: &str, auth: Option<(&str, &str)>, repo: &str, tag: &str, d: &str) {
    assert_eq!(
        parent_manifest(base, auth, repo, tag),
        (200, d.to_owned()),
        "{repo}:{tag} at the parent"
    );
    let url = format!("{base}/v2/{repo}/manifests/{d}");
    let req = with_auth(common::http().get(&url), auth).header("Accept", ACCEPT);
    let m: Value = req
        .send()
        .and_then(|r| r.json())
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    let layers = m["layers"].as_array().cloned().unwrap_or_default();
    assert!(!layers.is_empty(), "{repo}@{d} has no layers: {m}");
    for desc in layers.iter().chain([&m["config"]]) {
        let b = desc["digest"].as_str().unwrap_or_default();
        let url = format!("{base}/v2/{repo}/blobs/{b}");
        let r = with_auth(common::http().get(&url), auth).send();
        let r = r.unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(r.status().as_u16(), 200, "{url}");
        let body = r.bytes().unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(oci::sha256(&body), b, "{url}: other bytes");
        assert_eq!(
            Some(body.len() as u64),
            desc["size"].as_u64(),
            "{url}: size"
        );
    }
}

/// Messages of the child's status details with `code`.
fn details(reg: &Registry, code: &str) -> Vec<String> {
    let s = status(reg);
    let list = s["statusDetails"].as_array().cloned().unwrap_or_default();
    list.iter()
        .filter(|d| d["code"] == code)
        .map(|d| d["message"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// `outbox.pendingCount` of the child's status.
fn pending(reg: &Registry) -> u64 {
    status(reg)["outbox"]["pendingCount"]
        .as_u64()
        .unwrap_or_else(|| panic!("no outbox.pendingCount in {}", status(reg)))
}

/// Polls `cond` every 100 ms for at most `limit`; true once it holds.
fn within(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !cond() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    true
}

/// Waits 10 s for Offline with `n` pending changes; else the failure to report at the end.
fn offline_with_pending(reg: &Registry, n: u64) -> Option<String> {
    let ok = within(Duration::from_secs(10), || {
        let s = status(reg);
        s["connectionState"] == "Offline"
            && s["syncPasses"].as_u64() > Some(0)
            && s["outbox"]["pendingCount"] == n
    });
    let s = status(reg);
    (!ok).then(|| {
        format!(
            "while the parent was down the child did not report Offline with {n} pending \
             changes: connectionState {}, outbox {} (the outbox figures must be current while \
             offline)",
            s["connectionState"], s["outbox"]
        )
    })
}

/// Deletes `repo:reference` at a registry without credentials; panics unless 202.
fn delete_at(base: &str, repo: &str, reference: &str) {
    let url = format!("{base}/v2/{repo}/manifests/{reference}");
    let r = common::http().delete(&url).send();
    let code = r.map(|r| r.status().as_u16()).unwrap_or(0);
    assert_eq!(code, 202, "DELETE {url}");
}

/// A FaultProxy in front of a loopback `port`.
fn proxy_to(port: u16) -> FaultProxy {
    FaultProxy::start(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
}

/// The `sha256:` digest on the `<tag>: digest: sha256:… size: N` line of `docker push`.
fn pushed_digest(push_output: &str, tag: &str) -> String {
    let prefix = format!("{tag}: digest: ");
    push_output
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|rest| rest.split_whitespace().next())
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no digest for {tag} in push output:\n{push_output}"))
}

/// docker and skopeo push to a ReadWrite child; waits until the parent serves both digests.
fn clients_push_through(
    parent_host: &str,
    password: &str,
    parent_url: &str,
    auth: Option<(&str, &str)>,
) {
    let (docker_repo, skopeo_repo) = ("pushup/docker", "pushup/skopeo");
    let policy = policy_rw(&[docker_repo, skopeo_repo], "");
    let reg = child(parent_host, password, &policy, &[]);

    // skopeo: an OCI layout copied byte-exact.
    let img = oci::image("amd64", b"pushed up with skopeo\n");
    let layout = reg.scratch().join("layout");
    oci::write_layout(&layout, &[("v1", &img)], &[]);
    let sk = Skopeo::new();
    let src = format!("oci:{}:v1", layout.display());
    sk.copy(
        &src,
        &format!("docker://{}/{skopeo_repo}:v1", reg.host()),
        false,
    );
    assert_eq!(
        manifest_digest(&reg.url(), skopeo_repo, "v1"),
        (200, img.digest.clone()),
        "skopeo's push at the child"
    );

    // docker: an imported tarball, pushed without credentials.
    let dk = Dockerd::start();
    let tarball = dk.dir.path().join("rootfs.tar");
    let content = oci::pseudo_random(64 * 1024, 11);
    std::fs::write(&tarball, oci::tar_one_file("hello.bin", &content))
        .unwrap_or_else(|e| panic!("{}: {e}", tarball.display()));
    let image = format!("{}/{docker_repo}:v1", reg.host());
    dk.ok(&reg, &["import", &tarball.to_string_lossy(), &image]);
    let docker_digest = pushed_digest(&dk.ok(&reg, &["push", &image]), "v1");
    drop(dk);

    wait_for(&reg, "both pushes at the parent", LIMIT, || {
        parent_manifest(parent_url, auth, docker_repo, "v1") == (200, docker_digest.clone())
            && parent_manifest(parent_url, auth, skopeo_repo, "v1") == (200, img.digest.clone())
    });
    assert_parent_serves(parent_url, auth, docker_repo, "v1", &docker_digest);
    assert_parent_serves(parent_url, auth, skopeo_repo, "v1", &img.digest);
    wait_for(&reg, "an empty outbox", LIMIT, || pending(&reg) == 0);
}

#[test]
fn docker_and_skopeo_pushes_reach_the_reference_registry() {
    require_root();
    let parent = DockerRegistry::start_with_users(&[(SYNC_USER, "pw")]);
    clients_push_through(&parent.host(), "pw", &parent.url(), parent.user());
}

#[test]
fn docker_and_skopeo_pushes_reach_a_connected_registry_root() {
    require_root();
    let (root, pw, admin) =
        crate::root_with_token(&["pushup/docker", "pushup/skopeo"], crate::PUSH_ACTIONS);
    clients_push_through(&root.host(), &pw, &root.url(), Some(("admin", &admin)));
}

#[test]
fn fifty_tags_pushed_while_the_parent_is_down_arrive_in_order() {
    let parent = DockerRegistry::start_with_users(&[(SYNC_USER, "pw")]);
    let auth = parent.user();
    let proxy = proxy_to(parent.port());
    proxy.set_down(true);
    let repos: Vec<String> = (0..5).map(|r| format!("pushup/order{r}")).collect();
    let names: Vec<&str> = repos.iter().map(String::as_str).collect();
    let reg = child(&proxy.host(), "pw", &policy_rw(&names, ""), &[]);
    let http = common::http();
    let mut pushed: Vec<(String, String, Manifest)> = Vec::new();
    for i in 0..10 {
        for repo in &repos {
            let tag = format!("t{i:02}");
            let m = oci::image("amd64", format!("{repo} {tag}\n").as_bytes());
            oci::push(&http, &reg.url(), repo, &tag, &m);
            pushed.push((repo.clone(), tag, m));
        }
    }
    // Each push is two changes waiting: the manifest and its tag. A wrong figure fails the
    // test at the end, once delivery and order are checked too.
    let offline_failure = offline_with_pending(&reg, 100);
    assert!(
        parent_tags(&parent.url(), auth, &repos[0]).is_empty(),
        "the parent got content through a proxy that is down"
    );
    proxy.set_down(false);
    let want: Vec<String> = (0..10).map(|i| format!("t{i:02}")).collect();
    wait_for(&reg, "all 50 tags at the parent", LIMIT, || {
        repos
            .iter()
            .all(|r| parent_tags(&parent.url(), auth, r) == want)
    });
    for (repo, tag, m) in &pushed {
        let got = parent_manifest(&parent.url(), auth, repo, tag);
        assert_eq!(got, (200, m.digest.clone()), "{repo}:{tag} at the parent");
    }
    let requests = proxy.requests();
    for repo in &repos {
        let prefix = format!("PUT /v2/{repo}/manifests/");
        let mut order: Vec<String> = Vec::new();
        for line in &requests {
            let Some(rest) = line.strip_prefix(&prefix) else {
                continue;
            };
            let reference = rest.split_whitespace().next().unwrap_or_default();
            if !reference.starts_with("sha256:")
                && order.last().map(String::as_str) != Some(reference)
            {
                order.push(reference.to_owned());
            }
        }
        assert_eq!(
            order, want,
            "tag PUTs of {repo} out of order: {requests:#?}"
        );
        // A manifest pushed with its tag goes up once, by tag (the tag push stores it); never
        // by digest after its tag.
        for (_, tag, m) in pushed.iter().filter(|(r, _, _)| r == repo) {
            let at = |reference: &str| {
                let line = format!("{prefix}{reference} ");
                requests.iter().position(|l| l.starts_with(&line))
            };
            let (by_digest, by_tag) = (at(&m.digest), at(tag));
            assert!(
                by_tag.is_some() && by_digest.is_none_or(|d| Some(d) < by_tag),
                "{repo}:{tag}: manifest by digest at {by_digest:?}, tag at {by_tag:?}"
            );
        }
    }
    wait_for(&reg, "an empty outbox", LIMIT, || pending(&reg) == 0);
    if let Some(f) = offline_failure {
        panic!("{f}");
    }
}

#[test]
fn deletes_at_the_child_reach_a_connected_registry_root() {
    const REPO: &str = "pushup/deletes";
    let (root, pw, admin) = crate::root_with_token(&[REPO], crate::PUSH_ACTIONS);
    let auth = Some(("admin", admin.as_str()));
    let reg = child(&root.host(), &pw, &policy_rw(&[REPO], ""), &[]);
    let (x, y) = (
        oci::image("amd64", b"deleted by tag\n"),
        oci::image("amd64", b"deleted by digest\n"),
    );
    let http = common::http();
    oci::push(&http, &reg.url(), REPO, "v1", &x);
    oci::push(&http, &reg.url(), REPO, "v2", &y);
    wait_for(&reg, "v1 and v2 at the root", LIMIT, || {
        parent_tags(&root.url(), auth, REPO) == ["v1", "v2"]
    });

    delete_at(&reg.url(), REPO, "v1");
    wait_for(&reg, "v1 deleted at the root", LIMIT, || {
        parent_tags(&root.url(), auth, REPO) == ["v2"]
    });
    // A tag delete leaves the manifest.
    let got = parent_manifest(&root.url(), auth, REPO, &x.digest);
    assert_eq!(
        got,
        (200, x.digest.clone()),
        "{REPO}@{} at the root",
        x.digest
    );

    delete_at(&reg.url(), REPO, &y.digest);
    wait_for(&reg, "the manifest deleted at the root", LIMIT, || {
        parent_manifest(&root.url(), auth, REPO, &y.digest).0 == 404
    });
    assert_eq!(parent_manifest(&root.url(), auth, REPO, "v2").0, 404);
    wait_for(&reg, "an empty outbox", LIMIT, || pending(&reg) == 0);
    // A sync pass later, the child has not taken either back from the parent.
    crate::sync_now(&reg);
    std::thread::sleep(Duration::from_secs(2));
    assert!(tags(&reg.url(), REPO).is_empty(), "tags back at the child");
    assert_eq!(manifest_digest(&reg.url(), REPO, &y.digest).0, 404);
    for code in ["DeleteUnsupported", "DeleteDenied"] {
        let d = details(&reg, code);
        assert!(d.is_empty(), "{code}: {d:?}");
    }
}

#[test]
fn a_tag_delete_the_reference_registry_cannot_do_is_reported_and_skipped() {
    const REPO: &str = "pushup/nodelete";
    let parent = DockerRegistry::start_with_users(&[(SYNC_USER, "pw")]);
    let auth = parent.user();
    let reg = child(&parent.host(), "pw", &policy_rw(&[REPO], ""), &[]);
    let (x, y, z) = (
        oci::image("amd64", b"tag not deletable there\n"),
        oci::image("amd64", b"deletable by digest\n"),
        oci::image("amd64", b"pushed after the deletes\n"),
    );
    let http = common::http();
    oci::push(&http, &reg.url(), REPO, "v1", &x);
    oci::push(&http, &reg.url(), REPO, "v2", &y);
    wait_for(&reg, "v1 and v2 at the parent", LIMIT, || {
        parent_tags(&parent.url(), auth, REPO) == ["v1", "v2"]
    });

    delete_at(&reg.url(), REPO, "v1");
    wait_for(&reg, "a DeleteUnsupported detail", LIMIT, || {
        details(&reg, "DeleteUnsupported")
            .iter()
            .any(|m| m.contains(&format!("{REPO}:v1")))
    });
    // Distribution deletes by digest: the manifest and its tags go.
    delete_at(&reg.url(), REPO, &y.digest);
    // The outbox is not stuck behind the refused delete.
    oci::push(&http, &reg.url(), REPO, "v3", &z);
    wait_for(&reg, "v3 at the parent", LIMIT, || {
        parent_manifest(&parent.url(), auth, REPO, "v3") == (200, z.digest.clone())
    });
    wait_for(&reg, "an empty outbox", LIMIT, || pending(&reg) == 0);
    assert_eq!(
        parent_manifest(&parent.url(), auth, REPO, &y.digest).0,
        404,
        "{REPO}@{} still at the parent",
        y.digest
    );
    assert!(
        !parent_tags(&parent.url(), auth, REPO).contains(&"v2".to_owned()),
        "v2 still listed at the parent"
    );
    let denied = details(&reg, "DeleteDenied");
    assert!(denied.is_empty(), "DeleteDenied: {denied:?}");
}

#[test]
fn an_outbox_entry_older_than_the_message_ttl_expires_and_is_reported() {
    const REPO: &str = "pushup/ttl";
    let root = Registry::start();
    let proxy = proxy_to(root.port);
    proxy.set_down(true);
    let policy = policy_rw(&[REPO], "message_ttl = \"2s\"");
    let reg = child(&proxy.host(), "unused", &policy, &[]);
    let old = oci::image("amd64", b"never delivered\n");
    let http = common::http();
    oci::push(&http, &reg.url(), REPO, "v1", &old);
    let offline_failure = offline_with_pending(&reg, 2);
    std::thread::sleep(Duration::from_millis(3500));
    proxy.set_down(false);
    wait_for(&reg, "a MessageExpired detail for ttl:v1", LIMIT, || {
        details(&reg, "MessageExpired")
            .iter()
            .any(|m| m.contains(&format!("{REPO}:v1")) && m.contains(&old.digest))
    });
    wait_for(&reg, "an empty outbox", LIMIT, || pending(&reg) == 0);
    // Something fresh still goes up.
    let new = oci::image("amd64", b"delivered in time\n");
    oci::push(&http, &reg.url(), REPO, "v2", &new);
    wait_for(&reg, "v2 at the parent", LIMIT, || {
        manifest_digest(&root.url(), REPO, "v2") == (200, new.digest.clone())
    });
    assert_eq!(tags(&root.url(), REPO), ["v2"], "v1 reached the parent");
    assert_eq!(manifest_digest(&root.url(), REPO, &old.digest).0, 404);
    let sent = proxy.count_requests(&format!("PUT /v2/{REPO}/manifests/v1 "))
        + proxy.count_requests(&format!("PUT /v2/{REPO}/manifests/{} ", old.digest));
    assert_eq!(
        sent,
        0,
        "the expired manifest was sent: {:#?}",
        proxy.requests()
    );
    assert_eq!(
        manifest_digest(&reg.url(), REPO, "v1"),
        (200, old.digest.clone()),
        "the child no longer serves v1"
    );
    if let Some(f) = offline_failure {
        panic!("{f}");
    }
}

#[test]
fn a_tag_moved_at_both_ends_is_a_reported_conflict_the_last_change_wins() {
    const REPO: &str = "pushup/conflict";
    let parent = DockerRegistry::start_with_users(&[(SYNC_USER, "pw")]);
    let auth = parent.user();
    let proxy = proxy_to(parent.port());
    let reg = child(&proxy.host(), "pw", &policy_rw(&[REPO], ""), &[]);
    let (a, b, c) = (
        oci::image("amd64", b"image A\n"),
        oci::image("amd64", b"image B, pushed at the parent\n"),
        oci::image("amd64", b"image C, pushed at the child\n"),
    );
    let http = common::http();
    oci::push(&http, &reg.url(), REPO, "v1", &a);
    wait_for(&reg, "A at the parent", LIMIT, || {
        parent_manifest(&parent.url(), auth, REPO, "v1") == (200, a.digest.clone())
    });
    wait_for(&reg, "an empty outbox", LIMIT, || pending(&reg) == 0);

    proxy.set_down(true);
    parent.push(REPO, "v1", &b);
    oci::push(&http, &reg.url(), REPO, "v1", &c);
    if let Some(f) = offline_with_pending(&reg, 2) {
        panic!("{f}");
    }
    proxy.set_down(false);
    wait_for(&reg, "C at the parent", LIMIT, || {
        parent_manifest(&parent.url(), auth, REPO, "v1") == (200, c.digest.clone())
    });
    wait_for(&reg, "an empty outbox", LIMIT, || pending(&reg) == 0);
    let conflicts = details(&reg, "TagConflict");
    assert!(
        conflicts
            .iter()
            .any(|m| m.contains(&format!("{} is overwritten", b.digest))),
        "no TagConflict naming B ({}) as overwritten: {conflicts:?}",
        b.digest
    );
    // A pass later, both ends still say C.
    crate::sync_now(&reg);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        manifest_digest(&reg.url(), REPO, "v1"),
        (200, c.digest.clone()),
        "the child serves another v1"
    );
    assert_eq!(
        parent_manifest(&parent.url(), auth, REPO, "v1"),
        (200, c.digest.clone()),
        "the parent serves another v1"
    );
}

#[test]
fn a_push_at_the_grandchild_reaches_the_root() {
    const REPO: &str = "pushup/chain";
    let root = Registry::start();
    let policy = policy_rw(&[REPO], "");
    let middle = child(&root.host(), "unused", &policy, &[]);
    let leaf = child(&middle.host(), "unused", &policy, &[]);
    let m = oci::image("amd64", b"from the bottom of the chain\n");
    oci::push(&common::http(), &leaf.url(), REPO, "v1", &m);
    wait_for(&leaf, "the push at the root", LIMIT, || {
        manifest_digest(&root.url(), REPO, "v1") == (200, m.digest.clone())
    });
    for b in &m.blobs {
        let got = crate::blob_sha(&root.url(), REPO, &b.digest);
        assert_eq!(
            got,
            (200, b.digest.clone()),
            "blob {} at the root",
            b.digest
        );
    }
    assert_eq!(
        manifest_digest(&middle.url(), REPO, "v1"),
        (200, m.digest.clone()),
        "the middle registry"
    );
    wait_for(&leaf, "the grandchild's outbox empty", LIMIT, || {
        pending(&leaf) == 0
    });
    wait_for(&middle, "the middle's outbox empty", LIMIT, || {
        pending(&middle) == 0
    });
}
