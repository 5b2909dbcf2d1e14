//! Process lifecycle: one-line startup errors, configuration sources, graceful shutdown.

mod common;

use std::io::Read;
use std::process::Command;
use std::time::{Duration, Instant};

use common::oci;

/// Runs `serve` expecting it to fail at startup; returns its stderr.
fn serve_fails(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut cmd = Command::new(common::BIN);
    cmd.arg("serve").args(args).env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = common::run_bounded(&mut cmd, Duration::from_secs(30));
    assert!(!out.status.success(), "serve {args:?} should have failed");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let line = err
        .lines()
        .find(|l| l.starts_with("connected-registry: error:"));
    assert!(line.is_some(), "no one-line error in: {err}");
    err
}

#[test]
fn startup_errors_are_one_clear_line() {
    let tmp = tempfile::TempDir::new().unwrap_or_else(|e| panic!("{e}"));
    let data = tmp.path().join("data");
    let data_s = data.to_string_lossy().into_owned();

    // Port taken.
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let taken = holder
        .local_addr()
        .unwrap_or_else(|e| panic!("{e}"))
        .to_string();
    let err = serve_fails(&["--listen", &taken, "--data-dir", &data_s], &[]);
    assert!(err.contains("cannot listen on"), "{err}");

    // Data directory not writable (its parent is a regular file: even root cannot create it).
    let file = tmp.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap_or_else(|e| panic!("{e}"));
    let bad = file.join("data").to_string_lossy().into_owned();
    let err = serve_fails(&["--listen", "127.0.0.1:0", "--data-dir", &bad], &[]);
    assert!(err.contains("data directory"), "{err}");

    // Corrupt database (and no write-ahead log that could still hold good pages).
    std::fs::create_dir_all(&data).unwrap_or_else(|e| panic!("{e}"));
    for side in ["registry.db-wal", "registry.db-shm"] {
        let _ = std::fs::remove_file(data.join(side));
    }
    std::fs::write(data.join("registry.db"), vec![0x5a; 64 * 1024])
        .unwrap_or_else(|e| panic!("{e}"));
    let err = serve_fails(&["--listen", "127.0.0.1:0", "--data-dir", &data_s], &[]);
    assert!(
        err.contains("registry.db") || err.contains("database"),
        "{err}"
    );

    // Bad flag values name what is wrong.
    let err = serve_fails(&["--listen", "not-an-address", "--data-dir", &data_s], &[]);
    assert!(err.contains("not-an-address"), "{err}");
    let err = serve_fails(&["--log-level", "Verbose", "--data-dir", &data_s], &[]);
    assert!(err.contains("Verbose"), "{err}");
    let cfg = tmp.path().join("bad.toml");
    std::fs::write(&cfg, "[server]\nlisten = 5\n").unwrap_or_else(|e| panic!("{e}"));
    let err = serve_fails(&["--config", &cfg.to_string_lossy()], &[]);
    assert!(err.contains("listen"), "{err}");
}

#[test]
fn data_dir_and_listen_come_from_env_and_config_file() {
    let tmp = tempfile::TempDir::new().unwrap_or_else(|e| panic!("{e}"));
    let data = tmp.path().join("from-env");
    let port = common::free_port();
    let cfg = tmp.path().join("registry.toml");
    std::fs::write(&cfg, format!("[server]\nlisten = \"127.0.0.1:{port}\"\n"))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut child = Command::new(common::BIN)
        .args(["serve", "--config"])
        .arg(&cfg)
        .env("ACR_REGISTRY_DATA_VOLUME", &data)
        .env("CONNECTED_REGISTRY_LOG_LEVEL", "None")
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let c = common::http();
    let url = format!("http://127.0.0.1:{port}/acr/v1/_health");
    let up = (0..200).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        c.get(&url)
            .send()
            .map(|r| r.status().is_success())
            .unwrap_or(false)
    });
    let _ = child.kill();
    let _ = child.wait();
    assert!(up, "did not listen where the config file said");
    assert!(
        data.join("registry.db").is_file(),
        "did not use $ACR_REGISTRY_DATA_VOLUME"
    );
}

