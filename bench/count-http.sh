#!/bin/bash
# Instructions per HTTP request of a server binary, counted by callgrind: a measure the noise of
# a shared machine does not blur (wrk's requests/s move by 10-40% between runs here).
#
#   bench/count-http.sh BINARY [REQUESTS] [-- SERVER FLAGS...]
#
# Starts BINARY with `--http 127.0.0.1:18090` (plus the flags given, default `--non-blocking`)
# under callgrind with instrumentation off, warms it with 1,000 keep-alive GETs from ab, counts
# REQUESTS more (default 5,000, 10 connections), and prints the instructions per request of the
# whole server process (every thread). Compare two builds with runs of each, interleaved; the
# figure moves by about 1% between runs. With KEEP=DIR, the callgrind output is left in DIR for
# callgrind_annotate. Needs valgrind and ab (apache2-utils).
set -euo pipefail
BIN=$1
N=${2:-5000}
shift $(( $# >= 2 ? 2 : 1 ))
[ "${1:-}" = "--" ] && shift
FLAGS=("$@")
[ ${#FLAGS[@]} -eq 0 ] && FLAGS=(--non-blocking)
OUT=${KEEP:-$(mktemp -d)}
mkdir -p "$OUT"
rm -f "$OUT"/cg.out*
valgrind --tool=callgrind --callgrind-out-file="$OUT/cg.out" --instr-atstart=no \
    "$BIN" --http 127.0.0.1:18090 "${FLAGS[@]}" >/dev/null 2>"$OUT/stderr" &
PID=$!
for _ in $(seq 100); do
    curl -s -o /dev/null http://127.0.0.1:18090/ && break
    sleep 0.2
done
ab -q -k -n 1000 -c 10 http://127.0.0.1:18090/ >/dev/null
callgrind_control -i on "$PID" >/dev/null 2>&1
ab -q -k -n "$N" -c 10 http://127.0.0.1:18090/ | grep -E "^(Complete|Failed) requests"
callgrind_control -i off "$PID" >/dev/null 2>&1
callgrind_control -d "$PID" >/dev/null 2>&1
kill -INT "$PID"
sleep 1
kill -9 "$PID" 2>/dev/null || true
wait "$PID" 2>/dev/null || true
TOTAL=$(cat "$OUT"/cg.out* | awk '/^(summary|totals):/ { s += $2 } END { print s }')
echo "instructions per request: $((TOTAL / N))"
[ -n "${KEEP:-}" ] || rm -rf "$OUT"
