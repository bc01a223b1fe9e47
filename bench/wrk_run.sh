# shellcheck shell=bash
# Sourced by the bench scripts. wrk_run URL SCRIPT CONNECTIONS SECONDS prints
# "requests/s p50 p99 non-2xx wrong requests" for one wrk run (2 threads,
# latency on); "wrong" is what the script's done() reports (0 when it
# reports nothing), "requests" how many were answered.
wrk_run() {
  local out rps p50 p99 non2xx wrong requests
  out=$(wrk -t2 -c"$3" -d"$4s" --latency -s "$2" "$1")
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  non2xx=$(awk '/Non-2xx/ {print $5}' <<<"$out")
  wrong=$(awk '/^wrong answers:/ {print $3}' <<<"$out")
  requests=$(awk '/requests in/ {print $1}' <<<"$out")
  printf '%s %s %s %s %s %s\n' "$rps" "$p50" "$p99" "${non2xx:-0}" "${wrong:-0}" "$requests"
}

# wrk reports latency with units (812.00us, 1.23ms, 2.01s): milliseconds.
wrk_milliseconds() {
  awk -v t="$1" 'BEGIN {
    if (t ~ /us$/) { sub(/us$/, "", t); printf "%.2f", t / 1000 }
    else if (t ~ /ms$/) { sub(/ms$/, "", t); printf "%.2f", t }
    else if (t ~ /m$/) { sub(/m$/, "", t); printf "%.0f", t * 60000 }
    else { sub(/s$/, "", t); printf "%.2f", t * 1000 } }'
}
