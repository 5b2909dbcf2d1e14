//! The two servers under test, each a child process on a free loopback port with a fresh data
//! directory, killed when dropped (on a panic too): Debian's `docker-registry` (the CNCF
//! distribution reference server) and `connected-registry`, both without authentication, with
//! filesystem storage and error-level logging.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::http::Conn;

/// How long a server gets to answer `GET /v2/` after being spawned.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// Which implementation a server is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Debian's `docker-registry`.
    Reference,
    /// This project's `connected-registry`.
    Ours,
}

/// A running server; killed and its directory removed when dropped.
pub struct Server {
    /// Which implementation.
    pub kind: Kind,
    /// Loopback address it listens on.
    pub addr: SocketAddr,
    child: Child,
    dir: TempDir,
}

/// A free loopback port (bound then released; a start retries when another process took it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free loopback port: {e}"))
}

/// Finds a program on `PATH` (and the sbin directories) or panics naming the Debian package.
pub fn require(program: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path).chain(["/usr/sbin".into(), "/sbin".into()]);
    for dir in dirs {
        let p = dir.join(program);
        if p.is_file() {
            return p;
        }
    }
    panic!("`{program}` is not installed: apt-get install -y {package}")
}

/// The `docker-registry` configuration: filesystem storage in `data`, deletes enabled, the
/// package's default in-memory blob descriptor cache, error-level logging without access log.
fn reference_config(data: &Path, ip: Ipv4Addr, port: u16) -> String {
    format!(
        "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n\
         storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n  \
         cache:\n    blobdescriptor: inmemory\n  maintenance:\n    uploadpurging:\n      \
         enabled: false\nhttp:\n  addr: {ip}:{port}\n  secret: bench-secret\n",
        data.display()
    )
}

impl Server {
    /// Starts `docker-registry` in a fresh directory under `run`.
    pub fn reference(run: &Path) -> Server {
        Self::reference_at(run, None, Ipv4Addr::LOCALHOST)
    }

    /// Starts `docker-registry` in network namespace `ns`, listening on `ip` there.
    pub fn reference_in(run: &Path, ns: &str, ip: Ipv4Addr) -> Server {
        Self::reference_at(run, Some(ns), ip)
    }

    fn reference_at(run: &Path, ns: Option<&str>, ip: Ipv4Addr) -> Server {
        let program = require("docker-registry", "docker-registry");
        Self::start(Kind::Reference, run, ip, |dir, port| {
            let config = dir.join("config.yml");
            fs::write(&config, reference_config(&dir.join("data"), ip, port))
                .unwrap_or_else(|e| panic!("writing {}: {e}", config.display()));
            let mut c = in_namespace(ns, &program);
            c.arg("serve").arg(&config);
            c
        })
    }

    /// Starts `connected-registry` (`bin`) in a fresh directory under `run`; with `parent`
    /// (`host:port`, policy TOML) it is a child mirroring that parent over plain HTTP.
    pub fn ours(bin: &Path, run: &Path, parent: Option<(&str, &str)>) -> Server {
        Self::ours_at(bin, run, None, Ipv4Addr::LOCALHOST, parent)
    }

    /// Starts a root `connected-registry` in network namespace `ns`, listening on `ip` there.
    pub fn ours_in(bin: &Path, run: &Path, ns: &str, ip: Ipv4Addr) -> Server {
        Self::ours_at(bin, run, Some(ns), ip, None)
    }

    fn ours_at(
        bin: &Path,
        run: &Path,
        ns: Option<&str>,
        ip: Ipv4Addr,
        parent: Option<(&str, &str)>,
    ) -> Server {
        Self::start(Kind::Ours, run, ip, |dir, port| {
            let mut c = in_namespace(ns, bin);
            c.arg("serve")
                .arg("--listen")
                .arg(format!("{ip}:{port}"))
                .arg("--data-dir")
                .arg(dir.join("data"))
                .arg("--insecure-no-auth")
                .arg("--log-level")
                .arg("Error");
            if let Some((host, policy)) = parent {
                let file = dir.join("policy.toml");
                fs::write(&file, policy)
                    .unwrap_or_else(|e| panic!("writing {}: {e}", file.display()));
                c.arg("--config").arg(&file);
                c.env(
                    "ACR_REGISTRY_CONNECTION_STRING",
                    format!(
                        "ConnectedRegistryName=bench;SyncTokenName=sync;SyncTokenPassword=p;\
                         ParentGatewayEndpoint={host};ParentEndpointProtocol=http"
                    ),
                );
            }
            c
        })
    }

