//! HTTPS against the real binary with certificates made by rcgen: curl and skopeo verifying a
//! private CA, TLS 1.2+ only, certificate rotation without a restart, HTTPS-only listeners, the
//! certificate volume, and one-line startup errors for bad files.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::pki::{pki, write, Ca};
use common::{oci, require, run_bounded, run_ok, Registry, BIN};
use tempfile::TempDir;

const LIMIT: Duration = Duration::from_secs(90);

/// Replaces a file the way deployments do: a temporary file renamed over it.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("new");
    fs::write(&tmp, text).unwrap_or_else(|e| panic!("write {}: {e}", tmp.display()));
    fs::rename(&tmp, path).unwrap_or_else(|e| panic!("rename {}: {e}", tmp.display()));
}

fn s(p: &Path) -> &str {
    p.to_str()
        .unwrap_or_else(|| panic!("non-UTF-8 path {}", p.display()))
}

/// `curl` trusting only `ca`: the HTTP status (None when no response), and stderr.
fn curl(ca: &Path, url: &str, extra: &[&str]) -> (Option<u16>, String) {
    let mut cmd = Command::new(require("curl"));
    cmd.args([
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--noproxy",
        "*",
    ])
    .args(["--max-time", "10", "--cacert", s(ca)])
    .args(extra)
    .arg(url);
    let out = run_bounded(&mut cmd, Duration::from_secs(20));
    let code = String::from_utf8_lossy(&out.stdout).trim().parse().ok();
    let code = code.filter(|c| out.status.success() && *c != 0);
    (code, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Polls `url` with curl trusting `ca` until it answers 200, for at most `limit`.
fn wait_https(ca: &Path, url: &str, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if curl(ca, url, &[]).0 == Some(200) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// A `serve` process started by hand; killed when dropped.
struct Proc {
    child: Child,
    log: PathBuf,
    _data: TempDir,
}

impl Proc {
    fn start(args: &[&str], env: &[(&str, &str)]) -> Self {
        let data = TempDir::new().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let log = data.path().join("server.log");
        let file = fs::File::create(&log).unwrap_or_else(|e| panic!("log: {e}"));
        let err = file.try_clone().unwrap_or_else(|e| panic!("log: {e}"));
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--insecure-no-auth", "--log-level", "Information"])
            .arg("--data-dir")
            .arg(data.path().join("data"))
            .args(args)
            .env_remove("RUST_LOG")
            .env_remove("ACR_REGISTRY_CERTIFICATE_VOLUME")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {BIN}: {e}"));
        Proc {
            child,
            log,
            _data: data,
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// (a) + (b): HTTPS answers with TLS 1.2 and 1.3, by IP and by name; TLS 1.0/1.1 are refused.
#[test]
fn https_answers_and_refuses_old_tls() {
    let p = pki("server.crt", "server.key");
    let port = common::free_port().to_string();
    let tls_listen = format!("127.0.0.1:{port}");
    let (cert, key) = (s(&p.cert), s(&p.key));
    let reg = Registry::start_with(&[
        "--insecure-no-auth",
        "--tls-cert",
        cert,
        "--tls-key",
        key,
        "--tls-listen",
        &tls_listen,
        "--http-enabled",
    ]);
    let base = format!("https://127.0.0.1:{port}");
    assert!(wait_https(
        &p.ca,
        &format!("{base}/v2/"),
        Duration::from_secs(10)
    ));
    for path in ["/v2/", "/acr/v1/_health"] {
        for versions in [
            &["--tlsv1.2", "--tls-max", "1.2"],
            &["--tlsv1.3", "--tls-max", "1.3"],
        ] {
            let (code, err) = curl(&p.ca, &format!("{base}{path}"), versions);
            assert_eq!(code, Some(200), "{path} {versions:?}: {err}");
        }
    }
    let resolve = format!("localhost:{port}:127.0.0.1");
    let by_name = format!("https://localhost:{port}/acr/v1/_health");
    let (code, err) = curl(&p.ca, &by_name, &["--resolve", &resolve]);
    assert_eq!(code, Some(200), "by name: {err}");
    // SECLEVEL=0 lets OpenSSL offer TLS 1.0/1.1 at all, so the refusal is the server's alert.
    let old = [
        "--tlsv1.0",
        "--tls-max",
        "1.1",
        "--ciphers",
        "DEFAULT:@SECLEVEL=0",
    ];
    let (code, err) = curl(&p.ca, &format!("{base}/v2/"), &old);
    assert_eq!(code, None, "TLS 1.1 must fail: {err}");
    assert!(
        err.contains("alert"),
        "the server refuses the handshake: {err}"
    );
    assert!(
        reg.log().contains(&format!("https://{tls_listen}")),
        "{}",
        reg.log()
    );
}

/// skopeo with a private policy and configuration; `certs` holds `ca.crt`.
fn skopeo(home: &Path, args: &[&str]) -> String {
    write(
        home,
        "policy.json",
        r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
    );
    write(
        home,
        "registries.conf",
        "unqualified-search-registries = []\n",
    );
    write(home, "auth.json", "{}");
    fs::create_dir_all(home.join("tmp")).unwrap_or_else(|e| panic!("{e}"));
    let mut cmd = Command::new(require("skopeo"));
    cmd.arg("--policy").arg(home.join("policy.json"));
    cmd.arg("--tmpdir").arg(home.join("tmp"));
    cmd.args(["--command-timeout", "80s"]).args(args);
    cmd.env("CONTAINERS_REGISTRIES_CONF", home.join("registries.conf"));
    cmd.env("REGISTRY_AUTH_FILE", home.join("auth.json"));
    run_ok(&mut cmd, LIMIT)
}

/// (c) skopeo copies an image in and out over HTTPS verifying the CA; digests are unchanged.
#[test]
fn skopeo_round_trip_over_verified_https() {
    let p = pki("server.crt", "server.key");
    let certs = p.dir.path().join("certs");
    fs::create_dir_all(&certs).unwrap_or_else(|e| panic!("{e}"));
    fs::copy(&p.ca, certs.join("ca.crt")).unwrap_or_else(|e| panic!("{e}"));
    let port = common::free_port();
    let tls_listen = format!("127.0.0.1:{port}");
    let _reg = Registry::start_with(&[
        "--insecure-no-auth",
        "--tls-cert",
        s(&p.cert),
        "--tls-key",
        s(&p.key),
        "--tls-listen",
        &tls_listen,
        "--http-enabled",
    ]);
    let image = oci::image("amd64", b"hello over https\n");
    let (src, out) = (p.dir.path().join("src"), p.dir.path().join("out"));
    oci::write_layout(&src, &[("v1", &image)], &[]);
    let remote = format!("docker://{tls_listen}/tls/hello:v1");
    let home = p.dir.path();
    let from = format!("oci:{}:v1", s(&src));
    let to = format!("oci:{}:v1", s(&out));
    skopeo(
        home,
        &[
            "copy",
            "--preserve-digests",
            "--dest-cert-dir",
            s(&certs),
            &from,
            &remote,
        ],
    );
    let inspect = skopeo(
        home,
        &["inspect", "--raw", "--cert-dir", s(&certs), &remote],
    );
    assert_eq!(oci::sha256(inspect.as_bytes()), image.digest);
    skopeo(
        home,
        &[
            "copy",
            "--preserve-digests",
            "--src-cert-dir",
            s(&certs),
            &remote,
            &to,
        ],
    );
    let index = fs::read_to_string(out.join("index.json")).unwrap_or_else(|e| panic!("{e}"));
    let index: serde_json::Value = serde_json::from_str(&index).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        index["manifests"][0]["digest"],
        image.digest.as_str(),
        "{index}"
    );
}

/// (d) Replaced certificate files are served within seconds by the same process; a broken
/// replacement leaves the old certificate in place with a single warning.
#[test]
fn certificates_rotate_without_restart() {
    let p = pki("tls.crt", "tls.key");
    let ca2 = Ca::new("test CA two");
    let ca2_file = ca2.write(p.dir.path(), "ca2.crt");
    let port = common::free_port();
    let tls_listen = format!("127.0.0.1:{port}");
    let reg = Registry::start_with(&[
        "--insecure-no-auth",
        "--tls-cert",
        s(&p.cert),
        "--tls-key",
        s(&p.key),
        "--tls-listen",
        &tls_listen,
        "--http-enabled",
    ]);
    let pid = reg.pid();
    let url = format!("https://{tls_listen}/acr/v1/_health");
    assert!(wait_https(&p.ca, &url, Duration::from_secs(10)));
    let (code, err) = curl(&ca2_file, &url, &[]);
    assert_eq!(code, None, "CA2 is not trusted yet: {err}");

    // A half-written certificate: still the old one, and one warning for it.
    let old = fs::read_to_string(&p.cert).unwrap_or_else(|e| panic!("{e}"));
    replace(&p.cert, &old[..old.len() / 2]);
    std::thread::sleep(Duration::from_millis(1200));
    for _ in 0..3 {
        assert_eq!(curl(&p.ca, &url, &[]).0, Some(200), "old certificate kept");
        std::thread::sleep(Duration::from_millis(600));
    }
    assert_eq!(
        reg.log().matches("still serving the previous one").count(),
        1,
        "{}",
        reg.log()
    );

    let (cert, key) = ca2.server();
    replace(&p.key, &key);
    replace(&p.cert, &cert);
    let started = Instant::now();
    assert!(
        wait_https(&ca2_file, &url, Duration::from_secs(10)),
        "{}",
        reg.log()
    );
    eprintln!("rotation picked up in {:?}", started.elapsed());
    let (code, _) = curl(&p.ca, &url, &[]);
    assert_eq!(code, None, "the CA1 certificate is no longer served");
    assert_eq!(reg.pid(), pid);
    assert!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "same process still running"
    );
    let log = reg.log();
    assert_eq!(
        log.matches("connected-registry serving").count(),
        1,
        "{log}"
    );
    assert!(log.contains("reloaded TLS certificate"), "{log}");
}

/// (e) With TLS and without --http-enabled only the HTTPS port is open.
#[test]
fn https_only_unless_http_enabled() {
    let p = pki("tls.crt", "tls.key");
    let (http, https) = (common::free_port(), common::free_port());
    let (http_addr, https_addr) = (format!("127.0.0.1:{http}"), format!("127.0.0.1:{https}"));
    let proc = Proc::start(
        &[
            "--listen",
            &http_addr,
            "--tls-listen",
            &https_addr,
            "--tls-cert",
            s(&p.cert),
            "--tls-key",
            s(&p.key),
        ],
        &[],
    );
    let url = format!("https://{https_addr}/acr/v1/_health");
    assert!(
        wait_https(&p.ca, &url, Duration::from_secs(30)),
        "{}",
        proc.log()
    );
    let e = std::net::TcpStream::connect(&http_addr)
        .map(|_| ())
        .unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
    let log = proc.log();
    assert!(log.contains(&format!("https://{https_addr}")), "{log}");
    assert!(!log.contains(&format!("http://{http_addr}")), "{log}");
}

/// (f) `tls.crt` and `tls.key` in ACR_REGISTRY_CERTIFICATE_VOLUME turn HTTPS on without flags.
#[test]
fn certificate_volume_turns_tls_on() {
    let p = pki("tls.crt", "tls.key");
    let https_addr = format!("127.0.0.1:{}", common::free_port());
    let http_addr = format!("127.0.0.1:{}", common::free_port());
    let volume = [("ACR_REGISTRY_CERTIFICATE_VOLUME", s(p.dir.path()))];
    let proc = Proc::start(
        &["--listen", &http_addr, "--tls-listen", &https_addr],
        &volume,
    );
    let url = format!("https://{https_addr}/v2/");
    assert!(
        wait_https(&p.ca, &url, Duration::from_secs(30)),
        "{}",
        proc.log()
    );
}

/// (g) Unusable certificate files stop `serve` with one line naming the file.
#[test]
fn bad_files_are_one_line_startup_errors() {
    let p = pki("tls.crt", "tls.key");
    let garbage = write(p.dir.path(), "garbage.key", "not a key\n");
    let missing = p.dir.path().join("missing.crt");
    let data = p.dir.path().join("data");
    let https = format!("127.0.0.1:{}", common::free_port());
    for (cert, key, bad) in [(&p.cert, &garbage, &garbage), (&missing, &p.key, &missing)] {
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--tls-listen", &https])
            .args([
                "--tls-cert",
                s(cert),
                "--tls-key",
                s(key),
                "--data-dir",
                s(&data),
            ])
            .env_remove("RUST_LOG");
        let out = run_bounded(&mut cmd, Duration::from_secs(30));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "serve must fail: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
        assert!(err.starts_with("connected-registry: error:"), "{err}");
        assert!(err.contains(s(bad)), "names the file: {err}");
    }
}
