#!/usr/bin/env python3
"""The benchmark run: every interface of this project against its peers, on
127.0.0.1, in one run; writes BENCHMARKS.md and the charts under docs/bench/.

Started by scripts/bench.sh, which installs the peers and builds everything first. Standard
library only. Settings (environment):

  BENCH_DURATION     seconds of each measured run (10)
  BENCH_REPEATS      measured runs of each case, in rounds that load every case of a table
                     once; the table shows the median and the spread (3)
  BENCH_WARMUP       seconds of load before the measured runs of each case (2)
  BENCH_CONNECTIONS  concurrent connections of the load generator (50)
  BENCH_POOL         processes of the C libfcgi pool and of PHP-FPM (BENCH_CONNECTIONS)
  BENCH_IDLE         idle keep-alive connections for the memory measurement (5000)
  BENCH_LOAD_CPU     the core wrk is pinned to (the last one)
  BENCH_SERVER_CPUS  the cores every server (and nginx, lighttpd) is pinned to (all the others)
  BENCH_ONLY         comma-separated sections to run (http,idle,ceiling,fastcgi,uwsgi,cgi,
                     inprocess); all by default. A partial run writes BENCHMARKS.partial.md.
  BENCH_PROFILE      1 (default) to record a perf profile of our server where a target is missed
"""

import datetime
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import http.client

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEERS = os.path.join(ROOT, "bench", "peers")
BIN = os.path.join(ROOT, "target", "release")
PEER_BIN = os.path.join(ROOT, "target", "bench-peers")
# bench-app built as docs/guide/03-deploying.md recommends for CGI (scripts/bench.sh builds it):
# `-C relocation-model=static -C target-feature=+crt-static`.
CGI_STATIC_BIN = os.environ.get(
    "BENCH_CGI_STATIC_BIN", os.path.join(ROOT, "target", "cgi-static", "bench-app"))
WORK = os.environ.get("BENCH_WORK", "/tmp/gateway-bench")
# A partial run (BENCH_ONLY) writes its report and charts under BENCH_WORK, leaving the
# committed ones alone.
CHARTS = os.path.join(ROOT, "docs", "bench")
os.makedirs(WORK, exist_ok=True)

DURATION = float(os.environ.get("BENCH_DURATION", "10"))
REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))
WARMUP = float(os.environ.get("BENCH_WARMUP", "2"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "50"))
POOL = int(os.environ.get("BENCH_POOL", str(CONNECTIONS)))
IDLE = int(os.environ.get("BENCH_IDLE", "5000"))
NPROC = os.cpu_count() or 1
LOAD_CPU = os.environ.get("BENCH_LOAD_CPU", str(NPROC - 1))
SERVER_CPUS = os.environ.get(
    "BENCH_SERVER_CPUS", ",".join(str(c) for c in range(NPROC - 1)) if NPROC > 1 else "0"
)
SERVER_CORES = len(SERVER_CPUS.split(","))
ONLY = [s for s in os.environ.get("BENCH_ONLY", "").split(",") if s]
PROFILE = os.environ.get("BENCH_PROFILE", "1") == "1"
if ONLY:
    CHARTS = os.path.join(WORK, "docs", "bench")
BODY_BYTES = 65536
HELLO = b"Hello, world!\n"
PYTHON = os.environ.get("BENCH_PYTHON") or sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(*args):
    print("[bench %s]" % time.strftime("%H:%M:%S"), *args, file=sys.stderr, flush=True)


def wanted(section):
    return not ONLY or section in ONLY


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=20.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


# ---------------------------------------------------------------------------------------------
# Processes: each server in its own session, pinned to the server cores; CPU and peak memory
# of the whole session from /proc.


def session_pids(sid):
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[3]) == sid:  # field 6 of stat: the session id
            pids.append(int(entry))
    return pids


def cpu_seconds(pids):
    """CPU time of the processes, with that of their waited-for children. Per process, the
    larger of utime+stime (clock ticks, which miss processes that run in short bursts, as a
    pool of 50 responders does) and the sum of its threads' run time from schedstat
    (nanoseconds, but only of the threads alive now); plus cutime+cstime."""
    total = 0.0
    for pid in pids:
        try:
            with open("/proc/%d/stat" % pid) as f:
                stat = f.read()
            fields = stat[stat.rindex(")") + 2 :].split()
            ticks = (int(fields[11]) + int(fields[12])) / CLK_TCK
            children = (int(fields[13]) + int(fields[14])) / CLK_TCK
            run = 0.0
            for task in os.listdir("/proc/%d/task" % pid):
                try:
                    with open("/proc/%d/task/%s/schedstat" % (pid, task)) as f:
                        run += int(f.read().split()[0]) / 1e9
                except OSError:
                    pass
        except (OSError, ValueError, IndexError):
            continue
        total += max(ticks, run) + children
    return total


