//! Behind the IoT Edge API proxy: real nginx configured as the proxy module configures it (TLS on
//! 8000, only `/v2` and `/acr` forwarded to `connected-registry:8080`, `Host` left as that name,
//! `X-Forwarded-Host`/`X-Forwarded-Proto` set, bodies buffered, `Connection: close`) in front of
//! the registry binary. The image itself is run by `tests/images.rs`; here the binary keeps the
//! proxy's behaviour the only thing under test and lets the test read the registry's own log.
//!
//! Proves: the token service and the challenge realm are reachable through the proxy, docker
//! logs in, pushes and pulls, containerd pulls, chunked and streamed uploads with curl work, and
//! every URL the registry hands out points back at the proxy. A nested layer's registry syncs
//! through its parent's proxy, and a nested layer's edgeAgent (its docker, fed the image and
//! credentials of the manifest `iot-edge manifest --layer nested` writes, `$upstream`
//! substituted as edgeAgent does) pulls this project's multi-architecture image for arm64 and
//! amd64 from the parent's proxy with the child's sync token.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::apiproxy::ApiProxy;
use common::clients::containerd::Containerd;
use common::clients::docker::Dockerd;
use common::clients::require_root;
use common::images::build_images;
use common::{oci, run_bounded, Registry};

/// Repository the tokens here are scoped to.
const REPO: &str = "proxy/app";
/// Actions of a token that pushes.
const PUSH: &[&str] = &["content/read", "metadata/read", "content/write"];
/// Actions of a token that pulls.
const PULL: &[&str] = &["content/read", "metadata/read"];

/// One curl exchange: status, response headers (lower-case names) and body.
struct Curl {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Curl {
    fn header(&self, name: &str) -> String {
        let found = self.headers.iter().find(|(k, _)| k == name);
        found.map(|(_, v)| v.clone()).unwrap_or_default()
    }
}

/// Runs curl against the proxy, trusting only the gateway's CA; `body` is sent as a file.
fn curl(proxy: &ApiProxy, dir: &Path, args: &[&str], body: Option<&[u8]>) -> Curl {
    let (hdr, out, inp) = (dir.join("h"), dir.join("b"), dir.join("in"));
    let mut cmd = Command::new(common::require("curl"));
    cmd.args(["-sS", "--noproxy", "*", "--cacert"])
        .arg(&proxy.ca)
        .arg("-D")
        .arg(&hdr)
        .arg("-o")
        .arg(&out)
        .args(["-w", "%{http_code}"])
        .args(args);
    if let Some(b) = body {
        std::fs::write(&inp, b).unwrap_or_else(|e| panic!("{e}"));
        cmd.arg("--data-binary").arg(format!("@{}", inp.display()));
    }
    let res = run_bounded(&mut cmd, Duration::from_secs(60));
    let code = String::from_utf8_lossy(&res.stdout).trim().to_owned();
    assert!(res.status.success(), "curl {args:?}: {res:?}");
    let headers = std::fs::read_to_string(&hdr).unwrap_or_default();
    let headers = headers
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Curl {
        status: code.parse().unwrap_or(0),
        headers,
        body: std::fs::read(&out).unwrap_or_default(),
    }
}

/// A one-file root filesystem tarball for `docker import`.
fn tarball(dir: &Path, text: &[u8]) -> String {
    let path = dir.join("rootfs.tar");
    std::fs::write(&path, oci::tar_one_file("hello.txt", text)).unwrap_or_else(|e| panic!("{e}"));
    path.display().to_string()
}

/// The token service and the challenge, as a client beyond the proxy sees them.
fn token_flow_through_the_proxy(proxy: &ApiProxy, puller: &str) {
    let c = proxy.client();
    let r = c.get(format!("{}/v2/", proxy.url())).send();
    let r = r.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status().as_u16(), 401);
    let challenge = r.headers().get("www-authenticate").cloned();
    let challenge = challenge.and_then(|v| v.to_str().ok().map(str::to_owned));
    let expected = format!(
        "Bearer realm=\"{}/acr/oauth2/token\",service=\"{}\"",
        proxy.url(),
        proxy.addr
    );
    assert_eq!(challenge.as_deref(), Some(expected.as_str()));
    let r = c
        .get(format!("{}/acr/oauth2/token", proxy.url()))
        .query(&[
            ("service", proxy.addr.as_str()),
            ("scope", &format!("repository:{REPO}:pull")),
        ])
        .basic_auth("puller", Some(puller))
        .send()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status().as_u16(), 200);
    let v: serde_json::Value = r.json().unwrap_or_default();
    let token = v["token"].as_str().unwrap_or_default().to_owned();
    let r = c
        .get(format!("{}/v2/{REPO}/tags/list", proxy.url()))
        .bearer_auth(&token);
    let r = r.send().unwrap_or_else(|e| panic!("{e}"));
    // Authorised: the repository is simply empty so far.
    assert_eq!(
        r.status().as_u16(),
        404,
        "the token works through the proxy"
    );
    let v: serde_json::Value = r.json().unwrap_or_default();
    assert_eq!(v["errors"][0]["code"], "NAME_UNKNOWN");
    // The alias outside `/acr` never reaches the registry through the proxy.
    let r = c.get(format!("{}/oauth2/token", proxy.url())).send();
    assert_eq!(r.map(|r| r.status().as_u16()).unwrap_or(0), 404);
}

