#!/usr/bin/env bash
# What one single transfer costs the server, for A/B comparisons of two
# builds on this noisy machine (alternate them, fresh server each run):
# a fresh server (history off, or HISTORY_URL) on a temp directory, 1,000 funded accounts,
# wrk with bench/transfer.lua for N seconds at 64 connections. Prints
# requests/s, the server's CPU µs per request (user, kernel, both, from
# /proc/PID/stat), requests per fdatasync, the mean fdatasync, wrk's p99,
# wrong answers and the machine's idle share over the run.
# Usage: bench/server_cost.sh BINARY [label] [seconds, default 10]
#   BINARY: a coffer binary, or bare_axum (then no journal figures).
#   COFFER_OPTIONS adds server flags, e.g. "--durability none".
#   HISTORY_URL chooses the history store (default off; index is the server's default).
set -euo pipefail
cd "$(dirname "$0")/.."
binary=$1
label=${2:-$(basename "$binary")}
seconds=${3:-10}
port=18381
data=$(mktemp -d)
cleanup() { kill "${server:-}" 2>/dev/null || true; wait "${server:-}" 2>/dev/null || true; rm -rf "$data"; }
trap cleanup EXIT

bare=false
[[ $(basename "$binary") == bare_axum* ]] && bare=true
if $bare; then
  "$binary" "127.0.0.1:$port" >"$data/log" 2>&1 &
else
  # shellcheck disable=SC2086 # COFFER_OPTIONS is a list of flags
  RUST_LOG=warn "$binary" serve --listen "127.0.0.1:$port" --data-dir "$data/coffer" --history-url "${HISTORY_URL:-off}" \
    ${COFFER_OPTIONS:-} >"$data/log" 2>&1 &
fi
server=$!
for _ in $(seq 1 100); do curl -sf -o /dev/null "127.0.0.1:$port/healthz" && break; sleep 0.1; done
$bare || python3 bench/fund_accounts.py "$port" 1000

metric() { # name: its value on /metrics, 0 without one
  { curl -sf "127.0.0.1:$port/metrics" || true; } | awk -v name="$1" '$1 == name {value = $2} END {print value + 0}'
}
cpu() { awk '{print $14 + 0, $15 + 0}' "/proc/$server/stat"; } # user and kernel ticks
idle() { awk '/^cpu / {print $5 + $6}' /proc/stat; }             # idle + iowait ticks, all cores

syncs_before=$(metric coffer_journal_syncs_total)
fsync_before=$(metric coffer_journal_fsync_seconds_sum)
read -r user_before kernel_before < <(cpu)
idle_before=$(idle)
# shellcheck source=bench/wrk_run.sh
source bench/wrk_run.sh
read -r rps _ p99 _ wrong requests < <(ACCOUNTS=1000 wrk_run "http://127.0.0.1:$port" bench/transfer.lua 64 "$seconds")
read -r user_after kernel_after < <(cpu)
idle_after=$(idle)
syncs_after=$(metric coffer_journal_syncs_total)
fsync_after=$(metric coffer_journal_fsync_seconds_sum)

awk -v label="$label" -v ticks="$(getconf CLK_TCK)" -v cores="$(nproc)" -v seconds="$seconds" \
  -v rps="$rps" -v requests="$requests" -v p99="$p99" -v wrong="$wrong" \
  -v user=$((user_after - user_before)) -v kernel=$((kernel_after - kernel_before)) \
  -v idle=$((idle_after - idle_before)) \
  -v syncs="$(awk -v a="$syncs_after" -v b="$syncs_before" 'BEGIN {print a - b}')" \
  -v fsync_seconds="$(awk -v a="$fsync_after" -v b="$fsync_before" 'BEGIN {print a - b}')" '
  BEGIN {
    micros = 1e6 / ticks / requests
    printf "%s: %.0f requests/s, server CPU µs a request: user %.2f kernel %.2f total %.2f", \
      label, rps, user * micros, kernel * micros, (user + kernel) * micros
    if (syncs > 0) printf ", %.1f requests a sync, fdatasync %.0f µs", requests / syncs, fsync_seconds * 1e6 / syncs
    printf ", p99 %s, wrong %d, machine idle %.1f %%\n", p99, wrong, idle / ticks / (cores * seconds) * 100
  }'
