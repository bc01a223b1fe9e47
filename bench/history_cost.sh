#!/usr/bin/env bash
# What the history costs: a fresh server per store, batches of 1,000
# transfers from 16 connections for N seconds, at a fixed rate of
# transfers/s (or unpaced with 0). Prints, per store, the transfers/s
# reached, the server's CPU µs per transfer, and the history threads' CPU µs
# per transfer (per-thread CPU from /proc/PID/task: the projector and its
# writer), and each store's throughput against `off` from the same round.
# Usage: bench/history_cost.sh [seconds, default 10] [transfers/s, default 100000] [rounds, default 1]
#   STORES overrides the stores compared (default "index sqlite off").
#   ACCOUNTS (default 100000) spreads the transfers.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
rate=${2:-100000}
rounds=${3:-1}
stores=${STORES:-index sqlite off}
accounts=${ACCOUNTS:-100000}
binary=target/release/coffer
port=18391
ticks=$(getconf CLK_TCK)

# shellcheck source=bench/thread_cpu.sh
source bench/thread_cpu.sh

run_store() { # STORE → "transfers/s server_us history_us"
  local store=$1 data server
  data=$(mktemp -d)
  RUST_LOG=warn "$binary" serve --listen "127.0.0.1:$port" --data-dir "$data/coffer" --history-url "$store" \
    >"$data/log" 2>&1 &
  server=$!
  for _ in $(seq 1 100); do curl -sf -o /dev/null "127.0.0.1:$port/healthz" && break; sleep 0.1; done
  # Accounts opened and funded by a first short run, so the measured one
  # transfers only.
  "$binary" bench --url "http://127.0.0.1:$port" --scenario batches --batch-size 1000 --connections 4 \
    --accounts "$accounts" --count 20 >/dev/null
  sleep 2 # the projector catches up with the setup
  local history_before server_before history_after server_after report
  history_before=$(thread_ticks "$server" '^coffer-(projecto|history-)')
  server_before=$(awk '{print $14 + $15}' "/proc/$server/stat")
  report=$("$binary" bench --url "http://127.0.0.1:$port" --scenario batches --batch-size 1000 \
    --connections 16 --accounts "$accounts" --duration "$seconds" --rate $((rate / 1000)) --json)
  sleep 1 # the history's share of the last batches
  history_after=$(thread_ticks "$server" '^coffer-(projecto|history-)')
  server_after=$(awk '{print $14 + $15}' "/proc/$server/stat")
  kill "$server"
  wait "$server" 2>/dev/null || true
  rm -rf "$data"
  python3 - "$report" "$((history_after - history_before))" "$((server_after - server_before))" "$ticks" <<'EOF'
import json, sys
report = json.loads(sys.argv[1])
history, server, ticks = (int(value) for value in sys.argv[2:])
transfers = report["transfers_per_second"] * report["seconds"]
per = 1e6 / ticks / transfers
print(f"{report['transfers_per_second']:.0f} {server * per:.2f} {history * per:.2f}")
EOF
}

echo "batches of 1,000 transfers, 16 connections, ${seconds} s, rate $rate transfers/s (0: unpaced), $accounts accounts"
for round in $(seq 1 "$rounds"); do
  declare -A reached=()
  for store in $stores; do
    read -r per_second server_us history_us < <(run_store "$store")
    reached[$store]=$per_second
    printf "round %d %-7s %9.0f transfers/s  server %6.2f µs/transfer  history threads %5.2f µs/transfer\n" \
      "$round" "$store" "$per_second" "$server_us" "$history_us"
  done
  if [[ -n ${reached[off]:-} ]]; then
    for store in $stores; do
      [[ $store == off ]] && continue
      awk -v s="$store" -v a="${reached[$store]}" -v b="${reached[off]}" -v r="$round" \
        'BEGIN {printf "round %d %s / off: %.2f×\n", r, s, a / b}'
    done
  fi
done
