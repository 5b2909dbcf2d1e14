//! What the soaks share: their knobs from the environment, a seeded RNG, a child registry of a
//! parent, and byte-checked reads.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use serde_json::Value;

use crate::common::{self, oci, Registry};

/// A number from the environment, or `default` when unset; a malformed value fails the soak.
pub fn knob(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{name}={v}: not a number ({e})")),
        Err(_) => default,
    }
}

/// The soak's RNG: seeded from `SOAK_SEED` or at random, the seed printed for a replay.
pub fn rng(soak: &str) -> (rand::rngs::StdRng, u64) {
    let seed = knob("SOAK_SEED", rand::rng().random());
    eprintln!("soak {soak}: seed {seed} (SOAK_SEED={seed} replays it)");
    (rand::rngs::StdRng::seed_from_u64(seed), seed)
}

/// The wall-clock bound of a soak's fault loop (`SOAK_MINUTES`, default 30).
pub fn time_limit() -> Duration {
    Duration::from_secs(knob("SOAK_MINUTES", 30) * 60)
}

/// Prints the line scripts/soak.sh collects into its summary.
pub fn summary(soak: &str, line: &str, started: Instant) {
    eprintln!(
        "SOAK-SUMMARY {soak}: {line}; {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// The connection string of a child whose parent (no authentication) is at `parent_host`.
fn connection_string(parent_host: &str) -> String {
    format!(
        "ConnectedRegistryName=child;SyncTokenName=sync;SyncTokenPassword=unused;\
         ParentGatewayEndpoint={parent_host};ParentEndpointProtocol=http"
    )
}

/// A child of `parent_host` with `config` as its file, in a fresh temp dir.
pub fn child(parent_host: &str, config: &str) -> Registry {
    let tmp = tempfile::TempDir::new().unwrap_or_else(|e| panic!("tempdir: {e}"));
    child_in(tmp, parent_host, config)
}

/// A child of `parent_host` with `config` as its file, its data in `tmp/data` (which the
/// caller may have mounted).
pub fn child_in(tmp: tempfile::TempDir, parent_host: &str, config: &str) -> Registry {
    let file = tmp.path().join("config.toml");
    std::fs::write(&file, config).unwrap_or_else(|e| panic!("config: {e}"));
    let args = vec![
        "--insecure-no-auth".to_owned(),
        "--config".to_owned(),
        file.display().to_string(),
    ];
    let env = vec![(
        "ACR_REGISTRY_CONNECTION_STRING".to_owned(),
        connection_string(parent_host),
    )];
    Registry::start_in(tmp, args, env)
}

/// A ReadWrite child's file for `repos`, syncing every second, plus `extra` TOML.
pub fn rw_config(repos: &[&str], extra: &str) -> String {
    let list: Vec<String> = repos.iter().map(|r| format!("\"{r}\"")).collect();
    format!(
        "mode = \"ReadWrite\"\n{extra}\n[sync]\nrepositories = [{}]\ninterval = \"PT1S\"\n",
        list.join(", ")
    )
}

/// Asks a child for a sync now; a refusal or a dead link is ignored (the soak goes on).
pub fn sync_now(reg: &Registry) {
    let _ = common::http()
        .post(format!("{}/acr/v1/sync", reg.url()))
        .send();
}

pub use common::tags;

/// Accept header naming every manifest type the soaks push.
const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
                      application/vnd.oci.image.manifest.v1+json";

/// What a GET served: a status and, for a whole 200, the sha256 of the body; `None` when the
/// body never arrived whole (a cut connection: not served).
pub type Served = Option<(u16, String)>;

/// GETs `url` and hashes the whole body; a 200 whose body disagrees with its
/// `Docker-Content-Digest` header is reported as served with that (wrong) hash.
pub fn get_hashed(c: &reqwest::blocking::Client, url: &str) -> Served {
    let r = c.get(url).header("Accept", ACCEPT).send().ok()?;
    let status = r.status().as_u16();
    let body = r.bytes().ok()?;
    Some((status, oci::sha256(&body)))
}

/// Tag → manifest digest of `repos` at `base`, each manifest's body checked against its digest.
pub fn tag_digests(base: &str, repos: &[&str]) -> BTreeMap<String, String> {
    let c = common::http();
    let mut out = BTreeMap::new();
    for repo in repos {
        for tag in tags(base, repo) {
            let url = format!("{base}/v2/{repo}/manifests/{tag}");
            let d = match get_hashed(&c, &url) {
                Some((200, d)) => d,
                other => format!("<{other:?}>"),
            };
            out.insert(format!("{repo}:{tag}"), d);
        }
    }
    out
}

/// Checks that `repo@digest` (a manifest) and the blobs it names are served whole; the first
/// problem, if any.
pub fn check_image(
    base: &str,
    repo: &str,
    reference: &str,
    digest: &str,
    blobs: &[String],
) -> Option<String> {
    let c = common::http();
    let url = format!("{base}/v2/{repo}/manifests/{reference}");
    match get_hashed(&c, &url) {
        Some((200, d)) if d == digest => {}
        got => {
            return Some(format!(
                "{repo}:{reference} served {got:?}, acknowledged {digest}"
            ))
        }
    }
    for b in blobs {
        match get_hashed(&c, &format!("{base}/v2/{repo}/blobs/{b}")) {
            Some((200, d)) if &d == b => {}
            got => return Some(format!("{repo} blob {b} served {got:?}")),
        }
    }
    None
}

/// The blob digests (config and layers) a manifest body names.
pub fn manifest_blobs(body: &[u8]) -> Vec<String> {
    let v: Value = serde_json::from_slice(body).unwrap_or_default();
    let mut out: Vec<String> = v["config"]["digest"]
        .as_str()
        .map(str::to_owned)
        .into_iter()
        .collect();
    let layers = v["layers"].as_array().cloned().unwrap_or_default();
    out.extend(
        layers
            .iter()
            .filter_map(|l| l["digest"].as_str().map(str::to_owned)),
    );
    out
}

/// Checks one listed tag and its blobs; (digest, problems).
pub fn check_tag(base: &str, repo: &str, tag: &str) -> (String, Vec<String>) {
    let c = common::http();
    let url = format!("{base}/v2/{repo}/manifests/{tag}");
    let Ok(r) = c.get(&url).header("Accept", oci::OCI_MANIFEST).send() else {
        return (String::new(), vec![format!("{url}: no answer")]);
    };
    let status = r.status().as_u16();
    let want = r
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = r.bytes().unwrap_or_default();
    if status != 200 || oci::sha256(&body) != want {
        return (
            want.clone(),
            vec![format!(
                "listed {repo}:{tag} served {status}, header {want}"
            )],
        );
    }
    let blobs = manifest_blobs(&body);
    let problems = check_image(base, repo, &want, &want, &blobs);
    (want, problems.into_iter().collect())
}

/// Polls `cond` every 200 ms (asking `reg` for a sync every 2 s) up to `limit`; whether it held.
pub fn converge(reg: &Registry, limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    let mut asked = Instant::now();
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        if asked.elapsed() > Duration::from_secs(2) {
            sync_now(reg);
            asked = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    cond()
}

/// The last `n` lines of a log.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
