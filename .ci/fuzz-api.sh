#!/usr/bin/env bash
# Contract testing of the running server against its own OpenAPI document
# (schemathesis, every check): thousands of generated requests, schema-valid
# and schema-violating, stateful sequences included. A failure is a 5xx, an
# answer or header the document does not describe, a schema-valid request
# refused as malformed (400), a schema-violating one accepted, or a panic in
# the server log. Settings and why: .ci/schemathesis.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
SCHEMATHESIS_VERSION=4.32.5
# In a virtual environment of its own: Debian's Python refuses packages
# installed system-wide with pip (PEP 668).
venv="$HOME/.local/share/coffer/schemathesis-$SCHEMATHESIS_VERSION"
if [ ! -x "$venv/bin/st" ]; then
  python3 -m venv "$venv" 2>/dev/null || {
    apt-get install -y -qq python3-venv >/dev/null || { apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null; }
    python3 -m venv "$venv"
  }
  "$venv/bin/pip" install -q "schemathesis==$SCHEMATHESIS_VERSION"
fi
st="$venv/bin/st"
data=$(mktemp -d)
log=$(mktemp)
RUST_LOG=warn target/release/coffer --listen 127.0.0.1:18581 --data-dir "$data" 2>"$log" &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$data" "$log"' EXIT
# Wait for the server, then make what the document's examples name
# (accounts user:42, user:7 and fees in USD/2, money on user:42, the product
# sneaker-42), so that requests built from them reach the success paths.
python3 - <<'PY'
import json, time, urllib.request
base = "http://127.0.0.1:18581"
for _ in range(100):
    try:
        urllib.request.urlopen(base + "/healthz", timeout=1).read()
        break
    except OSError:
        time.sleep(0.1)
def post(path, body):
    request = urllib.request.Request(base + path, json.dumps(body).encode(), {"Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=5).read()
for account in ["user:42", "user:7", "fees"]:
    post("/v1/accounts", {"id": account, "unit": "USD/2"})
post("/v1/deposits", {"account": "user:42", "amount": 10**12})
post("/v1/products", {"id": "sneaker-42", "stock": 10**6})
PY
# One worker: Python 3.11's parser is not thread-safe under hypothesis's
# lambda descriptions ("AST constructor recursion depth mismatch").
"$st" --config-file .ci/schemathesis.toml run http://127.0.0.1:18581/openapi.json --checks all \
  --max-examples 60 --workers 1 --seed 177668419094083373867014254906695340999
if grep -qi panic "$log"; then
  echo "the server panicked:"; grep -i panic "$log"; exit 1
fi
