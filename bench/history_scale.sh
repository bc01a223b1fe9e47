#!/usr/bin/env bash
# The index as it grows: one server with the default history, 100,000
# accounts; the history threads' CPU per transfer over one million
# transfers at a fixed 100,000 transfers/s, first on an empty history and
# again after filling it to TOTAL transfers (default 50 million) unpaced;
# then the p50/p99 of 100-entry history pages and of balances at random
# past instants on that history (wrk, 4 connections, 10 s each).
# Usage: bench/history_scale.sh [total transfers, default 50000000]
# Needs about 350 bytes of disk per transfer (17 GB for 50 million).
set -euo pipefail
cd "$(dirname "$0")/.."
total=${1:-50000000}
binary=target/release/coffer
port=18395
accounts=100000
data=$(mktemp -d)
cleanup() { kill "${server:-}" 2>/dev/null || true; wait "${server:-}" 2>/dev/null || true; rm -rf "$data"; }
trap cleanup EXIT
# shellcheck source=bench/thread_cpu.sh
source bench/thread_cpu.sh

RUST_LOG=warn "$binary" serve --listen "127.0.0.1:$port" --data-dir "$data/coffer" >"$data/log" 2>&1 &
server=$!
for _ in $(seq 1 100); do curl -sf -o /dev/null "127.0.0.1:$port/healthz" && break; sleep 0.1; done
bench() { "$binary" bench --url "http://127.0.0.1:$port" --scenario batches --batch-size 1000 --accounts "$accounts" "$@"; }
bench --connections 4 --count 20 >/dev/null
sleep 2
started_ms=$(($(date +%s%N) / 1000000))

one_million() { # label: µs per transfer over 1,000,000 at 100 k/s: history threads (user, kernel), whole server
  local user0 kernel0 user1 kernel1 server0 server1
  read -r user0 kernel0 < <(thread_ticks_split "$server" '^coffer-(projecto|history-)')
  server0=$(thread_ticks "$server" '.')
  bench --connections 16 --count 1000 --rate 100 >/dev/null 2>&1
  sleep 1
  read -r user1 kernel1 < <(thread_ticks_split "$server" '^coffer-(projecto|history-)')
  server1=$(thread_ticks "$server" '.')
  awk -v label="$1" -v user=$((user1 - user0)) -v kernel=$((kernel1 - kernel0)) -v whole=$((server1 - server0)) \
    -v hz="$(getconf CLK_TCK)" 'BEGIN {
      printf "%s: history threads %.3f µs a transfer (user %.3f, kernel %.3f); server %.3f µs a transfer\n",
        label, (user + kernel) / hz, user / hz, kernel / hz, whole / hz }'
}

one_million "first million"
filled=$(((total - 1020000 - 1000000) / 1000))
echo "filling: $filled batches of 1,000"
bench --connections 16 --count "$filled" --json >/dev/null 2>&1
for _ in $(seq 1 600); do
  lag=$(curl -sf "127.0.0.1:$port/metrics" | awk '$1 == "coffer_history_lag_transactions" {print $2}')
  [[ ${lag:-1} == 0 ]] && break
  sleep 1
done
one_million "last million (after $total)"
ended_ms=$(($(date +%s%N) / 1000000))
du -sh "$data/coffer/history" | awk '{print "index size " $1}'
for paths in history balance; do
  PATHS=$paths ACCOUNTS=$accounts FROM_MS=$started_ms TO_MS=$ended_ms \
    wrk -t2 -c4 -d10s -s bench/history_page.lua "http://127.0.0.1:$port" |
    awk -v kind="$paths" '$1 == "RESULT" {printf "%s: %d requests, %d errors, p50 %.2f ms, p99 %.2f ms\n", kind, $2, $3, $4, $5}'
done
