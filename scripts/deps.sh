# Sourced by scripts/test.sh and scripts/bench.sh: `ensure_packages PKG…` installs the Debian
# packages that are missing when run as root (without letting them start system daemons: the
# tests and the benchmark start their own), and otherwise names them and fails.
ensure_packages() {
  local missing=() p own_policy=0
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  if [[ $(id -u) -ne 0 ]]; then
    echo "missing Debian packages: ${missing[*]}" >&2
    echo "run as root (sudo $0) to install them, or apt-get install them" >&2
    exit 1
  fi
  echo "==> installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    own_policy=1
  fi
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if ((own_policy)); then rm -f /usr/sbin/policy-rc.d; fi
}

# `ensure_foreign_arch ARCH`: lets apt install packages of another architecture (`pkg:ARCH`, e.g.
# the arm64 Rust standard library for cross builds). Adding one needs root; ensure_packages then
# fetches its package lists with its own `apt-get update`.
ensure_foreign_arch() {
  local arch=$1
  [[ $(dpkg --print-architecture) == "$arch" ]] && return 0
  dpkg --print-foreign-architectures | grep -qx "$arch" && return 0
  if [[ $(id -u) -ne 0 ]]; then
    echo "dpkg does not know the $arch architecture: run as root, or dpkg --add-architecture $arch" >&2
    exit 1
  fi
  echo "==> dpkg --add-architecture $arch"
  dpkg --add-architecture "$arch"
}

# `ensure_binfmt NAME` (e.g. qemu-aarch64, from qemu-user-static): the kernel runs that
# architecture's binaries through qemu, containers included (the registration's F flag opens the
# interpreter up front, so it need not exist inside the container). Needs root.
ensure_binfmt() {
  local name=$1 dir=/proc/sys/fs/binfmt_misc
  if [[ -r $dir/$name ]] && grep -qx enabled "$dir/$name"; then return 0; fi
  if [[ $(id -u) -ne 0 ]]; then
    echo "binfmt $name is not registered: run as root, or update-binfmts --enable $name" >&2
    exit 1
  fi
  mountpoint -q "$dir" || mount -t binfmt_misc binfmt_misc "$dir"
  update-binfmts --enable "$name"
  grep -qx enabled "$dir/$name"
}

# `ensure_pip_packages NAME==VERSION…`: Python tools the tests drive (kubernetes-validate: the
# Kubernetes API schemas, offline, for tests/kubernetes.rs), installed at the pinned version with
# python3's pip when run as root; otherwise named, and the run fails.
ensure_pip_packages() {
  local missing=() spec have
  for spec in "$@"; do
    # `pip show` fails for a package not installed: that is an answer here, not an error.
    have=$({ python3 -m pip show "${spec%%==*}" 2>/dev/null || true; } | sed -n 's/^Version: //p')
    [[ $have == "${spec#*==}" ]] || missing+=("$spec")
  done
  ((${#missing[@]})) || return 0
  if [[ $(id -u) -ne 0 ]]; then
    echo "missing Python packages: ${missing[*]}" >&2
    echo "run as root (sudo $0) to install them, or pip3 install ${missing[*]}" >&2
    exit 1
  fi
  echo "==> pip install: ${missing[*]}"
  # Debian's own python3 refuses a system-wide pip install (PEP 668) without the override.
  python3 -m pip install --quiet "${missing[@]}" ||
    python3 -m pip install --quiet --break-system-packages "${missing[@]}"
}

# `ensure_npm_packages NAME@VERSION…`: programs from the npm registry the tests start (azurite:
# the Azure Storage emulator, for the Azure blob backend's tests), installed globally at the
# pinned version with the machine's npm when run as root; otherwise named, and the run fails.
ensure_npm_packages() {
  local missing=() spec have
  for spec in "$@"; do
    have=$({ npm ls -g --depth=0 "${spec%@*}" 2>/dev/null || true; } | sed -n "s/.* ${spec%@*}@//p")
    [[ $have == "${spec##*@}" ]] || missing+=("$spec")
  done
  ((${#missing[@]})) || return 0
  if [[ $(id -u) -ne 0 ]]; then
    echo "missing npm packages: ${missing[*]}" >&2
    echo "run as root (sudo $0) to install them, or npm install -g ${missing[*]}" >&2
    exit 1
  fi
  echo "==> npm install -g: ${missing[*]}"
  npm install -g --no-fund --no-audit "${missing[@]}" >/dev/null
}
