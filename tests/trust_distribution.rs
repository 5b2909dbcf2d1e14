//! `connected-registry trust-distribution` (the Kubernetes DaemonSet's command) against a
//! temporary directory laid out like a node (`/etc/containerd/certs.d`): the `hosts.toml` it
//! writes is used by a real containerd (`ctr images pull --hosts-dir`, the same host-directory
//! resolver the CRI plugin's `config_path` uses) with no `--plain-http` / `--skip-verify` /
//! `--tlscacert`, over HTTPS with the copied CA and over plain HTTP; with a wrong CA, or the
//! other scheme, the pull fails. Removal on SIGTERM touches only what it wrote; a renewed CA is rewritten;
//! bad input is one line and exit 1.

mod common;

use std::fs;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::clients::containerd::{Containerd, CMD_LIMIT, SNAPSHOTTER};
use common::clients::{require_root, signal};
use common::pki::{pki, Ca};
use common::{oci, run_bounded, Registry, BIN};
use tempfile::TempDir;

/// The marker's start, as every written file's first line.
const MARKER: &str = "# Written by connected-registry trust-distribution";
/// How long a running trust-distribution may take to notice a change (it polls every 3 s).
const NOTICE: Duration = Duration::from_secs(15);

fn s(p: &Path) -> &str {
    p.to_str()
        .unwrap_or_else(|| panic!("non-UTF-8 path {}", p.display()))
}

fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A temporary node: `<root>/etc/containerd/certs.d`, created empty.
fn node() -> (TempDir, PathBuf) {
    let root = TempDir::new().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let certs = root.path().join("etc/containerd/certs.d");
    fs::create_dir_all(&certs).unwrap_or_else(|e| panic!("{e}"));
    (root, certs)
}

/// `trust-distribution` with `args`, none of its variables inherited from the test.
fn trust_cmd(args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.arg("trust-distribution").args(args);
    for v in ["CERTS_DIR", "REGISTRY", "CA_FILE", "PLAIN_HTTP"] {
        c.env_remove(format!("CONNECTED_REGISTRY_TRUST_{v}"));
    }
    c
}

/// `trust-distribution --once` writing `registry`'s host directory under `certs` with `ca`.
fn trust_with_ca(certs: &Path, registry: &str, ca: &Path) {
    trust_once(&[
        "--certs-dir",
        s(certs),
        "--registry",
        registry,
        "--ca-file",
        s(ca),
    ]);
}

