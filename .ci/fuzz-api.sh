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
# Wait for the server, then give the fuzzer one account to find.
python3 - <<'PY'
import time, urllib.request
for _ in range(100):
    try:
        urllib.request.urlopen("http://127.0.0.1:18581/healthz", timeout=1).read()
        break
    except OSError:
        time.sleep(0.1)
request = urllib.request.Request("http://127.0.0.1:18581/v1/accounts", b'{"id": "a", "unit": "X"}', {"Content-Type": "application/json"})
urllib.request.urlopen(request, timeout=5).read()
PY
# One worker: Python 3.11's parser is not thread-safe under hypothesis's
# lambda descriptions ("AST constructor recursion depth mismatch").
"$st" --config-file .ci/schemathesis.toml run http://127.0.0.1:18581/openapi.json --checks all \
  --max-examples 60 --workers 1 --seed 177668419094083373867014254906695340999
if grep -qi panic "$log"; then
  echo "the server panicked:"; grep -i panic "$log"; exit 1
fi