def status_kib(pid, key):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class Server:
    """A process started in its own session, pinned to the server cores."""

    def __init__(self, name, argv, cwd=None, env=None, port=None, ready=None):
        self.name = name
        self.log_path = os.path.join(WORK, "%s.log" % re.sub(r"[^A-Za-z0-9]+", "-", name))
        self.log = open(self.log_path, "wb")
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            ["taskset", "-c", SERVER_CPUS] + argv,
            cwd=cwd,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.sid = self.proc.pid
        if port is not None and not wait_port(port):
            self.stop()
            raise RuntimeError("%s did not listen on %d; see %s" % (name, port, self.log_path))
        if ready:
            ready()

    def pids(self):
        return session_pids(self.sid)

    def cpu(self):
        return cpu_seconds(self.pids())

    def peak_rss_kib(self):
        return sum(status_kib(pid, "VmHWM") for pid in self.pids())

    def rss_kib(self):
        return sum(status_kib(pid, "VmRSS") for pid in self.pids())

    def stop(self):
        try:
            os.killpg(self.sid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(self.sid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self.log.close()


# ---------------------------------------------------------------------------------------------
# The load: wrk pinned to one core.


def parse_duration(value, unit):
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]


def wrk(port, workload, seconds, connections):
    argv = [
        "taskset", "-c", LOAD_CPU, "wrk", "-t1", "-c%d" % connections, "-d%.0fs" % seconds,
        "--latency", "--timeout", "10s",
    ]
    if workload == "echo":
        argv += ["-s", os.path.join(ROOT, "bench", "post.lua")]
        url = "http://127.0.0.1:%d/echo" % port
    else:
        url = "http://127.0.0.1:%d/" % port
    out = subprocess.run(
        argv + [url], capture_output=True, text=True, timeout=seconds + 60,
        env=dict(os.environ, BENCH_BODY_BYTES=str(BODY_BYTES)),
    ).stdout
    result = {"raw": out}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    result["rps"] = float(m.group(1)) if m else 0.0
    for pct in ("50", "99"):
        m = re.search(r"^\s+%s%%\s+([\d.]+)(us|ms|s|m)\s*$" % pct, out, re.M)
        result["p" + pct] = parse_duration(m.group(1), m.group(2)) if m else float("nan")
    m = re.search(r"(\d+) requests in", out)
    result["requests"] = int(m.group(1)) if m else 0
    errors = 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors += sum(int(x) for x in m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        errors += int(m.group(1))
    result["errors"] = errors
    return result


def check(port, workload, path="/"):
    """One request by hand: the answer must be the hello (of `path`) or the echoed body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        if workload == "echo":
            body = bytes(i % 251 for i in range(BODY_BYTES))
            conn.request("POST", "/echo", body, {"Content-Type": "application/octet-stream"})
            response = conn.getresponse()
            got = response.read()
            if response.status != 200 or got != body:
                return "echo answered %d with %d bytes (want 200, %d bytes)" % (
                    response.status, len(got), len(body))
        else:
            conn.request("GET", path)
            response = conn.getresponse()
            got = response.read()
            if response.status != 200 or got != HELLO:
                return "hello answered %d %r" % (response.status, got[:80])
    except Exception as error:  # noqa: BLE001 - any failure is the row's
        return "request failed: %s" % error
    finally:
        conn.close()
    return None


def one_run(port, workload, servers, connections=None):
    """One measured run of DURATION seconds: wrk's figures, and the CPU of each of `servers`
    over it (the app server first, then the front end)."""
    cpu_before = [s.cpu() for s in servers]
    started = time.time()
    result = wrk(port, workload, DURATION, connections or CONNECTIONS)
    wall = time.time() - started
    cpu_after = [s.cpu() for s in servers]
    result["cpu"] = [(a - b) / wall * 100 for a, b in zip(cpu_after, cpu_before)]
    return result


def run_cases(cases, workloads=("hello", "echo")):
    """Measures each case for each workload, in turns: for one workload, every case is started
    (fresh processes), checked by hand and warmed up, then each of the REPEATS rounds runs
    every case once, so a drift of the machine over minutes falls on all of them alike.

    A case is (name, launch, workloads or None); `launch()` starts its processes and returns
    (port to load, [app server, front end...]). Returns {workload: [row, ...]} in the cases'
    order; a case that failed to start or answered wrongly has a row with "failed"."""
    rows = {w: [] for w in workloads}
    for workload in workloads:
        slots = []  # per case: a failed row, or [name, port, servers, runs]
        started = []
        try:
            for name, launch, only in cases:
                if only and workload not in only:
                    continue
                try:
                    port, servers = launch()
                except Exception as error:  # noqa: BLE001 - any failure is the row's
                    log("%s: %s" % (name, error))
                    slots.append({"name": name, "failed": str(error)})
                    continue
                started.append(servers)
                problem = check(port, workload)
                if problem:
                    log("%s %s: %s" % (name, workload, problem))
                    slots.append({"name": name, "failed": problem})
                    continue
                slots.append([name, port, servers, []])
            live = [slot for slot in slots if isinstance(slot, list)]
            if WARMUP > 0:
                for _, port, _, _ in live:
                    wrk(port, workload, WARMUP, CONNECTIONS)
            for _ in range(REPEATS):
                for _, port, servers, runs in live:
                    runs.append(one_run(port, workload, servers))
            for slot in slots:
                if isinstance(slot, dict):
                    rows[workload].append(slot)
                    continue
                name, _, servers, runs = slot
                row = summarize(name, runs)
                row["peak_rss_kib"] = servers[0].peak_rss_kib()
                log("%-34s %-5s %10.0f req/s  p50 %.2f ms  p99 %.2f ms  cpu %s  rss %d KiB  "
                    "errors %d" % (name, workload, row["rps"], row["p50"], row["p99"],
                                   "/".join("%.0f%%" % c for c in row["cpu"]),
                                   row["peak_rss_kib"], row["errors"]))
                rows[workload].append(row)
        finally:
            for servers in started:
                for server in reversed(servers):
                    server.stop()
    return rows


def direct(name, start, workloads=None):
    """A case of `run_cases`: the peer `start(port)` loaded directly."""
    def launch():
        port = free_port()
        return port, [start(port)]
    return (name, launch, workloads)


def behind(front, name, start, workloads=None):
    """A case of `run_cases`: the peer `start(port)` behind the nginx that
    `front(backend_port)` -> (location, upstream) describes."""
    def launch():
        port = free_port()
        backend = start(port)
        location, upstream = front(port)
        try:
            proxy, proxy_port = nginx(name, location, upstream)
        except Exception:
            backend.stop()
            raise
        return proxy_port, [backend, proxy]
    return (name, launch, workloads)


def summarize(name, runs):
    rps = [r["rps"] for r in runs]
    return {
        "name": name,
        "rps": statistics.median(rps),
        "rps_min": min(rps),
        "rps_max": max(rps),
        "p50": statistics.median(r["p50"] for r in runs),
        "p99": statistics.median(r["p99"] for r in runs),
        "cpu": [statistics.median(r["cpu"][i] for r in runs) for i in range(len(runs[0]["cpu"]))],
        "errors": sum(r["errors"] for r in runs),
        "runs": [r["rps"] for r in runs],
    }


# ---------------------------------------------------------------------------------------------
# Front ends.

NGINX_COMMON = """
worker_processes {workers};
daemon off;
master_process on;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  client_max_body_size 1m;
  client_body_buffer_size 128k;
  keepalive_requests 1000000;
  {upstream}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    root {peers};
    location / {{
{location}
    }}
  }}
}}
"""

FASTCGI_PARAMS = """
      fastcgi_param QUERY_STRING $query_string;
      fastcgi_param REQUEST_METHOD $request_method;
      fastcgi_param CONTENT_TYPE $content_type;
      fastcgi_param CONTENT_LENGTH $content_length;
      fastcgi_param SCRIPT_NAME "";
      fastcgi_param PATH_INFO $uri;
      fastcgi_param SCRIPT_FILENAME {peers}/app.php;
      fastcgi_param REQUEST_URI $request_uri;
      fastcgi_param DOCUMENT_URI $document_uri;
      fastcgi_param DOCUMENT_ROOT $document_root;
      fastcgi_param SERVER_PROTOCOL $server_protocol;
      fastcgi_param REQUEST_SCHEME $scheme;
      fastcgi_param GATEWAY_INTERFACE CGI/1.1;
      fastcgi_param SERVER_SOFTWARE nginx/$nginx_version;
      fastcgi_param REMOTE_ADDR $remote_addr;
      fastcgi_param REMOTE_PORT $remote_port;
      fastcgi_param SERVER_ADDR $server_addr;
      fastcgi_param SERVER_PORT $server_port;
      fastcgi_param SERVER_NAME $server_name;
      fastcgi_param HTTP_HOST $host;
"""


def nginx(name, location, upstream=""):
    directory = os.path.join(WORK, "nginx-" + re.sub(r"[^A-Za-z0-9]+", "-", name))
    shutil.rmtree(directory, ignore_errors=True)
    os.makedirs(directory)
    port = free_port()
    config = NGINX_COMMON.format(
        workers=SERVER_CORES, dir=directory, port=port, peers=PEERS,
        location=location, upstream=upstream)
    path = os.path.join(directory, "nginx.conf")
    with open(path, "w") as f:
        f.write(config)
    server = Server("nginx " + name, ["nginx", "-p", directory, "-c", path], port=port)
    return server, port


def fastcgi_location(backend_port, keep):
    upstream = "upstream backend { server 127.0.0.1:%d; %s }" % (
        backend_port, "keepalive %d;" % max(CONNECTIONS, 8) if keep else "")
    location = FASTCGI_PARAMS.format(peers=PEERS) + """
      fastcgi_pass backend;
      fastcgi_keep_conn %s;
      fastcgi_buffer_size 16k;
      fastcgi_buffers 16 16k;
      fastcgi_request_buffering on;
