//! The container images, built and run the way a gateway gets them. `scripts/build-images.sh`
//! builds the linux/amd64 and linux/arm64 (v8) images into a private dockerd with no container
//! registry reachable (so `FROM scratch` around a static binary) and pushes them, with a
//! multi-architecture index, to a plain registry. Then, for each architecture (arm64 through
//! qemu's binfmt registration), the image:
//! - holds a fully static binary of the right machine (no ELF interpreter: nothing else is
//!   needed in the image), its labels, a non-root user, a volume, port and health check;
//! - stays within 16 MiB;
//! - runs `serve` as uid 65532 on a bind-mounted data directory chowned to that uid (files it
//!   creates are that uid's) and reports `healthy` through its own `health` command (amd64:
//!   within 2 s of the container's start, by docker's own clock);
//! - accepts a push and serves the pull back with docker as the client, authenticated with the
//!   first-start admin password it wrote to the data directory;
//! - stops cleanly on `docker stop` (SIGTERM to PID 1): exit code 0 before the shutdown timeout.
//!
//! amd64 also resolves a host name from `/etc/hosts` (static glibc's built-in files service) and
//! starts on a named volume (the image's data directory belongs to the registry's user). The
//! pushed index lists linux/amd64 and linux/arm64/v8, and each child's config says so too.
//! The build uses the `image-ci` profile when `CI=true` and `release` otherwise;
//! `IMAGES_PROFILE` overrides both. Every wait is bounded; containers and the daemon go away at
//! the end.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::clients::docker::{Dockerd, CMD_LIMIT};
use common::clients::require_root;
use common::images::build_images;
use common::{free_port, oci, require, run_bounded, Registry};
use serde_json::Value;

/// The image's user and group.
const UID: u32 = 65532;
/// Largest acceptable image (uncompressed, as `docker image inspect` counts it).
const MAX_SIZE: u64 = 16 * 1024 * 1024;
/// The registry's default shutdown timeout, which `docker stop` must beat.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// Version in the tags, from Cargo.toml.
const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Repository the script pushes to.
const PUSH_REPO: &str = "acr/connected-registry";

/// Runs a docker command; panics with the daemon's log unless it succeeds; returns stdout.
fn docker(dk: &Dockerd, args: &[&str]) -> String {
    let out = run_bounded(&mut dk.cmd(args), CMD_LIMIT);
    if !out.status.success() {
        panic!(
            "docker {args:?} failed ({})\nstdout: {}\nstderr: {}\ndockerd log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            dk.log_tail()
        );
    }
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A container removed (with its anonymous volumes) when dropped.
struct Container<'a> {
    dk: &'a Dockerd,
    name: String,
}

impl Container<'_> {
    /// `docker inspect -f FORMAT` of this container.
    fn inspect(&self, format: &str) -> String {
        docker(self.dk, &["inspect", "-f", format, &self.name])
    }

    /// Its output so far, for failure messages.
    fn logs(&self) -> String {
        let out = run_bounded(&mut self.dk.cmd(&["logs", &self.name]), CMD_LIMIT);
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        format!("{}{}", text(&out.stdout), text(&out.stderr))
    }
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        let _ = run_bounded(&mut self.dk.cmd(&["rm", "-f", "-v", &self.name]), CMD_LIMIT);
    }
}

