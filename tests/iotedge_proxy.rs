//! Behind the IoT Edge API proxy: real nginx configured as the proxy module configures it (TLS on
//! 8000, only `/v2` and `/acr` forwarded to `connected-registry:8080`, `Host` left as that name,
//! `X-Forwarded-Host`/`X-Forwarded-Proto` set, bodies buffered, `Connection: close`) in front of
//! the registry binary. The image itself is run by `tests/images.rs`; here the binary keeps the
//! proxy's behaviour the only thing under test and lets the test read the registry's own log.
//!
//! Proves: the token service and the challenge realm are reachable through the proxy, docker
//! logs in, pushes and pulls, containerd pulls, chunked and streamed uploads with curl work, and
//! every URL the registry hands out points back at the proxy.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::apiproxy::ApiProxy;
use common::clients::containerd::Containerd;
use common::clients::docker::Dockerd;
use common::clients::require_root;
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
    let out = dk.ok(&reg, &["push", &image]);
    let digest = out
        .lines()
        .find_map(|l| l.strip_prefix("docker: digest: "))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no digest in push output:\n{out}"))
        .to_owned();
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