""" % ("on" if keep else "off")
    return location, upstream


def uwsgi_location(backend_port):
    upstream = "upstream backend { server 127.0.0.1:%d; }" % backend_port
    location = """
      include /etc/nginx/uwsgi_params;
      uwsgi_pass backend;
      uwsgi_buffer_size 16k;
      uwsgi_buffers 16 16k;
"""
    return location, upstream


def proxy_location(backend_port, keep):
    upstream = "upstream backend { server 127.0.0.1:%d; %s }" % (
        backend_port, "keepalive %d;" % max(CONNECTIONS, 8) if keep else "")
    location = """
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "%s";
      proxy_set_header Host $host;
      proxy_buffer_size 16k;
      proxy_buffers 16 16k;
""" % ("" if keep else "close")
    return location, upstream


# ---------------------------------------------------------------------------------------------
# The peers: how each is started on a port.

PY_WORKERS = max(2, 2 * SERVER_CORES)
PY_THREADS = 4


def ours(protocol, port, *extra, binary=None):
    return Server(
        "gateway %s%s" % (protocol, " ".join(extra)),
        [binary or os.path.join(BIN, "bench-app"), "--%s" % protocol, "127.0.0.1:%d" % port,
         "--max-connections", "20000"] + list(extra),
        env={"RUST_LOG": "error"}, port=port)


# `bench-app` built without its `mimalloc` feature: the C library's malloc.
SYSTEM_ALLOC_BIN = os.path.join(ROOT, "target", "system-alloc", "release", "bench-app")
SYSTEM_ALLOC = " (glibc malloc)"


def ours_system_alloc(protocol):
    return lambda p: ours(protocol, p, binary=SYSTEM_ALLOC_BIN)


def hyper_peer(port):
    return Server("hyper", [os.path.join(PEER_BIN, "release", "bench-hyper-peer"),
                            "127.0.0.1:%d" % port], port=port)


def go_peer(flag, port):
    return Server("go " + flag, [os.path.join(PEER_BIN, "go-peer"), "-" + flag,
                                 "127.0.0.1:%d" % port], port=port)


def gunicorn(port, protocol="http"):
    return Server(
        "gunicorn " + protocol,
        [PYTHON, "-m", "gunicorn", "--chdir", PEERS, "-k", "gthread", "-w", str(PY_WORKERS),
         "--threads", str(PY_THREADS), "--worker-connections", "20000", "--keep-alive", "300",
         "--backlog", "4096", "--protocol", protocol, "--log-level", "warning",
         "-b", "127.0.0.1:%d" % port, "app:application"],
        port=port)


def uwsgi_python(socket_kind, port):
    return Server(
        "uwsgi " + socket_kind,
        ["uwsgi", "--plugins", "python3", "--%s" % socket_kind, "127.0.0.1:%d" % port,
         "--wsgi-file", os.path.join(PEERS, "app.py"), "--master", "--processes",
         str(PY_WORKERS), "--threads", str(PY_THREADS), "--die-on-term", "--disable-logging",
         "--buffer-size", "32768", "--listen", "1024"],
        port=port)


def uwsgi_floor(port):
    return Server("uwsgi floor", [os.path.join(PEER_BIN, "uwsgi_floor"), "127.0.0.1:%d" % port],
                  port=port)


def c_pool(port):
    return Server("libfcgi pool", [os.path.join(PEER_BIN, "fcgi_pool"),
                                   "127.0.0.1:%d" % port, str(POOL)], port=port)


def php_fpm(port):
    directory = os.path.join(WORK, "php-fpm")
    os.makedirs(directory, exist_ok=True)
    config = os.path.join(directory, "php-fpm.conf")
    with open(config, "w") as f:
        f.write("""[global]
