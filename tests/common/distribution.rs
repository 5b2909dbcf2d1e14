//! Debian's `docker-registry` (the CNCF distribution 2.8 reference server) as a parent registry.
//!
//! Behaviour worth knowing when writing sync tests against it:
//! - `POST /blobs/uploads/?digest=` (monolithic upload) answers 202 and ignores the body, so
//!   `oci::push` does not work here: use [`push`] (POST then PUT).
//! - An upload PUT must not carry a form Content-Type (Go parses and eats the body): 400.
//! - OCI manifests are 404 (`MANIFEST_UNKNOWN`) unless `Accept` lists the OCI media type.
//! - No referrers API (`/v2/<name>/referrers/<digest>` is a plain-text 404); `subject` is stored
//!   but not indexed. `tags/list` ignores `n`/`last` and never sends `Link`; `_catalog` does.
//! - Blobs honour `Range` (206 with `Content-Range`, 416 past the end) and HEAD.

use std::fs;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::blocking::{Client, RequestBuilder};
use tempfile::TempDir;

use super::oci::{Blob, Manifest};
use super::{free_port, http, require};

/// A running `docker-registry serve` on a loopback port with its own storage directory.
pub struct DockerRegistry {
    child: Option<Child>,
    port: u16,
    users: Vec<(String, String)>,
    tmp: TempDir,
}

impl DockerRegistry {
    /// Starts without authentication.
    pub fn start() -> Self {
        Self::start_with_users(&[])
    }

    /// Starts with htpasswd (Basic) authentication for `users` (none: no authentication).
    pub fn start_with_users(users: &[(&str, &str)]) -> Self {
        require("docker-registry");
        let tmp = TempDir::new().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let users: Vec<(String, String)> = users
            .iter()
            .map(|(u, p)| (u.to_string(), p.to_string()))
            .collect();
        if !users.is_empty() {
            let mut file = String::new();
            for (user, password) in &users {
                // Cost 5 keeps tests fast; Go's bcrypt accepts $2a$, $2b$ and $2y$ alike.
                let hash = bcrypt::hash_with_result(password, 5)
                    .unwrap_or_else(|e| panic!("bcrypt: {e}"))
                    .format_for_version(bcrypt::Version::TwoY);
                file.push_str(&format!("{user}:{hash}\n"));
            }
            fs::write(tmp.path().join("htpasswd"), file)
                .unwrap_or_else(|e| panic!("htpasswd: {e}"));
        }
        let mut r = DockerRegistry {
            child: None,
            port: 0,
            users,
            tmp,
        };
        for _attempt in 0..5 {
            r.port = free_port();
            if r.launch() {
                return r;
            }
        }
        panic!("docker-registry did not start; log:\n{}", r.log_tail());
    }

    fn write_config(&self) -> PathBuf {
        let dir = self.tmp.path();
        let auth = if self.users.is_empty() {
            String::new()
        } else {
            format!(
                "auth:\n  htpasswd:\n    realm: parent\n    path: {}\n",
                dir.join("htpasswd").display()
            )
        };
        let config = format!(
            r#"version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: {data}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:{port}
  secret: harness-secret
  debug:
    addr: ""
{auth}"#,
            data = self.data_dir().display(),
            port = self.port,
        );
        let path = dir.join("config.yml");
        fs::write(&path, config).unwrap_or_else(|e| panic!("config.yml: {e}"));
        path
    }

    /// Spawns on `self.port` and waits for readiness; false if it exited or never answered.
    fn launch(&mut self) -> bool {
        let config = self.write_config();
        let log_path = self.tmp.path().join("registry.log");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap_or_else(|e| panic!("registry log: {e}"));
        let err = log
            .try_clone()
            .unwrap_or_else(|e| panic!("registry log: {e}"));
        let child = Command::new(require("docker-registry"))
            .arg("serve")
            .arg(&config)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", self.tmp.path())
            .current_dir(self.tmp.path())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn docker-registry: {e}"));
        self.child = Some(child);
        if self.wait_ready(Duration::from_secs(30)) {
            return true;
        }
        self.stop();
        false
    }

