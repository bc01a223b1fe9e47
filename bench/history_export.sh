#!/usr/bin/env bash
# The history export into PostgreSQL: does it keep up, and what does it cost?
# Two measurements per round, each on a fresh server with the default index
# and --history-export to PostgreSQL (tables in a schema of their own):
#   live:     batches of 1,000 transfers at a fixed rate for N seconds; the
#             export's lag (sampled every 0.5 s: its maximum, and at the end),
#             the seconds it takes to reach 0 after the load, and the CPU µs
#             per transfer of the export thread and of PostgreSQL's processes
#             (per-thread CPU from /proc).
#   catch-up: TOTAL transfers loaded with the export off, then the server
#             restarted with it: transfers exported per second from the index.
# Usage: bench/history_export.sh [seconds, default 20] [transfers/s, default 100000] [rounds, default 1]
#   POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/test), TOTAL (default 2000000),
#   ACCOUNTS (default 100000).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-20}
rate=${2:-100000}
rounds=${3:-1}
url=${POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}
total=${TOTAL:-2000000}
accounts=${ACCOUNTS:-100000}
binary=target/release/coffer
port=18393
ticks=$(getconf CLK_TCK)

# shellcheck source=bench/thread_cpu.sh
source bench/thread_cpu.sh

postgres_ticks() {
  local sum=0
  for pid in $(pgrep -x postgres || pgrep postgres); do
    sum=$((sum + $(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0)))
  done
  echo "$sum"
}

export_lag() {
  curl -sf "127.0.0.1:$port/metrics" | awk '/^coffer_history_export_lag_transactions /{print $2}'
}

serve() { # DATA SCHEMA [export] → PID
  local extra=()
  [[ ${3:-} == export ]] && extra=(--history-export "$url" --history-schema "$2")
  RUST_LOG=warn "$binary" serve --listen "127.0.0.1:$port" --data-dir "$1/coffer" "${extra[@]}" >>"$1/log" 2>&1 &
  echo $!
}

wait_ready() {
  for _ in $(seq 1 300); do curl -sf -o /dev/null "127.0.0.1:$port/healthz" && return; sleep 0.1; done
  echo "the server did not start" >&2
  exit 1
}

drop_schema() {
  psql -q "$url" -c "DROP SCHEMA IF EXISTS $1 CASCADE" >/dev/null 2>&1 || true
}

# Seconds (0.1 s steps) until the export's lag reads 0; 600 at most.
wait_caught_up() {
  local started lag
  started=$(date +%s.%N)
  for _ in $(seq 1 6000); do
    lag=$(export_lag)
    [[ $lag == 0 ]] && break
    sleep 0.1
  done
  awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}'
}

live() {
  local data schema server lag_max=0 lag export_before pg_before export_after pg_after report sampler
  data=$(mktemp -d)
  schema="export_bench_$$"
  drop_schema "$schema"
  server=$(serve "$data" "$schema" export)
  wait_ready
  "$binary" bench --url "http://127.0.0.1:$port" --scenario batches --batch-size 1000 --connections 4 \
    --accounts "$accounts" --count 20 >/dev/null
  wait_caught_up >/dev/null
  export_before=$(thread_ticks "$server" '^coffer-export')
  pg_before=$(postgres_ticks)
  "$binary" bench --url "http://127.0.0.1:$port" --scenario batches --batch-size 1000 \
    --connections 16 --accounts "$accounts" --duration "$seconds" --rate $((rate / 1000)) --json >"$data/report" &
  sampler=$!
  while kill -0 "$sampler" 2>/dev/null; do
    lag=$(export_lag)
    ((${lag%.*} > lag_max)) && lag_max=${lag%.*}
    sleep 0.5
  done
  lag=$(export_lag)
  local catch_up
  catch_up=$(wait_caught_up)
  export_after=$(thread_ticks "$server" '^coffer-export')
  pg_after=$(postgres_ticks)
  report=$(cat "$data/report")
  kill "$server"
  wait "$server" 2>/dev/null || true
  rm -rf "$data"
  drop_schema "$schema"
  python3 - "$report" "$((export_after - export_before))" "$((pg_after - pg_before))" "$ticks" \
    "$lag_max" "$lag" "$catch_up" <<'PY'
import json, sys
report = json.loads(sys.argv[1])
export, postgres, ticks = (int(value) for value in sys.argv[2:5])
lag_max, lag_end, catch_up = sys.argv[5:8]
transfers = report["transfers_per_second"] * report["seconds"]
per = 1e6 / ticks / transfers
print(f"live: {report['transfers_per_second']:.0f} transfers/s; export lag max {lag_max}, at the end {lag_end}, "
      f"0 after {catch_up} s; CPU per transfer: export thread {export * per:.2f} µs, PostgreSQL {postgres * per:.2f} µs")
PY
}

catch_up() {
  local data schema server seconds_taken transactions
  data=$(mktemp -d)
  schema="export_bench_$$"
  drop_schema "$schema"
  server=$(serve "$data" "$schema")
  wait_ready
  "$binary" bench --url "http://127.0.0.1:$port" --scenario batches --batch-size 1000 --connections 16 \
    --accounts "$accounts" --count $((total / 1000)) >/dev/null
  kill "$server"
  wait "$server" 2>/dev/null || true
  server=$(serve "$data" "$schema" export)
  wait_ready
  seconds_taken=$(wait_caught_up)
  transactions=$(psql -At "$url" -c "SELECT count(*) FROM $schema.transactions")
  kill "$server"
  wait "$server" 2>/dev/null || true
  rm -rf "$data"
  drop_schema "$schema"
  awk -v n="$transactions" -v s="$seconds_taken" \
    'BEGIN {printf "catch-up: %d transactions exported in %.1f s: %.0f transactions/s\n", n, s, n / s}'
}

echo "export to PostgreSQL; live: batches of 1,000 at $rate transfers/s for $seconds s; catch-up: $total transfers"
for round in $(seq 1 "$rounds"); do
  echo "round $round $(live)"
  echo "round $round $(catch_up)"
done
