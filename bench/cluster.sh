#!/usr/bin/env bash
# Cluster benchmark on loopback: tansu (in memory), PostgreSQL, three coffer
# nodes with six shards.
#   1. latency at a fixed rate: `coffer bench` sends single transfers (each
#      within one shard key) at RATE/s to one node for SECONDS; p50 and p99
#      as the client sees them;
#   2. CPU per transfer during that run: user+system time from /proc of the
#      three coffer processes together and of the broker, divided by the
#      transfers sent;
#   3. failover, ROUNDS times: kill -9 the owner of one shard, then write to
#      that shard through another node every 50 ms; the time from the kill
#      to the first write answered 201 (the killed node is restarted after).
#   With ACROSS=1 the transfers go to an account of another shard key, so
#   most cross shards and run as sagas; the log entries appended per
#   transfer (all shards' partitions) are printed too.
#   With PROFILE=1, `perf record` samples the broker and the three nodes
#   during the latency run, and the hottest symbols of each are printed.
# Usage: bench/cluster.sh [SECONDS=20] [RATE=1000] [ROUNDS=3]
# Needs: tansu on the PATH, PostgreSQL at COFFER_BENCH_POSTGRES_URL
# (default postgres://postgres@127.0.0.1:5432/test).
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RUN=${1:-20}
RATE=${2:-1000}
ROUNDS=${3:-3}
DATABASE=${COFFER_BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}
BROKER_PORT=19392
PORTS=(19381 19382 19383)
NAME="bench_cluster_$$"
LEASE_TTL_MS=${LEASE_TTL_MS:-3000}

cargo build --release -q -p coffer --bin coffer
data=$(mktemp -d)
declare -A pids
cleanup() {
  kill "${broker_pid:-}" "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$data"
  # The cluster's schemas: its own and each shard's history.
  local sql="DROP SCHEMA IF EXISTS $NAME CASCADE;"
  for shard in 0 1 2 3 4 5; do sql+="DROP SCHEMA IF EXISTS ${NAME}_history_$shard CASCADE;"; done
  psql -q "$DATABASE" -c "$sql" >/dev/null 2>&1 || true
}
trap cleanup EXIT

# BROKER_STORAGE=sqlite selects tansu's SQLite engine (a file in the run's
# directory) instead of its in-memory one.
case "${BROKER_STORAGE:-memory}" in
  memory) storage=memory://tansu/ ;;
  sqlite) storage=sqlite://tansu.db ;;
  *) echo "BROKER_STORAGE: memory or sqlite" >&2; exit 2 ;;
esac
(cd "$data" && exec tansu broker --listener-url tcp://127.0.0.1:$BROKER_PORT \
  --advertised-listener-url tcp://127.0.0.1:$BROKER_PORT --storage-engine "$storage") >"$data/tansu.log" 2>&1 &
broker_pid=$!
for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/$BROKER_PORT) 2>/dev/null && break; sleep 0.1; done