    fn wait_ready(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let client = http();
        let url = format!("{}/v2/", self.url());
        while Instant::now() < deadline {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(|c| c.try_wait()) {
                return false;
            }
            if let Ok(r) = client.get(&url).timeout(Duration::from_secs(2)).send() {
                if matches!(r.status().as_u16(), 200 | 401) {
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(30));
        }
        false
    }

    /// Stops it and starts it again on the same port with the same storage.
    pub fn restart(&mut self) {
        self.stop();
        // The port was ours a moment ago; give a lingering socket a few tries to go away.
        for _attempt in 0..5 {
            if self.launch() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "docker-registry did not restart on port {}; log:\n{}",
            self.port,
            self.log_tail()
        );
    }

    /// Kills the process (SIGKILL) and reaps it; storage and port number are kept.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Base URL, e.g. `http://127.0.0.1:5000`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `host:port` as written in image references.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Socket address, e.g. to point a `FaultProxy` at.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Loopback port (the same across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Everything the server logged so far (all runs).
    pub fn log(&self) -> String {
        fs::read_to_string(self.tmp.path().join("registry.log")).unwrap_or_default()
    }

    /// The last 40 log lines, for panic messages.
    pub fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// The filesystem storage root.
    pub fn data_dir(&self) -> PathBuf {
        self.tmp.path().join("data")
    }

    /// The first configured user and password, if authentication is on.
    pub fn user(&self) -> Option<(&str, &str)> {
        self.users.first().map(|(u, p)| (u.as_str(), p.as_str()))
    }

    /// Pushes `m` (blobs, then the manifest under `reference`) as the first user, if any.
    pub fn push(&self, repo: &str, reference: &str, m: &Manifest) {
        push(&http(), &self.url(), self.user(), repo, reference, m);
    }
}

impl Drop for DockerRegistry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Adds Basic credentials to a request when given.
pub fn with_auth(req: RequestBuilder, auth: Option<(&str, &str)>) -> RequestBuilder {
    match auth {
        Some((user, password)) => req.basic_auth(user, Some(password)),
        None => req,
    }
}

/// Resolves an upload `Location` (absolute or relative) against `base`.
fn absolute(base: &str, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        location.to_owned()
    } else {
        format!("{base}{location}")
    }
}

/// Uploads a blob with POST + PUT (what distribution 2.8 needs); panics unless 201.
pub fn push_blob(c: &Client, base: &str, auth: Option<(&str, &str)>, repo: &str, blob: &Blob) {
    let r = with_auth(c.post(format!("{base}/v2/{repo}/blobs/uploads/")), auth)
        .send()
        .unwrap_or_else(|e| panic!("start upload: {e}"));
    assert_eq!(r.status().as_u16(), 202, "start upload: {:?}", r.text());
    let location = r
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(|l| absolute(base, l))
        .unwrap_or_else(|| panic!("upload answered without Location"));
    let sep = if location.contains('?') { '&' } else { '?' };
    let r = with_auth(
        c.put(format!("{location}{sep}digest={}", blob.digest)),
        auth,
    )
    .header("Content-Type", "application/octet-stream")
    .body(blob.bytes.clone())
    .send()
    .unwrap_or_else(|e| panic!("finish upload: {e}"));
    assert_eq!(r.status().as_u16(), 201, "finish upload: {:?}", r.text());
}

/// Pushes blobs then the manifest under `reference`; panics unless every step is 201.
pub fn push(
    c: &Client,
    base: &str,
    auth: Option<(&str, &str)>,
    repo: &str,
    reference: &str,
    m: &Manifest,
) {
    for b in &m.blobs {
        push_blob(c, base, auth, repo, b);
    }
    let r = with_auth(
        c.put(format!("{base}/v2/{repo}/manifests/{reference}")),
        auth,
    )
    .header("Content-Type", m.media_type.clone())
    .body(m.bytes.clone())
    .send()
    .unwrap_or_else(|e| panic!("put manifest: {e}"));
    assert_eq!(r.status().as_u16(), 201, "put manifest: {:?}", r.text());
}
