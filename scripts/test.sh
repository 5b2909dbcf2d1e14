#!/usr/bin/env bash
# Runs the whole test suite: formatting, lints, unit tests and whole-process tests against real
# clients (docker, containerd, podman, skopeo). Run as root, it first installs what the tests
# drive from Debian's packages; the tests never skip a missing program, they fail naming it.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  ca-certificates curl jq iproute2 mount uidmap
  skopeo podman docker.io containerd docker-registry nginx prometheus
  qemu-user-static binfmt-support kubectl
  # The PostgreSQL metadata backend's tests start a real server with their own data directory
  # (src/testing.rs); ensure_packages keeps the package from starting a system one.
  postgresql
)

# shellcheck source=scripts/deps.sh
source scripts/deps.sh
ensure_packages "${PACKAGES[@]}"
# tests/kubernetes.rs: the offline Kubernetes API schemas. (kubectl above is the `kubectl`
# package these machines carry, with kustomize v5; Debian 12's kubernetes-client 1.20 bundles a
# kustomize too old for the manifests.)
ensure_pip_packages kubernetes-validate==1.37.0
# The Azure blob backend's tests: Azurite, the Azure Storage emulator (3.35 is the last release
# that runs on Node.js 20).
ensure_npm_packages azurite@3.35.0

for c in rustfmt clippy; do
  rustup component list --installed 2>/dev/null | grep -q "^$c" || rustup component add "$c"
done

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --locked --all-targets -- -D warnings
# The container images' binaries (static, amd64 and arm64) in their own target directory, as a
# step of its own: tests/images.rs then builds the images from cargo's cache. CI uses the
# lighter image-ci profile; IMAGES_PROFILE overrides.
if [[ ${CI:-} == true ]]; then export IMAGES_PROFILE=${IMAGES_PROFILE:-image-ci}; fi
export IMAGES_PROFILE=${IMAGES_PROFILE:-release}
echo "==> image binaries (scripts/build-images.sh --profile $IMAGES_PROFILE --no-docker)"
scripts/build-images.sh --profile "$IMAGES_PROFILE" --no-docker
echo "==> cargo test"
cargo test --locked --all-targets -- --test-threads="${TEST_THREADS:-2}"
# Every fuzz target for a bounded time from its seeds (about 4.5 minutes on 2 cores: the build,
# then 16 targets two at a time); fails on a crash, or without the nightly toolchain.
echo "==> fuzzing (scripts/fuzz.sh ${FUZZ_SECONDS:-20})"
scripts/fuzz.sh "${FUZZ_SECONDS:-20}"
echo "==> benchmark smoke run (no timings checked)"
cargo test --locked --bench registry -- --smoke
echo "==> all tests passed"
