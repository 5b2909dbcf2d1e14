//! Builds the module images with `scripts/build-images.sh` into a test's private dockerd.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use super::clients::docker::Dockerd;
use super::{require, run_bounded};

/// A cold build of both architectures with the release profile takes this long at most here.
pub const BUILD_LIMIT: Duration = Duration::from_secs(80 * 60);

/// The cargo profile the images are built with: `image-ci` when `CI=true`, else `release`;
/// `IMAGES_PROFILE` overrides both.
pub fn profile() -> String {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    std::env::var("IMAGES_PROFILE")
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| if ci { "image-ci" } else { "release" }.to_owned())
}

/// Runs the build script against the private daemon with `args` (e.g. `--push REF`); returns
/// the two tags it printed last.
pub fn build_images(dk: &Dockerd, args: &[&str]) -> Vec<String> {
    let root = env!("CARGO_MANIFEST_DIR");
    let profile = profile();
    let mut cmd = Command::new(require("bash"));
    cmd.arg(Path::new(root).join("scripts/build-images.sh"))
        .args(["--profile", &profile])
        .args(args)
        .current_dir(root)
        .env("DOCKER_HOST", dk.host())
        .env("DOCKER_CONFIG", dk.dir.path().join("client"))
        .env_remove("DOCKER_CONTEXT");
    // What cargo test set up for this process is not for the script's own cargo: ring's build
    // script watches CARGO_MANIFEST_DIR and OUT_DIR, among others, so passing them on would
    // rebuild what scripts/test.sh built a moment ago.
    let set_for_tests = [
        "CARGO_MANIFEST_",
        "CARGO_PKG_",
        "CARGO_CRATE_",
        "CARGO_BIN_",
        "CARGO_CFG_",
        "CARGO_PRIMARY_",
        "CARGO_TARGET_TMPDIR",
        "CARGO_RUSTC_",
    ];
    let exact = ["CARGO", "OUT_DIR", "LD_LIBRARY_PATH", "RUSTFLAGS"];
    for (var, _) in std::env::vars_os() {
        let name = var.to_string_lossy();
        let by_cargo =
            exact.contains(&name.as_ref()) || set_for_tests.iter().any(|p| name.starts_with(p));
        if by_cargo {
            cmd.env_remove(&var);
        }
    }
    let started = Instant::now();
    let out: Output = run_bounded(&mut cmd, BUILD_LIMIT);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let tail: Vec<&str> = stderr.lines().collect();
    let tail = tail[tail.len().saturating_sub(60)..].join("\n");
    assert!(
        out.status.success(),
        "build-images.sh failed ({})\nstdout: {stdout}\nstderr (end):\n{tail}\ndockerd log:\n{}",
        out.status,
        dk.log_tail()
    );
    // Credentials stay out of the test's output.
    let shown: Vec<&str> = args
        .iter()
        .zip(std::iter::once(&"").chain(args.iter()))
        .map(|(a, before)| if *before == "--creds" { "***" } else { a })
        .collect();
    eprintln!(
        "images: build-images.sh --profile {profile} {shown:?} took {:.1?}; its log ends:\n{tail}",
        started.elapsed()
    );
    let lines: Vec<&str> = stdout.lines().collect();
    lines[lines.len().saturating_sub(2)..]
        .iter()
        .map(|l| l.to_string())
        .collect()
}