/// Chunked and streamed uploads with curl; every `Location` points back at the proxy.
fn uploads_with_curl(proxy: &ApiProxy, dir: &Path, pusher: &str) -> oci::Blob {
    let user = format!("pusher:{pusher}");
    let blob = oci::Blob::new(oci::OCI_LAYER, oci::pseudo_random(3 << 20, 41));
    let start = format!("{}/v2/{REPO}/blobs/uploads/", proxy.url());
    let r = curl(proxy, dir, &["-u", &user, "-X", "POST", &start], None);
    assert_eq!(r.status, 202);
    let mut loc = r.header("location");
    assert!(
        loc.starts_with(&format!("{}/v2/{REPO}/blobs/uploads/", proxy.url())),
        "{loc}"
    );
    let mid = blob.bytes.len() / 2;
    for (from, to) in [(0, mid), (mid, blob.bytes.len())] {
        let range = format!("Content-Range: {from}-{}", to - 1);
        let args = ["-u", &user, "-X", "PATCH", "-H", &range, "-H"];
        let args = [&args[..], &["Content-Type: application/octet-stream", &loc]].concat();
        let r = curl(proxy, dir, &args, Some(&blob.bytes[from..to]));
        assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.header("range"), format!("0-{}", to - 1));
        loc = r.header("location");
        assert!(loc.starts_with(&proxy.url()), "{loc}");
    }
    let sep = if loc.contains('?') { '&' } else { '?' };
    let done = format!("{loc}{sep}digest={}", blob.digest);
    let r = curl(proxy, dir, &["-u", &user, "-X", "PUT", &done], None);
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let want = format!("{}/v2/{REPO}/blobs/{}", proxy.url(), blob.digest);
    assert_eq!(r.header("location"), want);

    // Streamed: one PATCH of unknown length (chunked transfer encoding), then PUT.
    let streamed = oci::Blob::new(oci::OCI_LAYER, oci::pseudo_random(1 << 20, 42));
    let r = curl(proxy, dir, &["-u", &user, "-X", "POST", &start], None);
    let loc = r.header("location");
    let args = [
        "-u",
        &user,
        "-X",
        "PATCH",
        "-H",
        "Transfer-Encoding: chunked",
        &loc,
    ];
    let r = curl(proxy, dir, &args, Some(&streamed.bytes));
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let loc = r.header("location");
    let sep = if loc.contains('?') { '&' } else { '?' };
    let done = format!("{loc}{sep}digest={}", streamed.digest);
    assert_eq!(
        curl(proxy, dir, &["-u", &user, "-X", "PUT", &done], None).status,
        201
    );
    let get = format!("{}/v2/{REPO}/blobs/{}", proxy.url(), streamed.digest);
    let r = curl(proxy, dir, &["-u", &user, &get], None);
    assert_eq!(oci::sha256(&r.body), streamed.digest);
    blob
}

