#!/usr/bin/env bash
# Builds the registry's container images, linux/amd64 and linux/arm64 (v8), with no access to any
# container registry: each is `FROM scratch` around one fully static binary (glibc linked in,
# whose built-in files/dns name service still resolves hosts), so no base image is pulled.
#
#   scripts/build-images.sh [--profile NAME] [--push HOST:PORT/REPO:TAG [--creds USER:PASS] [--insecure]]
#   scripts/build-images.sh [--profile NAME] --no-docker
#
# Builds with Debian's Rust (rustc-web, cross-compiling arm64 with gcc-aarch64-linux-gnu) into
# target/images (never the other builds' target/), stages a build context per architecture,
# runs `docker build -f Dockerfile.<arch>` against $DOCKER_HOST (or the default socket) and tags
# connected-registry:<version>-amd64 and connected-registry:<version>-arm64v8. Those two tags are
# the last lines of stdout, one per line; everything else goes to stderr.
#   --profile NAME  cargo profile (default release: fat LTO; image-ci builds much faster)
#   --push REF      also push both images as REF-amd64 and REF-arm64v8 and a multi-architecture
#                   OCI index over both as REF, with skopeo, to any registry
#   --creds U:P     credentials for --push
#   --insecure      --push over plain HTTP or to a registry whose TLS certificate is not trusted
#   --no-docker     only build the binaries and stage the build contexts (target/images/context-*)
# Run as root, it first installs the Debian packages it needs.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
# Progress to stderr; the tags alone to stdout.
exec 3>&1 1>&2

profile=release push="" creds="" insecure=0 no_docker=0
while (($#)); do
  case $1 in
    --profile) profile=${2:?--profile needs a name}; shift 2 ;;
    --push) push=${2:?--push needs HOST:PORT/REPO:TAG}; shift 2 ;;
    --creds) creds=${2:?--creds needs USER:PASS}; shift 2 ;;
    --insecure) insecure=1; shift ;;
    --no-docker) no_docker=1; shift ;;
    -h | --help) sed -n '2,/^set -euo/{/^set/d;s/^# \{0,1\}//;p}' "$0" >&3; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
if ((no_docker)) && [[ -n $push ]]; then
  echo "--push needs docker; drop --no-docker" >&2
  exit 2
fi
if [[ -n $push && ! $push =~ ^[^/]+/.+:[^:/@]+$ ]]; then
  echo "--push wants HOST[:PORT]/REPO:TAG, got $push" >&2
  exit 2
fi

# shellcheck source=scripts/deps.sh
source scripts/deps.sh
# The arm64 standard library is Debian's too: rustup cannot add targets on these machines, and
# building both architectures with one toolchain keeps the two images alike.
ensure_foreign_arch arm64
packages=(
  rustc-web cargo-web libstd-rust-web-dev:arm64 gcc libc6-dev
  gcc-aarch64-linux-gnu libc6-dev-arm64-cross
)
((no_docker)) || packages+=(docker.io jq)
[[ -z $push ]] || packages+=(skopeo)
ensure_packages "${packages[@]}"

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)
licenses=$(sed -n 's/^license = "\(.*\)"$/\1/p' Cargo.toml | head -n1)
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
source_url=$(git config --get remote.origin.url 2>/dev/null || true)
source_url=${source_url:-${IMAGE_SOURCE:-unknown}}
# A remote URL can carry credentials (https://user:token@host/…); never put them in a label.
source_url=$(sed -E 's#^([a-z+]+://)[^@/]*@#\1#' <<<"$source_url")
tag_amd64=connected-registry:$version-amd64
tag_arm64=connected-registry:$version-arm64v8

