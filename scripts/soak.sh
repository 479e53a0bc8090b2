#!/usr/bin/env bash
# Soak run (not part of the default test run): the release `echo` with a master and two
# workers under wrk's load for SOAK_SECONDS (default 600), the resident memory of the master
# and of each worker sampled every 10 s, errors counted, and a summary printed.
#
#   scripts/soak.sh                  # ten minutes
#   SOAK_SECONDS=60 scripts/soak.sh  # one minute
#
# Settings (environment): SOAK_SECONDS (600), SOAK_CONNECTIONS (wrk's -c, 32), SOAK_THREADS
# (wrk's -t, 1), SOAK_WORKERS (2). Needs wrk: installed with apt-get when missing (as root).
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_TOTAL=${SOAK_SECONDS:-600}
CONNECTIONS=${SOAK_CONNECTIONS:-32}
THREADS=${SOAK_THREADS:-1}
WORKERS=${SOAK_WORKERS:-2}
INTERVAL=10

if ! command -v wrk >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk
fi

cargo build --release -q -p examples --bin echo

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
PORT=$(free_port)
STATS=$(free_port)
WORK=$(mktemp -d)
LOG="$WORK/echo.log"
SAMPLES="$WORK/rss.tsv"

target/release/echo --http "127.0.0.1:$PORT" --stats "127.0.0.1:$STATS" --workers "$WORKERS" \
  >"$LOG" 2>&1 &
MASTER=$!
cleanup() {
  if kill -0 "$MASTER" 2>/dev/null; then
    kill -TERM "$MASTER" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$MASTER" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$MASTER" 2>/dev/null || true
  fi
}
trap cleanup EXIT

for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$STATS/metrics" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -sf "http://127.0.0.1:$PORT/warmup" >/dev/null

metric() { # name (with labels) -> value from /metrics
  curl -sf "http://127.0.0.1:$STATS/metrics" | awk -v n="$1" '$1 == n { print $2 }'
}
worker_pids() {
  curl -sf "http://127.0.0.1:$STATS/metrics" |
    sed -n 's/^gateway_worker_requests_total{pid="\([0-9]*\)"}.*/\1/p' | sort -n
}
rss_kib() {
  awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0
}
sample() { # elapsed -> one line per process: elapsed, role, pid, VmRSS KiB
  echo -e "$1\tmaster\t$MASTER\t$(rss_kib "$MASTER")" >>"$SAMPLES"
  for pid in $(worker_pids); do
    echo -e "$1\tworker\t$pid\t$(rss_kib "$pid")" >>"$SAMPLES"
  done
}

echo "soak: echo --workers $WORKERS on 127.0.0.1:$PORT, wrk -t$THREADS -c$CONNECTIONS for ${SECONDS_TOTAL}s"
wrk -t"$THREADS" -c"$CONNECTIONS" -d"${SECONDS_TOTAL}s" --latency "http://127.0.0.1:$PORT/soak?x=1" \
  >"$WORK/wrk.txt" 2>&1 &
WRK=$!
START=$(date +%s)
sample 0
while kill -0 "$WRK" 2>/dev/null; do
  sleep "$INTERVAL"
  kill -0 "$WRK" 2>/dev/null || break
  sample $(( $(date +%s) - START ))
done
wait "$WRK" || true
sample $(( $(date +%s) - START ))

echo
echo "== wrk"
cat "$WORK/wrk.txt"
echo
echo "== resident memory (VmRSS, KiB), sampled every ${INTERVAL}s"
awk -F'\t' '
  { key = $2 " " $3
    if (!(key in first)) { first[key] = $4; order[++n] = key; min[key] = $4; max[key] = $4 }
    last[key] = $4; if ($4 > max[key]) max[key] = $4; if ($4 < min[key]) min[key] = $4; count[key]++ }
  END { printf "%-16s %8s %8s %8s %8s %8s\n", "process", "samples", "first", "min", "max", "last"
        for (i = 1; i <= n; i++) { k = order[i]
          printf "%-16s %8d %8d %8d %8d %8d\n", k, count[k], first[k], min[k], max[k], last[k] } }
' "$SAMPLES"

REQUESTS=$(metric gateway_requests_total)
SOCKET_ERRORS=$(awk '/Socket errors/ { n = 0; for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+,?$/) n += $i; print n }' "$WORK/wrk.txt")
NON_2XX=$(awk '/Non-2xx/ { print $NF }' "$WORK/wrk.txt")
DIED=$(grep -c "worker died" "$LOG" || true)
echo
echo "== summary"
echo "requests served (server's count): ${REQUESTS:-?}"
echo "wrk socket errors: ${SOCKET_ERRORS:-0}"
echo "wrk non-2xx answers: ${NON_2XX:-0}"
echo "workers died: $DIED"
curl -sf "http://127.0.0.1:$STATS/metrics" | sed -n 's/^gateway_worker_requests_total{pid="\([0-9]*\)"} /requests served by worker \1: /p'
echo "request duration histogram (cumulative, seconds):"
curl -sf "http://127.0.0.1:$STATS/metrics" | sed -n 's/^gateway_request_duration_seconds_bucket{le="\([^"]*\)"} /  <= \1: /p' | head -6
for limit in 400 408 413 431 503; do
  echo "limit $limit hits: $(metric "gateway_limit_hits_total{limit=\"$limit\"}")"
done
echo "server log: $LOG (samples: $SAMPLES)"
if [ "${SOCKET_ERRORS:-0}" != 0 ] || [ -n "${NON_2XX:-}" ] || [ "$DIED" != 0 ]; then
  echo "soak: FAILED (errors above)"
  exit 1
fi
echo "soak: no error"