#[test]
fn clients_reach_the_registry_through_the_api_proxy() {
    require_root();
    let reg = Registry::start_authenticated(&[]);
    let pusher = reg.add_token("pusher", "proxy/*", PUSH);
    let puller = reg.add_token("puller", "proxy/*", PULL);
    let mut proxy = ApiProxy::start("127.0.0.2", &reg.host());
    proxy.trust_for_docker();
    token_flow_through_the_proxy(&proxy, &puller);
    let blob = uploads_with_curl(&proxy, reg.scratch(), &pusher);
    let got = proxy
        .client()
        .get(format!("{}/v2/{REPO}/blobs/{}", proxy.url(), blob.digest));
    let got = got.basic_auth("puller", Some(&puller)).send();
    let got = got.and_then(|r| r.bytes()).unwrap_or_default();
    assert_eq!(oci::sha256(&got), blob.digest);

    // docker: login, push and pull, all over the proxy's TLS with the gateway's CA.
    let dk = Dockerd::start();
    let image = format!("{}/{REPO}:docker", proxy.addr);
    let tar = tarball(dk.dir.path(), b"pushed through the API proxy\n");
    dk.ok(&reg, &["import", &tar, &image]);
    dk.ok(&reg, &["login", "-u", "pusher", "-p", &pusher, &proxy.addr]);
    let digest = dk.push(&reg, &image);
    dk.ok(&reg, &["rmi", &image]);
    dk.ok(&reg, &["login", "-u", "puller", "-p", &puller, &proxy.addr]);
    let out = dk.ok(&reg, &["pull", &image]);
    assert!(out.contains(&format!("Digest: {digest}")), "{out}");

    // containerd: pulls the same image with the gateway's CA (no --skip-verify, no plain HTTP).
    // It takes loopback registries for plain HTTP unless a hosts.toml says otherwise, which is
    // how a node is told to trust a registry anyway.
    let ct = Containerd::start();
    let user = format!("puller:{puller}");
    let hosts = reg.scratch().join("certs.d");
    let host_dir = hosts.join(&proxy.addr);
    std::fs::create_dir_all(&host_dir).unwrap_or_else(|e| panic!("{e}"));
    let toml = format!(
        "server = \"{0}\"\n\n[host.\"{0}\"]\n  capabilities = [\"pull\", \"resolve\"]\n  ca = {1:?}\n",
        proxy.url(),
        proxy.ca.display().to_string()
    );
    std::fs::write(host_dir.join("hosts.toml"), toml).unwrap_or_else(|e| panic!("{e}"));
    let hosts = hosts.display().to_string();
    let args = [
        "images",
        "pull",
        "--user",
        &user,
        "--hosts-dir",
        &hosts,
        &image,
    ];
    let out = run_bounded(&mut ct.cmd(&args), Duration::from_secs(60));
    assert!(
        out.status.success(),
        "ctr pull through the proxy: {}\naccess log:\n{}\nerror log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        proxy.access_log(),
        proxy.error_log()
    );
    let listed = ct.ok(&reg, &["images", "list"]);
    assert!(listed.contains(&digest), "{listed}");

    // Everything went through nginx, and the registry saw one request per connection.
    let log = proxy.access_log();
    assert!(log.contains("PATCH /v2/proxy/app/blobs/uploads/"), "{log}");
    assert!(log.contains("GET /acr/oauth2/token"), "{log}");
    assert!(!reg.log().contains(&pusher) && !reg.log().contains(&puller));
}

/// A nested layer's connected registry: its parent is the upper layer's API proxy, reached as
/// `$IOTEDGE_PARENTHOSTNAME:8000` over HTTPS with the gateway's CA, with the sync token.
fn nested_child(proxy: &ApiProxy, parent_host: &str, sync_pw: &str, repos: &[&str]) -> Registry {
    let tmp = tempfile::TempDir::new().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let list: Vec<String> = repos.iter().map(|r| format!("\"{r}\"")).collect();
    let policy = format!(
        "mode = \"ReadOnly\"\n[sync]\nrepositories = [{}]\ninterval = \"1s\"\n",
        list.join(", ")
    );
    let file = tmp.path().join("policy.toml");
    std::fs::write(&file, policy).unwrap_or_else(|e| panic!("{e}"));
    let cs = format!(
        "ConnectedRegistryName=nested;SyncTokenName=nested-sync-token;SyncTokenPassword={sync_pw};\
         ParentGatewayEndpoint=$IOTEDGE_PARENTHOSTNAME:8000;ParentEndpointProtocol=https"
    );
    let args = vec![
        "--insecure-no-auth".to_owned(),
        "--config".to_owned(),
        file.display().to_string(),
        "--parent-ca".to_owned(),
        proxy.ca.display().to_string(),
    ];
    let env = vec![
        ("ACR_REGISTRY_CONNECTION_STRING".to_owned(), cs),
        ("IOTEDGE_PARENTHOSTNAME".to_owned(), parent_host.to_owned()),
    ];
    Registry::start_in(tmp, args, env)
}