# Fixed: the Dockerfiles copy from target/images/context-<arch> (.dockerignore lets only those in).
out=$root/target/images
export CARGO_TARGET_DIR=$out
# Debian's toolchain explicitly: rustup's proxies may come first on PATH.
export RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc
# Static glibc for the target only (build scripts and proc macros stay dynamic host programs).
export RUSTFLAGS="-C target-feature=+crt-static"
# gcc links both: naming the linker also keeps build.rs from passing lld-only options.
export CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER=x86_64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
# Symbols only bloat the image; keep any profile's other settings.
export CARGO_PROFILE_RELEASE_STRIP=true
[[ $profile == release || $profile == dev ]] || {
  var=$(tr 'a-z-' 'A-Z_' <<<"$profile")
  export "CARGO_PROFILE_${var}_STRIP=true"
}
dk=(docker)
# Scratch directories under target/images, removed however the script ends.
scratch=()
trap 'rm -rf "${scratch[@]}"' EXIT

# Builds the binary for one Rust target triple.
build_binary() {
  local triple=$1 start=$SECONDS
  echo "==> cargo build --profile $profile --target $triple"
  /usr/bin/cargo build --locked --profile "$profile" --target "$triple" --bin connected-registry
  echo "==> $triple built in $((SECONDS - start)) s"
}

# Where cargo put the binary for a target triple.
binary_path() {
  local dir=$profile
  [[ $profile != dev ]] || dir=debug
  echo "$out/$1/$dir/connected-registry"
}

# Stages the build context of one image: the binary, a minimal /etc and the data directory.
stage_context() {
  local arch=$1 binary=$2 ctx=$out/context-$1
  rm -rf "$ctx"
  mkdir -p "$ctx/rootfs/etc" "$ctx/rootfs/tmp" "$ctx/data"
  install -m 0755 "$binary" "$ctx/rootfs/connected-registry"
  chmod 1777 "$ctx/rootfs/tmp"
  # Names for the image's numeric user (uid/gid 65532, the usual unprivileged "nonroot").
  printf 'root:x:0:0:root:/:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/var/acr/data:/sbin/nologin\n' \
    >"$ctx/rootfs/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' >"$ctx/rootfs/etc/group"
  # Without this file glibc's built-in order can ask DNS before /etc/hosts; containers expect
  # /etc/hosts (docker's --add-host) first, then DNS (docker's embedded server for module names).
  printf 'hosts: files dns\n' >"$ctx/rootfs/etc/nsswitch.conf"
  chmod 0644 "$ctx/rootfs/etc/"*
}

# docker build of one image from the repository root, tagged $2.
build_image() {
  local arch=$1 tag=$2
  echo "==> docker build -f Dockerfile.$arch -t $tag ."
  "${dk[@]}" build --quiet -f "Dockerfile.$arch" -t "$tag" \
    --build-arg "VERSION=$version" --build-arg "REVISION=$revision" \
    --build-arg "SOURCE=$source_url" --build-arg "LICENSES=$licenses" . >/dev/null
}

# Docker 20.10 without buildx records amd64 for a FROM scratch image whatever --platform says:
# rewrite the saved image's config to arm64/v8 (a new config digest, hence a new image id) and
# load it back under the final tag.
retag_arm64() {
  local from=$1 tag=$2 work config new hex
  work=$(mktemp -d "$out/arm64-save.XXXXXX")
  scratch+=("$work")
  "${dk[@]}" save -o "$work/image.tar" "$from"
  mkdir "$work/x"
  tar -C "$work/x" -xf "$work/image.tar"
  config=$(jq -r '.[0].Config' "$work/x/manifest.json")
  new=$work/config.json
  jq -c '.architecture = "arm64" | .variant = "v8"' "$work/x/$config" >"$new"
  hex=$(sha256sum "$new" | cut -d' ' -f1)
  rm "$work/x/$config" "$work/x/repositories"
  mv "$new" "$work/x/$hex.json"
  jq -c --arg c "$hex.json" --arg t "$tag" '.[0].Config = $c | .[0].RepoTags = [$t]' \
    "$work/x/manifest.json" >"$work/manifest.json"
  mv "$work/manifest.json" "$work/x/manifest.json"
  tar -C "$work/x" -cf "$work/arm64.tar" .
  "${dk[@]}" rmi "$from" >/dev/null
  "${dk[@]}" load -q -i "$work/arm64.tar" >/dev/null
}

