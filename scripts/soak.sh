#!/usr/bin/env bash
# Long fault soaks against the real binary (tests/soak/; not part of CI's normal run: the test
# binary only exists with `--features soak`). Each soak is bounded in count and time.
#
#   scripts/soak.sh [kill|link|disk|all]      (default: all)
#
#   kill  SOAK_TRIALS kill -9 of a ReadWrite child during pushes, pulls, sync and GC; after each
#         restart every acknowledged image verifies and nothing partial is served
#   link  SOAK_CUTS link cuts (and parent kill -9 / restarts) during a ReadWrite sync; after,
#         child and parent hold exactly the same tags and digests
#   disk  SOAK_FILLS times the child's tmpfs fills up and empties during sync (needs root)
#
# Knobs (environment):
#   SOAK_TRIALS   kill trials (default 100)
#   SOAK_CUTS     link fault cycles (default 100)
#   SOAK_FILLS    disk fill-and-free cycles (default 30)
#   SOAK_MINUTES  time limit of each soak's fault loop, minutes (default 30); a soak stops early
#                 and reports how many trials it ran
#   SOAK_SEED     replay a soak with the seed it printed
#   CARGO_TARGET_DIR as usual. Builds with the test profile.
set -euo pipefail
cd "$(dirname "$0")/.."

WHICH=${1:-all}
case $WHICH in
  kill | link | disk) SOAKS=("$WHICH") ;;
  all) SOAKS=(kill link disk) ;;
  *)
    echo "usage: $0 [kill|link|disk|all]" >&2
    exit 2
    ;;
esac
for knob in SOAK_TRIALS SOAK_CUTS SOAK_FILLS SOAK_MINUTES SOAK_SEED; do
  if [[ -n ${!knob:-} && ! ${!knob} =~ ^[0-9]+$ ]]; then
    echo "$knob=${!knob}: not a whole number" >&2
    exit 2
  fi
done

cargo test --locked --features soak --test soak --no-run

LOGS=$(mktemp -d)
trap 'rm -rf "$LOGS"' EXIT
declare -A RESULT
FAILED=0
for soak in "${SOAKS[@]}"; do
  echo "==> soak $soak"
  start=$(date +%s)
  if cargo test --locked --features soak --test soak "$soak::" -- --nocapture --test-threads=1 \
    2>&1 | tee "$LOGS/$soak.log"; then
    status=passed
  else
    status=FAILED
    FAILED=1
  fi
  line=$(grep -h '^SOAK-SUMMARY' "$LOGS/$soak.log" | tail -1 || true)
  seed=$(grep -ho 'seed [0-9]*' "$LOGS/$soak.log" | head -1 || true)
  RESULT[$soak]="$status in $(($(date +%s) - start)) s: ${line:-no summary ($seed)}"
done

echo
echo "==> soak summary"
for soak in "${SOAKS[@]}"; do
  echo "$soak: ${RESULT[$soak]}"
done
exit "$FAILED"