/// Output of a git command in this repository (empty when it fails).
fn git(args: &[&str]) -> String {
    Command::new(require("git"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// `docker image inspect` of one image.
fn image_inspect(dk: &Dockerd, image: &str) -> Value {
    let text = docker(dk, &["image", "inspect", image]);
    let all: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("inspect {image}: {e}: {text}"));
    all[0].clone()
}

/// Checks what the image says about itself: platform, size, user, labels, entry point, ports,
/// volume and health check.
fn check_image_config(dk: &Dockerd, image: &str, arch: &str, variant: Option<&str>) {
    let info = image_inspect(dk, image);
    assert_eq!(info["Os"], "linux", "{image}: {info}");
    assert_eq!(info["Architecture"], arch, "{image}");
    if let Some(v) = variant {
        assert_eq!(info["Variant"], v, "{image}: variant");
    }
    let size = info["Size"].as_u64().unwrap_or(u64::MAX);
    assert!(size <= MAX_SIZE, "{image} is {size} bytes, over {MAX_SIZE}");
    eprintln!("images: {image} is {size} bytes ({arch})");

    let config = &info["Config"];
    assert_eq!(config["User"], format!("{UID}:{UID}"), "{image}: user");
    assert_eq!(
        config["Entrypoint"],
        serde_json::json!(["/connected-registry"])
    );
    assert_eq!(config["Cmd"], serde_json::json!(["serve"]), "{image}: cmd");
    assert!(
        config["ExposedPorts"]["8080/tcp"].is_object(),
        "{image}: port"
    );
    assert!(
        config["Volumes"]["/var/acr/data"].is_object(),
        "{image}: volume"
    );
    let env = config["Env"].as_array().cloned().unwrap_or_default();
    let data_env = Value::from("ACR_REGISTRY_DATA_VOLUME=/var/acr/data");
    assert!(env.contains(&data_env), "{image}: env {env:?}");
    let health = &config["Healthcheck"];
    let probe = serde_json::json!(["CMD", "/connected-registry", "health"]);
    assert_eq!(health["Test"], probe, "{image}: health check");
    assert_eq!(
        health["Interval"], 1_000_000_000u64,
        "{image}: probe interval"
    );

    let labels = &config["Labels"];
    let label = |k: &str| labels[format!("org.opencontainers.image.{k}")].clone();
    assert_eq!(label("version"), VERSION, "{image}: labels {labels}");
    assert_eq!(label("licenses"), env!("CARGO_PKG_LICENSE"), "{image}");
    let revision = label("revision");
    let revision = revision.as_str().unwrap_or_default();
    assert_eq!(revision.len(), 40, "{image}: revision {revision:?}");
    assert_eq!(
        git(&["cat-file", "-t", revision]),
        "commit",
        "{image}: revision {revision} is no commit of this repository"
    );
    let source = label("source");
    let source = source.as_str().unwrap_or_default();
    assert!(!source.is_empty(), "{image}: no source label");
    // A remote URL's credentials never reach a label.
    assert!(
        !(source.contains("://") && source.contains('@')),
        "{source}"
    );
}

/// Copies the binary out of the image and checks it is a static executable for `machine`
/// (ELF e_machine) with no program interpreter, so the image needs nothing else.
fn check_binary(dk: &Dockerd, image: &str, machine: u16, out: &Path) {
    let name = format!("bin-{}", free_port());
    docker(dk, &["create", "--name", &name, image]);
    let c = Container { dk, name };
    let dest = out.to_string_lossy().to_string();
    docker(
        dk,
        &["cp", &format!("{}:/connected-registry", c.name), &dest],
    );
    let elf = std::fs::read(out).unwrap_or_else(|e| panic!("{}: {e}", out.display()));
    assert!(
        elf.len() > 64 && elf.starts_with(b"\x7fELF\x02\x01"),
        "{image}: not ELF64 LE"
    );
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]);
    let u64_at = |o: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&elf[o..o + 8]);
        u64::from_le_bytes(b)
    };
    assert_eq!(u16_at(18), machine, "{image}: ELF machine");
    let (phoff, phentsize, phnum) = (u64_at(32) as usize, u16_at(54) as usize, u16_at(56));
    for i in 0..phnum as usize {
        let at = phoff + i * phentsize;
        let p_type = u32::from_le_bytes([elf[at], elf[at + 1], elf[at + 2], elf[at + 3]]);
        assert_ne!(
            p_type, 3,
            "{image}: the binary asks for a dynamic loader (PT_INTERP)"
        );
    }
}

/// A data directory for a bind mount, owned by the image's user as a user's `chown` would.
fn data_dir(dk: &Dockerd, arch: &str) -> PathBuf {
    let dir = dk.dir.path().join(format!("data-{arch}"));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    std::os::unix::fs::chown(&dir, Some(UID), Some(UID))
        .unwrap_or_else(|e| panic!("chown {}: {e}", dir.display()));
    dir
}