pid = {dir}/php-fpm.pid
error_log = {dir}/php-fpm.log
daemonize = no
[bench]
user = root
listen = 127.0.0.1:{port}
listen.backlog = 4096
pm = static
pm.max_children = {pool}
catch_workers_output = yes
""".format(dir=directory, port=port, pool=POOL))
    binary = shutil.which("php-fpm") or sorted(
        p for p in os.listdir("/usr/sbin") if p.startswith("php-fpm"))[-1]
    if not binary.startswith("/"):
        binary = os.path.join("/usr/sbin", binary)
    return Server("php-fpm", [binary, "-F", "-R", "-y", config],
                  port=port)


def flup(port):
    return Server("flup", [PYTHON, os.path.join(PEERS, "flup_app.py"), "127.0.0.1:%d" % port],
                  port=port)


# ---------------------------------------------------------------------------------------------
# The sections. Each returns a table: {"title", "rows", ...}.


# The app on the event loop (`--non-blocking`) instead of the worker pool: hello only, since
# the echo reads its body with a blocking read, which needs the worker pool.
NON_BLOCKING = " (--non-blocking)"
# Our server with its event loop under the default scheduling policy (see ARCHITECTURE.md,
# "Thread switches on a shared core"): the rows that show what SCHED_BATCH changes.
NO_BATCH = " (--no-batch-scheduling)"
# Our HTTP server with request bodies up to 64 KiB read whole before the app runs (the
# deployment guide's advice for programs that allocate with mimalloc): echo only, whose body
# is 64 KiB.
BODY_BUFFER = " (--body-buffer-size 65536)"


def section_http():
    peers = [
        ("gateway (built-in HTTP)", lambda p: ours("http", p)),
        ("gateway (built-in HTTP)" + NON_BLOCKING, lambda p: ours("http", p, "--non-blocking"),
         ("hello",)),
        ("gateway (built-in HTTP)" + SYSTEM_ALLOC, ours_system_alloc("http"), ("hello",)),
        ("gateway (built-in HTTP)" + BODY_BUFFER,
         lambda p: ours("http", p, "--body-buffer-size", "65536"), ("echo",)),
        ("hyper (plain)", hyper_peer),
        ("Go net/http", lambda p: go_peer("http", p)),
        ("gunicorn gthread + Python", lambda p: gunicorn(p)),
        ("uWSGI http11-socket + Python", lambda p: uwsgi_python("http11-socket", p)),
    ]
    return run_cases([direct(*peer) for peer in peers])


def section_ceiling():
    location = '      default_type text/plain;\n      return 200 "Hello, world!\\n";\n'

    def launch():
        server, port = nginx("alone", location)
        return port, [server]
    return run_cases([("nginx alone (return 200)", launch, None)], ("hello",))


def idle_rss(name, start):
    port = free_port()
    server = start(port)
    try:
        for _ in range(50):
            if check(port, "hello"):
                return {"name": name, "failed": check(port, "hello")}
        time.sleep(0.3)
        before = server.rss_kib()
        sockets = []
        request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
        try:
            for _ in range(IDLE):
                s = socket.create_connection(("127.0.0.1", port), timeout=10)
                s.sendall(request)
                got = b""
                while not got.endswith(HELLO):
                    chunk = s.recv(4096)
                    if not chunk:
                        raise RuntimeError("connection closed after one request")
                    got += chunk
                sockets.append(s)
            time.sleep(1.0)
            after = server.rss_kib()
            alive = 0
            for s in sockets:
                s.setblocking(False)
                try:
                    alive += s.recv(1) != b""
                except BlockingIOError:
                    alive += 1
                except OSError:
                    pass
        except Exception as error:  # noqa: BLE001
            return {"name": name, "failed": "%s after %d connections" % (error, len(sockets))}
        finally:
            for s in sockets:
                s.close()
        row = {"name": name, "before": before, "after": after, "open": alive,
               "per_conn_kib": (after - before) / IDLE}
        log("idle %-30s %d -> %d KiB, %.2f KiB/connection, %d still open" % (
            name, before, after, row["per_conn_kib"], alive))
        return row
    finally:
        server.stop()


def section_idle():
    peers = [
        ("gateway (built-in HTTP)", lambda p: ours("http", p)),
        ("hyper (plain)", hyper_peer),
        ("Go net/http", lambda p: go_peer("http", p)),
        ("gunicorn gthread + Python", lambda p: gunicorn(p)),
    ]
    return [idle_rss(name, start) for name, start in peers]


def fastcgi_peers():
    return [
        ("gateway FastCGI", lambda p: ours("fastcgi", p)),
        ("gateway FastCGI" + NON_BLOCKING, lambda p: ours("fastcgi", p, "--non-blocking"),
         ("hello",)),
        ("gateway FastCGI" + NO_BATCH, lambda p: ours("fastcgi", p, "--no-batch-scheduling"),
         ("hello",)),
        ("gateway FastCGI" + SYSTEM_ALLOC, ours_system_alloc("fastcgi"), ("hello",)),
        ("C libfcgi pool (%d processes)" % POOL, c_pool),
        ("Go net/http/fcgi", lambda p: go_peer("fcgi", p)),
        ("PHP-FPM (%d children)" % POOL, php_fpm),
        ("flup (threaded) + Python", flup),
    ]


def section_fastcgi():
    result = {}
    for keep in (True, False):
        mode = "on" if keep else "off"
        cases = [behind(lambda p, keep=keep: fastcgi_location(p, keep), *peer)
                 for peer in fastcgi_peers()]
        cases.append(behind(lambda p, keep=keep: proxy_location(p, keep),
                            "nginx HTTP proxy -> gateway HTTP", lambda p: ours("http", p)))
        cases.append(behind(lambda p, keep=keep: proxy_location(p, keep),
                            "nginx HTTP proxy -> gateway HTTP" + NON_BLOCKING,
                            lambda p: ours("http", p, "--non-blocking"), ("hello",)))
        result[mode] = run_cases(cases)
    return result


def section_uwsgi():
    peers = [
        ("gateway uwsgi", lambda p: ours("uwsgi", p)),
        ("gateway uwsgi" + NON_BLOCKING, lambda p: ours("uwsgi", p, "--non-blocking"),
         ("hello",)),
        ("gateway uwsgi" + NO_BATCH, lambda p: ours("uwsgi", p, "--no-batch-scheduling"),
         ("hello",)),
        ("gateway uwsgi" + SYSTEM_ALLOC, ours_system_alloc("uwsgi"), ("hello",)),
        ("uWSGI + Python", lambda p: uwsgi_python("uwsgi-socket", p)),
        ("gunicorn --protocol uwsgi + Python", lambda p: gunicorn(p, "uwsgi")),
        (UWSGI_FLOOR, uwsgi_floor),
    ]
    cases = [behind(uwsgi_location, *peer) for peer in peers]
    # The reference of issue 5, in the same rounds: our FastCGI server, keep-alive off.
    cases.append(behind(lambda p: fastcgi_location(p, False), FASTCGI_REFERENCE,
                        lambda p: ours("fastcgi", p)))
    return run_cases(cases)


FASTCGI_REFERENCE = "(reference) gateway FastCGI, keep-alive off"


# A C program that only accepts, reads, writes and closes (bench/peers/uwsgi_floor.c): the
# most requests a second any uwsgi server could answer behind this nginx on this core.
UWSGI_FLOOR = "(floor) C: accept, read, write, close; no app"


def section_cgi():
    directory = os.path.join(WORK, "cgi")
    shutil.rmtree(directory, ignore_errors=True)
    os.makedirs(os.path.join(directory, "docroot"))
    scripts = [
        ("C hello (gcc -O2)", "c.cgi", os.path.join(PEER_BIN, "hello_cgi")),
        ("gateway (CGI)", "rust.cgi", os.path.join(BIN, "bench-app")),
        ("gateway (CGI), static non-PIE build", "rust-static.cgi", CGI_STATIC_BIN),
        ("Python hello (python3)", "py.cgi", os.path.join(PEERS, "hello_cgi.py")),
    ]
    for _, file, source in scripts:
        shutil.copy(source, os.path.join(directory, "docroot", file))
    port = free_port()
    config = os.path.join(directory, "lighttpd.conf")
    with open(config, "w") as f:
        f.write(
            'server.document-root = "{d}/docroot"\nserver.bind = "127.0.0.1"\n'
            'server.port = {port}\nserver.pid-file = "{d}/l.pid"\n'
            'server.errorlog = "{d}/error.log"\nserver.modules = ("mod_cgi")\n'
            'cgi.assign = (".cgi" => "")\n'.format(d=directory, port=port))
    server = Server("lighttpd", ["/usr/sbin/lighttpd", "-D", "-f", config], port=port)
    # The programs in turns, as in `run_cases`: each round runs every program once.
    runs = {}
    try:
        for name, file, _ in scripts:
            problem = check(port, "hello", "/" + file)
            runs[name] = {"name": name, "failed": problem} if problem else []
        for _ in range(REPEATS):
            for name, file, _ in scripts:
                if isinstance(runs[name], list):
                    runs[name].append(cgi_run(port, "/" + file, server))
    finally:
        server.stop()
    rows = []
    for name, _, _ in scripts:
        if isinstance(runs[name], dict):
            rows.append(runs[name])
            continue
        row = summarize(name, runs[name])
        row["ms_per_request"] = 1000.0 / row["rps"] if row["rps"] else float("nan")
        row["peak_rss_kib"] = 0
        log("cgi %-30s %.3f ms/request (%.0f req/s), cpu %.0f%%" % (
            name, row["ms_per_request"], row["rps"], row["cpu"][0]))
        rows.append(row)
    return rows


def cgi_run(port, path, server):
    """One measured run: wrk, one connection, DURATION seconds; CPU of lighttpd and the
    programs it waited for."""
    lua = os.path.join(WORK, "cgi-%s.lua" % path.strip("/").replace(".", "-"))
    with open(lua, "w") as f:
        f.write('wrk.path = "%s"\n' % path)
    cpu_before = server.cpu()
    started = time.time()
    out = subprocess.run(
        ["taskset", "-c", LOAD_CPU, "wrk", "-t1", "-c1", "-d%.0fs" % DURATION, "--latency",
         "-s", lua, "http://127.0.0.1:%d%s" % (port, path)],
        capture_output=True, text=True).stdout
    wall = time.time() - started
    result = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}
    for pct in ("50", "99"):
        m = re.search(r"^\s+%s%%\s+([\d.]+)(us|ms|s|m)\s*$" % pct, out, re.M)
        result["p" + pct] = parse_duration(m.group(1), m.group(2)) if m else float("nan")
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    result["errors"] = int(m.group(1)) if m else 0
    result["cpu"] = [(server.cpu() - cpu_before) / wall * 100]
    return result


def run_cargo_bench(package, bench, criterion=True):
    argv = ["cargo", "bench", "-q", "-p", package, "--bench", bench]
    if criterion:
        argv += ["--", "--warm-up-time", "1", "--measurement-time", "3", "--noplot"]
    log("cargo bench -p %s --bench %s" % (package, bench))
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
    out = done.stdout
    lines = []
    name = None
    in_change = False  # criterion's comparison with the previous run: left out
    for line in out.splitlines():
        stripped = line.strip()
        if stripped.startswith("change:"):
            in_change = True
            continue
        m = re.match(r"^(\S.*?)\s+time:\s+\[(.*)\]$", line)
        if m:
            lines.append("%s: time [%s]" % (m.group(1).strip(), m.group(2)))
            name, in_change = None, False
            continue
        m = re.match(r"^time:\s+\[(.*)\]$", stripped)
        if m and name and not in_change:
            lines.append("%s: time [%s]" % (name, m.group(1)))
            name = None
            continue
        m = re.match(r"^thrpt:\s+\[(.*)\]$", stripped)
        if m and lines and not in_change:
            lines[-1] += ", thrpt [%s]" % m.group(1)
            continue
        if line and not line.startswith(" ") and "time:" not in line and not any(
                stripped.startswith(p) for p in ("Found", "Benchmarking", "No change",
                                                 "Performance", "Change within", "summary")):
            name, in_change = stripped, False
    summary = out[out.index("summary"):].rstrip() if "summary" in out else ""
    if done.returncode != 0:
        summary += "\n(cargo bench exited %d: %s)" % (done.returncode, done.stderr[-500:])
    return {"bench": "%s/%s" % (package, bench), "criterion": lines, "summary": summary}


def section_inprocess():
    return [
        run_cargo_bench("gateway-core", "driver"),
        run_cargo_bench("gateway-middleware", "middleware"),
        run_cargo_bench("gateway-servers", "codecs", criterion=False),
    ]


# ---------------------------------------------------------------------------------------------
# Profiles, where a target is missed: perf on our server under the same load.


def profile(name, start, front=None, workload="hello", seconds=None):
    if not PROFILE or not shutil.which("perf"):
        return None
    seconds = seconds or min(DURATION, 10)
    port = free_port()
    backend = start(port)
    proxy = None
    try:
        target = port
        if front:
            location, upstream = front(port)
            proxy, target = nginx("profile", location, upstream)
        data = os.path.join(WORK, "perf-%s.data" % re.sub(r"[^A-Za-z0-9]+", "-", name))
        wrk(target, workload, 1, CONNECTIONS)
        record = subprocess.Popen(
            ["perf", "record", "-F", "499", "-g", "-o", data, "-p", str(backend.proc.pid),
             "--", "sleep", str(seconds)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wrk(target, workload, seconds, CONNECTIONS)
        record.wait(timeout=seconds + 30)
        report = subprocess.run(
            ["perf", "report", "-i", data, "--no-children", "--stdio", "--sort", "dso,symbol",
             "--percent-limit", "1.5", "-g", "none"],
            capture_output=True, text=True).stdout
        lines = [re.sub(r"(\s+-)+\s*$", "", l).rstrip() for l in report.splitlines()
                 if l.strip() and not l.startswith("#")]
        return "\n".join(lines[:30])
    except Exception as error:  # noqa: BLE001
        return "perf failed: %s" % error
    finally:
        if proxy:
            proxy.stop()
        backend.stop()


# ---------------------------------------------------------------------------------------------
# Report.


def versions():
    def first_line(argv, stream="stdout"):
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
            text = (done.stdout or "") + (done.stderr or "")
            return text.strip().splitlines()[0] if text.strip() else "?"
        except Exception:  # noqa: BLE001
            return "not found"

    def dpkg(package):
        return first_line(["dpkg-query", "-W", "-f=${Version}", package])

    def py_version(module):
        return first_line([PYTHON, "-c", "import importlib.metadata as m; print(m.version(%r))"
                           % module])

    lock = open(os.path.join(ROOT, "Cargo.lock")).read()

    def crate(name):
        m = re.search(r'name = "%s"\nversion = "([^"]+)"' % re.escape(name), lock)
        return m.group(1) if m else "?"

    return [
        ("rustc", first_line(["rustc", "--version"])),
        ("hyper / tokio (ours and the plain hyper peer, same Cargo.lock)",
         "%s / %s" % (crate("hyper"), crate("tokio"))),
        ("wrk", "Debian %s" % dpkg("wrk")),
        ("nginx", first_line(["nginx", "-v"]).replace("nginx version: ", "")),
        ("lighttpd", first_line(["lighttpd", "-v"])),
        ("Go (net/http, net/http/fcgi)", first_line(["go", "version"])),
        ("gcc, libfcgi", "%s; libfcgi-dev %s" % (first_line(["gcc", "--version"]),
                                                  dpkg("libfcgi-dev"))),
        ("PHP-FPM", first_line(["php-fpm8.2", "-v"]) if shutil.which("php-fpm8.2")
         else first_line(["php-fpm", "-v"])),
        ("uWSGI", "%s (python3 plugin %s)" % (first_line(["uwsgi", "--version"]),
                                             dpkg("uwsgi-plugin-python3"))),
        ("Python (gunicorn, flup)", first_line([PYTHON, "--version"])),
        ("gunicorn", py_version("gunicorn")),
        ("flup", py_version("flup")),
        ("Python (CGI hello)", first_line(["/usr/bin/python3", "--version"])),
        ("gnuplot", first_line(["gnuplot", "--version"])),
    ]


def machine():
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal"):
                mem = "%.1f GiB" % (int(line.split()[1]) / 1024 / 1024)
    return {
        "nproc": NPROC,
        "cpu": model,
        "kernel": " ".join(os.uname()[2:3]),
        "memory": mem,
    }


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def fmt_rps(row):
    return "%.0f" % row["rps"]


def spread(row):
    if not row["rps"]:
        return "-"
    return "%.0f–%.0f (±%.0f%%)" % (row["rps_min"], row["rps_max"],
                                   (row["rps_max"] - row["rps_min"]) / 2 / row["rps"] * 100)


def ratio(a, b):
    return a / b if b else float("nan")


def table(rows, ceiling=None, cpu_labels=("server CPU",), ours_prefix="gateway"):
    """A markdown table of measured rows, with the ratio of ours against each peer."""
    ok = [r for r in rows if "failed" not in r]
    mine = next((r for r in ok if r["name"].startswith(ours_prefix)), None)
    head = ["server", "requests/s (median)", "spread (min–max)", "p50 ms", "p99 ms"]
    head += ["%s %%" % label for label in cpu_labels]
    head += ["requests per server CPU-second", "peak RSS (MiB)", "errors"]
    if mine:
        head.append("ours ÷ this")
    if ceiling:
        head.append("of nginx alone")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if "failed" in r:
            lines.append("| %s | failed: %s |" % (r["name"], r["failed"].replace("|", "/")) +
                         " |" * (len(head) - 2))
            continue
        cells = [r["name"], fmt_rps(r), spread(r), "%.2f" % r["p50"], "%.2f" % r["p99"]]
        cells += ["%.0f" % c for c in r["cpu"]]
        cells.append("%.0f" % ratio(r["rps"], r["cpu"][0] / 100) if r["cpu"][0] > 0 else "-")
        cells += ["%.1f" % (r["peak_rss_kib"] / 1024), str(r["errors"])]
        if mine:
            cells.append("—" if r is mine else "%.2fx" % ratio(mine["rps"], r["rps"]))
        if ceiling:
            cells.append("%.0f%%" % (100 * ratio(r["rps"], ceiling)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def chart(slug, title, groups, ylabel="requests/s"):
    """A clustered bar chart (one cluster per server, one bar per workload, error bars from
    the min to the max run) written by gnuplot to docs/bench/<slug>.png."""
    names = []
    for rows in groups.values():
        for r in rows:
            if r["name"] not in names:
                names.append(r["name"])
    data = os.path.join(WORK, slug + ".dat")
    with open(data, "w") as f:
        for name in names:
            cells = ['"%s"' % name.replace('"', "'")]
            for rows in groups.values():
                r = next((x for x in rows if x["name"] == name and "failed" not in x), None)
                cells += ["%f %f %f" % (r["rps"], r["rps_min"], r["rps_max"]) if r else "0 0 0"]
            f.write(" ".join(cells) + "\n")
    plots = []
    for i, workload in enumerate(groups):
        col = 2 + 3 * i
        plots.append("'%s' using %d:%d:%d:xtic(1) title '%s'" % (data, col, col + 1, col + 2,
                                                                  workload))
    script = """
