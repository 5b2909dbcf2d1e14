#!/usr/bin/env bash
# Regenerates link/order.txt, the order in which the linker lays out the server's functions.
# Runs the release binary under valgrind's callgrind through two phases and lists, in mangled
# form, the functions each phase executed that the earlier phase did not:
#   1. start: start, answer the readiness probe (GET /v2/), sit idle;
#   2. serve: push (monolithic, chunked, mount), pull (whole, ranges), manifests, tags, errors.
# Placing them first packs the code a running registry touches into a few hundred contiguous
# pages instead of scattering it over the whole binary, which keeps its resident memory small:
# the kernel maps the binary in 64 KiB windows around each page it touches.
# Rerun after upgrading the toolchain or dependencies (their symbol hashes change, and stale
# names are simply ignored by the linker) or after large changes to the request paths.
#   scripts/link-order.sh      needs valgrind (installed here when run as root) and curl
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

# shellcheck source=scripts/deps.sh
source scripts/deps.sh
ensure_packages valgrind curl python3

echo "==> cargo build --release"
cargo build --locked --release --bin connected-registry
bin=$root/target/release/connected-registry
work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
url=http://127.0.0.1:$port
mkdir "$work/data"
valgrind --tool=callgrind --demangle=no --callgrind-out-file="$work/cg.%p" \
  "$bin" serve --insecure-no-auth --data-dir "$work/data" --listen "127.0.0.1:$port" \
  >"$work/server.log" 2>&1 &
pid=$!

# Dumps the profile gathered since the previous dump (callgrind numbers the files).
dump() { callgrind_control -d "$pid" >/dev/null 2>&1; sleep 1; }

echo "==> phase 1: start and idle"
for _ in $(seq 600); do
  curl -fs -o /dev/null "$url/v2/" && break
  sleep 0.1
done
curl -fs -o /dev/null "$url/v2/" || { cat "$work/server.log"; exit 1; }
sleep 3
dump

echo "==> phase 2: serve"
c() { curl -s -o /dev/null "$@"; }
sha() { sha256sum "$1" | cut -d' ' -f1; }
head -c 3000000 /dev/urandom >"$work/layer"
head -c 1200000 /dev/urandom >"$work/layer2"
printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}' >"$work/config"
layer=sha256:$(sha "$work/layer")
layer2=sha256:$(sha "$work/layer2")
config=sha256:$(sha "$work/config")
c "$url/v2/_catalog"
# Monolithic pushes, one of them with a wrong digest.
c -X POST --data-binary @"$work/layer" -H 'Content-Type: application/octet-stream' \
  "$url/v2/app/blobs/uploads/?digest=$layer"
c -X POST --data-binary @"$work/config" "$url/v2/app/blobs/uploads/?digest=$config"
c -X POST --data-binary @"$work/config" "$url/v2/app/blobs/uploads/?digest=$layer2"
# A chunked push: open, two PATCHes, status, close.
loc=$(curl -s -D - -o /dev/null -X POST "$url/v2/app/blobs/uploads/" | tr -d '\r' |
  awk 'tolower($1)=="location:"{print $2}')
case $loc in http*) ;; *) loc=$url$loc ;; esac
head -c 600000 "$work/layer2" >"$work/part1"
tail -c +600001 "$work/layer2" >"$work/part2"
c -X PATCH --data-binary @"$work/part1" -H 'Content-Range: 0-599999' "$loc"
c "$loc"
c -X PATCH --data-binary @"$work/part2" -H 'Content-Range: 600000-1199999' "$loc"
sep='?'; case $loc in *\?*) sep='&' ;; esac
c -X PUT "$loc${sep}digest=$layer2"
cat >"$work/manifest" <<EOF
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
 "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"$config","size":$(stat -c%s "$work/config")},
 "layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"$layer","size":3000000},
           {"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"$layer2","size":1200000}]}
EOF
mt='application/vnd.oci.image.manifest.v1+json'
accept='Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.index.v1+json'
for t in v1 v2 latest; do
  c -X PUT -H "Content-Type: $mt" --data-binary @"$work/manifest" "$url/v2/app/manifests/$t"
done
c -X PUT -H "Content-Type: $mt" --data-binary '{"schemaVersion":2' "$url/v2/app/manifests/broken"
c -X POST "$url/v2/copy/blobs/uploads/?mount=$layer&from=app"
# Pulls: manifests by tag and digest, blobs whole and in ranges, tags, the referrers API.
digest=sha256:$(sha "$work/manifest")
for _ in 1 2 3; do
  c -H "$accept" "$url/v2/app/manifests/latest"
  c -I -H "$accept" "$url/v2/app/manifests/latest"
  c -H "$accept" "$url/v2/app/manifests/$digest"
  c "$url/v2/app/blobs/$layer"
  c -I "$url/v2/app/blobs/$layer"
  c -H 'Range: bytes=1000-2999999' "$url/v2/app/blobs/$layer"
  c "$url/v2/app/tags/list"
  c "$url/v2/app/tags/list?n=2&last=v1"
done
c "$url/v2/app/referrers/$digest"
c "$url/v2/app/manifests/missing"
c "$url/v2/nothing/blobs/$config"
c -X DELETE "$url/v2/app/manifests/v1"
dump
kill -TERM "$pid"
wait "$pid" || true

mkdir -p link
printf '%s\n' \
  '# Function layout for the linker (lld --symbol-ordering-file), written by scripts/link-order.sh:' \
  '# what the registry runs to start and idle first, then what serving requests runs. Names the' \
  '# current build lacks are skipped, so a stale list only costs resident memory, never a build.' \
  >"$work/header"
python3 - "$bin" "$work" <<'PY' >"$work/order"
import glob, re, sys
binpath, work = sys.argv[1], sys.argv[2]
dumps = sorted(glob.glob(f"{work}/cg.*.[0-9]*"), key=lambda p: int(p.rsplit(".", 1)[1]))
seen = set()
for phase, path in zip(("start and idle", "serving requests"), dumps):
    # Sorted within a phase: the order there does not matter, and reruns then diff small.
    found = set()
    obs, fns, ob, cob = {}, {}, None, None
    for line in open(path, errors="replace"):
        m = re.match(r"^(ob|cob|fn|cfn)=\((\d+)\)(?: (.*))?$", line.rstrip("\n"))
        if not m:
            continue
        kind, i, name = m.groups()
        if kind in ("ob", "cob"):
            if name is not None:
                obs[i] = name
            if kind == "ob":
                ob, cob = obs.get(i), None
            else:
                cob = obs.get(i)
            continue
        if name is not None:
            fns[i] = name
        owner = ob if kind == "fn" else (cob or ob)
        if kind == "cfn":
            cob = None
        fn = re.sub(r"'\d+$", "", fns.get(i) or "")
        if owner != binpath or not fn or fn.startswith("0x") or fn in seen or " " in fn:
            continue
        found.add(fn)
    seen |= found
    print(f"# {phase}")
    print("\n".join(sorted(found)))
PY
cat "$work/header" - <"$work/order" >link/order.txt
echo "==> link/order.txt: $(grep -vc '^#' link/order.txt) functions; rebuild to apply"
