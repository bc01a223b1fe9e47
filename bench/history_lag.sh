#!/usr/bin/env bash
# Sustained single transfers with the history store on: does the projector
# keep up? Starts coffer (as shipped: SQLite history) on a temp directory,
# opens ACCOUNTS accounts, drives wrk at 64 connections for SECONDS, and
# prints the history lag (from /metrics) every 10 s, then requests/s.
# Usage: bench/history_lag.sh [seconds, default 90]; ACCOUNTS (default
# 100000); COFFER_BINARY to measure another build of coffer.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_TOTAL=${1:-90}
export ACCOUNTS=${ACCOUNTS:-100000}
PORT=18183

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; } || {
  echo "wrk is needed: apt-get install wrk"; exit 1; }
if [[ -z ${COFFER_BINARY:-} ]]; then
  cargo build --release -q -p coffer --bin coffer
  COFFER_BINARY=target/release/coffer
fi
data=$(mktemp -d)
cleanup() {
  kill "${coffer_pid:-}" "${wrk_pid:-}" 2>/dev/null || true
  wait "${coffer_pid:-}" 2>/dev/null || true
  rm -rf "$data"
}
trap cleanup EXIT

RUST_LOG=warn "$COFFER_BINARY" --listen 127.0.0.1:$PORT --data-dir "$data" & coffer_pid=$!
for _ in $(seq 1 100); do curl -s -o /dev/null "127.0.0.1:$PORT/healthz" && break; sleep 0.1; done
python3 bench/fund_accounts.py "$PORT" "$ACCOUNTS"

report=$(mktemp)
wrk -t2 -c64 -d"${SECONDS_TOTAL}s" --latency -s bench/transfer.lua "http://127.0.0.1:$PORT" >"$report" & wrk_pid=$!
echo "history lag (transactions), every 10 s:"
for _ in $(seq 10 10 "$SECONDS_TOTAL"); do
  sleep 10
  curl -s "127.0.0.1:$PORT/metrics" | awk '/^coffer_history_lag_transactions/ {printf "  %s\n", $2}'
done
wait "$wrk_pid"
echo "accounts $ACCOUNTS, $(awk '/Requests\/sec/ {print $2}' "$report") transfers/s, p99 $(awk '$1=="99%" {print $2}' "$report"), non-2xx $(awk '/Non-2xx/ {print $5}' "$report" | grep . || echo 0)"
rm -f "$report"