/// A request body that trickles in over `total`, so a request is in flight during shutdown.
struct Trickle {
    left: usize,
    step: Duration,
}

impl Read for Trickle {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        std::thread::sleep(self.step);
        let n = buf.len().min(self.left).min(4096);
        buf[..n].fill(7);
        self.left -= n;
        Ok(n)
    }
}

#[test]
fn sigterm_finishes_in_flight_requests_then_exits() {
    let mut reg = common::Registry::start_with(&["--shutdown-timeout", "20s"]);
    let c = common::http();
    let r = c
        .post(format!("{}/v2/stop/app/blobs/uploads/", reg.url()))
        .send()
        .unwrap_or_else(|e| panic!("{e}"));
    let loc = r.headers()["location"]
        .to_str()
        .unwrap_or_default()
        .to_owned();
    let len = 40 * 4096;
    let upload = std::thread::spawn(move || {
        let body = reqwest::blocking::Body::new(Trickle {
            left: len,
            step: Duration::from_millis(40),
        });
        common::http()
            .patch(&loc)
            .body(body)
            .send()
            .map(|r| (r.status().as_u16(), r.headers().get("range").cloned()))
    });
    std::thread::sleep(Duration::from_millis(400));
    let started = Instant::now();
    let code = reg.signal_and_wait("TERM", Duration::from_secs(30));
    let result = upload
        .join()
        .unwrap_or_else(|_| panic!("upload thread panicked"));
    let (status, range) = result.unwrap_or_else(|e| panic!("in-flight upload was cut: {e}"));
    assert_eq!(status, 202, "in-flight request was not finished");
    assert_eq!(
        range.and_then(|r| r.to_str().ok().map(str::to_owned)),
        Some(format!("0-{}", len - 1))
    );
    assert_eq!(code, Some(0), "exit after SIGTERM should be clean");
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(
        reg.log().contains("connected-registry stopped"),
        "{}",
        reg.log()
    );
}

#[test]
fn sigint_stops_idle_server_quickly_and_data_survives() {
    let mut reg = common::Registry::start();
    let c = common::http();
    let img = oci::image("amd64", b"survives");
    oci::push(&c, &reg.url(), "int/app", "v1", &img);
    let t = Instant::now();
    let code = reg.signal_and_wait("INT", Duration::from_secs(15));
    assert_eq!(code, Some(0));
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "idle shutdown took {:?}",
        t.elapsed()
    );
    reg.restart();
    let r = c
        .get(format!("{}/v2/int/app/manifests/v1", reg.url()))
        .send()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(oci::sha256(&r.bytes().unwrap_or_default()), img.digest);
}

#[test]
fn slow_clients_cannot_hold_shutdown_forever() {
    let mut reg = common::Registry::start_with(&["--shutdown-timeout", "2s"]);
    let c = common::http();
    let r = c
        .post(format!("{}/v2/slow/app/blobs/uploads/", reg.url()))
        .send()
        .unwrap_or_else(|e| panic!("{e}"));
    let loc = r.headers()["location"]
        .to_str()
        .unwrap_or_default()
        .to_owned();
    let _upload = std::thread::spawn(move || {
        let body = reqwest::blocking::Body::new(Trickle {
            left: 1000 * 4096,
            step: Duration::from_millis(50),
        });
        let _ = common::http().patch(&loc).body(body).send();
    });
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    reg.signal_and_wait("TERM", Duration::from_secs(15));
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "shutdown took {:?}",
        t.elapsed()
    );
    // Whatever the aborted chunk left behind, the store opens cleanly again.
    reg.restart();
    let r = c
        .get(format!("{}/v2/_catalog", reg.url()))
        .send()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status().as_u16(), 200);
}