/// `docker run -d` of the registry image on the host network, listening on 127.0.0.1:`port`,
/// with `volume` (a host path or a volume name) as its data directory.
fn run_registry<'a>(
    dk: &'a Dockerd,
    image: &str,
    platform: &str,
    port: u16,
    volume: &str,
) -> Container<'a> {
    let name = format!("registry-{port}");
    let listen = format!("CONNECTED_REGISTRY_LISTEN=127.0.0.1:{port}");
    let mount = format!("{volume}:/var/acr/data");
    let args = ["run", "-d", "--name", &name, "--network", "host"];
    let args = [
        &args[..],
        &["--platform", platform, "-e", &listen, "-v", &mount, image],
    ]
    .concat();
    docker(dk, &args);
    Container { dk, name }
}

/// How long after its start (docker's own clock: `State.StartedAt`) the container's first
/// passing health probe ended, i.e. when docker turned it `healthy`.
fn healthy_after_start(c: &Container) -> Duration {
    let when = |t: &str| {
        chrono::DateTime::parse_from_rfc3339(t.trim())
            .unwrap_or_else(|e| panic!("{}: bad docker time {t:?}: {e}", c.name))
    };
    let started = when(&c.inspect("{{.State.StartedAt}}"));
    let health: Value = serde_json::from_str(&c.inspect("{{json .State.Health}}"))
        .unwrap_or_else(|e| panic!("{}: health is not JSON: {e}", c.name));
    let log = health["Log"].as_array().cloned().unwrap_or_default();
    let first = log.iter().find(|p| p["ExitCode"] == 0);
    let first = first.unwrap_or_else(|| panic!("{}: no passing probe in {health}", c.name));
    let end = when(first["End"].as_str().unwrap_or_default());
    (end - started).to_std().unwrap_or_default()
}

