#!/usr/bin/env bash
# HTTP benchmark, one run, one machine, one load generator (wrk):
#   coffer single durable transfers at 64 and 512 connections,
#   coffer batches of 1,000 transfers,
#   a bare axum handler that returns fixed JSON (the HTTP ceiling).
# Prints requests/s, p50 and p99 for each, and the ratio to the bare handler.
# Usage: bench/http.sh [seconds per run, default 10]
# COFFER_OPTIONS adds server flags, e.g. COFFER_OPTIONS="--history-url off".
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RUN=${1:-10}
export ACCOUNTS=${ACCOUNTS:-1000}
COFFER_PORT=18181
BARE_PORT=18182

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; } || {
  echo "wrk is needed: apt-get install wrk"; exit 1; }

# --example alone would build only the example, so the binary is named too.
cargo build --release -q -p coffer --bin coffer
cargo build --release -q -p coffer-server --example bare_axum
data=$(mktemp -d)
# Stop both servers and wait: coffer's graceful shutdown writes a snapshot
# into the data directory, which must still exist until it exits.
cleanup() {
  kill "${coffer_pid:-}" "${bare_pid:-}" 2>/dev/null || true
  wait "${coffer_pid:-}" "${bare_pid:-}" 2>/dev/null || true
  rm -rf "$data"
}
trap cleanup EXIT

# shellcheck disable=SC2086 # COFFER_OPTIONS is a list of flags
RUST_LOG=warn target/release/coffer --listen 127.0.0.1:$COFFER_PORT --data-dir "$data" ${COFFER_OPTIONS:-} & coffer_pid=$!
target/release/examples/bare_axum 127.0.0.1:$BARE_PORT & bare_pid=$!
for port in $COFFER_PORT $BARE_PORT; do
  for _ in $(seq 1 100); do curl -s -o /dev/null "127.0.0.1:$port/" && break; sleep 0.1; done
done

python3 bench/fund_accounts.py "$COFFER_PORT" "$ACCOUNTS"

# shellcheck source=bench/wrk_run.sh
source bench/wrk_run.sh
# run NAME URL SCRIPT CONNECTIONS: prints "name rps p50 p99 non2xx"
run() {
  local rps p50 p99 non2xx wrong
  read -r rps p50 p99 non2xx wrong _ < <(wrk_run "$2" "$3" "$4" "$SECONDS_PER_RUN")
  printf '%s %s %s %s %s\n' "$1" "$rps" "$p50" "$p99" "$non2xx"
}

results=$(
  run bare_axum_c64 "http://127.0.0.1:$BARE_PORT" bench/transfer.lua 64
  run coffer_transfer_c64 "http://127.0.0.1:$COFFER_PORT" bench/transfer.lua 64
  MINIMAL=1 run coffer_transfer_minimal_c64 "http://127.0.0.1:$COFFER_PORT" bench/transfer.lua 64
  run bare_axum_c512 "http://127.0.0.1:$BARE_PORT" bench/transfer.lua 512
  run coffer_transfer_c512 "http://127.0.0.1:$COFFER_PORT" bench/transfer.lua 512
  BATCH=1000 run coffer_batch1000_c16 "http://127.0.0.1:$COFFER_PORT" bench/batch.lua 16
)
bare64=$(awk '$1=="bare_axum_c64" {print $2}' <<<"$results")
bare512=$(awk '$1=="bare_axum_c512" {print $2}' <<<"$results")
echo
echo "date: $(date -u +%F), machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), fsync on, coffer options: ${COFFER_OPTIONS:-none}"
printf '%-28s %14s %16s %10s %10s %8s %10s\n' scenario requests/s transfers/s p50 p99 non-2xx vs-bare
# Errors (503 under back-pressure) are answered fast: they are no transfers.
batch_transfers() { # requests/s non-2xx
  awk -v r="$1" -v e="$2" -v s="$SECONDS_PER_RUN" 'BEGIN {printf "%.0f", (r - e / s) * 1000}'
}
while read -r name rps p50 p99 non2xx; do
  transfers=$rps; baseline=$bare64
  [[ $name == *c512* ]] && baseline=$bare512
  [[ $name == *batch1000* ]] && transfers=$(batch_transfers "$rps" "$non2xx")
  ratio=$(awk -v r="$rps" -v b="$baseline" 'BEGIN {printf "%.2f", r / b}')
  [[ $name == bare* || $name == *batch* ]] && ratio="-"
  printf '%-28s %14s %16s %10s %10s %8s %10s\n' "$name" "$rps" "$transfers" "$p50" "$p99" "$non2xx" "$ratio"
done <<<"$results"

# The targets (docs/BENCHMARKS.md), judged on this run.
value() { awk -v n="$1" -v c="$2" '$1==n {print $c}' <<<"$results"; }
echo
printf '%-44s %12s %8s\n' target measured met
goal() { # text measured threshold [1: at most]: met when measured >= threshold (<= with 1)
  local met
  met=$(awk -v m="$2" -v t="$3" -v most="${4:-0}" 'BEGIN {print ((most ? m <= t : m >= t) ? "yes" : "NO")}')
  printf '%-44s %12s %8s\n' "$1" "$2" "$met"
}
goal "single c64 >= 0.5 x bare" "$(awk -v r="$(value coffer_transfer_c64 2)" -v b="$bare64" 'BEGIN {printf "%.2f", r / b}')" 0.5
goal "single c512 >= 0.5 x bare" "$(awk -v r="$(value coffer_transfer_c512 2)" -v b="$bare512" 'BEGIN {printf "%.2f", r / b}')" 0.5
goal "single c64 p99 <= 10 ms" "$(wrk_milliseconds "$(value coffer_transfer_c64 4)")" 10 1
goal "batches >= 500,000 transfers/s" "$(batch_transfers "$(value coffer_batch1000_c16 2)" "$(value coffer_batch1000_c16 5)")" 500000