set terminal pngcairo size 1100,520 font ',10'
set output '{out}'
set title "{title}"
set style data histogram
set style histogram errorbars gap 2 lw 1
set style fill solid 0.8 border -1
set ylabel '{ylabel}'
set yrange [0:*]
set grid ytics
set xtics rotate by -20 left
set key top right
set bmargin 6
plot {plots}
""".format(out=os.path.join(CHARTS, slug + ".png"), title=title, ylabel=ylabel,
           plots=", ".join(plots))
    done = subprocess.run(["gnuplot"], input=script, capture_output=True, text=True)
    if done.returncode != 0:
        log("gnuplot %s: %s" % (slug, done.stderr[-300:]))
        return None
    return "docs/bench/%s.png" % slug


def find(rows, prefix):
    return next((r for r in rows if r["name"].startswith(prefix) and "failed" not in r), None)


def variant(rows, name, peer, suffix):
    """The figure of our row `name + suffix` (a flag in brackets) against the same peer, for a
    target's line."""
    row = find(rows, name + suffix)
    if not row or not peer:
        return ""
    return " (with `%s`: %.2fx, p99 %.2f ms)" % (suffix.strip(" ()"),
                                                 ratio(row["rps"], peer["rps"]), row["p99"])


def non_blocking(rows, name, peer):
    """The figure of our `--non-blocking` row against the same peer, for a target's line."""
    return variant(rows, name, peer, NON_BLOCKING)


