#!/usr/bin/env bash
# Side-by-side benchmark of connected-registry against Debian's docker-registry (the CNCF
# distribution reference server): builds the release binary, then runs the bench target.
#   scripts/bench.sh           full run (several minutes), table on stdout and in
#                              target/bench/results.md
#   scripts/bench.sh --smoke   tiny sizes and durations (seconds): proves the benchmark still
#                              works; fails only when a request fails or a digest is wrong
#   --only PART                one part: single, mirror, tree, edge (needs root), gc or scale; its
#                              table goes to target/bench/results-PART.md
# Needs the Debian packages docker-registry and skopeo (installed here when run as root).
set -euo pipefail
cd "$(dirname "$0")/.."

for arg in "$@"; do
  case "$arg" in
    --smoke|--only) ;;
    single|mirror|tree|edge|gc|scale) ;;
    -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $arg (use --smoke, --only PART or nothing)" >&2; exit 2 ;;
  esac
done

# shellcheck source=scripts/deps.sh
source scripts/deps.sh
ensure_packages docker-registry skopeo

echo "==> cargo build --release"
cargo build --locked --release --bin connected-registry
echo "==> cargo bench --bench registry -- $*"
exec cargo bench --locked --bench registry -- "$@"
