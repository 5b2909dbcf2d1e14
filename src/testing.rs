//! Real servers that tests of a backend run against (unit tests here, whole-process tests in
//! `tests/`), started on a free loopback port with the caller's private directory and stopped
//! when dropped. A missing program fails the test, naming what installs it.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to accept connections.
const START_LIMIT: Duration = Duration::from_secs(60);

/// A free port on 127.0.0.1 (free when asked; the server binds it right after).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

/// Waits until `port` accepts connections, or panics naming `what` after `START_LIMIT`.
fn wait_for(port: u16, what: &str, child: &mut Child) {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let started = Instant::now();
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited at start: {status}");
        }
        assert!(
            started.elapsed() < START_LIMIT,
            "{what} did not start within {START_LIMIT:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Azurite's blob service (the Azure Storage emulator, from npm; `scripts/test.sh` installs it).
pub struct Azurite {
    child: Child,
    port: u16,
}

impl Azurite {
    /// Starts `azurite-blob` with its data in `dir`.
    pub fn start(dir: &Path) -> Self {
        let port = free_port();
        let mut child = Command::new("azurite-blob")
            .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
            .arg("--location")
            .arg(dir)
            .args(["--silent", "--skipApiVersionCheck", "--disableTelemetry"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("azurite-blob: {e} (scripts/test.sh installs it: npm install -g azurite)")
            });
        wait_for(port, "azurite-blob", &mut child);
        Azurite { child, port }
    }

    /// The blob service's URL (for `AZURITE_BLOB_STORAGE_URL`).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The URL of `account`'s blob service (Azurite puts the account in the path).
    pub fn account_url(&self, account: &str) -> String {
        format!("{}/{account}", self.url())
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