    /// Starts `docker-registry` as a pull-through cache of `remote` (`http://host:port`).
    pub fn pull_through(run: &Path, remote: &str) -> Server {
        let program = require("docker-registry", "docker-registry");
        Self::start(Kind::Reference, run, Ipv4Addr::LOCALHOST, |dir, port| {
            let config = dir.join("config.yml");
            let mut text = reference_config(&dir.join("data"), Ipv4Addr::LOCALHOST, port);
            text.push_str(&format!("proxy:\n  remoteurl: {remote}\n"));
            fs::write(&config, text)
                .unwrap_or_else(|e| panic!("writing {}: {e}", config.display()));
            let mut c = clean_command(&program);
            c.arg("serve").arg(&config);
            c
        })
    }

    /// Spawns the command `make` builds for a directory and port, retrying on another port
    /// when the first one was taken meanwhile.
    fn start(kind: Kind, run: &Path, ip: Ipv4Addr, make: impl Fn(&Path, u16) -> Command) -> Server {
        let dir = tempfile::Builder::new()
            .prefix(match kind {
                Kind::Reference => "reference-",
                Kind::Ours => "ours-",
            })
            .tempdir_in(run)
            .unwrap_or_else(|e| panic!("temporary directory in {}: {e}", run.display()));
        let log_path = dir.path().join("server.log");
        for _attempt in 0..5 {
            let port = free_port();
            let log = fs::File::create(&log_path)
                .unwrap_or_else(|e| panic!("creating {}: {e}", log_path.display()));
            let err = log
                .try_clone()
                .unwrap_or_else(|e| panic!("server log: {e}"));
            let mut cmd = make(dir.path(), port);
            let mut child = cmd
                .env("HOME", dir.path())
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(err)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
            let addr = SocketAddr::from((ip, port));
            if wait_ready(&mut child, addr) {
                return Server {
                    kind,
                    addr,
                    child,
                    dir,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
            eprintln!(
                "{kind:?} server did not start on port {port}; log:\n{}",
                tail(&log_path, 20)
            );
        }
        panic!("{kind:?} server did not start in {}", dir.path().display());
    }

    /// The data directory of a connected-registry server (for management commands).
    pub fn data_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("data")
    }

    /// The server's own directory (its configuration and data).
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Stops the process, keeping its directory (for offline tools).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Process id, for `/proc` figures.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `host:port` as image references and connection strings write it.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// The last lines of the server's log, for failure messages.
    pub fn log_tail(&self) -> String {
        tail(&self.dir.path().join("server.log"), 40)
    }

    /// Panics with the log when the process is no longer running.
    pub fn check_alive(&mut self) {
        if let Ok(Some(st)) = self.child.try_wait() {
            panic!(
                "{:?} server exited ({st}); log:\n{}",
                self.kind,
                self.log_tail()
            );
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `GET /v2/` until it answers 200; false when the process exited or time ran out.
fn wait_ready(child: &mut Child, addr: SocketAddr) -> bool {
    let deadline = Instant::now() + READY_WITHIN;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        let mut c = Conn::new(addr);
        if c.request("GET", "/v2/", &[], &[])
            .is_ok_and(|r| r.status() == 200)
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

/// `program` with a clean environment, run in network namespace `ns` when given: nsenter
/// changes the network namespace only and execs in place, so the child's pid is the program's.
fn in_namespace(ns: Option<&str>, program: &Path) -> Command {
    match ns {
        Some(ns) => {
            let mut c = clean_command(&require("nsenter", "util-linux"));
            c.arg(format!("--net=/run/netns/{ns}"))
                .arg("--")
                .arg(program);
            c
        }
        None => clean_command(program),
    }
}

/// A command with a clean environment: `REGISTRY_*` or `ACR_*` variables of the caller would
/// otherwise change the servers' settings.
fn clean_command(program: &Path) -> Command {
    let mut c = Command::new(program);
    c.env_clear().env("PATH", "/usr/local/bin:/usr/bin:/bin");
    c
}

/// The last `n` lines of a text file.
fn tail(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A fresh directory for this run's servers under `<target>/bench/tmp` (on the same disk as
/// the build, unlike a tmpfs `/tmp`), after removing those of earlier runs that died.
pub fn run_dir(target: &Path) -> TempDir {
    let base = target.join("bench").join("tmp");
    fs::create_dir_all(&base).unwrap_or_else(|e| panic!("creating {}: {e}", base.display()));
    if let Ok(entries) = fs::read_dir(&base) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let pid = name
                .strip_prefix("run-")
                .and_then(|r| r.split('-').next())
                .and_then(|p| p.parse::<u32>().ok());
            if pid.is_some_and(|p| !crate::proc::alive(p)) {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
    tempfile::Builder::new()
        .prefix(&format!("run-{}-", std::process::id()))
        .tempdir_in(&base)
        .unwrap_or_else(|e| panic!("temporary directory in {}: {e}", base.display()))
}
