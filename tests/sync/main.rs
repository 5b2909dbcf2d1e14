//! Sync down against real parents: Debian's reference registry (Basic) and a connected-registry
//! root (bearer); link cuts, restarts, offline parents, fetch-through, policy filters, schedule
//! windows, bandwidth, disk full, and a three-level chain.

#[path = "../common/mod.rs"]
mod common;

mod audit;
mod chain;
mod digests;
mod faults;
mod fetch;
mod fetch_verify;
mod hostile;
mod https;
mod layers;
mod manual;
mod mirror;
mod policy;
mod pushfaults;
mod pushup;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::Registry;
use serde_json::Value;

/// User and password of the sync token every parent here knows.
pub const SYNC_USER: &str = "sync";

/// A child registry of `parent_host` (`host:port`, plain HTTP) with `policy` as its config
/// file; clients need no credentials. `extra` are more `serve` arguments.
pub fn child(parent_host: &str, password: &str, policy: &str, extra: &[&str]) -> Registry {
    let tmp = tempfile::TempDir::new().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let file = tmp.path().join("policy.toml");
    std::fs::write(&file, policy).unwrap_or_else(|e| panic!("policy: {e}"));
    let mut args: Vec<String> = vec!["--insecure-no-auth".into(), "--config".into()];
    args.push(file.display().to_string());
    args.extend(extra.iter().map(|s| s.to_string()));
    let cs = connection_string(parent_host, password);
    Registry::start_in(
        tmp,
        args,
        vec![("ACR_REGISTRY_CONNECTION_STRING".into(), cs)],
    )
}

/// The connection string a child uses for `parent_host`.
pub fn connection_string(parent_host: &str, password: &str) -> String {
    format!(
        "ConnectedRegistryName=child;SyncTokenName={SYNC_USER};SyncTokenPassword={password};\
         ParentGatewayEndpoint={parent_host};ParentEndpointProtocol=http"
    )
}

/// The policy file of a child made by `child`.
pub fn policy_file(reg: &Registry) -> PathBuf {
    reg.scratch().join("policy.toml")
}

/// A ReadOnly policy for `repos` that re-syncs every second.
pub fn policy_for(repos: &[&str], extra: &str) -> String {
    let list: Vec<String> = repos.iter().map(|r| format!("\"{r}\"")).collect();
    format!(
        "mode = \"ReadOnly\"\n[sync]\nrepositories = [{}]\ninterval = \"1s\"\n{extra}\n",
        list.join(", ")
    )
}

/// What a sync token needs to pull down.
pub const PULL_ACTIONS: &[&str] = &["content/read", "metadata/read"];
/// What a sync token needs to push up (and propagate deletes).
pub const PUSH_ACTIONS: &[&str] = &[
    "content/read",
    "content/write",
    "content/delete",
    "metadata/read",
];

/// A root with authentication whose sync token has `actions` on `repos`, once the running root
/// accepts it: (root, sync password, admin password).
pub fn root_with_token(repos: &[&str], actions: &[&str]) -> (Registry, String, String) {
    let root = Registry::start_authenticated(&[]);
    let mut args = vec!["scope-map", "create", "--name", "sync"];
    for r in repos {
        args.extend(["--repository", r]);
        args.extend(actions);
    }
    root.admin(&args);
    let t = root.admin(&[
        "token",
        "create",
        "--name",
        SYNC_USER,
        "--scope-map",
        "sync",
    ]);
    let pw = t["credentials"]["passwords"][0]["value"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(!pw.is_empty(), "token create printed no password: {t}");
    // The running root picks new tokens up within seconds.
    let deadline = Instant::now() + Duration::from_secs(15);
    let probe = format!("{}/v2/", root.url());
    while !common::http()
        .get(&probe)
        .basic_auth(SYNC_USER, Some(&pw))
        .send()
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(
            Instant::now() < deadline,
            "the sync token never became valid"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let admin = root.admin_password();
    (root, pw, admin)
}

/// A ReadWrite policy for `repos` that syncs every second.
pub fn policy_rw(repos: &[&str], extra: &str) -> String {
    policy_for(repos, extra).replace("mode = \"ReadOnly\"", "mode = \"ReadWrite\"")
}

/// `GET /acr/v1/status` of a child.
pub fn status(reg: &Registry) -> Value {
    let url = format!("{}/acr/v1/status", reg.url());
    common::http()
        .get(&url)
        .send()
        .and_then(|r| r.json::<Value>())
        .unwrap_or_else(|e| panic!("{url}: {e}"))
}

/// True when the child's last sync of `repo` succeeded and left `tag` in its (local) tag list.
pub fn synced_with(reg: &Registry, repo: &str, tag: &str) -> bool {
    let s = status(reg);
    let done = s["repositories"].as_array().is_some_and(|a| {
        a.iter()
            .any(|r| r["name"] == repo && r["state"] == "Synced")
    });
    done && tags(&reg.url(), repo).iter().any(|t| t == tag)
}

/// Asks for a sync now (`POST /acr/v1/sync`).
pub fn sync_now(reg: &Registry) {
    let url = format!("{}/acr/v1/sync", reg.url());
    let r = common::http().post(&url).send();
    let code = r.map(|r| r.status().as_u16()).unwrap_or(0);
    assert_eq!(code, 202, "POST {url}");
}

/// Polls `cond` (asking for a sync every 2 s) until it holds; panics with the child's status
/// and log after `limit`.
pub fn wait_for(reg: &Registry, what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    let mut last_sync = Instant::now();
    loop {
        if cond() {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "{what}: not within {limit:?}\nstatus: {}\nlog:\n{}",
                status(reg),
                tail(&reg.log(), 60)
            );
        }
        if last_sync.elapsed() > Duration::from_secs(2) {
            sync_now(reg);
            last_sync = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

pub use common::tags;

/// Status code and `Docker-Content-Digest` of `GET /v2/<repo>/manifests/<reference>`.
pub fn manifest_digest(base: &str, repo: &str, reference: &str) -> (u16, String) {
    let url = format!("{base}/v2/{repo}/manifests/{reference}");
    let accept =
        "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, \
                  application/vnd.docker.distribution.manifest.v2+json, \
                  application/vnd.docker.distribution.manifest.list.v2+json";
    let r = common::http()
        .get(&url)
        .header("Accept", accept)
        .send()
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    let code = r.status().as_u16();
    let d = r.headers().get("docker-content-digest");
    let d = d
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if code == 200 {
        let body = r.bytes().unwrap_or_default();
        assert_eq!(
            common::oci::sha256(&body),
            d,
            "{url}: body and digest differ"
        );
    }
    (code, d)
}

/// Status code and sha256 of the body of `GET /v2/<repo>/blobs/<digest>`.
pub fn blob_sha(base: &str, repo: &str, digest: &str) -> (u16, String) {
    let url = format!("{base}/v2/{repo}/blobs/{digest}");
    let r = common::http()
        .get(&url)
        .send()
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    let code = r.status().as_u16();
    let body = r.bytes().unwrap_or_default();
    (code, common::oci::sha256(&body))
}
