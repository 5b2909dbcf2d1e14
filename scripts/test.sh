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

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -eq 0 ]]; then
    echo "==> installing test dependencies: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # policy-rc.d keeps package scripts from starting system daemons: tests start their own.
    own_policy=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
      printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
      own_policy=1
    fi
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    if ((own_policy)); then rm -f /usr/sbin/policy-rc.d; fi
  else
    echo "missing Debian packages: ${missing[*]}" >&2
    echo "run this script as root (sudo $0) to install them" >&2
    exit 1
  fi
fi

for c in rustfmt clippy; do
  rustup component list --installed 2>/dev/null | grep -q "^$c" || rustup component add "$c"
done

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --locked --all-targets -- -D warnings
echo "==> cargo test"
cargo test --locked --all-targets -- --test-threads="${TEST_THREADS:-2}"
echo "==> all tests passed"
