#!/bin/bash
# Instructions per request of a server binary, counted by callgrind: a measure the noise of a
# shared machine does not blur (wrk's requests/s move by 10-40% between runs here).
#
#   bench/count.sh BINARY http|fastcgi|uwsgi [REQUESTS] [-- SERVER FLAGS...]
#
# Starts BINARY with `--http`, `--fastcgi` or `--uwsgi 127.0.0.1:18095` (plus the flags given,
# default `--non-blocking`) under callgrind with instrumentation off. HTTP is loaded straight;
# FastCGI and uwsgi behind nginx on 127.0.0.1:18096, configured as scripts/bench.sh does
# (FastCGI: `fastcgi_keep_conn on` with upstream keepalive; uwsgi: a connection per request).
# Warms the server with 1,000 GETs from ab (keep-alive on the client side), counts REQUESTS
# more (default 5,000, 10 connections) and prints the server's instructions per request (every
# thread; nginx is not counted). Compare two builds with runs of each, interleaved; the figure
# moves by about 1% between runs. With KEEP=DIR, the callgrind output is left in DIR for
# callgrind_annotate. Needs valgrind, ab (apache2-utils) and, for FastCGI and uwsgi, nginx.
set -euo pipefail
BIN=$1
PROTO=$2
N=${3:-5000}
shift $(( $# >= 3 ? 3 : 2 ))
[ "${1:-}" = "--" ] && shift
FLAGS=("$@")
[ ${#FLAGS[@]} -eq 0 ] && FLAGS=(--non-blocking)
OUT=${KEEP:-$(mktemp -d)}
mkdir -p "$OUT"
rm -f "$OUT"/cg.out*
NGINX_DIR=$(mktemp -d)
URL=http://127.0.0.1:18096/
case "$PROTO" in
http)
    URL=http://127.0.0.1:18095/
    UPSTREAM=""
    LOCATION=""
    ;;
fastcgi)
    UPSTREAM="upstream backend { server 127.0.0.1:18095; keepalive 50; }"
    LOCATION="
      fastcgi_param QUERY_STRING \$query_string;
      fastcgi_param REQUEST_METHOD \$request_method;
      fastcgi_param CONTENT_TYPE \$content_type;
      fastcgi_param CONTENT_LENGTH \$content_length;
      fastcgi_param SCRIPT_NAME \"\";
      fastcgi_param PATH_INFO \$uri;
      fastcgi_param REQUEST_URI \$request_uri;
      fastcgi_param DOCUMENT_URI \$document_uri;
      fastcgi_param DOCUMENT_ROOT \$document_root;
      fastcgi_param SERVER_PROTOCOL \$server_protocol;
      fastcgi_param REQUEST_SCHEME \$scheme;
      fastcgi_param GATEWAY_INTERFACE CGI/1.1;
      fastcgi_param SERVER_SOFTWARE nginx/\$nginx_version;
      fastcgi_param REMOTE_ADDR \$remote_addr;
      fastcgi_param REMOTE_PORT \$remote_port;
      fastcgi_param SERVER_ADDR \$server_addr;
      fastcgi_param SERVER_PORT \$server_port;
      fastcgi_param SERVER_NAME \$server_name;
      fastcgi_param HTTP_HOST \$host;
      fastcgi_pass backend;
      fastcgi_keep_conn on;"
    ;;
uwsgi)
    UPSTREAM="upstream backend { server 127.0.0.1:18095; }"
    LOCATION="
      include /etc/nginx/uwsgi_params;
      uwsgi_pass backend;"
    ;;
*)
    echo "count.sh: the protocol is http, fastcgi or uwsgi, not $PROTO" >&2
    exit 2
    ;;
esac
cat >"$NGINX_DIR/nginx.conf" <<EOF
worker_processes 1;
daemon on;
pid $NGINX_DIR/nginx.pid;
error_log $NGINX_DIR/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $NGINX_DIR/body;
  proxy_temp_path $NGINX_DIR/proxy;
  fastcgi_temp_path $NGINX_DIR/fastcgi;
  uwsgi_temp_path $NGINX_DIR/uwsgi;
  scgi_temp_path $NGINX_DIR/scgi;
  keepalive_requests 1000000;
  $UPSTREAM
  server {
    listen 127.0.0.1:18096;
    location / {$LOCATION
    }
  }
}
EOF
valgrind --tool=callgrind --callgrind-out-file="$OUT/cg.out" --instr-atstart=no \
    "$BIN" "--$PROTO" 127.0.0.1:18095 "${FLAGS[@]}" >/dev/null 2>"$OUT/stderr" &
PID=$!
[ "$PROTO" = http ] || nginx -p "$NGINX_DIR" -c "$NGINX_DIR/nginx.conf"
stop() {
    [ -f "$NGINX_DIR/nginx.pid" ] && kill "$(cat "$NGINX_DIR/nginx.pid")" 2>/dev/null || true
    kill -INT "$PID" 2>/dev/null || true
    sleep 1
    kill -9 "$PID" 2>/dev/null || true
    rm -rf "$NGINX_DIR"
}
trap stop EXIT
for _ in $(seq 100); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$URL")" = 200 ] && break
    sleep 0.2
done
ab -q -k -n 1000 -c 10 "$URL" >/dev/null
callgrind_control -i on "$PID" >/dev/null 2>&1
ab -q -k -n "$N" -c 10 "$URL" | grep -E "^(Complete|Failed) requests"
callgrind_control -i off "$PID" >/dev/null 2>&1
callgrind_control -d "$PID" >/dev/null 2>&1
stop
trap - EXIT
wait "$PID" 2>/dev/null || true
TOTAL=$(cat "$OUT"/cg.out* | awk '/^(summary|totals):/ { s += $2 } END { print s }')
echo "instructions per request: $((TOTAL / N))"
[ -n "${KEEP:-}" ] || rm -rf "$OUT"