/// Polls the health status until `healthy`; returns the time since `since`.
fn wait_healthy(c: &Container, since: Instant, limit: Duration) -> Duration {
    let deadline = Instant::now() + limit;
    loop {
        let state = c.inspect("{{.State.Status}} {{.State.Health.Status}}");
        if state == "running healthy" {
            return since.elapsed();
        }
        assert!(
            state.starts_with("running") || state.starts_with("created"),
            "{} is {state}; logs:\n{}",
            c.name,
            c.logs()
        );
        assert!(
            Instant::now() < deadline,
            "{} not healthy within {limit:?} ({state}); health log: {}\nlogs:\n{}",
            c.name,
            c.inspect("{{json .State.Health}}"),
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Reads the admin password the registry wrote at its first start.
fn admin_password(data: &Path, limit: Duration) -> String {
    let file = data.join("admin-password");
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(pw) = std::fs::read_to_string(&file) {
            if !pw.trim().is_empty() {
                return pw.trim().to_owned();
            }
        }
        assert!(Instant::now() < deadline, "no {}", file.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every file the registry created in `data` belongs to the image's user, not root.
fn check_owner(data: &Path) {
    let mut seen = 0;
    let mut stack = vec![data.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries.flatten() {
            let meta = entry
                .metadata()
                .unwrap_or_else(|e| panic!("{}: {e}", entry.path().display()));
            assert_eq!(
                (meta.uid(), meta.gid()),
                (UID, UID),
                "owner of {}",
                entry.path().display()
            );
            seen += 1;
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    assert!(
        seen > 1,
        "the registry created nothing in {}",
        data.display()
    );
}

/// The running registry's process runs as the image's user (real and effective uid).
fn check_process_user(c: &Container) {
    let pid = c.inspect("{{.State.Pid}}");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
    let uids = status.lines().find(|l| l.starts_with("Uid:")).unwrap_or("");
    let ids: Vec<&str> = uids.split_whitespace().skip(1).collect();
    assert_eq!(ids, vec![UID.to_string().as_str(); 4], "{}: {uids}", c.name);
}

/// docker logs in, pushes a small image to the containerised registry, removes it locally,
/// pulls it back and checks the image id.
fn push_and_pull(dk: &Dockerd, port: u16, password: &str, arch: &str) {
    let host = format!("127.0.0.1:{port}");
    let reference = format!("{host}/images/hello:{arch}");
    docker(dk, &["login", "-u", "admin", "-p", password, &host]);
    let tarball = dk.dir.path().join(format!("hello-{arch}.tar"));
    let content = oci::pseudo_random(256 * 1024, u64::from(port));
    std::fs::write(&tarball, oci::tar_one_file("hello.bin", &content))
        .unwrap_or_else(|e| panic!("{}: {e}", tarball.display()));
    let id = docker(dk, &["import", &tarball.to_string_lossy(), &reference]);
    let pushed = docker(dk, &["push", &reference]);
    assert!(
        pushed.contains("digest: sha256:"),
        "push {reference}: {pushed}"
    );
    docker(dk, &["rmi", &reference]);
    docker(dk, &["pull", &reference]);
    let got = docker(dk, &["image", "inspect", "-f", "{{.Id}}", &reference]);
    assert_eq!(got, id, "{reference}: image id after the round trip");
    docker(dk, &["rmi", &reference]);
    docker(dk, &["logout", &host]);
}

/// `docker stop` (SIGTERM to the registry, PID 1): it exits 0 before the shutdown timeout.
fn stop_cleanly(c: &Container) -> Duration {
    let started = Instant::now();
    docker(c.dk, &["stop", "-t", "30", &c.name]);
    let took = started.elapsed();
    let state = c.inspect("{{.State.Status}} {{.State.ExitCode}} {{.State.OOMKilled}}");
    assert_eq!(state, "exited 0 false", "{}; logs:\n{}", c.name, c.logs());
    assert!(
        took < SHUTDOWN_TIMEOUT,
        "{}: docker stop took {took:?}",
        c.name
    );
    took
}

/// One architecture end to end: run on a chowned bind mount, healthy, non-root, push and pull,
/// clean stop. Returns the time from the container's start to `healthy`.
fn run_and_exercise(dk: &Dockerd, image: &str, platform: &str, arch: &str) -> Duration {
    let data = data_dir(dk, arch);
    let port = free_port();
    let started = Instant::now();
    let c = run_registry(dk, image, platform, port, &data.to_string_lossy());
    let seen = wait_healthy(&c, started, Duration::from_secs(120));
    let healthy = healthy_after_start(&c);
    eprintln!(
        "images: {arch} healthy {healthy:.2?} after its start ({seen:.2?} from `docker run` \
         until seen by polling)"
    );
    // Anything far off (a probe that waits for a timeout, a slow start) shows here too.
    assert!(
        seen < Duration::from_secs(10),
        "{arch}: healthy seen after {seen:?}"
    );
    check_process_user(&c);
    let password = admin_password(&data, Duration::from_secs(30));
    push_and_pull(dk, port, &password, arch);
    check_owner(&data);
    let took = stop_cleanly(&c);
    eprintln!("images: {arch} docker stop took {took:.2?}");
    healthy
}

/// The pushed index lists both platforms; each child (also under its per-architecture tag) is
/// a manifest whose config says the same platform.
fn check_pushed_index(reg: &Registry) {
    let http = common::http();
    let get = |path: &str, accept: &str| -> (String, Vec<u8>) {
        let url = format!("{}/v2/{PUSH_REPO}/{path}", reg.url());
        let r = http.get(&url).header("Accept", accept).send();
        let r = r.unwrap_or_else(|e| panic!("GET {url}: {e}"));
        assert_eq!(r.status().as_u16(), 200, "GET {url}");
        let digest = r.headers().get("Docker-Content-Digest");
        let digest = digest
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        (
            digest,
            r.bytes().unwrap_or_else(|e| panic!("{url}: {e}")).to_vec(),
        )
    };
    let json = |b: &[u8]| -> Value {
        serde_json::from_slice(b).unwrap_or_else(|e| panic!("not JSON ({e})"))
    };
    let (_, body) = get(&format!("manifests/{VERSION}"), oci::OCI_INDEX);
    let index = json(&body);
    assert_eq!(index["mediaType"], oci::OCI_INDEX, "{index}");
    let children = index["manifests"].as_array().cloned().unwrap_or_default();
    assert_eq!(children.len(), 2, "{index}");
    let manifest_types = "application/vnd.oci.image.manifest.v1+json, \
                          application/vnd.docker.distribution.manifest.v2+json";
    for (arch, variant, suffix) in [("amd64", None, "amd64"), ("arm64", Some("v8"), "arm64v8")] {
        let child = children
            .iter()
            .find(|c| c["platform"]["architecture"] == arch)
            .unwrap_or_else(|| panic!("no {arch} in {index}"));
        assert_eq!(child["platform"]["os"], "linux", "{child}");
        assert_eq!(
            child["platform"].get("variant").and_then(Value::as_str),
            variant
        );
        let digest = child["digest"].as_str().unwrap_or_default();
        let (_, body) = get(&format!("manifests/{digest}"), manifest_types);
        assert_eq!(oci::sha256(&body), digest, "{arch} child");
        let (tagged, _) = get(&format!("manifests/{VERSION}-{suffix}"), manifest_types);
        assert_eq!(
            tagged, digest,
            "{VERSION}-{suffix} is not the index's {arch} child"
        );
        let manifest = json(&body);
        let config_digest = manifest["config"]["digest"].as_str().unwrap_or_default();
        let (_, config) = get(&format!("blobs/{config_digest}"), "*/*");
        let config = json(&config);
        assert_eq!(config["architecture"], arch, "{arch} config");
        assert_eq!(config["os"], "linux", "{arch} config");
        assert_eq!(config.get("variant").and_then(Value::as_str), variant);
    }
}

#[test]
fn images_build_run_and_push_for_amd64_and_arm64() {
    require_root();
    for program in ["docker", "dockerd", "skopeo", "jq", "update-binfmts"] {
        require(program);
    }
    let started = Instant::now();
    // arm64 containers run through qemu: the same helper test.sh uses.
    let root = env!("CARGO_MANIFEST_DIR");
    let binfmt = "source scripts/deps.sh && ensure_binfmt qemu-aarch64";
    let out = run_bounded(
        Command::new(require("bash"))
            .args(["-c", binfmt])
            .current_dir(root),
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "cannot register qemu-aarch64 with binfmt_misc: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let dk = Dockerd::start();
    let target = Registry::start();
    let push = format!("{}/{PUSH_REPO}:{VERSION}", target.host());
    let head_before = git(&["rev-parse", "HEAD"]);
    let tags = build_images(&dk, &["--push", &push, "--insecure"]);
    let (amd64, arm64) = (
        format!("connected-registry:{VERSION}-amd64"),
        format!("connected-registry:{VERSION}-arm64v8"),
    );
    assert_eq!(tags, [amd64.clone(), arm64.clone()], "tags printed last");
    check_pushed_index(&target);

    // amd64: the image and the binary in it, then a real run.
    check_image_config(&dk, &amd64, "amd64", None);
    // The revision label is HEAD (unless someone committed in this checkout meanwhile).
    if git(&["rev-parse", "HEAD"]) == head_before {
        let label = "{{index .Config.Labels \"org.opencontainers.image.revision\"}}";
        let revision = docker(&dk, &["image", "inspect", "-f", label, &amd64]);
        assert_eq!(revision, head_before, "revision label");
    }
    check_binary(&dk, &amd64, 0x3e, &dk.dir.path().join("bin-amd64"));
    let healthy = run_and_exercise(&dk, &amd64, "linux/amd64", "amd64");
    assert!(
        healthy <= Duration::from_secs(2),
        "amd64 healthy only {healthy:?} after its start"
    );
    // A named volume starts as a copy of the image's data directory, which belongs to the
    // registry's user: the registry starts on one.
    let port = free_port();
    let volume = format!("vol-{port}");
    let c = run_registry(&dk, &amd64, "linux/amd64", port, &volume);
    wait_healthy(&c, Instant::now(), Duration::from_secs(60));
    // Static glibc still resolves names: /etc/hosts through its built-in files service.
    let url = format!("--url=http://registry.example.test:{port}/acr/v1/_health");
    let add_host = "--add-host=registry.example.test:127.0.0.1";
    let probe = [
        "run",
        "--rm",
        "--network",
        "host",
        add_host,
        &amd64,
        "health",
        &url,
    ];
    let answer = docker(&dk, &probe);
    assert!(
        answer.contains("Healthy"),
        "health through a host name: {answer}"
    );
    stop_cleanly(&c);
    drop(c);
    docker(&dk, &["volume", "rm", &volume]);

    // arm64 (v8), under qemu.
    check_image_config(&dk, &arm64, "arm64", Some("v8"));
    check_binary(&dk, &arm64, 0xb7, &dk.dir.path().join("bin-arm64"));
    run_and_exercise(&dk, &arm64, "linux/arm64", "arm64v8");
    eprintln!("images: whole test took {:.1?}", started.elapsed());
}