total=$SECONDS
build_binary x86_64-unknown-linux-gnu
build_binary aarch64-unknown-linux-gnu
stage_context amd64 "$(binary_path x86_64-unknown-linux-gnu)"
stage_context arm64v8 "$(binary_path aarch64-unknown-linux-gnu)"
if ((no_docker)); then
  echo "==> binaries built and contexts staged in $((SECONDS - total)) s: $out/context-*"
  exit 0
fi
build_image amd64 "$tag_amd64"
build_image arm64v8 "$tag_arm64-unfixed"
retag_arm64 "$tag_arm64-unfixed" "$tag_arm64"
for tag in "$tag_amd64" "$tag_arm64"; do
  echo "==> $tag: $("${dk[@]}" image inspect -f '{{.Os}}/{{.Architecture}} {{.Variant}} {{.Size}} bytes' "$tag")"
done

if [[ -n $push ]]; then
  # One OCI layout holds both images; an index written over their manifests is the
  # multi-architecture image, and skopeo copies each piece byte for byte.
  layout=$(mktemp -d "$out/push.XXXXXX")
  scratch+=("$layout")
  sk=(skopeo --insecure-policy)
  daemon=()
  [[ -z ${DOCKER_HOST:-} ]] || daemon=(--src-daemon-host "$DOCKER_HOST")
  dest=()
  ((insecure)) && dest+=(--dest-tls-verify=false)
  [[ -z $creds ]] || dest+=(--dest-creds "$creds")
  echo "==> skopeo copy docker-daemon:… oci:$layout"
  "${sk[@]}" copy -q "${daemon[@]}" "docker-daemon:$tag_amd64" "oci:$layout:amd64"
  "${sk[@]}" copy -q "${daemon[@]}" "docker-daemon:$tag_arm64" "oci:$layout:arm64v8"
  # The index: both manifests as skopeo stored them, with their platforms.
  index=$(jq -c '
    def platform: if . == "amd64" then {architecture: "amd64", os: "linux"}
                  else {architecture: "arm64", os: "linux", variant: "v8"} end;
    {schemaVersion: 2, mediaType: "application/vnd.oci.image.index.v1+json",
     manifests: ([.manifests[]
       | select(.annotations["org.opencontainers.image.ref.name"] as $r
                | $r == "amd64" or $r == "arm64v8")
       | {mediaType, digest, size,
          platform: (.annotations["org.opencontainers.image.ref.name"] | platform)}]
       | sort_by(.platform.architecture))}' "$layout/index.json")
  [[ $(jq '.manifests | length' <<<"$index") == 2 ]] || {
    echo "skopeo did not store both images in $layout" >&2
    exit 1
  }
  printf '%s' "$index" >"$layout/index.blob"
  hex=$(sha256sum "$layout/index.blob" | cut -d' ' -f1)
  size=$(stat -c %s "$layout/index.blob")
  mv "$layout/index.blob" "$layout/blobs/sha256/$hex"
  jq -c --arg d "sha256:$hex" --argjson s "$size" --arg t multiarch '.manifests += [{
      mediaType: "application/vnd.oci.image.index.v1+json", digest: $d, size: $s,
      annotations: {"org.opencontainers.image.ref.name": $t}}]' \
    "$layout/index.json" >"$layout/index.new"
  mv "$layout/index.new" "$layout/index.json"
  echo "==> pushing $push-amd64, $push-arm64v8 and the index $push (sha256:$hex)"
  "${sk[@]}" copy -q --preserve-digests "${dest[@]}" "oci:$layout:amd64" "docker://$push-amd64"
  "${sk[@]}" copy -q --preserve-digests "${dest[@]}" "oci:$layout:arm64v8" "docker://$push-arm64v8"
  "${sk[@]}" copy -q --all --preserve-digests "${dest[@]}" "oci:$layout:multiarch" "docker://$push"
fi

echo "==> images built in $((SECONDS - total)) s"
printf '%s\n%s\n' "$tag_amd64" "$tag_arm64" >&3
