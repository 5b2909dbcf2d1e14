//! Replicas: two `serve` processes on the same shared backends (metadata in a real PostgreSQL,
//! blobs in Azure Blob Storage on Azurite), authenticated. They start together on empty
//! backends and agree on one admin token; a token made by the management command on the shared
//! database works at both; a bearer token one replica issues is valid at the other (the signing
//! key is shared); an image skopeo pushes through one pulls back exactly through the other; a
//! deleted token stops working at both within two seconds. Only one replica syncs from the
//! parent (it holds the lease), and when it is killed the other takes over.

use std::time::{Duration, Instant};

use connected_registry::testing::{Azurite, Postgres};
use tempfile::TempDir;

use crate::common::clients::skopeo::Skopeo;
use crate::common::{http, oci, Registry, BIN};

const REPO: &str = "plant/line-2";

/// Both replicas' settings: the shared backends and the emulator's environment.
struct Shared {
    args: Vec<String>,
    env: Vec<(String, String)>,
    metadata: String,
}

/// Starts one replica (authenticated) on its own data directory and the shared backends.
fn replica(shared: &Shared) -> Registry {
    let tmp = TempDir::new().unwrap_or_else(|e| panic!("{e}"));
    Registry::start_in(tmp, shared.args.clone(), shared.env.clone())
}

/// Runs a management command against the shared metadata (no data directory needed); its JSON.
fn admin(shared: &Shared, args: &[&str]) -> serde_json::Value {
    let out = std::process::Command::new(BIN)
        .args(args)
        .args(["--metadata", &shared.metadata])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{args:?}: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    if text.trim().is_empty() {
        return serde_json::Value::Null;
    }
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{args:?} printed non-JSON ({e}): {text}"))
}

/// The status of `GET /v2/` at `reg` with Basic credentials.
fn v2_status(reg: &Registry, user: &str, pw: &str) -> u16 {
    http()
        .get(format!("{}/v2/", reg.url()))
        .basic_auth(user, Some(pw))
        .send()
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// Waits (at most two seconds, the promise for access changes) until `GET /v2/` with the
/// credentials answers `want` at every replica.
fn within_two_seconds(replicas: &[&Registry], user: &str, pw: &str, want: u16) {
    let deadline = Instant::now() + Duration::from_secs(2);
    for reg in replicas {
        loop {
            let got = v2_status(reg, user, pw);
            if got == want {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} answered {got} to {user}, expected {want}",
                reg.url()
            );
            // Seldom enough that the failed-login throttle (five free failures) never answers.
            std::thread::sleep(Duration::from_millis(400));
        }
    }
}

/// The host clients address: the load balancer in front of the replicas, which forwards it.
const SITE_HOST: &str = "registry.plant.example";

/// A bearer token from `reg`'s token service for pulling and pushing `REPO`, asked for as
/// through the load balancer.
fn bearer(reg: &Registry, user: &str, pw: &str) -> String {
    let url = format!(
        "{}/acr/oauth2/token?service={SITE_HOST}&scope=repository:{REPO}:pull,push",
        reg.url(),
    );
    let r = http()
        .get(url)
        .header("X-Forwarded-Host", SITE_HOST)
        .basic_auth(user, Some(pw))
        .send()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status().as_u16(), 200, "token request");
    let v: serde_json::Value = r.json().unwrap_or_else(|e| panic!("{e}"));
    v["token"].as_str().unwrap_or_default().to_owned()
}

