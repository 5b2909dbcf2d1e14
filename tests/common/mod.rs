//! Shared harness for whole-process tests: the real binary on a free loopback port.
#![allow(dead_code)]

pub mod apiproxy;
pub mod clients;
pub mod distribution;
pub mod edgehub;
pub mod faultproxy;
pub mod images;
pub mod netns;
pub mod oci;
pub mod pki;
pub mod process;
pub mod tmpfs;
pub mod workload;

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

#[allow(unused_imports)]
pub use process::{require, run_bounded, run_ok};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_connected-registry");

/// A free TCP port on 127.0.0.1 (bound then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

/// An HTTP client that never goes through a proxy from the environment.
pub fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap_or_else(|e| panic!("client: {e}"))
}

/// A client sending `user`'s Basic credentials with every request.
pub fn client_as(user: &str, password: &str) -> reqwest::blocking::Client {
    let mut h = reqwest::header::HeaderMap::new();
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let v = reqwest::header::HeaderValue::from_str(&format!("Basic {b64}"))
        .unwrap_or_else(|e| panic!("{e}"));
    h.insert(reqwest::header::AUTHORIZATION, v);
    reqwest::blocking::Client::builder()
        .no_proxy()
        .default_headers(h)
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap_or_else(|e| panic!("client: {e}"))
}

/// Sorted tags of `repo` at `base`, all in one page (empty when unknown or unreachable).
pub fn tags(base: &str, repo: &str) -> Vec<String> {
    let url = format!("{base}/v2/{repo}/tags/list?n=100000");
    let Ok(r) = http().get(&url).send() else {
        return Vec::new();
    };
    if !r.status().is_success() {
        return Vec::new();
    }
    let v: serde_json::Value = r.json().unwrap_or_default();
    let mut t: Vec<String> = serde_json::from_value(v["tags"].clone()).unwrap_or_default();
    t.sort();
    t
}

/// A running `connected-registry serve` with its own data directory.
pub struct Registry {
    child: Option<Child>,
    /// Loopback port it listens on.
    pub port: u16,
    /// Its data directory.
    pub data: PathBuf,
    /// Extra arguments given to every (re)start.
    pub args: Vec<String>,
    /// Extra environment variables given to every (re)start.
    pub env: Vec<(String, String)>,
    /// Start with only `env` in the environment (nothing inherited from the test).
    pub clean_env: bool,
    log: PathBuf,
    _tmp: TempDir,
}

impl Registry {
    /// Starts on a fresh temporary data directory.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts on a fresh temporary data directory with extra `serve` arguments.
    pub fn start_with(args: &[&str]) -> Self {
        let tmp = TempDir::new().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let data = tmp.path().join("data");
        Self::start_at(tmp, data, args)
    }

    /// Starts with authentication on (no `--insecure-no-auth`), on a fresh data directory.
    pub fn start_authenticated(args: &[&str]) -> Self {
        Self::start_authenticated_env(args, &[])
    }

