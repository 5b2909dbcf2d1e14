#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo-fuzz / libFuzzer) of the parsers of outside input: every target
# in fuzz/fuzz_targets/ runs for SECONDS (default 20) from its seeds in fuzz/seeds/<target>/.
# The corpus grows in a temporary copy, so the repository's seeds stay as written. Stops at the
# first crash, naming the input to keep in fuzz/regressions/<target>/ (which `cargo test` runs).
#
#   scripts/fuzz.sh [SECONDS] [TARGET…]
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_EACH=${1:-20}
shift || true
if ! [[ $SECONDS_EACH =~ ^[0-9]+$ ]] || ((SECONDS_EACH == 0)); then
  echo "usage: $0 [SECONDS] [TARGET…]  (SECONDS a positive whole number)" >&2
  exit 2
fi

if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "the nightly toolchain is missing: rustup toolchain install nightly" >&2
  exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "==> installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

if (($#)); then
  TARGETS=("$@")
else
  mapfile -t TARGETS < <(cargo +nightly fuzz list)
fi

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

echo "==> building ${#TARGETS[@]} fuzz targets"
start=$(date +%s)
cargo +nightly fuzz build
echo "==> built in $(($(date +%s) - start)) s"

for t in "${TARGETS[@]}"; do
  corpus="$WORK/corpus/$t"
  mkdir -p "$corpus"
  cp -r "fuzz/seeds/$t/." "$corpus/"
  artifacts="fuzz/artifacts/$t"
  mkdir -p "$artifacts"
  echo "==> $t for ${SECONDS_EACH} s"
  if ! cargo +nightly fuzz run "$t" "$corpus" -- \
    -max_total_time="$SECONDS_EACH" -artifact_prefix="$PWD/$artifacts/" \
    -print_final_stats=1 >"$WORK/$t.log" 2>&1; then
    tail -n 40 "$WORK/$t.log" >&2
    crash=$(find "$artifacts" -type f -newer "$corpus" | head -n 1)
    echo >&2
    echo "FUZZ FAILURE in target $t: crashing input ${crash:-(none written; see the log above)}" >&2
    echo "Fix the parser, then keep the input as a regression test:" >&2
    echo "  cp '${crash:-<input>}' fuzz/regressions/$t/" >&2
    exit 1
  fi
  grep -E '^(stat::number_of_executed_units|#[0-9]+ +DONE)' "$WORK/$t.log" | tail -n 1 || true
done
echo "==> ${#TARGETS[@]} targets ran ${SECONDS_EACH} s each without a crash"
