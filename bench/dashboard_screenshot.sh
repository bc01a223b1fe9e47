#!/usr/bin/env bash
# The dashboard's panels rendered by Prometheus's own UI in headless
# Chromium, while `coffer bench` loads a server with the history index and
# Kafka on: the picture in the README. Grafana is not installable here
# (deploy/ runs the same dashboard in Grafana where Docker is).
#
# Usage: bench/dashboard_screenshot.sh [OUT.png] [SECONDS] [RATE]
# Needs: a release build, prometheus, chromium, a Kafka broker at
# $KAFKA (default 127.0.0.1:9092).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-docs/dashboard.png}"
seconds="${2:-90}"
rate="${3:-5000}"
kafka="${KAFKA:-127.0.0.1:9092}"
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT

port=$((20000 + RANDOM % 20000))
prometheus_port=$((port + 1))
target/release/coffer --listen "127.0.0.1:$port" --data-dir "$work/data" \
  --kafka-brokers "$kafka" --kafka-topic-prefix "screenshot-$RANDOM." >"$work/coffer.log" 2>&1 &
cat >"$work/prometheus.yml" <<YAML
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: coffer
    static_configs:
      - targets: ['127.0.0.1:$port']
YAML
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
  --web.listen-address="127.0.0.1:$prometheus_port" >"$work/prometheus.log" 2>&1 &
for _ in $(seq 1 100); do curl -sf "127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.2; done
target/release/coffer bench --url "http://127.0.0.1:$port" --scenario transfers --connections 32 \
  --rate "$rate" --duration "$seconds" >"$work/bench.log" 2>&1 &
# A lookup of a missing account every second: the errors panel has a line.
while sleep 1; do curl -s "127.0.0.1:$port/v1/accounts/nobody" >/dev/null; done &
sleep $((seconds - 5))

# One Prometheus graph per panel (the panel's first query, Grafana's rate
# window replaced by a fixed one, the last minute up to now), each
# shot on its own, then laid out as the dashboard's grid.
end=$(date -u '+%Y-%m-%d %H:%M:%S')
python3 - "$prometheus_port" "$end" "$work" <<'PY' | while read -r index url; do
import json, sys, urllib.parse
port, end, work = sys.argv[1:4]
dashboard = json.load(open("deploy/grafana/coffer.json"))
for index, panel in enumerate(dashboard["panels"]):
    expr = panel["targets"][0]["expr"].replace("$__rate_interval", "10s")
    query = urllib.parse.urlencode({"g0.expr": expr, "g0.tab": "0", "g0.range_input": "1m", "g0.end_input": end})
    print(index, f"http://127.0.0.1:{port}/graph?{query}")
PY
  chromium --headless=new --no-sandbox --disable-gpu --hide-scrollbars --window-size=700,1000 \
    --virtual-time-budget=10000 --screenshot="$work/panel-$index.png" "$url" >/dev/null 2>&1
done
python3 - "$work" <<'PY'
import html, json, sys
work = sys.argv[1]
dashboard = json.load(open("deploy/grafana/coffer.json"))
cells = "".join(
    f'<div class="cell"><h2>{html.escape(panel["title"])}</h2><div class="clip"><img src="panel-{index}.png"></div></div>'
    for index, panel in enumerate(dashboard["panels"])
)
style = """body{margin:0;background:#fff;font-family:sans-serif;display:grid;grid-template-columns:700px 700px}
.cell{height:460px;overflow:hidden;border:1px solid #ddd;box-sizing:border-box}h2{font-size:16px;margin:6px 10px}
.clip{height:420px;overflow:hidden}img{display:block;margin-top:-470px}"""
open(f"{work}/grid.html", "w").write(f"<html><head><style>{style}</style></head><body>{cells}</body></html>")
PY
rows=$(( ($(python3 -c 'import json;print(len(json.load(open("deploy/grafana/coffer.json"))["panels"]))') + 1) / 2 ))
chromium --headless=new --no-sandbox --disable-gpu --hide-scrollbars --window-size=1400,$((rows * 460)) \
  --screenshot="$out" "file://$work/grid.html" >/dev/null 2>&1
echo "wrote $out"