    /// Like `start_authenticated`, with extra environment variables.
    pub fn start_authenticated_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        let tmp = TempDir::new().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let data = tmp.path().join("data");
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Self::launch(tmp, data, args.iter().map(|s| s.to_string()).collect(), env)
    }

    /// Starts with a given data directory (kept alive by `tmp`); protocol and client tests run
    /// without authentication unless they start with `start_authenticated`.
    pub fn start_at(tmp: TempDir, data: PathBuf, args: &[&str]) -> Self {
        let mut args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        if !args.iter().any(|a| a == "--insecure-no-auth") {
            args.push("--insecure-no-auth".into());
        }
        Self::launch(tmp, data, args, Vec::new())
    }

    /// Like `start_in`, with nothing but `env` in the process's environment.
    pub fn start_in_clean_env(tmp: TempDir, args: Vec<String>, env: Vec<(String, String)>) -> Self {
        let data = tmp.path().join("data");
        Self::launch_with(tmp, data, args, env, true)
    }

    /// Starts exactly with `args` and `env` (nothing added) in `tmp`, data in `tmp/data`.
    pub fn start_in(tmp: TempDir, args: Vec<String>, env: Vec<(String, String)>) -> Self {
        let data = tmp.path().join("data");
        Self::launch(tmp, data, args, env)
    }

    fn launch(tmp: TempDir, data: PathBuf, args: Vec<String>, env: Vec<(String, String)>) -> Self {
        Self::launch_with(tmp, data, args, env, false)
    }

    fn launch_with(
        tmp: TempDir,
        data: PathBuf,
        args: Vec<String>,
        env: Vec<(String, String)>,
        clean_env: bool,
    ) -> Self {
        let log = tmp.path().join("server.log");
        let mut r = Registry {
            child: None,
            port: 0,
            data,
            args,
            env,
            clean_env,
            log,
            _tmp: tmp,
        };
        r.restart();
        r
    }

    /// Base URL, e.g. `http://127.0.0.1:5000`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `host:port` as clients write it in image references.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The scratch directory owned by this registry (for client data, logs, files).
    pub fn scratch(&self) -> &Path {
        self._tmp.path()
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// (Re)starts the process on a new free port and waits until it answers health checks.
    pub fn restart(&mut self) {
        self.stop_hard();
        for _attempt in 0..5 {
            self.port = free_port();
            if self.spawn() {
                return;
            }
        }
        panic!("registry did not start; log:\n{}", self.log());
    }

    /// Restarts on the same port (a fault proxy or a child points at it), retrying while the
    /// old socket is still being released, for at most a minute.
    pub fn restart_same_port(&mut self) {
        self.stop_hard();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if self.spawn() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let log = self.log();
        let tail = &log[log.len().saturating_sub(4000)..];
        panic!(
            "the registry did not come back on port {}; log:\n{tail}",
            self.port
        );
    }

    /// Its loopback address.
    pub fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Starts the process on `self.port`; true once it answers health checks.
    fn spawn(&mut self) -> bool {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap_or_else(|e| panic!("log file: {e}"));
        let err = log.try_clone().unwrap_or_else(|e| panic!("log file: {e}"));
        let mut cmd = Command::new(BIN);
        cmd.arg("serve")
            .arg("--listen")
            .arg(self.host())
            .arg("--data-dir")
            .arg(&self.data);
        if self.clean_env {
            // Nothing but `env`: the log level is the registry's own default (Information)
            // unless a configuration source sets it.
            cmd.env_clear();
        } else {
            cmd.arg("--log-level").arg("Information");
        }
        let child = cmd
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {BIN}: {e}"));
        self.child = Some(child);
        if self.wait_ready(Duration::from_secs(30)) {
            return true;
        }
        self.stop_hard();
        false
    }

    fn wait_ready(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let client = http();
        let url = format!("{}/acr/v1/_health", self.url());
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(_)) = c.try_wait() {
                    return false;
                }
            }
            if let Ok(r) = client.get(&url).send() {
                if r.status().is_success() {
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// SIGKILL and reap.
    pub fn stop_hard(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends a signal, waits up to `limit` for exit and returns the exit code (None if killed).
    pub fn signal_and_wait(&mut self, signal: &str, limit: Duration) -> Option<i32> {
        let mut c = self.child.take().unwrap_or_else(|| panic!("not running"));
        let _ = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(c.id().to_string())
            .status();
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                return st.code();
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                panic!("registry ignored SIG{signal} for {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs a management subcommand (`token …`, `scope-map …`) on this data directory; returns
    /// its JSON output.
    pub fn admin(&self, args: &[&str]) -> serde_json::Value {
        let out = run_ok(
            Command::new(BIN)
                .args(args)
                .arg("--data-dir")
                .arg(&self.data),
            Duration::from_secs(60),
        );
        if out.trim().is_empty() {
            return serde_json::Value::Null;
        }
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("{args:?} printed non-JSON ({e}): {out}"))
    }

    /// Creates a scope map `name` granting `actions` on `repo` (a pattern) and a token `name`
    /// bound to it; returns its password once the running server accepts it (bounded: 15 s).
    pub fn add_token(&self, name: &str, repo: &str, actions: &[&str]) -> String {
        let mut args = vec!["scope-map", "create", "--name", name, "--repository", repo];
        args.extend(actions);
        self.admin(&args);
        let t = self.admin(&["token", "create", "--name", name, "--scope-map", name]);
        let pw = t["credentials"]["passwords"][0]["value"].as_str();
        let pw = pw
            .unwrap_or_else(|| panic!("no password in {t}"))
            .to_owned();
        let deadline = Instant::now() + Duration::from_secs(15);
        let url = format!("{}/v2/", self.url());
        let get = || http().get(&url).basic_auth(name, Some(&pw)).send();
        while !get().is_ok_and(|r| r.status().is_success()) {
            assert!(Instant::now() < deadline, "token {name} never became valid");
            std::thread::sleep(Duration::from_millis(100));
        }
        pw
    }

    /// The first-start admin password.
    pub fn admin_password(&self) -> String {
        fs::read_to_string(self.data.join("admin-password"))
            .unwrap_or_else(|e| panic!("admin-password: {e}"))
            .trim()
            .to_owned()
    }

    /// Process id of the running server.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop_hard();
    }
}