#[test]
fn replicas_on_shared_backends_serve_one_registry() {
    let pg_dir = TempDir::new().unwrap_or_else(|e| panic!("{e}"));
    let postgres = Postgres::start(pg_dir.path());
    let azure_dir = TempDir::new().unwrap_or_else(|e| panic!("{e}"));
    let azurite = Azurite::start(azure_dir.path());
    let metadata = postgres.create_database("registry");
    let shared = Shared {
        args: ["--blob-store", "az://replicas", "--metadata", &metadata]
            .map(String::from)
            .to_vec(),
        env: vec![
            ("AZURE_STORAGE_USE_EMULATOR".into(), "true".into()),
            ("AZURITE_BLOB_STORAGE_URL".into(), azurite.url()),
        ],
        metadata: metadata.clone(),
    };

    // Two replicas starting together on empty backends agree on one admin token.
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| replica(&shared));
        let b = s.spawn(|| replica(&shared));
        let join = |h: std::thread::ScopedJoinHandle<'_, Registry>| {
            h.join()
                .unwrap_or_else(|_| panic!("a replica failed to start"))
        };
        (join(a), join(b))
    });
    let written: Vec<String> = [&a, &b]
        .iter()
        .filter_map(|r| std::fs::read_to_string(r.data.join("admin-password")).ok())
        .map(|s| s.trim().to_owned())
        .collect();
    assert_eq!(
        written.len(),
        1,
        "admin password written by {} replicas",
        written.len()
    );
    within_two_seconds(&[&a, &b], "admin", &written[0], 200);
    let tokens = admin(&shared, &["token", "list"]);
    assert_eq!(tokens.as_array().map(Vec::len), Some(1), "{tokens}");

    // A token made on the shared database works at both.
    admin(
        &shared,
        &[
            "scope-map",
            "create",
            "--name",
            "line",
            "--repository",
            "plant/*",
            "content/read",
            "content/write",
            "metadata/read",
        ],
    );
    let t = admin(
        &shared,
        &["token", "create", "--name", "line", "--scope-map", "line"],
    );
    let pw = t["credentials"]["passwords"][0]["value"]
        .as_str()
        .unwrap_or_else(|| panic!("no password in {t}"))
        .to_owned();
    within_two_seconds(&[&a, &b], "line", &pw, 200);

    // A bearer token issued by one replica is valid at the other.
    let token = bearer(&a, "line", &pw);
    let r = http()
        .get(format!("{}/v2/{REPO}/tags/list", b.url()))
        .header("X-Forwarded-Host", SITE_HOST)
        .bearer_auth(&token)
        .send()
        .unwrap_or_else(|e| panic!("{e}"));
    let status = r.status();
    assert!(
        matches!(status.as_u16(), 200 | 404),
        "the other replica refused a bearer token: {status} {:?}",
        r.text()
    );

    // skopeo pushes through one replica and pulls back exactly through the other.
    let layer = oci::pseudo_random(3 * 1024 * 1024 + 99, 21);
    let image = oci::image_with_layers(vec![layer]);
    let layout = TempDir::new().unwrap_or_else(|e| panic!("{e}"));
    oci::write_layout(layout.path(), &[("v1", &image)], &[]);
    let skopeo = Skopeo::new();
    let creds = format!("line:{pw}");
    let tls = ["--src-tls-verify=false", "--dest-tls-verify=false"];
    let src = format!("oci:{}:v1", layout.path().display());
    let pushed = format!("docker://{}/{REPO}:v1", a.host());
    skopeo.run(
        &[
            &["copy", "--preserve-digests"],
            &tls[..],
            &["--dest-creds", &creds, &src, &pushed],
        ]
        .concat(),
    );
    let out = TempDir::new().unwrap_or_else(|e| panic!("{e}"));
    let dst = format!("oci:{}:v1", out.path().display());
    let pulled = format!("docker://{}/{REPO}:v1", b.host());
    skopeo.run(
        &[
            &["copy", "--preserve-digests"],
            &tls[..],
            &["--src-creds", &creds, &pulled, &dst],
        ]
        .concat(),
    );
    for blob in &image.blobs {
        let hex = blob.digest.trim_start_matches("sha256:");
        let got = std::fs::read(out.path().join("blobs/sha256").join(hex))
            .unwrap_or_else(|e| panic!("{}: {e}", blob.digest));
        assert!(got == blob.bytes, "{} came back different", blob.digest);
    }

    // A deleted token stops working at both replicas within two seconds.
    admin(&shared, &["token", "delete", "--name", "line", "--yes"]);
    within_two_seconds(&[&a, &b], "line", &pw, 401);
}

/// Pushes a one-layer image (seeded by `seed`) to `reg` as `REPO:tag` with skopeo.
fn push_image(skopeo: &Skopeo, reg: &Registry, creds: &str, tag: &str, seed: u64) {
    let image = oci::image_with_layers(vec![oci::pseudo_random(64 * 1024, seed)]);
    let layout = TempDir::new().unwrap_or_else(|e| panic!("{e}"));
    oci::write_layout(layout.path(), &[(tag, &image)], &[]);
    let src = format!("oci:{}:{tag}", layout.path().display());
    let dst = format!("docker://{}/{REPO}:{tag}", reg.host());
    let tls = ["--src-tls-verify=false", "--dest-tls-verify=false"];
    skopeo.run(&[&["copy"], &tls[..], &["--dest-creds", creds, &src, &dst]].concat());
}