/// Pulls through `certs` and checks containerd refused, its message containing `because`.
fn assert_refused(ct: &Containerd, certs: &Path, reference: &str, because: &str) {
    let out = pull(ct, certs, reference);
    assert!(!out.status.success(), "pulled anyway: {}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(because), "refused for another reason: {err}");
}

/// Runs `trust-distribution --once` and fails the test unless it exits 0.
fn trust_once(args: &[&str]) {
    let out = run_bounded(trust_cmd(args).arg("--once"), Duration::from_secs(30));
    assert!(out.status.success(), "{args:?}: {}", text(&out));
}

fn text(out: &Output) -> String {
    format!(
        "{}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A running `trust-distribution` (no `--once`); killed if the test ends without stopping it.
struct Running {
    child: Child,
    log: PathBuf,
    _dir: TempDir,
}

impl Running {
    fn start(mut cmd: Command) -> Self {
        let dir = TempDir::new().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let log = dir.path().join("trust.log");
        let out = fs::File::create(&log).unwrap_or_else(|e| panic!("log: {e}"));
        let err = out.try_clone().unwrap_or_else(|e| panic!("log: {e}"));
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {BIN}: {e}"));
        Running {
            child,
            log,
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and returns the exit code (bounded: 15 s).
    fn terminate(&mut self) -> Option<i32> {
        signal(self.child.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.code();
            }
            assert!(
                Instant::now() < deadline,
                "SIGTERM ignored; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits (bounded) until `cond` holds; panics with `what` and the process log.
fn wait_for(run: &Running, what: &str, limit: Duration, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "{what} not within {limit:?}; log:\n{}",
            run.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A registry serving plain HTTP on `reg.port` and HTTPS (certificate from `p`) on the
/// returned port; answers on both before this returns.
fn https_registry(cert: &Path, key: &Path) -> (Registry, u16) {
    let tls_port = common::free_port();
    let listen = format!("127.0.0.1:{tls_port}");
    let reg = Registry::start_with(&[
        "--tls-cert",
        s(cert),
        "--tls-key",
        s(key),
        "--tls-listen",
        &listen,
        "--http-enabled",
    ]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(&listen).is_err() {
        assert!(
            Instant::now() < deadline,
            "no HTTPS listener:\n{}",
            reg.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (reg, tls_port)
}

/// `ctr images pull --hosts-dir certs reference`, with no TLS or plain-HTTP flag at all.
fn pull(ct: &Containerd, certs: &Path, reference: &str) -> Output {
    let args = [
        "--debug",
        "images",
        "pull",
        "--hosts-dir",
        s(certs),
        "--snapshotter",
        SNAPSHOTTER,
        reference,
    ];
    run_bounded(&mut ct.cmd(&args), CMD_LIMIT)
}

/// The pull succeeded through the `hosts.toml` in `dir`: loaded (ctr's debug log names the
/// directory) and parsed (a parse error would make containerd fall back to the directory's
/// `*.crt` files, apart from a log line).
fn assert_pulled(ct: &Containerd, reg: &Registry, out: &Output, dir: &Path, image: &oci::Manifest) {
    assert!(
        out.status.success(),
        "pull failed: {}\ncontainerd:\n{}\nregistry:\n{}",
        text(out),
        ct.log_tail(),
        reg.log()
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("failed to decode hosts.toml"), "{err}");
    let loaded = format!("dir=\"{}\"", dir.display());
    assert!(
        err.contains("loading host directory") && err.contains(&loaded),
        "{err}"
    );
    let ls = ct.ok(reg, &["images", "ls"]);
    assert!(ls.contains(&image.digest), "{} not in:\n{ls}", image.digest);
}

/// The proof: the hosts.toml and CA written into a node-like directory let a real
/// containerd pull over HTTPS verifying the registry's certificate; no file, or a wrong CA, and
/// the same pull fails.
#[test]
fn containerd_pulls_over_https_through_the_written_hosts_toml() {
    require_root();
    let started = Instant::now();
    let p = pki("server.crt", "server.key");
    let (reg, tls_port) = https_registry(&p.cert, &p.key);
    let image = oci::image("amd64", b"trusted through hosts.toml\n");
    oci::push(&common::http(), &reg.url(), "trust/hello", "v1", &image);
    let host = format!("127.0.0.1:{tls_port}");
    let reference = format!("{host}/trust/hello:v1");

    let (_node, certs) = node();
    trust_with_ca(&certs, &host, &p.ca);
    let dir = certs.join(&host);
    let hosts = read(&dir.join("hosts.toml"));
    assert!(hosts.starts_with(MARKER), "{hosts}");
    assert!(
        hosts.contains(&format!("server = \"https://{host}\"")),
        "{hosts}"
    );
    assert!(
        hosts.contains(&format!("[host.\"https://{host}\"]")),
        "{hosts}"
    );
    // Relative to the host directory, so right wherever the node's directory is mounted.
    assert!(hosts.contains("ca = \"ca.crt\""), "{hosts}");
    let ca = read(&dir.join("ca.crt"));
    assert!(ca.starts_with(MARKER) && ca.ends_with(&read(&p.ca)), "{ca}");

    let ct = Containerd::start();
    // No host configuration: ctr 1.6 speaks plain HTTP to a loopback registry by default
    // (its MatchLocalhost rule), which the HTTPS port refuses.
    let (_empty, none) = node();
    let out = pull(&ct, &none, &reference);
    assert!(
        !out.status.success(),
        "pulled without trust: {}",
        text(&out)
    );

    // A hosts.toml naming another CA: refused as well.
    let other = Ca::new("not the registry's CA");
    let (wrong_node, wrong) = node();
    let other_ca = other.write(wrong_node.path(), "other.crt");
    trust_with_ca(&wrong, &host, &other_ca);
    assert_refused(&ct, &wrong, &reference, "x509");

    let out = pull(&ct, &certs, &reference);
    assert_pulled(&ct, &reg, &out, &dir, &image);
    drop(ct);
    eprintln!("https pull through hosts.toml took {:?}", started.elapsed());
}

/// `--plain-http`: the hosts.toml alone makes containerd use plain HTTP (ctr gets no
/// `--plain-http`); the HTTPS hosts.toml makes it speak TLS to the plain listener and fail.
#[test]
fn containerd_pulls_over_plain_http_through_the_written_hosts_toml() {
    require_root();
    let reg = Registry::start();
    let image = oci::image("amd64", b"plain http through hosts.toml\n");
    oci::push(&common::http(), &reg.url(), "trust/plain", "v1", &image);
    let host = reg.host();
    let reference = format!("{host}/trust/plain:v1");

    let (_node, certs) = node();
    trust_once(&[
        "--certs-dir",
        s(&certs),
        "--registry",
        &host,
        "--plain-http",
    ]);
    let dir = certs.join(&host);
    let hosts = read(&dir.join("hosts.toml"));
    assert!(
        hosts.contains(&format!("server = \"http://{host}\"")),
        "{hosts}"
    );
    assert!(
        hosts.contains(&format!("[host.\"http://{host}\"]")),
        "{hosts}"
    );
    assert!(
        !hosts.contains("skip_verify") && !hosts.contains("ca ="),
        "{hosts}"
    );
    assert!(!dir.join("ca.crt").exists());

    let ct = Containerd::start();
    // The scheme is the hosts.toml's: the HTTPS one (what --ca-file writes) fails against this
    // plain listener. (With no hosts.toml at all, ctr 1.6 already uses plain HTTP for loopback
    // addresses, so that case would prove nothing here.)
    let (https_node, https) = node();
    let ca = Ca::new("some CA").write(https_node.path(), "ca.crt");
    trust_with_ca(&https, &host, &ca);
    assert_refused(&ct, &https, &reference, "HTTP response to HTTPS client");

    let out = pull(&ct, &certs, &reference);
    assert_pulled(&ct, &reg, &out, &dir, &image);
}

/// Without `--once` (configured through the environment): files appear, SIGTERM removes them
/// and the directory and exits 0; another registry's directory, and a file somebody replaced
/// without the marker, stay.
#[test]
fn sigterm_removes_only_what_it_wrote() {
    let (_node, certs) = node();
    let foreign_dir = certs.join("other.example:5000");
    fs::create_dir_all(&foreign_dir).unwrap_or_else(|e| panic!("{e}"));
    let foreign = foreign_dir.join("hosts.toml");
    fs::write(&foreign, "server = \"https://other.example:5000\"\n")
        .unwrap_or_else(|e| panic!("{e}"));

    let host = "registry.local:8080";
    let env = [
        ("CONNECTED_REGISTRY_TRUST_CERTS_DIR", s(&certs)),
        ("CONNECTED_REGISTRY_TRUST_REGISTRY", host),
        ("CONNECTED_REGISTRY_TRUST_PLAIN_HTTP", "true"),
    ];
    let mut cmd = trust_cmd(&[]);
    cmd.envs(env);
    let mut run = Running::start(cmd);
    let ours = certs.join(host).join("hosts.toml");
    wait_for(&run, "hosts.toml", NOTICE, || ours.exists());
    assert!(read(&ours).contains("server = \"http://registry.local:8080\""));
    // A rewrite happens only on change: the file stays byte-identical across polls.
    let before = fs::metadata(&ours).and_then(|m| m.modified()).ok();
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(fs::metadata(&ours).and_then(|m| m.modified()).ok(), before);

    assert_eq!(run.terminate(), Some(0), "log:\n{}", run.log());
    assert!(!certs.join(host).exists(), "directory left:\n{}", run.log());
    assert!(foreign.exists(), "another registry's file was removed");
    assert!(certs.exists());

    // An administrator replaced the file while it ran: kept, and so is its directory.
    let mut cmd = trust_cmd(&[]);
    cmd.envs(env);
    let mut run = Running::start(cmd);
    wait_for(&run, "hosts.toml again", NOTICE, || ours.exists());
    let admin = "server = \"http://registry.local:8080\"\n# the administrator's\n";
    fs::write(&ours, admin).unwrap_or_else(|e| panic!("{e}"));
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(read(&ours), admin, "a file without the marker was replaced");
    assert_eq!(run.terminate(), Some(0), "log:\n{}", run.log());
    assert_eq!(read(&ours), admin, "a file without the marker was removed");
    assert!(run.log().contains("left "), "{}", run.log());
}

/// A renewed CA (the Secret's file replaced in place) is copied within a few polls; a CA file
/// briefly missing leaves the last good files in place.
#[test]
fn a_renewed_ca_is_rewritten() {
    let (node_dir, certs) = node();
    let secret = node_dir.path().join("secret");
    fs::create_dir_all(&secret).unwrap_or_else(|e| panic!("{e}"));
    let first = Ca::new("CA before renewal");
    let ca_path = first.write(&secret, "ca.crt");
    let host = "127.0.0.1:5443";
    let mut run = Running::start(trust_cmd(&[
        "--certs-dir",
        s(&certs),
        "--registry",
        host,
        "--ca-file",
        s(&ca_path),
    ]));
    let copy = certs.join(host).join("ca.crt");
    let old = first.0.pem();
    wait_for(&run, "ca.crt", NOTICE, || {
        fs::read_to_string(&copy).is_ok_and(|c| c.ends_with(&old))
    });

    let renewed = Ca::new("CA after renewal").0.pem();
    let tmp = secret.join("ca.crt.new");
    fs::write(&tmp, &renewed).unwrap_or_else(|e| panic!("{e}"));
    fs::rename(&tmp, &ca_path).unwrap_or_else(|e| panic!("{e}"));
    let t0 = Instant::now();
    wait_for(&run, "the renewed CA", NOTICE, || {
        fs::read_to_string(&copy).is_ok_and(|c| c.starts_with(MARKER) && c.ends_with(&renewed))
    });
    eprintln!("renewed CA copied after {:?}", t0.elapsed());
    assert!(read(&certs.join(host).join("hosts.toml")).contains("ca = \"ca.crt\""));

    // A node agent that empties the directory (k3s does at each start) is undone at the next
    // poll.
    fs::remove_dir_all(certs.join(host)).unwrap_or_else(|e| panic!("{e}"));
    wait_for(&run, "the files written again", NOTICE, || {
        fs::read_to_string(certs.join(host).join("hosts.toml")).is_ok_and(|t| t.starts_with(MARKER))
            && fs::read_to_string(&copy).is_ok_and(|c| c.ends_with(&renewed))
    });

    fs::remove_file(&ca_path).unwrap_or_else(|e| panic!("{e}"));
    wait_for(&run, "a warning about the missing CA", NOTICE, || {
        run.log().contains("warning")
    });
    assert!(read(&copy).ends_with(&renewed), "last good CA kept");
    assert_eq!(run.terminate(), Some(0), "log:\n{}", run.log());
    assert!(!certs.join(host).exists());
}

/// Bad input: one line on stderr, exit 1, nothing written.
#[test]
fn bad_input_is_one_line_and_exit_1() {
    let (node_dir, certs) = node();
    let ca = Ca::new("CA").write(node_dir.path(), "ca.crt");
    let not_pem = node_dir.path().join("not.pem");
    fs::write(&not_pem, "hello\n").unwrap_or_else(|e| panic!("{e}"));
    let a_file = node_dir.path().join("a-file");
    fs::write(&a_file, "").unwrap_or_else(|e| panic!("{e}"));
    let under_file = a_file.join("certs.d");
    let missing = node_dir.path().join("missing.crt");
    let theirs = certs.join("taken:5000");
    fs::create_dir_all(&theirs).unwrap_or_else(|e| panic!("{e}"));
    fs::write(theirs.join("hosts.toml"), "server = \"https://x\"\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let (c, ca, np, uf, mi) = (s(&certs), s(&ca), s(&not_pem), s(&under_file), s(&missing));
    let cases: &[(&[&str], &str)] = &[
        (
            &["--certs-dir", c, "--registry", "r:5000", "--ca-file", mi],
            "missing.crt",
        ),
        (
            &["--certs-dir", c, "--registry", "r:5000", "--ca-file", np],
            "no PEM certificate",
        ),
        (
            &["--certs-dir", c, "--registry", "registry", "--ca-file", ca],
            "not HOST:PORT",
        ),
        (
            &[
                "--certs-dir",
                c,
                "--registry",
                "https://r:5000",
                "--plain-http",
            ],
            "not HOST:PORT",
        ),
        (
            &[
                "--certs-dir",
                c,
                "--registry",
                "r/../x:5000",
                "--plain-http",
            ],
            "not HOST:PORT",
        ),
        (
            &["--certs-dir", uf, "--registry", "r:5000", "--plain-http"],
            "a-file",
        ),
        (&["--certs-dir", c, "--registry", "r:5000"], "--plain-http"),
        (
            &[
                "--certs-dir",
                c,
                "--registry",
                "r:5000",
                "--ca-file",
                ca,
                "--plain-http",
            ],
            "not both",
        ),
        (&["--registry", "r:5000", "--plain-http"], "--certs-dir"),
        (
            &["--certs-dir", c, "--registry", "taken:5000", "--plain-http"],
            "not written by",
        ),
    ];
    for (args, expect) in cases {
        let out = run_bounded(&mut trust_cmd(args), Duration::from_secs(30));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out));
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.starts_with("connected-registry: error: "),
            "{args:?}: {err}"
        );
        assert!(err.contains(expect), "{args:?}: {err} lacks {expect}");
    }
    let left: Vec<String> = fs::read_dir(&certs)
        .unwrap_or_else(|e| panic!("{e}"))
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    assert_eq!(left, ["taken:5000"], "nothing written on bad input");
    assert_eq!(read(&theirs.join("hosts.toml")), "server = \"https://x\"\n");
}
