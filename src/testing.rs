//! Real servers that tests of a backend run against (unit tests here, whole-process tests in
//! `tests/`), started on a free loopback port with the caller's private directory and stopped
//! when dropped. A missing program fails the test, naming what installs it.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, Weak};
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

/// Waits until `port` accepts connections, or panics naming `what` (with its `log`, if it keeps
/// one) after `START_LIMIT`.
fn wait_for(port: u16, what: &str, child: &mut Child, log: Option<&Path>) {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let started = Instant::now();
    let log = || {
        log.and_then(|l| std::fs::read_to_string(l).ok())
            .unwrap_or_default()
    };
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited at start: {status}\n{}", log());
        }
        assert!(
            started.elapsed() < START_LIMIT,
            "{what} did not start within {START_LIMIT:?}\n{}",
            log()
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
        wait_for(port, "azurite-blob", &mut child, None);
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

/// PostgreSQL, a throwaway server with its own data directory (Debian's `postgresql` package;
/// `scripts/test.sh` installs it). Several tests can share one: each takes a database of its own
/// with `create_database`.
pub struct Postgres {
    child: Child,
    port: u16,
    bin: PathBuf,
    data: PathBuf,
    /// Run as root: the programs run as the `postgres` user, as they refuse to run as root.
    as_postgres: bool,
}

impl Postgres {
    /// Initialises a cluster in `dir` and starts its server. Run as root, `dir` is made
    /// traversable (mode 0711) so that the `postgres` user can reach its own directory inside.
    pub fn start(dir: &Path) -> Self {
        let bin = postgres_bin();
        let as_postgres = running_as_root();
        // Everything the server writes lives in `pg`, owned by the user the server runs as:
        // initdb creates `data` itself, with the permissions the server insists on.
        let pg = dir.join("pg");
        let sockets = pg.join("sockets");
        std::fs::create_dir_all(&sockets)
            .unwrap_or_else(|e| panic!("creating {}: {e}", sockets.display()));
        if as_postgres {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir)
                .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
                .permissions()
                .mode();
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode | 0o111))
                .unwrap_or_else(|e| panic!("chmod {}: {e}", dir.display()));
            let chown = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&pg)
                .status()
                .unwrap_or_else(|e| panic!("chown: {e}"));
            assert!(
                chown.success(),
                "chown postgres {}: {chown} (is there a postgres user? scripts/test.sh installs \
                 it: apt-get install postgresql)",
                pg.display()
            );
        }
        let data = pg.join("data");
        let init = program(&bin, "initdb", as_postgres)
            .args(["-A", "trust", "-U", "postgres", "--no-sync"])
            // UTF-8 whatever the environment's locale; the C locale's lower() folds ASCII only,
            // like SQLite's NOCASE.
            .args(["-E", "UTF8", "--locale=C", "-D"])
            .arg(&data)
            .output()
            .unwrap_or_else(|e| panic!("initdb: {e}{INSTALL}"));
        assert!(
            init.status.success(),
            "initdb {}: {}{INSTALL}\n{}{}",
            data.display(),
            init.status,
            String::from_utf8_lossy(&init.stdout),
            String::from_utf8_lossy(&init.stderr)
        );
        let log_path = pg.join("server.log");
        let log = std::fs::File::create(&log_path)
            .unwrap_or_else(|e| panic!("creating {}: {e}", log_path.display()));
        let port = free_port();
        let mut child = program(&bin, "postgres", as_postgres)
            .arg("-D")
            .arg(&data)
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-k"])
            .arg(&sockets)
            // A throwaway server: losing its data in a crash costs nothing, syncing costs time.
            .args(["-c", "fsync=off"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("postgres: {e}{INSTALL}"));
        wait_for(port, "postgres", &mut child, Some(&log_path));
        let pg = Postgres {
            child,
            port,
            bin,
            data,
            as_postgres,
        };
        pg.wait_for_logins(&log_path);
        pg
    }

    /// Waits until the server accepts logins: it listens a moment before it has finished
    /// starting up, and refuses connections meanwhile ("the database system is starting up").
    fn wait_for_logins(&self, log: &Path) {
        let started = Instant::now();
        loop {
            match postgres::Client::connect(&self.url(), postgres::NoTls) {
                Ok(_) => return,
                Err(e) => assert!(
                    started.elapsed() < START_LIMIT,
                    "postgres refused logins for {START_LIMIT:?}: {e}\n{}",
                    std::fs::read_to_string(log).unwrap_or_default()
                ),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server the tests of this process running at the moment share (one fresh database
    /// per test through `create_database`), started when none holds it; the last holder to let
    /// go stops it, so none outlives the test process.
    pub fn shared() -> std::sync::Arc<SharedPostgres> {
        static SERVER: Mutex<Weak<SharedPostgres>> = Mutex::new(Weak::new());
        let mut shared = SERVER
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(s) = shared.upgrade() {
            return s;
        }
        let unique = format!(
            "connected-registry-pg-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4()
        );
        let dir = std::env::temp_dir().join(unique);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let s = Arc::new(SharedPostgres {
            pg: Postgres::start(&dir),
            _dir: RemovedOnDrop(dir),
        });
        *shared = Arc::downgrade(&s);
        s
    }

    /// The URL of the server's `postgres` database, as its superuser (no password).
    pub fn url(&self) -> String {
        self.database_url("postgres")
    }

    /// Creates a database named after `name` (lower-case letters, digits and `_`), made unique
    /// on this server by a suffix (tests of several modules share it), and returns its URL.
    /// Blocks: call it outside async code.
    pub fn create_database(&self, name: &str) -> String {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
            "database name {name:?}: lower-case letters, digits and _ only"
        );
        let mut client = postgres::Client::connect(&self.url(), postgres::NoTls)
            .unwrap_or_else(|e| panic!("connecting to {}: {e}", self.url()));
        client
            // Quoted: a test may well be named after a keyword ("unique").
            .batch_execute(&format!("CREATE DATABASE \"{name}_{n}\""))
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}_{n}: {e:?}"));
        self.database_url(&format!("{name}_{n}"))
    }

    /// The URL of database `name` on this server.
    fn database_url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // Stopped through pg_ctl: run as root, the child is `runuser`, and killing it could
        // leave the server behind. Immediate: nothing on this server is worth a checkpoint.
        let stopped = program(&self.bin, "pg_ctl", self.as_postgres)
            .args(["stop", "-m", "immediate", "-w", "-D"])
            .arg(&self.data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !matches!(stopped, Ok(s) if s.success()) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// A PostgreSQL server shared by the tests running at the moment (see `Postgres::shared`), and
/// the directory it lives in, removed after the server stops.
pub struct SharedPostgres {
    // Fields drop in order: the server stops before its directory goes.
    pg: Postgres,
    _dir: RemovedOnDrop,
}

impl std::ops::Deref for SharedPostgres {
    type Target = Postgres;
    fn deref(&self) -> &Postgres {
        &self.pg
    }
}

/// A directory removed with everything in it when dropped.
struct RemovedOnDrop(PathBuf);

impl Drop for RemovedOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What a missing PostgreSQL program's panic says.
const INSTALL: &str = " (scripts/test.sh installs it: apt-get install postgresql)";

/// The directory of the PostgreSQL server programs: Debian keeps them off PATH, in
/// `/usr/lib/postgresql/<version>/bin`; the highest version there, else PATH's.
fn postgres_bin() -> PathBuf {
    let versions = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten();
    versions
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("bin/initdb").exists())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let version: Vec<u32> = name
                .split('.')
                .map(|p| p.parse().ok())
                .collect::<Option<_>>()?;
            Some((version, e.path().join("bin")))
        })
        .max()
        .map(|(_, bin)| bin)
        .unwrap_or_default()
}

/// `name` from `bin` (or PATH when `bin` is empty), run as the `postgres` user if asked.
fn program(bin: &Path, name: &str, as_postgres: bool) -> Command {
    let path = bin.join(name);
    if as_postgres {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(path);
        c
    } else {
        Command::new(path)
    }
}

/// Whether this process runs as root (the PostgreSQL programs then need another user).
fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