/// Starts `serve` in `cwd` with `args`/`env` on a free port; waits until healthy.
fn serve_in(
    cwd: &std::path::Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> (std::process::Child, u16) {
    let port = common::free_port();
    let mut cmd = Command::new(common::BIN);
    cmd.current_dir(cwd)
        .args(["serve", "--insecure-no-auth", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .args(args)
        .env_remove("ACR_REGISTRY_DATA_VOLUME")
        .env_remove("RUST_LOG")
        .env("CONNECTED_REGISTRY_LOG_LEVEL", "None")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{e}"));
    let c = common::http();
    let url = format!("http://127.0.0.1:{port}/acr/v1/_health");
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            let _ = child.wait();
            panic!("serve {args:?} {env:?} exited at startup: {err}");
        }
        if c.get(&url).send().is_ok_and(|r| r.status().is_success()) {
            return (child, port);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("serve {args:?} {env:?} never became healthy");
}

#[test]
fn a_relative_data_directory_works_for_every_command() {
    let tmp = tempfile::TempDir::new().unwrap_or_else(|e| panic!("{e}"));
    let cwd = tmp.path();
    let c = common::http();
    let img = oci::image("amd64", b"kept under a relative path");
    for (args, env, dir) in [
        (&["--data-dir", "data2"][..], &[][..], "data2"),
        (
            &[][..],
            &[("ACR_REGISTRY_DATA_VOLUME", "data3")][..],
            "data3",
        ),
        (&["--data-dir", "nested/data4"][..], &[][..], "nested/data4"),
    ] {
        let (mut child, port) = serve_in(cwd, args, env);
        let base = format!("http://127.0.0.1:{port}");
        oci::push(&c, &base, "rel/app", "v1", &img);
        let served = c.get(format!("{base}/v2/rel/app/manifests/v1")).send();
        let served = served.and_then(|r| r.bytes()).unwrap_or_default();
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(oci::sha256(&served), img.digest, "{dir}");
        assert!(cwd.join(dir).join("registry.db").is_file(), "{dir}");
        assert!(cwd.join(dir).join("blobs").is_dir(), "{dir}");
    }
    // The management commands take the same relative paths.
    let admin = |args: &[&str]| {
        common::run_ok(
            Command::new(common::BIN)
                .current_dir(cwd)
                .args(args)
                .args(["--data-dir", "data2"]),
            Duration::from_secs(60),
        )
    };
    admin(&[
        "scope-map",
        "create",
        "-n",
        "rel",
        "--repository",
        "rel/app",
        "content/read",
    ]);
    let out = admin(&["token", "create", "-n", "rel", "--scope-map", "rel"]);
    assert!(out.contains("\"rel\""), "{out}");
    let out = common::run_ok(
        Command::new(common::BIN)
            .current_dir(cwd)
            .args(["status", "--data-dir", "data2"]),
        Duration::from_secs(60),
    );
    assert!(!out.trim().is_empty(), "status printed nothing");
    // And the data survives a restart from there.
    let (mut child, port) = serve_in(cwd, &["--data-dir", "data2"], &[]);
    let r = c
        .get(format!("http://127.0.0.1:{port}/v2/rel/app/manifests/v1"))
        .send();
    let status = r.map(|r| r.status().as_u16()).unwrap_or(0);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(status, 200);
}

#[test]
fn health_command_exits_zero_only_while_the_registry_is_healthy() {
    let mut reg = common::Registry::start();
    let health = |env_listen: Option<&str>, url: Option<&str>| {
        let mut cmd = Command::new(common::BIN);
        cmd.arg("health").env_remove("CONNECTED_REGISTRY_LISTEN");
        if let Some(l) = env_listen {
            cmd.env("CONNECTED_REGISTRY_LISTEN", l);
        }
        if let Some(u) = url {
            cmd.args(["--url", u]);
        }
        common::run_bounded(&mut cmd, Duration::from_secs(30))
    };
    // From the same variable `serve` reads, as the image's HEALTHCHECK does.
    let out = health(Some(&format!("0.0.0.0:{}", reg.port)), None);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("Healthy"));
    let url = format!("{}/acr/v1/_health", reg.url());
    assert!(health(None, Some(&url)).status.success());
    reg.stop_hard();
    let out = health(None, Some(&url));
    assert!(!out.status.success(), "healthy while stopped");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("connected-registry: error:"), "{err}");
}