def main():
    os.makedirs(WORK, exist_ok=True)
    os.makedirs(CHARTS, exist_ok=True)
    started = datetime.datetime.now(datetime.timezone.utc)
    load_start = loadavg()
    log("load average at the start: %s; wrk on CPU %s, servers on CPU %s" % (
        load_start, LOAD_CPU, SERVER_CPUS))
    results = {}
    if "--report-only" in sys.argv:
        # Writes the report again from the results of the last run (for its wording).
        with open(os.path.join(WORK, "results.json")) as f:
            saved = json.load(f)
        results = saved["results"]
        started = datetime.datetime.fromisoformat(saved["started"])
        finished = datetime.datetime.fromisoformat(saved["finished"])
        return finish(results, started, finished, saved["load_start"], saved["load_end"])
    if wanted("http"):
        results["http"] = section_http()
    if wanted("idle"):
        results["idle"] = section_idle()
    if wanted("ceiling"):
        results["ceiling"] = section_ceiling()
    if wanted("fastcgi"):
        results["fastcgi"] = section_fastcgi()
    if wanted("uwsgi"):
        results["uwsgi"] = section_uwsgi()
    if wanted("cgi"):
        results["cgi"] = section_cgi()
    if wanted("inprocess"):
        results["inprocess"] = section_inprocess()
    load_end = loadavg()
    finished = datetime.datetime.now(datetime.timezone.utc)
    log("load average at the end: %s" % load_end)
    with open(os.path.join(WORK, "results.json"), "w") as f:
        json.dump({"results": results, "started": started.isoformat(),
                   "finished": finished.isoformat(), "load_start": load_start,
                   "load_end": load_end}, f, indent=1, default=str)
    finish(results, started, finished, load_start, load_end)


def finish(results, started, finished, load_start, load_end):
    report = write_report(results, started, finished, load_start, load_end)
    name = "BENCHMARKS.md" if not ONLY else "BENCHMARKS.partial.md"
    path = os.path.join(ROOT, name) if not ONLY else os.path.join(WORK, name)
    with open(path, "w") as f:
        f.write(report)
    log("wrote %s" % path)


