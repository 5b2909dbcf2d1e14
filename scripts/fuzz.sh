#!/usr/bin/env bash
# Coverage-guided fuzzing (libFuzzer, the fuzz/ workspace) of the parsers of outside input: every
# target in fuzz/fuzz_targets/ runs for SECONDS (default 20) from its seeds in fuzz/seeds/<target>/,
# JOBS targets at a time (default 2). The corpus grows in a temporary copy, so the repository's
# seeds stay as written. Fails when any target crashes, naming the input to keep in
# fuzz/regressions/<target>/ (which `cargo test` replays).
#
#   scripts/fuzz.sh [SECONDS] [TARGET…]
#   env: JOBS (targets run at once), FUZZ_TARGET_DIR (default fuzz/target),
#        FUZZ_BUILD_TIMEOUT (seconds the build may take, default 1200)
#
# Builds as `cargo fuzz build --dev --sanitizer none` does (same RUSTFLAGS, checked against its
# -v output), but with cargo itself: no cargo-fuzz to install, only the nightly toolchain (for
# -Cpasses=sancov-module). Unoptimised and without AddressSanitizer the build costs about a
# fifth of the default release+ASan one, and safe Rust gains little from ASan; the coverage
# instrumentation that guides libFuzzer stays.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_EACH=${1:-20}
shift || true
JOBS=${JOBS:-2}
BUILD_TIMEOUT=${FUZZ_BUILD_TIMEOUT:-1200}
for n in "$SECONDS_EACH" "$JOBS" "$BUILD_TIMEOUT"; do
  if ! [[ $n =~ ^[0-9]+$ ]] || ((n == 0)); then
    echo "usage: $0 [SECONDS] [TARGET…]  (SECONDS, JOBS, FUZZ_BUILD_TIMEOUT positive whole numbers)" >&2
    exit 2
  fi
done

if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "FUZZ SETUP FAILURE: the nightly toolchain is missing (the coverage instrumentation needs" >&2
  echo "it): rustup toolchain install nightly --profile minimal" >&2
  exit 1
fi
HOST=$(rustc +nightly -vV | sed -n 's/^host: //p')
TARGET_DIR=${FUZZ_TARGET_DIR:-$PWD/fuzz/target}

if (($#)); then
  TARGETS=("$@")
else
  mapfile -t TARGETS < <(find fuzz/fuzz_targets -name '*.rs' -printf '%f\n' | sed 's/\.rs$//' | sort)
fi
for t in "${TARGETS[@]}"; do
  if [[ ! -f fuzz/fuzz_targets/$t.rs || ! -d fuzz/seeds/$t ]]; then
    echo "no fuzz target '$t' (fuzz/fuzz_targets/$t.rs and fuzz/seeds/$t/)" >&2
    exit 2
  fi
done

# What cargo-fuzz 0.13 passes for `build --dev --sanitizer none`. `--target` keeps build scripts
# and proc macros uninstrumented, as cargo-fuzz does.
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing \
-Cllvm-args=-simplifycfg-branch-fold-threshold=0 -Cllvm-args=-sanitizer-coverage-stack-depth \
-Cdebug-assertions"

echo "==> building ${#TARGETS[@]} fuzz targets (debug, coverage-instrumented)"
start=$(date +%s)
bins=()
for t in "${TARGETS[@]}"; do bins+=(--bin "$t"); done
timeout --kill-after=30 "$BUILD_TIMEOUT" cargo +nightly build --locked --quiet \
  --manifest-path fuzz/Cargo.toml --target "$HOST" --target-dir "$TARGET_DIR" "${bins[@]}"
echo "==> built in $(($(date +%s) - start)) s"
BIN_DIR=$TARGET_DIR/$HOST/debug

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# One target: libFuzzer stops itself after SECONDS_EACH; `timeout` bounds it should it not (a
# slow input counts as a failure after 10 s through -timeout).
run_target() {
  local t=$1 corpus="$WORK/corpus/$1" artifacts="$PWD/fuzz/artifacts/$1"
  mkdir -p "$corpus" "$artifacts"
  cp -r "fuzz/seeds/$t/." "$corpus/"
  timeout --kill-after=10 $((SECONDS_EACH + 60)) "$BIN_DIR/$t" "$corpus" \
    -max_total_time="$SECONDS_EACH" -timeout=10 -artifact_prefix="$artifacts/" \
    -print_final_stats=1 >"$WORK/$t.log" 2>&1
}

echo "==> running each target for ${SECONDS_EACH} s, ${JOBS} at a time"
start=$(date +%s)
failed=()
running=0
for t in "${TARGETS[@]}"; do
  if ((running >= JOBS)); then
    wait -n || true
    running=$((running - 1))
  fi
  (run_target "$t" && touch "$WORK/$t.ok") &
  running=$((running + 1))
done
wait || true
for t in "${TARGETS[@]}"; do
  if [[ -f $WORK/$t.ok ]]; then
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$WORK/$t.log")
    echo "    $t: ${runs:-?} inputs, no crash"
  else
    failed+=("$t")
  fi
done
echo "==> ran in $(($(date +%s) - start)) s"

for t in "${failed[@]}"; do
  echo >&2
  tail -n 40 "$WORK/$t.log" >&2
  crash=$(sed -n 's/.*Test unit written to //p' "$WORK/$t.log" | tail -n 1)
  echo "FUZZ FAILURE in target $t: crashing input ${crash:-(none written; see the log above)}" >&2
  echo "Fix the parser, then keep the input as a regression test:" >&2
  echo "  cp '${crash:-<input>}' fuzz/regressions/$t/" >&2
done
if ((${#failed[@]})); then
  echo "==> ${#failed[@]} of ${#TARGETS[@]} fuzz targets failed: ${failed[*]}" >&2
  exit 1
fi
echo "==> ${#TARGETS[@]} targets ran ${SECONDS_EACH} s each without a crash"