start_node() {
  local node=$1
  RUST_LOG=warn target/release/coffer --listen "127.0.0.1:${PORTS[$node]}" --data-dir "$data/n$node" \
    --cluster "$DATABASE" --cluster-schema "$NAME" --kafka-brokers "127.0.0.1:$BROKER_PORT" \
    --kafka-topic-prefix "$NAME." --node-id "n$node" --shards 6 --lease-ttl-ms "$LEASE_TTL_MS" \
    >>"$data/n$node.log" 2>&1 &
  pids[$node]=$!
}
wait_ready() {
  for port in "${PORTS[@]}"; do
    for _ in $(seq 1 300); do
      [ "$(curl -s -o /dev/null -w '%{http_code}' "127.0.0.1:$port/readyz")" = 200 ] && break
      sleep 0.2
    done
  done
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

start_node 0
sleep 2
start_node 1
start_node 2
wait_ready

echo "== latency at $RATE transfers/s for $SECONDS_PER_RUN s (single transfers, one node)"
before_nodes=0
for pid in "${pids[@]}"; do before_nodes=$((before_nodes + $(cpu_ticks "$pid"))); done
before_broker=$(cpu_ticks "$broker_pid")
if [ "${PROFILE:-0}" = 1 ]; then
  perf record -F 499 -g -o "$data/broker.perf" -p "$broker_pid" -- sleep "$SECONDS_PER_RUN" >/dev/null 2>&1 &
  perf_pids=($!)
  perf record -F 499 -g -o "$data/nodes.perf" -p "$(IFS=,; echo "${pids[*]}")" -- sleep "$SECONDS_PER_RUN" \
    >/dev/null 2>&1 &
  perf_pids+=($!)
fi
log_entries() {
  curl -s "127.0.0.1:${PORTS[0]}/v1/cluster" |
    python3 -c 'import json, sys; print(sum(s["log_end"] for s in json.load(sys.stdin)["shards"]))'
}
across=()
[ "${ACROSS:-0}" = 1 ] && across=(--across-keys)
entries_before=$(log_entries)
target/release/coffer bench --url "http://127.0.0.1:${PORTS[0]}" --scenario transfers --rate "$RATE" \
  --duration "$SECONDS_PER_RUN" --connections 64 --accounts 1200 --shard-keys 96 "${across[@]}" --json \
  >"$data/bench.json"
sleep 4  # the owners report their log ends every second, the view follows
entries_after=$(log_entries)
after_nodes=0
for pid in "${pids[@]}"; do after_nodes=$((after_nodes + $(cpu_ticks "$pid"))); done
after_broker=$(cpu_ticks "$broker_pid")
python3 - "$data/bench.json" "$((after_nodes - before_nodes))" "$((after_broker - before_broker))" "$(getconf CLK_TCK)" \
  "$((entries_after - entries_before))" <<'EOF'
import json, sys
report = json.load(open(sys.argv[1]))
nodes, broker, hz, entries = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
done, latency = report["operations"], report["latency_ms"]
print(f"transfers {done} ({report['transfers_per_second']:.0f}/s), errors {report['errors']}")
print(f"latency ms: p50 {latency['p50']:.2f}  p99 {latency['p99']:.2f}  max {latency['max']:.2f}")
print(f"CPU per transfer: coffer nodes {nodes / hz / done * 1e6:.0f} us, broker {broker / hz / done * 1e6:.0f} us")
print(f"log entries per transfer (with the shards' ticks): {entries / done:.2f}")
EOF
if [ "${PROFILE:-0}" = 1 ]; then
  wait "${perf_pids[@]}" 2>/dev/null || true
  for who in broker nodes; do
    for sort in comm symbol; do
      echo "-- $who: self time by $sort"
      perf report -i "$data/$who.perf" --no-children --sort "$sort" -g none --stdio 2>/dev/null |
        grep -E '^ +[0-9]+\.[0-9]+%' | head -12 | cut -c1-140 | sed 's/ *$//' || true
    done
    # PROFILE_OUT=DIR keeps the recordings (perf report -i DIR/broker.perf).
    if [ -n "${PROFILE_OUT:-}" ]; then mkdir -p "$PROFILE_OUT" && cp "$data/$who.perf" "$PROFILE_OUT/"; fi
  done
fi

echo "== failover (lease TTL $LEASE_TTL_MS ms), $ROUNDS rounds"
for round in $(seq 1 "$ROUNDS"); do
  account="failover:{r$round}"
  owner=$(curl -s -G "127.0.0.1:${PORTS[0]}/v1/cluster" --data-urlencode "account=$account" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["account"]["owner"])')
  victim=${owner#n}
  witness=$(((victim + 1) % 3))
  curl -s -o /dev/null "127.0.0.1:${PORTS[$witness]}/v1/accounts" -d "{\"id\": \"$account\", \"unit\": \"BENCH\"}"
  killed=$(date +%s.%N)
  kill -9 "${pids[$victim]}"
  step=0
  while :; do
    step=$((step + 1))
    code=$(curl -s -o /dev/null -m 20 -w '%{http_code}' "127.0.0.1:${PORTS[$witness]}/v1/deposits" \
      -d "{\"id\": \"failover-$round-$step\", \"account\": \"$account\", \"amount\": 1}" || true)
    [ "$code" = 201 ] && break
    sleep 0.05
  done
  answered=$(date +%s.%N)
  echo "round $round: killed n$victim (owner of $account's shard); a write through n$witness answered 201 after $(python3 -c "print(f'{$answered - $killed:.2f}')") s"
  start_node "$victim"
  wait_ready
done
