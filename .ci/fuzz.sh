#!/usr/bin/env bash
# Coverage-guided fuzzing (libFuzzer) of the decoders that read untrusted
# bytes: journal records, snapshots, the JSON of operations, Kafka
# commands. Built on stable Rust with the coverage instrumentation that
# cargo-fuzz passes (no nightly toolchain needed). Each target starts from
# seeds made by the real encoders (fuzz/src/bin/seeds.rs) and runs for
# SECONDS; a crash, a panic, an allocation above 512 MiB or a disagreement
# with the reference decoder fails the run, and libFuzzer leaves the input
# in fuzz/artifacts/ (make it a regression test).
# Usage: .ci/fuzz.sh [SECONDS per target, default 30] [TARGET ...]
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds=${1:-30}
shift || true
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(journal_record snapshot operation_json command)

# The seed writer runs plainly, without libFuzzer's runtime.
cargo build --release --locked --bin seeds --target-dir target/plain
# An explicit --target keeps the instrumentation off build scripts and
# proc macros, which run on the host without libFuzzer's runtime.
triple=$(rustc -vV | awk '/^host:/ {print $2}')
bins=()
for target in "${targets[@]}"; do bins+=(--bin "$target"); done
RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks" \
  cargo build --release --locked --target "$triple" "${bins[@]}"
bin="target/$triple/release"

corpus=$(mktemp -d)
trap 'rm -rf "$corpus"' EXIT
target/plain/release/seeds "$corpus"
mkdir -p artifacts
for target in "${targets[@]}"; do
  echo "== fuzzing $target for ${seconds}s"
  mkdir -p "$corpus/$target"
  status=0
  "$bin/$target" "$corpus/$target" -max_total_time="$seconds" -malloc_limit_mb=512 \
    -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 -artifact_prefix="artifacts/$target-" \
    >"$corpus/$target.log" 2>&1 || status=$?
  grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|stat::new_units_added)|INFO: seed corpus|panicked|ERROR|SUMMARY|Done [0-9]+ runs' \
    "$corpus/$target.log" || true
  grep -E '^#[0-9]+[[:space:]]+(DONE|pulse)' "$corpus/$target.log" | tail -1 || true
  if [[ $status -ne 0 ]]; then
    tail -40 "$corpus/$target.log"
    echo "fuzz target $target failed (exit $status); the input is in fuzz/artifacts/"
    exit "$status"
  fi
done
echo "fuzzing passed: ${targets[*]}"