/// Waits (bounded) until `REPO` at `reg` lists `tag` to the admin (`admin_pw`); panics with
/// the registry's log.
fn wait_for_tag(reg: &Registry, admin_pw: &str, tag: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    let url = format!("{}/v2/{REPO}/tags/list", reg.url());
    loop {
        let listed = http()
            .get(&url)
            .header("X-Forwarded-Host", SITE_HOST)
            .basic_auth("admin", Some(admin_pw))
            .send()
            .and_then(|r| r.json::<serde_json::Value>())
            .is_ok_and(|v| {
                v["tags"]
                    .as_array()
                    .is_some_and(|t| t.iter().any(|x| x == tag))
            });
        if listed {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{tag} never arrived\n{}",
            reg.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// How often a replica's log says it took the sync lease.
fn leases_taken(reg: &Registry) -> usize {
    reg.log().matches("holding the sync lease").count()
}

#[test]
fn one_replica_syncs_and_another_takes_over_when_it_is_killed() {
    // The parent: a plain registry with a pull token for the site.
    let parent = Registry::start_authenticated(&[]);
    let sync_pw = parent.add_token("sync", "plant/*", &["content/read", "metadata/read"]);
    let parent_admin = format!("admin:{}", parent.admin_password());

    let pg_dir = TempDir::new().unwrap_or_else(|e| panic!("{e}"));
    let postgres = Postgres::start(pg_dir.path());
    let azure_dir = TempDir::new().unwrap_or_else(|e| panic!("{e}"));
    let azurite = Azurite::start(azure_dir.path());
    let metadata = postgres.create_database("leases");
    let connection = format!(
        "ConnectedRegistryName=site;SyncTokenName=sync;SyncTokenPassword={sync_pw};\
         ParentGatewayEndpoint={};ParentEndpointProtocol=http",
        parent.host()
    );
    let policy =
        format!("mode = \"ReadOnly\"\n[sync]\nrepositories = [\"{REPO}\"]\ninterval = \"1s\"\n");
    let start = || {
        let tmp = TempDir::new().unwrap_or_else(|e| panic!("{e}"));
        let file = tmp.path().join("policy.toml");
        std::fs::write(&file, &policy).unwrap_or_else(|e| panic!("{e}"));
        let args = [
            "--blob-store",
            "az://leases",
            "--metadata",
            &metadata,
            "--config",
            &file.display().to_string(),
        ];
        let env = vec![
            ("AZURE_STORAGE_USE_EMULATOR".into(), "true".into()),
            ("AZURITE_BLOB_STORAGE_URL".into(), azurite.url()),
            ("ACR_REGISTRY_CONNECTION_STRING".into(), connection.clone()),
        ];
        Registry::start_in(tmp, args.map(String::from).to_vec(), env)
    };
    let (a, b) = (start(), start());
    let admin = [&a, &b]
        .iter()
        .find_map(|r| std::fs::read_to_string(r.data.join("admin-password")).ok())
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| panic!("no replica wrote the admin password"));

    // One replica syncs; what it brings down is served by both.
    let skopeo = Skopeo::new();
    push_image(&skopeo, &parent, &parent_admin, "v1", 31);
    wait_for_tag(&a, &admin, "v1", Duration::from_secs(60));
    wait_for_tag(&b, &admin, "v1", Duration::from_secs(5));
    let (la, lb) = (leases_taken(&a), leases_taken(&b));
    assert_eq!(
        la + lb,
        1,
        "replicas that took the sync lease: a {la}, b {lb}"
    );

    // The holder is killed; the other takes the lease over and syncs the next tag.
    let (mut holder, survivor) = if la == 1 { (a, b) } else { (b, a) };
    holder.stop_hard();
    push_image(&skopeo, &parent, &parent_admin, "v2", 32);
    wait_for_tag(&survivor, &admin, "v2", Duration::from_secs(60));
    assert_eq!(leases_taken(&survivor), 1, "{}", survivor.log());
}