def write_report(results, started, finished, load_start, load_end):
    out = []
    targets = []  # (target, measured, met)
    profiles = []
    w = out.append
    m = machine()
    w("# Benchmarks\n")
    w("Written by `scripts/bench.sh` (issue 9) on %s, in %.0f minutes. Regenerate it with "
      "`scripts/bench.sh`; `BENCH_DURATION`, `BENCH_REPEATS` and the other settings at the top "
      "of `bench/run.py` change the load. Nothing here is asserted by a test.\n" % (
          started.strftime("%Y-%m-%d %H:%M UTC"), (finished - started).total_seconds() / 60))
    w("## The machine and the method\n")
    w("| | |\n|---|---|")
    w("| CPU | %s |" % m["cpu"])
    w("| nproc | %d |" % m["nproc"])
    w("| memory | %s |" % m["memory"])
    w("| kernel | %s |" % m["kernel"])
    w("| load average (1, 5, 15 min) at the start | %s |" % load_start)
    w("| load average at the end | %s |" % load_end)
    w("")
    w("- Everything on 127.0.0.1. The load generator, wrk (one thread, %d keep-alive "
      "connections, `--latency`), is pinned with `taskset` to CPU %s; every server, and nginx "
      "or lighttpd in front of it, to CPU %s. So each server has %d core%s, and the load "
      "generator does not steal it." % (CONNECTIONS, LOAD_CPU, SERVER_CPUS, SERVER_CORES,
                                       "" if SERVER_CORES == 1 else "s"))
    w("- Each case: a fresh server, one request checked by hand (the hello bytes, or the "
      "64 KiB body echoed back byte for byte), %.0f s of warm-up, then %d runs of %.0f s. "
      "The cases of a table run in turns: all are started and warmed up, then each round "
      "loads every case once, so a drift of the shared machine over the minutes of a table "
      "falls on all of its rows alike instead of on the last ones. "
      "Tables give the median requests/s with the spread (min–max, and half of it as a "
      "percentage of the median), the median p50 and p99 latency, the median CPU (percent of "
      "one core, for every process of the server's session: the larger of utime+stime from "
      "`/proc/PID/stat` and the threads' run time from `/proc/PID/task/*/schedstat`, plus the "
      "waited-for children's cutime+cstime) and the peak resident memory (VmHWM, summed over "
      "the server's processes, warm-up included)." % (WARMUP, REPEATS, DURATION))
    w("- Workloads: **hello** (`GET /`, `Hello, world!\\n`) and **echo** (`POST /echo` with a "
      "64 KiB body, answered with the same 64 KiB). Every peer serves both with the same "
      "bytes: `bench-app` (examples/src/bin/bench-app.rs) for this project, sources under "
      "`bench/peers/` for the others. This project and the plain hyper peer are built with "
      "the same release profile (`lto = \"fat\"`, `codegen-units = 1`) and the same allocator "
      "(mimalloc, the examples' default; the rows marked *(glibc malloc)* are `bench-app` built "
      "with the C library's malloc), the C peers with `gcc -O2`, the Go peers with `go build`.")
    w("- wrk is a closed-loop generator: its p99 hides coordinated omission. The p99 figures "
      "compare servers under the same generator, not absolute tail latency.")
    w("- Python servers: %d workers × %d threads (gunicorn gthread, uWSGI `--processes "
      "--threads`). C libfcgi pool and PHP-FPM (`pm = static`): %d processes, as many as "
      "connections, so that a kept-alive connection held by one never leaves a request "
      "waiting in the backlog. nginx: %d worker%s, `access_log off`, buffers big enough for "
      "64 KiB in memory." % (PY_WORKERS, PY_THREADS, POOL, SERVER_CORES,
                              "" if SERVER_CORES == 1 else "s"))
    w("- The machine is shared: other processes (colleagues' compiles) may have run during "
      "the run; the load averages above and the spread columns show how much.\n")

    w("## Versions\n")
    w("| component | version |\n|---|---|")
    for name, version in versions():
        w("| %s | %s |" % (name, version.replace("|", "/")))
    w("")

    ceiling = None
    if "ceiling" in results:
        row = results["ceiling"]["hello"][0]
        if "failed" not in row:
            ceiling = row["rps"]
    charts = []

    if "http" in results:
        rows = results["http"]
        w("## Built-in HTTP\n")
        w("Each server alone, HTTP/1.1 keep-alive. `ours ÷ this` is this project's requests/s "
          "over the row's.\n")
        for workload in ("hello", "echo"):
            w("### %s\n" % workload)
            w(table(rows[workload], ceiling if workload == "hello" else None))
            w("")
        c = chart("http", "Built-in HTTP: requests/s (median, bars min-max)", rows)
        if c:
            w("![Built-in HTTP](%s)\n" % c)
        for workload in ("hello", "echo"):
            mine, hyper = find(rows[workload], "gateway"), find(rows[workload], "hyper")
            if mine and hyper:
                r = ratio(mine["rps"], hyper["rps"])
                figures = "%.2fx (p99 %.2f vs %.2f ms)" % (r, mine["p99"], hyper["p99"])
                for suffix in (NON_BLOCKING, BODY_BUFFER):
                    figures += variant(rows[workload], "gateway (built-in HTTP)", hyper, suffix)
                targets.append(("HTTP %s ≥ 0.95x plain hyper" % workload, figures, r >= 0.95))
        mine, hyper = find(rows["hello"], "gateway"), find(rows["hello"], "hyper")
        if mine and hyper and ratio(mine["rps"], hyper["rps"]) < 0.95:
            profiles.append(("built-in HTTP, hello", profile(
                "http", lambda p: ours("http", p))))

    if "ceiling" in results:
        w("## The ceiling: nginx alone\n")
        w("nginx answering `return 200 \"Hello, world!\\n\"` by itself, with the same pinning. "
          "Every hello figure in this file is also given as a fraction of it.\n")
        w(table(results["ceiling"]["hello"]))
        w("")

    if "idle" in results:
        w("## Idle keep-alive connections\n")
        w("The measurement of `examples/benches/deployment.rs`, for each server: %d "
          "connections, each after one hello request left open and idle; the growth of the "
          "resident memory of the server's processes (VmRSS, summed), divided by the number of "
          "connections. uWSGI's http11-socket is left out: it gives each connection a thread "
          "of its own for as long as it is open, so %d idle connections are not what it is "
          "built for.\n" % (IDLE, IDLE))
        w("| server | RSS before (MiB) | RSS with the connections (MiB) | per connection (KiB) "
          "| still open |\n|---|---|---|---|---|")
        for r in results["idle"]:
            if "failed" in r:
                w("| %s | failed: %s | | | |" % (r["name"], r["failed"]))
            else:
                w("| %s | %.1f | %.1f | %.2f | %d |" % (r["name"], r["before"] / 1024,
                                                      r["after"] / 1024, r["per_conn_kib"],
                                                      r["open"]))
        w("")
        mine = next((r for r in results["idle"] if r["name"].startswith("gateway")
                     and "failed" not in r), None)
        if mine:
            targets.append(("under 10 KiB per idle connection", "%.2f KiB" % mine["per_conn_kib"],
                            mine["per_conn_kib"] < 10))

    if "fastcgi" in results:
        w("## FastCGI behind nginx\n")
        w("nginx (`fastcgi_pass`) in front of each FastCGI server, the same nginx for all; and, "
          "as the reference of issue 4, nginx proxying HTTP to this project's built-in server "
          "(`proxy_pass`). CPU columns: the FastCGI (or HTTP) server, then nginx. Our rows marked "
          "`--no-batch-scheduling` run the event loop under Linux's default scheduling policy "
          "instead of `SCHED_BATCH` (the default since 2026-12-02; see ARCHITECTURE.md, "
          "\"Thread switches on a shared core\").\n")
        for mode, label in (("on", "keep-conn and upstream keepalive on (`fastcgi_keep_conn on`, "
                                   "`keepalive %d`; for the HTTP proxy, `keepalive` and HTTP/1.1)"
                             % max(CONNECTIONS, 8)),
                            ("off", "keep-alive off: a new connection to the backend for each "
                                    "request")):
            rows = results["fastcgi"][mode]
            w("### %s\n" % label)
            for workload in ("hello", "echo"):
                w("#### %s\n" % workload)
                w(table(rows[workload], ceiling if workload == "hello" else None,
                        cpu_labels=("server CPU", "nginx CPU")))
                w("")
            c = chart("fastcgi-keepalive-" + mode, "FastCGI behind nginx, keep-alive %s: "
                      "requests/s" % mode, rows)
            if c:
                w("![FastCGI, keep-alive %s](%s)\n" % (mode, c))
        rows = results["fastcgi"]["on"]
        for workload in ("hello", "echo"):
            mine = find(rows[workload], "gateway FastCGI")
            pool = find(rows[workload], "C libfcgi")
            go = find(rows[workload], "Go net/http/fcgi")
            proxy = find(rows[workload], "nginx HTTP proxy")
            if mine and pool:
                r = ratio(mine["rps"], pool["rps"])
                targets.append(("FastCGI %s (keep-alive on) ≥ the C libfcgi pool, p99 no worse"
                                % workload, "%.2fx; p99 %.2f vs %.2f ms%s" % (
                                    r, mine["p99"], pool["p99"],
                                    "; %.2fx Go's fcgi" % ratio(mine["rps"], go["rps"]) if go
                                    else "") + non_blocking(rows[workload], "gateway FastCGI",
                                                            pool),
                                r >= 1.0 and mine["p99"] <= pool["p99"]))
            if mine and proxy:
                r = ratio(mine["rps"], proxy["rps"])
                both = (find(rows[workload], "gateway FastCGI" + NON_BLOCKING),
                        find(rows[workload], "nginx HTTP proxy -> gateway HTTP" + NON_BLOCKING))
                nb = (" (with `--non-blocking` on both: %.2fx)"
                      % ratio(both[0]["rps"], both[1]["rps"]) if all(both) else "")
                targets.append(("FastCGI %s (keep-alive on) ≥ 0.9x nginx's HTTP proxy to our "
                                "server" % workload, "%.2fx%s" % (r, nb), r >= 0.9))
        mine, pool = find(rows["hello"], "gateway FastCGI"), find(rows["hello"], "C libfcgi")
        if mine and pool and ratio(mine["rps"], pool["rps"]) < 1.0:
            profiles.append(("FastCGI behind nginx, keep-alive on, hello", profile(
                "fastcgi", lambda p: ours("fastcgi", p), lambda p: fastcgi_location(p, True))))

    if "uwsgi" in results:
        rows = results["uwsgi"]
        w("## uwsgi behind nginx\n")
        w("nginx (`uwsgi_pass`, `include uwsgi_params`; the uwsgi protocol has no keep-alive: "
          "one connection per request) in front of each. gunicorn 23 and later were said to "
          "have no uwsgi mode; the gunicorn installed here (%s) has one again "
          "(`--protocol uwsgi`, the `gunicorn/uwsgi/` package), so it is measured. The last "
          "row, for the target of issue 5, is our FastCGI server behind the same nginx with "
          "keep-alive off, measured in the same rounds. The row before it is a floor: a C program "
          "(`bench/peers/uwsgi_floor.c`) that accepts, reads the packet, writes a fixed answer "
          "(or the body back) and closes, one blocking call after another, with no environ and "
          "no app; no server can answer more requests a second than it does here.\n"
          % dict(versions()).get("gunicorn", "?"))
        for workload in ("hello", "echo"):
            w("### %s\n" % workload)
            w(table(rows[workload], ceiling if workload == "hello" else None,
                    cpu_labels=("server CPU", "nginx CPU")))
            w("")
            mine, uwsgi = find(rows[workload], "gateway"), find(rows[workload], "uWSGI")
            if mine and uwsgi:
                r = ratio(mine["rps"], uwsgi["rps"])
                floor = find(rows[workload], "(floor)")
                reach = ("; the floor itself %.2fx" % ratio(floor["rps"], uwsgi["rps"])
                         if floor else "")
                targets.append(("uwsgi %s ≥ 1.2x uWSGI+Python, p99 no worse" % workload,
                                "%.2fx; p99 %.2f vs %.2f ms" % (r, mine["p99"], uwsgi["p99"])
                                + non_blocking(rows[workload], "gateway uwsgi", uwsgi) + reach,
                                r >= 1.2 and mine["p99"] <= uwsgi["p99"]))
            reference = find(rows[workload], FASTCGI_REFERENCE)
            if mine and reference:
                r = ratio(mine["rps"], reference["rps"])
                targets.append(("uwsgi %s ≥ our FastCGI without keep-alive" % workload,
                                "%.2fx" % r, r >= 1.0))
        c = chart("uwsgi", "uwsgi behind nginx: requests/s", rows)
        if c:
            w("![uwsgi behind nginx](%s)\n" % c)
        mine, uwsgi = find(rows["hello"], "gateway"), find(rows["hello"], "uWSGI")
        if mine and uwsgi and ratio(mine["rps"], uwsgi["rps"]) < 1.2:
            profiles.append(("uwsgi behind nginx, hello", profile(
                "uwsgi", lambda p: ours("uwsgi", p), uwsgi_location)))

    if "cgi" in results:
        rows = results["cgi"]
        w("## CGI behind lighttpd\n")
        w("lighttpd 1.4 `mod_cgi` runs each program once per request; wrk sends one request at "
          "a time (1 connection) for %.0f s, %d times. Time per request = 1 / requests per "
          "second. CPU: lighttpd and the CGI processes it waited for. The static non-PIE build "
          "is the one the deployment guide recommends for CGI, which also leaves out mimalloc "
          "(`--no-default-features`); the default build is `bench-app` as the other sections "
          "run it.\n" % (DURATION, REPEATS))
        c_row = find(rows, "C hello")
        w("| program | ms/request (median) | requests/s | spread | p50 ms | p99 ms | CPU % | "
          "time ÷ C's |\n|---|---|---|---|---|---|---|---|")
        for r in rows:
            if "failed" in r:
                w("| %s | failed: %s | | | | | | |" % (r["name"], r["failed"]))
                continue
            w("| %s | %.3f | %.0f | %s | %.2f | %.2f | %.0f | %s |" % (
                r["name"], r["ms_per_request"], r["rps"], spread(r), r["p50"], r["p99"],
                r["cpu"][0], "%.2fx" % ratio(r["ms_per_request"], c_row["ms_per_request"])
                if c_row else "-"))
        w("")
        c = chart("cgi", "CGI behind lighttpd, one request at a time: requests/s",
                  {"hello": rows})
        if c:
            w("![CGI behind lighttpd](%s)\n" % c)
        # The target is judged on the build the deployment guide recommends for CGI; the
        # default build's figure is given beside it.
        mine = find(rows, "gateway (CGI), static") or find(rows, "gateway")
        default = find(rows, "gateway (CGI)")
        if mine and c_row:
            r = ratio(mine["ms_per_request"], c_row["ms_per_request"])
            text = "%.2fx (%.3f vs %.3f ms), static non-PIE build" % (
                r, mine["ms_per_request"], c_row["ms_per_request"])
            if default and default is not mine:
                text += "; the default build: %.2fx" % ratio(
                    default["ms_per_request"], c_row["ms_per_request"])
            targets.append(("CGI ≤ 1.1x the C program's time", text, r <= 1.1))

    if "inprocess" in results:
        w("## In-process benches\n")
        w("`cargo bench` of the workspace's benches, run by the same command (criterion with "
          "`--warm-up-time 1 --measurement-time 3`; the codec bench is a plain timing loop). "
          "Each bench's own summary, then criterion's estimates [low, median, high].\n")
        for bench in results["inprocess"]:
            w("### %s\n" % bench["bench"])
            w("```")
            if bench["summary"]:
                w(bench["summary"])
                w("")
            for line in bench["criterion"]:
                w(line)
            w("```\n")
            if bench["bench"].endswith("codecs"):
                for line in bench["summary"].splitlines():
                    mm = re.match(r"\s+(.*?)\s+([\d.]+) MB/s", line)
                    if mm and ("1 MiB" in mm.group(1)):
                        mb = float(mm.group(2))
                        targets.append(("codec %s ≥ 1 GB/s" % mm.group(1), "%.0f MB/s" % mb,
                                        mb >= 1000))

    w("## Targets of issue 9\n")
    w("| target | measured | met? |\n|---|---|---|")
    for target, measured, met in targets:
        w("| %s | %s | %s |" % (target, measured, "**met**" if met else "**missed**"))
    w("")
    missed = [t for t in targets if not t[2]]
    if missed:
        w("Missed: %s.\n" % "; ".join(t[0] for t in missed))
    else:
        w("Every target measured was met.\n")
    for title, text in profiles:
        if text:
            w("### Profile: %s\n" % title)
            w("`perf record -F 499 -g` of our server for %.0f s under the same load, "
              "`perf report --no-children --sort dso,symbol` (entries of 1.5%% and more):\n"
              % min(DURATION, 10))
            w("```\n%s\n```\n" % text)
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    main()