/// Polls until `base` serves `repo:tag` with `digest` (bounded: 60 s).
fn wait_served(base: &str, repo: &str, tag: &str, digest: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let url = format!("{base}/v2/{repo}/manifests/{tag}");
    let accept =
        "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json";
    loop {
        let r = common::http().get(&url).header("Accept", accept).send();
        let got = r.ok().and_then(|r| {
            let d = r.headers().get("docker-content-digest")?;
            d.to_str().ok().map(str::to_owned)
        });
        if got.as_deref() == Some(digest) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{url} never served {digest}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_nested_layer_syncs_through_the_parents_api_proxy() {
    require_root();
    let root = Registry::start_authenticated(&[]);
    let sync_pw = root.add_token("nested-sync-token", "acr/*", PULL);
    let proxy = ApiProxy::start("127.0.0.3", &root.host());
    let admin = root.admin_password();
    let image = oci::image("amd64", b"synced through the parent's API proxy\n");
    let c = common::http();
    for b in &image.blobs {
        let url = format!(
            "{}/v2/acr/app/blobs/uploads/?digest={}",
            root.url(),
            b.digest
        );
        let r = c
            .post(url)
            .basic_auth("admin", Some(&admin))
            .body(b.bytes.clone())
            .send();
        assert_eq!(r.map(|r| r.status().as_u16()).unwrap_or(0), 201);
    }
    let url = format!("{}/v2/acr/app/manifests/v1", root.url());
    let r = c
        .put(url)
        .basic_auth("admin", Some(&admin))
        .header("Content-Type", oci::OCI_MANIFEST)
        .body(image.bytes.clone())
        .send();
    assert_eq!(r.map(|r| r.status().as_u16()).unwrap_or(0), 201);

    let child = nested_child(&proxy, "127.0.0.3", &sync_pw, &["acr/app"]);
    wait_served(&child.url(), "acr/app", "v1", &image.digest);
    let log = proxy.access_log();
    assert!(
        log.contains("GET /acr/oauth2/token"),
        "the child's token came through the proxy"
    );
    assert!(log.contains("nested-sync-token"), "{log}");
}

/// What edgeAgent does to an image or a registry address: `$upstream` followed by `:<port>`
/// becomes the parent's host name; without a port it is left alone.
fn substitute_upstream(text: &str, parent: &str) -> String {
    match text.split_once("$upstream:") {
        Some((pre, post)) if post.starts_with(|c: char| ('1'..='9').contains(&c)) => {
            format!("{pre}{parent}:{post}")
        }
        _ => text.to_owned(),
    }
}

#[test]
fn a_nested_edge_agent_pulls_the_module_image_with_the_sync_token() {
    require_root();
    let version = env!("CARGO_PKG_VERSION");
    let root = Registry::start_authenticated(&[]);
    let sync_pw = root.add_token("nested-sync-token", "acr/*", PULL);
    let admin = root.admin_password();
    let mut proxy = ApiProxy::start("127.0.0.4", &root.host());
    proxy.trust_for_docker();

    // The upper layer holds this project's multi-architecture image.
    let builder = Dockerd::start();
    let reference = format!("{}/acr/connected-registry:{version}", root.host());
    let creds = format!("admin:{admin}");
    build_images(
        &builder,
        &["--push", &reference, "--creds", &creds, "--insecure"],
    );
    drop(builder);

    // The lower layer's deployment, as `iot-edge manifest` writes it.
    let cs = format!(
        "ConnectedRegistryName=nested;SyncTokenName=nested-sync-token;SyncTokenPassword={sync_pw};\
         ParentGatewayEndpoint=$IOTEDGE_PARENTHOSTNAME:8000;ParentEndpointProtocol=https"
    );
    let image_ref = format!("$upstream:8000/acr/connected-registry:{version}");
    let out = common::run_ok(
        Command::new(common::BIN).args([
            "iot-edge",
            "manifest",
            "--layer",
            "nested",
            "--image",
            &image_ref,
            "--connection-string",
            &cs,
        ]),
        Duration::from_secs(30),
    );
    let m: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let desired = &m["modulesContent"]["$edgeAgent"]["properties.desired"];
    let image = desired["modules"]["connected-registry"]["settings"]["image"].as_str();
    let image = substitute_upstream(image.unwrap_or_default(), "127.0.0.4");
    assert_eq!(
        image,
        format!("{}/acr/connected-registry:{version}", proxy.addr)
    );
    let creds = desired["runtime"]["settings"]["registryCredentials"].as_object();
    let (_, cred) = creds
        .and_then(|c| c.iter().next())
        .unwrap_or_else(|| panic!("no registry credentials in {m}"));
    let address = substitute_upstream(cred["address"].as_str().unwrap_or_default(), "127.0.0.4");
    assert_eq!(address, proxy.addr);
    let user = cred["username"].as_str().unwrap_or_default();
    let pass = cred["password"].as_str().unwrap_or_default();
    assert_eq!((user, pass), ("nested-sync-token", sync_pw.as_str()));

    // edgeAgent's pull on the lower layer: the parent's API proxy, the sync token, each
    // architecture of the index on a device of that architecture.
    let lower = Dockerd::start();
    lower.ok(&root, &["login", "-u", user, "-p", pass, &address]);
    for arch in ["arm64", "amd64"] {
        let platform = format!("linux/{arch}");
        lower.ok(&root, &["pull", "--platform", &platform, &image]);
        let got = lower.ok(
            &root,
            &["image", "inspect", "-f", "{{.Architecture}}", &image],
        );
        assert_eq!(got.trim(), arch, "pulled for {platform}");
        lower.ok(&root, &["rmi", &image]);
    }
    let log = proxy.access_log();
    assert!(
        log.contains("nested-sync-token"),
        "the pulls went through the proxy: {log}"
    );
}
