#!/usr/bin/env bash
# User-space instructions one single transfer costs the server, from
# callgrind: deterministic, so two builds compare exactly on this noisy
# machine. Runs the server under callgrind twice (history off), with FEW
# and MANY sequential transfers over one keep-alive connection, and
# divides the difference by MANY - FEW, which cancels startup, shutdown
# and the other fixed costs.
# Usage: bench/request_instructions.sh BINARY [FEW, default 1000] [MANY, default 6000]
set -euo pipefail
cd "$(dirname "$0")/.."
binary=$1
few=${2:-1000}
many=${3:-6000}
port=18611
command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind; }

# count N: total instructions of a server run that answers N transfers.
count() {
  local data pid
  data=$(mktemp -d)
  valgrind --tool=callgrind --callgrind-out-file="$data/callgrind.out" \
    "$binary" serve --listen "127.0.0.1:$port" --data-dir "$data/coffer" --history-url off >"$data/log" 2>&1 &
  pid=$!
  for _ in $(seq 1 600); do curl -s -o /dev/null "127.0.0.1:$port/healthz" && break; sleep 0.2; done
  python3 - "$port" "$1" <<'PY'
import http.client, json, sys
port, count = int(sys.argv[1]), int(sys.argv[2])
connection = http.client.HTTPConnection("127.0.0.1", port)
def post(path, body):
    connection.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    response = connection.getresponse()
    text = response.read()
    assert response.status in (200, 201), (response.status, text)
for account in ("a", "b"):
    post("/v1/accounts", {"id": account, "unit": "X"})
post("/v1/deposits", {"id": "fund", "account": "a", "amount": 10**12})
for number in range(count):
    post("/v1/transfers", {"id": f"t-{number}", "from": "a", "to": "b", "amount": 1})
PY
  kill -TERM "$pid"
  wait "$pid" || true
  awk '/^summary:/ {print $2}' "$data/callgrind.out"
  rm -rf "$data"
}

small=$(count "$few")
large=$(count "$many")
echo "$(basename "$binary"): $(( (large - small) / (many - few) )) instructions a transfer ($few: $small, $many: $large)"
