#!/usr/bin/env bash
# Runs the whole test suite: formatting, lints, unit tests and whole-process tests against real
# clients (docker, containerd, podman, skopeo). Run as root, it first installs what the tests
# drive from Debian's packages; the tests never skip a missing program, they fail naming it.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  ca-certificates curl jq iproute2 mount uidmap
  skopeo podman docker.io containerd docker-registry nginx
)

# shellcheck source=scripts/deps.sh
source scripts/deps.sh
ensure_packages "${PACKAGES[@]}"

for c in rustfmt clippy; do
  rustup component list --installed 2>/dev/null | grep -q "^$c" || rustup component add "$c"
done

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --locked --all-targets -- -D warnings
echo "==> cargo test"
cargo test --locked --all-targets -- --test-threads="${TEST_THREADS:-2}"
echo "==> benchmark smoke run (no timings checked)"
cargo test --locked --bench registry -- --smoke
echo "==> all tests passed"
