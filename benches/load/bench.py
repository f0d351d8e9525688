#!/usr/bin/env python3
"""weir's load benchmark: weir, nginx and HAProxy side by side on loopback
(and, for cached responses, weir, nginx and Varnish with their caches on; for
rate limits, weir and nginx with and without a policy that never limits).

Every peer proxies to the SAME origin (a separate nginx process, 1 worker) and
is measured in one interleaved run: for each repetition, each scenario runs
every peer in turn, the peer order rotating from one repetition to the next;
medians over the repetitions are reported, with ratios against nginx.

Scenarios (names for --scenarios; see docs/benchmarks.md):
  keepalive      keep-alive throughput, 13 B body        wrk -t1 -c64
  keepalive-16k  keep-alive throughput, 16 KiB body      wrk -t1 -c64
  latency        p50/p99/p99.9 at a fixed rate           oha -q RATE --latency-correction
  new-conn       a new connection per request            wrk -t1 -c64 -H 'Connection: close'
  memory         RSS idle and with N idle keep-alive client connections
  cpu            proxy CPU seconds per 100k requests (measured during keepalive)
  tls-handshake  TLS handshakes/s, one h2 request per connection   h2load -n C -c C -m 1
  tls-h2         HTTP/2 requests/s over TLS                        h2load -c 2 -m 50
  access-log     weir with its JSON access log written to a file vs without
  cached-13b     keep-alive hits/s of a cached 13 B object  wrk -t1 -c64
  cached-16k     keep-alive hits/s of a cached 16 KiB object  wrk -t1 -c64
  ratelimit-local    keep-alive 13 B and CPU/100k: weir, weir-local, nginx,
                     nginx-limit_req                     wrk -t1 -c64
  ratelimit-global   keep-alive 13 B and CPU/100k: weir, weir-global; Redis
                     commands, reads and CPU per request  wrk -t1 -c64
  ratelimit-latency  p50/p99/p99.9 at a fixed rate: weir, weir-local,
                     weir-global                          oha -q RATE --latency-correction

The cached and rate-limit scenarios are not in the default set. The cached ones
run weir with `cache = true` (weir-cache), nginx with proxy_cache (nginx-cache)
and Varnish (varnishd, malloc storage), and report CPU seconds per 100k hits
too; before measuring, each peer is checked to answer 100 requests of the object
without a request reaching the origin.

The rate-limit scenarios run each server with one policy on its route that
never limits (a rate of 1e9/s and a burst of 1e6, keyed by the client address)
against the same server without it: weir-local (scope = "local"), weir-global
(scope = "global", counted in a redis-server the driver starts: port 19050, no
persistence, pinned with the origin) and nginx-limit_req (limit_req ... nodelay).
Before measuring, weir-local and weir-global must answer with the policy's
RateLimit-Policy header, and each request of weir-global must be one EVALSHA in
Redis. Redis's INFO commandstats, its read events and its CPU are recorded per
run; a weir-global run with fewer than 0.99 decisions in Redis per request, or
in which weir logged Redis unavailable, fails.

Safety: traffic goes to 127.0.0.1 only; every port is in 19000-19999 and is
checked to be free first; every load command is bounded in time or count and
has a subprocess timeout; the run has a global deadline; every process the
driver starts is tracked by PID and stopped by PID (SIGTERM, then SIGKILL) on
exit, Ctrl-C, SIGTERM or error; output goes only under --out.

Python 3 standard library only.
"""
import argparse
import asyncio
import datetime
import http.client
import json
import os
import platform
import queue
import re
import resource
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")

# ------------------------------------------------------------------ ports ---
PORT_MIN, PORT_MAX = 19000, 19999
ORIGIN_PORT = 19001          # the shared origin
MEM_OFFSET = 100             # fresh instances for the memory scenario: port + 100
PEER_PORTS = {               # name -> (plain HTTP port, TLS port or None)
    "direct": (ORIGIN_PORT, None),
    "nginx": (19010, 19011),
    "haproxy": (19020, 19021),
    "weir": (19030, 19032),
    "weir-log": (19031, None),
    "nginx-cache": (19013, None),
    "weir-cache": (19033, None),
    "varnish": (19040, None),
    "nginx-limit_req": (19014, None),
    "weir-local": (19034, None),
    "weir-global": (19035, None),
}
REDIS_PORT = 19050           # the Redis of weir-global (the rate-limit scenarios)
PEERS = ["direct", "nginx", "haproxy", "weir", "varnish"]      # selectable with --peers
DEFAULT_PEERS = ["nginx", "haproxy", "weir", "varnish"]
BASE_PEERS = ["direct", "nginx", "haproxy", "weir"]           # the uncached scenarios
# The cached scenarios: a --peers name -> the instance that runs with its cache on.
CACHE_PEER_OF = {"nginx": "nginx-cache", "varnish": "varnish", "weir": "weir-cache"}
CACHE_PEERS = ["nginx-cache", "varnish", "weir-cache"]
CACHE_OTHERS = ["nginx-cache", "varnish"]     # weir-cache's ratios: against the better of these
# The rate-limit scenarios: each peer with one policy that never limits, and the
# same server without it, whose figures its ratios are against.
RL_BASE_OF = {"nginx-limit_req": "nginx", "weir-local": "weir", "weir-global": "weir"}
RL_PEERS = ["nginx", "nginx-limit_req", "weir", "weir-local", "weir-global"]
RL_SCENARIO_PEERS = {"ratelimit-local": ["nginx", "nginx-limit_req", "weir", "weir-local"],
                     "ratelimit-global": ["weir", "weir-global"],
                     "ratelimit-latency": ["weir", "weir-local", "weir-global"]}
# Never limits: one request per nanosecond, a burst of a million.
RL_RATE, RL_BURST = 1_000_000, 1_000_000
REFERENCE = "nginx"

SMALL_BODY = b"hello world!\n"                        # 13 bytes
BODY_16K = 16 * 1024

SCENARIOS = ["keepalive", "keepalive-16k", "latency", "new-conn", "memory", "cpu",
             "tls-handshake", "tls-h2", "access-log", "cached-13b", "cached-16k",
             "ratelimit-local", "ratelimit-global", "ratelimit-latency"]
CACHED_SCENARIOS = ("cached-13b", "cached-16k")
RL_SCENARIOS = ("ratelimit-local", "ratelimit-global", "ratelimit-latency")
OPT_IN_SCENARIOS = CACHED_SCENARIOS + RL_SCENARIOS
DEFAULT_SCENARIOS = [x for x in SCENARIOS if x not in OPT_IN_SCENARIOS]
# Where Redis is asked: weir-global's scenarios (weir-global needs the Redis).
REDIS_SCENARIOS = ("ratelimit-global", "ratelimit-latency")
TLS_SCENARIOS = ("tls-handshake", "tls-h2")
# The origin's cacheable objects (Cache-Control: max-age=3600); it logs every
# request for them, one path a line, so that hits can be told from misses.
CACHED_PATHS = {"cached-13b": "/cache/13b", "cached-16k": "/cache/16k"}
CACHE_CHECK_N = 100       # requests after the first that must not reach the origin

# Durations (seconds) and repetitions: full run, and --quick.
FULL = dict(reps=3, dur_ka=10, dur_16k=5, dur_lat=10, dur_close=5, dur_hs=5, dur_h2=5,
            dur_log=10, warmup=2, max_minutes=30)
QUICK = dict(reps=1, dur_ka=3, dur_16k=3, dur_lat=5, dur_close=3, dur_hs=2, dur_h2=3,
             dur_log=3, warmup=1, max_minutes=8)


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Deadline(Exception):
    pass


# ------------------------------------------------------- /proc utilities ---
def proc_stat(pid):
    """(ppid, utime+stime ticks, starttime) of pid, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except OSError:
        return None
    fields = s[s.rfind(")") + 2:].split()
    return int(fields[1]), int(fields[11]) + int(fields[12]), int(fields[19])


def pids_now():
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def process_tree(root):
    """root and all its descendants, as {pid: starttime}."""
    children = {}
    for p in pids_now():
        st = proc_stat(p)
        if st:
            children.setdefault(st[0], []).append(p)
    tree, todo = {}, [root]
    while todo:
        p = todo.pop()
        st = proc_stat(p)
        if st is None:
            continue
        tree[p] = st[2]
        todo.extend(children.get(p, []))
    return tree


def cpu_ticks(pids):
    total = 0
    for p in pids:
        st = proc_stat(p)
        if st:
            total += st[1]
    return total


def rss_kib(pids):
    """Sum of VmRSS and of Pss over pids, in KiB."""
    rss = pss = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1])
                        break
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        pss += int(line.split()[1])
                        break
        except OSError:
            pass
    return rss, pss


def all_cpu_ticks():
    out = {}
    for p in pids_now():
        st = proc_stat(p)
        if st:
            out[(p, st[2])] = st[1]
    return out


def foreign_cpu_s(before, after, ours, top=None):
    """CPU seconds used between two snapshots by processes that are not ours;
    with a list `top`, the three that used most are appended to it as
    "name seconds"."""
    ticks = 0
    used = []
    for key, t in after.items():
        if key[0] in ours:
            continue
        d = t - before.get(key, 0)           # a process started meanwhile: all of it
        ticks += d
        if d:
            used.append((d, key[0]))
    if top is not None:
        for d, pid in sorted(used, reverse=True)[:3]:
            try:
                with open(f"/proc/{pid}/comm") as f:
                    name = f.read().strip()
            except OSError:
                name = f"pid {pid} (gone)"
            top.append(f"{name} {d / CLK_TCK:.2f}")
    return ticks / CLK_TCK


def machine_ticks():
    """(busy, steal) ticks summed over the CPUs, from /proc/stat: busy is user,
    nice, system, irq and softirq time of every task, short-lived ones
    included; steal is time the hypervisor gave to others while this machine's
    CPUs wanted to run."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:9]]
        return v[0] + v[1] + v[2] + v[5] + v[6], v[7]
    except (OSError, ValueError, IndexError):
        return 0, 0


def tcp_sockets(port, state):
    """Number of TCP sockets in `state` (hex, '01' = ESTABLISHED, '0A' = LISTEN)
    whose local port is `port`."""
    n = 0
    for fn in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(fn) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if parts[3] == state and int(parts[1].rsplit(":", 1)[1], 16) == port:
                        n += 1
        except OSError:
            pass
    return n


def port_free(port):
    if tcp_sockets(port, "0A"):
        return False
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind((HOST, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


# -------------------------------------------------------- our processes ---
class Proc:
    """A process started by this driver. Stopped by PID only, never by name."""
    registry = []

    def __init__(self, name, argv, cwd=None, logfile=None, env=None, capture=False,
                 stdin_pipe=False):
        """Output goes to `logfile` (or nowhere); capture=True pipes stdout and
        stderr back instead (stdout only, with a logfile for stderr)."""
        self.name = name
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.logf = open(logfile, "ab") if logfile else None
        sink = self.logf or subprocess.DEVNULL
        self.p = subprocess.Popen(argv, cwd=cwd, env=full_env,
                                  stdin=subprocess.PIPE if stdin_pipe else subprocess.DEVNULL,
                                  stdout=subprocess.PIPE if capture else sink,
                                  stderr=subprocess.PIPE if capture and not logfile else sink,
                                  start_new_session=True)
        self.pid = self.p.pid
        st = proc_stat(self.pid)
        self.start_time = st[2] if st else None
        Proc.registry.append(self)

    def alive(self):
        return self.p.poll() is None

    def tree(self):
        return process_tree(self.pid) if self.alive() else {}

    def stop(self, grace=5.0):
        tree = self.tree()
        if self.alive():
            self._signal(self.pid, self.start_time, signal.SIGTERM)
            try:
                self.p.wait(grace)
            except subprocess.TimeoutExpired:
                self._signal(self.pid, self.start_time, signal.SIGKILL)
                try:
                    self.p.wait(5)
                except subprocess.TimeoutExpired:
                    pass
        # children that outlived the parent (e.g. nginx workers): by PID, and
        # only if the PID still belongs to the same process (same start time)
        for pid, start in tree.items():
            if pid != self.pid:
                self._signal(pid, start, signal.SIGKILL)
        self.close()

    @staticmethod
    def _signal(pid, start, sig):
        st = proc_stat(pid)
        if st is None or (start is not None and st[2] != start):
            return
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass

    def close(self):
        if self in Proc.registry:
            Proc.registry.remove(self)
        if self.logf:
            self.logf.close()
            self.logf = None


def stop_all():
    for pr in reversed(list(Proc.registry)):
        try:
            pr.stop(grace=3.0)
        except Exception as e:  # noqa: BLE001 - go on with the others
            print(f"stopping {pr.name} (pid {pr.pid}) failed: {e}", file=sys.stderr)


class Clock:
    """The global deadline."""

    def __init__(self, minutes):
        self.minutes = minutes
        self.end = time.monotonic() + minutes * 60

    def left(self):
        return self.end - time.monotonic()

    def check(self):
        if self.left() <= 0:
            raise Deadline(f"global deadline of {self.minutes:g} min reached")


CLOCK = Clock(30)


def run_tool(argv, timeout, cwd=None):
    """Run a load generator to completion, tracked like every other process.
    Returns (returncode, stdout, stderr); returncode None when it was killed."""
    timeout = max(1.0, min(timeout, CLOCK.left() + 10))
    pr = Proc(os.path.basename(argv[0]), argv, cwd=cwd, capture=True)
    try:
        out, err = pr.p.communicate(timeout=timeout)
        rc = pr.p.returncode
    except subprocess.TimeoutExpired:
        pr.stop(grace=1.0)
        out, err = pr.p.communicate()
        rc = None
        err = (err or b"") + f"\n[killed after {timeout:.0f} s]".encode()
    except BaseException:          # Ctrl-C, SIGTERM: stop it by PID, then go on up
        pr.stop(grace=1.0)
        raise
    finally:
        pr.close()
    return rc, out.decode(errors="replace"), err.decode(errors="replace")


# ----------------------------------------------------------- HTTP checks ---
def http_get(port, path="/", tls=False, timeout=2.0):
    if tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        c = http.client.HTTPSConnection(HOST, port, timeout=timeout, context=ctx)
    else:
        c = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        c.request("GET", path, headers={"Connection": "close"})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def wait_ready(proc, port, tls=False, timeout=30.0):
    """None when GET / answers 200 with the origin's body, else why not."""
    end = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < end:
        if proc is not None and not proc.alive():
            return f"exited with status {proc.p.returncode}"
        try:
            status, body = http_get(port, tls=tls)
            if status == 200 and body == SMALL_BODY:
                return None
            last = f"status {status}, body {body[:60]!r}"
        except (OSError, http.client.HTTPException) as e:
            last = repr(e)
        time.sleep(0.2)
    return f"not ready after {timeout:g} s: {last}"


def origin_count(origin_dir, path):
    """Requests for `path` that reached the origin so far (its log of the
    cacheable paths: one request URI a line)."""
    try:
        with open(os.path.join(origin_dir, "cached.log"), "rb") as f:
            return sum(1 for line in f if line.rstrip(b"\n") == path.encode())
    except FileNotFoundError:
        return 0


def expected_body(path):
    return SMALL_BODY if path.endswith("13b") else \
        (b"0123456789abcdef" * (BODY_16K // 16 + 1))[:BODY_16K]


CACHE_HEADERS = ("cache-status", "x-cache-status", "x-varnish", "age", "via")


def hit_header(peer, headers):
    """Whether the peer's own header says the answer came from its cache."""
    if peer == "nginx-cache":
        return headers.get("x-cache-status") == "HIT"
    if peer == "varnish":           # X-Varnish: this request's id and the object's
        return len(headers.get("x-varnish", "").split()) == 2
    if peer == "weir-cache":
        return headers.get("cache-status", "").replace(" ", "").startswith("weir;hit")
    return None


def cache_check(peer, port, path, origin_dir, n=CACHE_CHECK_N):
    """One GET of `path` (a miss, or already a hit), then `n` more on one
    keep-alive connection: all must be 200 with the origin's body, and the
    origin's count of `path` must not grow over the `n`. Bounded: n requests,
    2 s timeout each."""
    want = expected_body(path)
    rec = {"scenario": "cache-check", "peer": peer, "path": path, "n": n}
    try:
        status, body = http_get(port, path)
        rec["first_status"] = status
        before = origin_count(origin_dir, path)
        c = http.client.HTTPConnection(HOST, port, timeout=2.0)
        ok = 0
        headers = {}
        try:
            for _ in range(n):
                c.request("GET", path)
                r = c.getresponse()
                b = r.read()
                if r.status == 200 and b == want:
                    ok += 1
                headers = {k.lower(): v for k, v in r.getheaders()}
        finally:
            c.close()
        rec["ok"] = ok
        rec["origin_requests"] = origin_count(origin_dir, path) - before
        rec["headers"] = {k: headers[k] for k in CACHE_HEADERS if k in headers}
        rec["hit_header"] = hit_header(peer, headers)
        if ok < n:
            rec["failed"] = f"{n - ok} of {n} answers were not 200 with the origin's body"
        elif rec["origin_requests"]:
            rec["failed"] = (f"not served from the cache: {rec['origin_requests']} of {n} requests "
                             "reached the origin")
    except (OSError, http.client.HTTPException) as e:
        rec["failed"] = repr(e)
    return rec


# --------------------------------------------------------------- configs ---
ORIGIN_CONF = """\
# The origin: the one backend behind every peer. Not a peer under test.
worker_processes 1;
worker_rlimit_nofile {nofile};
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections {wconns}; }}
http {{
    access_log off;
    server_tokens off;
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 300s;
    keepalive_requests 100000000;
    open_file_cache max=16 inactive=600s;
    open_file_cache_valid 600s;
    log_format uri $request_uri;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {dir}/www;
        location = / {{ default_type text/plain; return 200 "hello world!\\n"; }}
        location / {{ default_type application/octet-stream; }}
        # cacheable copies of the two objects, for the cached scenarios; every
        # request that reaches them is logged (only the caches' misses do)
        location = /cache/13b {{
            access_log {dir}/cached.log uri;
            add_header Cache-Control "max-age=3600";
            default_type text/plain;
            return 200 "hello world!\\n";
        }}
        location = /cache/16k {{
            access_log {dir}/cached.log uri;
            add_header Cache-Control "max-age=3600";
            default_type application/octet-stream;
            alias {dir}/www/16k;
        }}
    }}
}}
"""

NGINX_CONF = """\
worker_processes 1;
worker_rlimit_nofile {nofile};
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections {wconns}; }}
http {{
    access_log off;
    server_tokens off;
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    keepalive_timeout 300s;
    keepalive_requests 100000000;     # the default (1000) would make wrk reconnect
{http_extra}    upstream origin {{
        server 127.0.0.1:{origin};
        keepalive 64;
        keepalive_requests 100000000;
        keepalive_timeout 300s;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=1024;
{tls_listen}
        location / {{
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
{location_extra}        }}
    }}
}}
"""

# nginx-limit_req: the nginx peer plus one limit_req zone, keyed by the client
# address like weir's key = "client", that never limits (nodelay: over the
# rate nginx would answer at once, as weir does, instead of queueing).
NGINX_LIMIT_REQ_HTTP = """\
    limit_req_zone $binary_remote_addr zone=bench:1m rate={rate}r/s;
    limit_req_status 429;
"""
NGINX_LIMIT_REQ_LOCATION = """\
            limit_req zone=bench burst={burst} nodelay;
"""

# weir-local and weir-global: the weir peer plus one policy that never limits.
WEIR_RL_POLICY = """
[rate_limits.bench]
rate = "{rate}/s"
burst = {burst}
key = "client"
scope = "{scope}"
"""
WEIR_RL_REDIS = """
[redis]
url = "redis://127.0.0.1:{port}/0"
"""

NGINX_TLS = """\
        listen 127.0.0.1:{tls_port} ssl http2 backlog=1024;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;    # 1.22's default stops at TLSv1.2
        ssl_session_cache off;
        ssl_session_tickets off;"""

NGINX_CACHE_CONF = """\
# nginx with proxy_cache: the nginx peer's config plus a cache on disk (in the
# page cache after the first hit). open_file_cache keeps the cache file open
# between hits (without it each hit opens, stats and closes it). sendfile stays
# off, its default: on, it sends the body with a call of its own, and needs
# tcp_nopush (two setsockopt calls a hit) not to cost a second segment; either
# way more CPU per hit here than two preads and one writev.
worker_processes 1;
worker_rlimit_nofile {nofile};
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections {wconns}; }}
http {{
    access_log off;
    server_tokens off;
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    keepalive_timeout 300s;
    keepalive_requests 100000000;
    open_file_cache max=1000 inactive=600s;
    open_file_cache_valid 600s;
    proxy_cache_path {dir}/cache levels=1:2 keys_zone=bench:10m max_size=256m inactive=60m
                     use_temp_path=off;
    upstream origin {{
        server 127.0.0.1:{origin};
        keepalive 64;
        keepalive_requests 100000000;
        keepalive_timeout 300s;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=1024;
        location / {{
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache bench;                 # freshness from the origin's max-age
            add_header X-Cache-Status $upstream_cache_status;
        }}
    }}
}}
"""

HAPROXY_CONF = """\
global
    nbthread 1
    maxconn {maxconn}
    tune.ssl.cachesize 0
    # no log lines: logging off

defaults
    mode http
    maxconn {maxconn}
    timeout connect 5s
    timeout client 300s
    timeout server 300s
    timeout http-keep-alive 300s
    http-reuse always

frontend plain
    bind 127.0.0.1:{port} backlog 1024
    default_backend origin
{tls_frontend}
backend origin
    server origin 127.0.0.1:{origin}
"""

HAPROXY_TLS = """
frontend tls
    bind 127.0.0.1:{tls_port} ssl crt {pem} alpn h2,http/1.1 no-tls-tickets backlog 1024
    default_backend origin
"""

WEIR_CONF = """\
[runtime]
workers = 1
shutdown_timeout = "2s"

[[listeners]]
name = "plain"
listen = "127.0.0.1:{port}"
idle_timeout = "300s"
{tls_listener}
[[routes]]
upstream = "bench"
{route_extra}
[upstreams.bench]
backends = [{{ address = "127.0.0.1:{origin}" }}]
timeouts = {{ idle = "300s" }}

[logging]
level = "warn"
{access_log}{extra}"""

WEIR_TLS = """
[[listeners]]
name = "tls"
listen = "127.0.0.1:{tls_port}"
idle_timeout = "300s"
tls = {{ cert = "{cert}", key = "{key}" }}
"""


def write(path, text):
    with open(path, "w") as f:
        f.write(text)


class Setup:
    """Binaries, limits, CPU layout: what every peer needs to start."""
    nginx = haproxy = weir = varnishd = wrk = oha = h2load = openssl = taskset = None
    redis_server = None
    nofile = 20000
    pin = True
    proxy_cpus = loadgen_cpus = origin_cpus = redis_cpus = ""
    cert = key = pem = None
    ready_timeout = 30.0

    def pinned(self, cpus):
        return [self.taskset, "-c", cpus] if (self.pin and cpus) else []

    def limits(self):
        n = self.nofile
        return {"nofile": n, "wconns": max(1024, n - 200), "maxconn": max(1000, (n - 200) // 2)}


class Peer:
    def __init__(self, name, setup):
        self.name = name
        self.s = setup
        self.port, self.tls_port = PEER_PORTS[name]
        self.proc = None          # the long-lived instance
        self.skip = None
        self.cache_failed = {}    # cached path -> why the cache check failed

    def binary(self):
        return {"direct": self.s.nginx, "nginx": self.s.nginx, "haproxy": self.s.haproxy,
                "weir": self.s.weir, "weir-log": self.s.weir, "nginx-cache": self.s.nginx,
                "varnish": self.s.varnishd, "weir-cache": self.s.weir,
                "nginx-limit_req": self.s.nginx, "weir-local": self.s.weir,
                "weir-global": self.s.weir if self.s.redis_server else None}[self.name]

    def start(self, run_dir, tag="", port=None, tls=False):
        """Start an instance; a Proc, or RuntimeError."""
        s = self.s
        port = port or self.port
        tls = tls and self.tls_port is not None and s.cert is not None
        d = os.path.join(run_dir, self.name + tag)
        os.makedirs(os.path.join(d, "tmp"), exist_ok=True)
        logfile = os.path.join(d, "output.log")
        cpus = s.proxy_cpus
        if self.name == "direct":
            argv = origin_argv(s, d, port)
            cpus = s.origin_cpus
        elif self.name in ("nginx", "nginx-limit_req"):
            conf = os.path.join(d, "nginx.conf")
            tls_listen = NGINX_TLS.format(tls_port=self.tls_port, cert=s.cert, key=s.key) if tls else ""
            http_extra = location_extra = ""
            if self.name == "nginx-limit_req":
                http_extra = NGINX_LIMIT_REQ_HTTP.format(rate=RL_RATE)
                location_extra = NGINX_LIMIT_REQ_LOCATION.format(burst=RL_BURST)
            write(conf, NGINX_CONF.format(dir=d, port=port, origin=ORIGIN_PORT,
                                          tls_listen=tls_listen, http_extra=http_extra,
                                          location_extra=location_extra, **s.limits()))
            argv = [s.nginx, "-p", d + "/", "-e", os.path.join(d, "error.log"), "-c", conf,
                    "-g", "daemon off;"]
        elif self.name == "nginx-cache":
            conf = os.path.join(d, "nginx.conf")
            write(conf, NGINX_CACHE_CONF.format(dir=d, port=port, origin=ORIGIN_PORT,
                                                **s.limits()))
            argv = [s.nginx, "-p", d + "/", "-e", os.path.join(d, "error.log"), "-c", conf,
                    "-g", "daemon off;"]
        elif self.name == "varnish":
            # the built-in VCL (-b): caches GET/HEAD without cookies or
            # Authorization for the origin's max-age; one thread pool, malloc
            # storage of the size of weir's default [cache] memory; no management
            # port (-T none): stopped by signal like the others
            argv = [s.varnishd, "-F", "-a", f"{HOST}:{port}", "-b", f"{HOST}:{ORIGIN_PORT}",
                    "-s", "malloc,256m", "-n", os.path.join(d, "varnish"), "-T", "none",
                    "-p", "thread_pools=1"]
        elif self.name == "haproxy":
            conf = os.path.join(d, "haproxy.cfg")
            tls_fe = HAPROXY_TLS.format(tls_port=self.tls_port, pem=s.pem) if tls else ""
            write(conf, HAPROXY_CONF.format(port=port, origin=ORIGIN_PORT, tls_frontend=tls_fe,
                                            **s.limits()))
            argv = [s.haproxy, "-f", conf, "-db"]
        else:  # weir, weir-log, weir-cache, weir-local, weir-global
            conf = os.path.join(d, "weir.toml")
            tls_l = WEIR_TLS.format(tls_port=self.tls_port, cert=s.cert, key=s.key) if tls else ""
            alog = route_extra = extra = ""
            if self.name == "weir-log":
                alog = (f'access_log = "{os.path.join(d, "access.log")}"\n'
                        'access_log_format = "json"\n')
            if self.name == "weir-cache":
                route_extra = "cache = true\n"
                extra = '\n[cache]\nmemory = "256MiB"\n'
            if self.name in ("weir-local", "weir-global"):
                route_extra = 'rate_limit = ["bench"]\n'
                scope = self.name.split("-")[1]
                extra = WEIR_RL_POLICY.format(rate=RL_RATE, burst=RL_BURST, scope=scope)
                if scope == "global":
                    extra += WEIR_RL_REDIS.format(port=REDIS_PORT)
            write(conf, WEIR_CONF.format(port=port, origin=ORIGIN_PORT, tls_listener=tls_l,
                                         access_log=alog, route_extra=route_extra, extra=extra))
            argv = [s.weir, "--config", conf]
        pr = Proc(self.name + tag, s.pinned(cpus) + argv, cwd=d, logfile=logfile)
        err = wait_ready(pr, port, timeout=s.ready_timeout)
        if err is None and tls:
            err = wait_ready(pr, self.tls_port, tls=True, timeout=s.ready_timeout)
        if err:
            pr.stop()
            raise RuntimeError(f"{self.name}: {err} (log: {logfile})")
        return pr


def origin_argv(s, d, port):
    www = os.path.join(d, "www")
    os.makedirs(www, exist_ok=True)
    with open(os.path.join(www, "16k"), "wb") as f:
        f.write((b"0123456789abcdef" * (BODY_16K // 16 + 1))[:BODY_16K])
    conf = os.path.join(d, "nginx.conf")
    write(conf, ORIGIN_CONF.format(dir=d, port=port, **s.limits()))
    return [s.nginx, "-p", d + "/", "-e", os.path.join(d, "error.log"), "-c", conf,
            "-g", "daemon off;"]


def redis_command(port, *args, timeout=2.0):
    """One command to the Redis on `port` (RESP over loopback); its answer as
    bytes (a bulk or simple string), an int, or a list of those."""
    req = b"*%d\r\n" % len(args) + b"".join(
        b"$%d\r\n%s\r\n" % (len(a), a) for a in (x.encode() for x in args))
    with socket.create_connection((HOST, port), timeout=timeout) as c:
        c.sendall(req)
        f = c.makefile("rb")
        return _resp(f)


def _resp(f):
    line = f.readline()
    if not line.endswith(b"\r\n"):
        raise OSError("redis: connection closed")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest
    if kind == b"-":
        raise OSError(f"redis: {rest.decode(errors='replace')}")
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        return None if n < 0 else f.read(n + 2)[:-2]
    if kind == b"*":
        return [_resp(f) for _ in range(int(rest))]
    raise OSError(f"redis: unexpected answer {line[:40]!r}")


def redis_stats(port):
    """Calls per command (INFO commandstats) and the server's read and write
    events (INFO stats), as one flat dict: cmd:<name> -> calls, plus
    reads and writes."""
    text = redis_command(port, "INFO", "commandstats").decode()
    text += redis_command(port, "INFO", "stats").decode()
    out = {}
    for line in text.splitlines():
        m = re.match(r"cmdstat_([^:]+):calls=(\d+)", line)
        if m:
            out["cmd:" + m.group(1)] = int(m.group(2))
        m = re.match(r"total_(reads|writes)_processed:(\d+)", line)
        if m:
            out[m.group(1)] = int(m.group(2))
    return out


def start_redis(s, run_dir):
    """The Redis of weir-global: loopback only, no persistence; a Proc, or
    RuntimeError."""
    d = os.path.join(run_dir, "redis")
    os.makedirs(d, exist_ok=True)
    argv = [s.redis_server, "--port", str(REDIS_PORT), "--bind", HOST, "--save", "",
            "--appendonly", "no", "--daemonize", "no", "--dir", d,
            "--logfile", os.path.join(d, "redis.log")]
    pr = Proc("redis", s.pinned(s.redis_cpus) + argv, cwd=d,
              logfile=os.path.join(d, "output.log"))
    end = time.monotonic() + s.ready_timeout
    last = "no answer"
    while time.monotonic() < end:
        if not pr.alive():
            last = f"exited with status {pr.p.returncode}"
            break
        try:
            if redis_command(REDIS_PORT, "PING") == b"PONG":
                return pr
        except OSError as e:
            last = repr(e)
        time.sleep(0.2)
    pr.stop()
    raise RuntimeError(f"redis-server: {last} (log: {d}/redis.log)")


def make_cert(s, out_dir, kind):
    """A self-signed certificate for 127.0.0.1, made now; every TLS peer uses it."""
    d = os.path.join(out_dir, "tls")
    os.makedirs(d, exist_ok=True)
    key, cert, pem = (os.path.join(d, n) for n in ("site.key", "site.pem", "site-with-key.pem"))
    newkey = ["-newkey", "rsa:2048"] if kind == "rsa" else \
        ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
    argv = [s.openssl, "req", "-x509", *newkey, "-nodes", "-days", "2",
            "-subj", "/CN=bench.test", "-addext", "subjectAltName=DNS:bench.test,IP:127.0.0.1",
            "-keyout", key, "-out", cert]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError(f"openssl failed: {r.stderr.strip()[-300:]}")
    with open(pem, "w") as f:
        f.write(open(cert).read() + open(key).read())
    s.cert, s.key, s.pem = cert, key, pem


# ------------------------------------------------------- load generators ---
def to_ms(text):
    m = re.match(r"([\d.]+)(us|ms|s|m)$", text.strip())
    if not m:
        return None
    return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[m.group(2)]


def parse_wrk(out):
    r = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    r["rps"] = float(m.group(1)) if m else None
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+),", out)
    r["requests"] = int(m.group(1)) if m else None
    for pct in ("50", "99"):
        m = re.search(rf"^\s+{pct}(?:\.000)?%\s+(\S+)", out, re.M)
        r[f"p{pct}_ms"] = to_ms(m.group(1)) if m else None
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    sock = sum(int(x) for x in m.groups()) if m else 0
    m2 = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    non2xx = int(m2.group(1)) if m2 else 0
    r["errors"] = sock + non2xx
    r["error_detail"] = ", ".join(x for x in (m.group(0) if m else "",
                                              f"non-2xx/3xx {non2xx}" if non2xx else "") if x)
    return r


def wrk(s, port, path, conns, dur, close=False):
    argv = s.pinned(s.loadgen_cpus) + [s.wrk, "-t1", f"-c{conns}", f"-d{dur}s", "--latency",
                                       "--timeout", "5s"]
    if close:
        argv += ["-H", "Connection: close"]
    argv.append(f"http://{HOST}:{port}{path}")
    rc, out, err = run_tool(argv, timeout=dur + 30)
    r = parse_wrk(out)
    r["tool_output"] = (out[-1500:] + err[-300:]).strip()
    if rc != 0 or r["rps"] is None:
        r["failed"] = f"wrk exited {rc}: {err.strip()[-200:]}"
    return r


def oha(s, port, rate, conns, dur):
    argv = s.pinned(s.loadgen_cpus) + [
        s.oha, "--no-tui", "--output-format", "json", "-z", f"{dur}s", "-w",
        "-q", str(rate), "-c", str(conns), "--latency-correction", "-t", "5s",
        f"http://{HOST}:{port}/"]
    rc, out, err = run_tool(argv, timeout=dur + 30)
    r = {"tool_output": err[-300:].strip()}
    try:
        j = json.loads(out)
    except ValueError:
        r["failed"] = f"oha exited {rc}: {(out[-200:] + err[-200:]).strip()}"
        return r
    summ = j.get("summary", {})
    pct = j.get("latencyPercentiles", {})
    r["rps"] = summ.get("requestsPerSec")
    for key, name in (("p50", "p50"), ("p99", "p99"), ("p99.9", "p999")):
        v = pct.get(key)
        r[f"{name}_ms"] = v * 1e3 if v is not None else None
    codes = {str(k): v for k, v in (j.get("statusCodeDistribution") or {}).items()}
    errs = j.get("errorDistribution") or {}
    ok = sum(v for k, v in codes.items() if k.startswith("2"))
    r["requests"] = sum(codes.values()) + sum(errs.values())
    r["errors"] = r["requests"] - ok
    r["error_detail"] = json.dumps({"status": codes, "errors": errs})[:300] if r["errors"] else ""
    if r["rps"] is not None and r["rps"] < 0.95 * rate:
        r["failed"] = f"rate not sustained: {r['rps']:.0f} of {rate} req/s"
    return r


def parse_h2load(out):
    r = {}
    m = re.search(r"finished in ([\d.]+)(\w+), ([\d.]+) req/s", out)
    if m:
        r["elapsed_s"] = to_ms(m.group(1) + m.group(2)) / 1e3
        r["rps"] = float(m.group(3))
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                  r"(\d+) failed, (\d+) errored, (\d+) timeout", out)
    if m:
        total, started, done, ok, failed, errored, tmo = map(int, m.groups())
        r.update(total=total, done=done, succeeded=ok, failed_n=failed, errored=errored,
                 timeout=tmo)
    m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    if m:
        r["non2xx"] = sum(int(x) for x in m.groups()[1:])
    for key, pat in (("tls_protocol", r"TLS Protocol: (\S+)"), ("cipher", r"Cipher: (\S+)"),
                     ("kex", r"Server Temp Key: (.+)"), ("alpn", r"Application protocol: (\S+)")):
        m = re.search(pat, out)
        if m:
            r[key] = m.group(1).strip()
    return r


def h2load(s, args, port, timeout):
    argv = s.pinned(s.loadgen_cpus) + [s.h2load, "-t1", *args, f"https://{HOST}:{port}/"]
    rc, out, err = run_tool(argv, timeout=timeout)
    r = parse_h2load(out)
    r["rc"] = rc
    r["tool_output"] = (out[-1200:] + err[-300:]).strip()
    return r


def tls_handshakes(s, port, conns, dur):
    """Repeated h2load runs of `conns` connections with one request each, until
    `dur` seconds are spent: handshakes/s = successful requests / h2load time."""
    ok = errors = runs = 0
    elapsed = 0.0
    last = {}
    t_end = time.monotonic() + dur
    while True:
        last = h2load(s, ["-n", str(conns), "-c", str(conns), "-m", "1"], port, timeout=60)
        runs += 1
        if "succeeded" not in last or "elapsed_s" not in last:
            return {"failed": f"h2load exited {last['rc']}: {last['tool_output'][-300:]}",
                    "tool_output": last["tool_output"]}
        # whether h2load's "succeeded" includes 4xx/5xx answers depends on its
        # version: count a request as bad if either view says so
        bad = max(last["total"] - last["succeeded"], last.get("non2xx", 0))
        ok += last["total"] - bad
        errors += bad
        elapsed += last["elapsed_s"]
        if time.monotonic() >= t_end or runs >= 200:
            break
    r = {"requests": ok + errors, "handshakes": ok, "rps": ok / elapsed if elapsed else None,
         "errors": errors, "h2load_runs": runs, "h2load_s": round(elapsed, 3),
         "tool_output": last.get("tool_output", "")}
    for k in ("tls_protocol", "cipher", "kex", "alpn"):
        if k in last:
            r[k] = last[k]
    if r.get("alpn") != "h2":
        r["failed"] = f"ALPN {r.get('alpn')!r}, expected h2"
    return r


def tls_h2(s, port, clients, streams, dur):
    last = h2load(s, ["-c", str(clients), "-m", str(streams), "-D", str(dur)], port,
                  timeout=dur + 30)
    r = {"tool_output": last["tool_output"]}
    if "succeeded" not in last:
        r["failed"] = f"h2load exited {last['rc']}: {last['tool_output'][-300:]}"
        return r
    r["requests"] = last["done"]
    # with -D, requests still in flight at the deadline are not "done": not errors
    r["errors"] = max(last["done"] - last["succeeded"], last.get("non2xx", 0))
    ok = last["done"] - r["errors"]
    r["rps"] = ok / last["elapsed_s"] if last.get("elapsed_s") else None
    for k in ("tls_protocol", "cipher", "kex", "alpn"):
        if k in last:
            r[k] = last[k]
    if r.get("alpn") != "h2":
        r["failed"] = f"ALPN {r.get('alpn')!r}, expected h2"
    return r


# ---------------------------------------------- idle connection holder ---
def hold_main(argv):
    """Child mode: open N keep-alive connections, one GET / each, keep them idle.
    stdout: 'READY opened ok200 errors seconds', then on a line on stdin (or
    after --hold-max s) 'DONE still_open', then it closes everything."""
    ap = argparse.ArgumentParser(prog="bench.py _hold")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("-n", type=int, required=True)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--hold-max", type=float, default=60.0)
    a = ap.parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        pass
    asyncio.run(_hold(a))
    return 0


async def _read_response(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    status = head.split(b" ", 2)[1]
    m = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", head)
    if m:
        await reader.readexactly(int(m.group(1)))
    elif re.search(rb"(?im)^transfer-encoding:.*chunked", head):
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    return status


async def _hold(a):
    request = f"GET / HTTP/1.1\r\nHost: {HOST}:{a.port}\r\n\r\n".encode()
    sem = asyncio.Semaphore(a.concurrency)
    conns, errors = [], []
    ok200 = 0

    async def one():
        nonlocal ok200
        async with sem:
            try:
                r, w = await asyncio.open_connection(HOST, a.port)
                conns.append((r, w))
                w.write(request)
                await w.drain()
                if await _read_response(r) == b"200":
                    ok200 += 1
                else:
                    errors.append("non-200")
            except Exception as e:  # noqa: BLE001 - counted and reported
                errors.append(repr(e))

    t0 = time.monotonic()
    try:
        await asyncio.wait_for(asyncio.gather(*(one() for _ in range(a.n))), 90)
    except asyncio.TimeoutError:
        errors.append("timeout while opening")
    opened = sum(1 for r, w in conns if not w.is_closing())
    print(f"READY {opened} {ok200} {len(errors)} {time.monotonic() - t0:.2f}", flush=True)
    if errors:
        print(f"first error: {errors[0]}", file=sys.stderr, flush=True)
    loop = asyncio.get_running_loop()
    try:
        await asyncio.wait_for(loop.run_in_executor(None, sys.stdin.readline), a.hold_max)
    except asyncio.TimeoutError:
        pass
    await asyncio.sleep(0.2)      # let pending EOFs arrive
    still = sum(1 for r, w in conns if not r.at_eof() and not w.is_closing())
    print(f"DONE {still}", flush=True)
    for r, w in conns:
        w.close()
    os._exit(0)                   # the executor thread may still wait on stdin


# --------------------------------------------------------------- runner ---
class Runner:
    def __init__(self, s, a, peers, out_dir):
        self.s, self.a = s, a
        self.peers = peers                       # name -> Peer (available ones)
        self.out_dir = out_dir
        self.run_dir = os.path.join(out_dir, "run")
        self.raw = open(os.path.join(out_dir, "raw.jsonl"), "a")
        self.origin = None
        self.origin_dir = os.path.join(self.run_dir, "direct-origin")
        self.redis = None                        # weir-global's Redis, when it runs

    def record(self, rec):
        rec["ts"] = round(time.time(), 3)
        self.raw.write(json.dumps(rec) + "\n")
        self.raw.flush()

    def peers_for(self, scen):
        if scen == "access-log":
            names = ["weir", "weir-log"]
        elif scen in TLS_SCENARIOS:
            names = ["nginx", "haproxy", "weir"]
        elif scen in CACHED_SCENARIOS:
            names = CACHE_PEERS
        elif scen in RL_SCENARIO_PEERS:
            names = RL_SCENARIO_PEERS[scen]
        else:
            names = BASE_PEERS
        return [self.peers[n] for n in names if n in self.peers and self.peers[n].skip is None]

    def our_pids(self):
        return set(process_tree(os.getpid()))

    def target(self, peer):
        return self.origin if peer.name == "direct" else peer.proc

    # ---- one measurement of a load scenario ----
    def measure(self, scen, peer, rep, last=True):
        """One measurement, recorded; returns its record. Unless it is the
        `last` try, a noisy one is marked superseded (left out of the medians)
        for the caller to measure again."""
        CLOCK.check()
        s, a = self.s, self.a
        rec = {"scenario": scen, "peer": peer.name, "rep": rep}
        target = self.target(peer)
        if target is None or not target.alive():
            rec["failed"] = "process not running"
            self.record(rec)
            log(f"{scen:14s} {peer.name:11s} rep{rep}  FAILED: not running")
            return rec
        tpids = list(target.tree())
        opids = list(self.origin.tree())
        log_before = None
        if scen == "access-log" and peer.name == "weir-log":
            log_before = os.path.getsize(peer.access_log_path)
        path = CACHED_PATHS.get(scen)
        if path:
            origin_before = origin_count(self.origin_dir, path)
        redis = self.redis if scen in REDIS_SCENARIOS and self.redis is not None else None
        if redis is not None:
            redis_pids = list(redis.tree())
            redis_warn0 = count_matches(peer.log_path, b"redis unavailable") \
                if peer.name == "weir-global" else 0
            try:
                redis0 = redis_stats(REDIS_PORT)
            except OSError as e:
                redis0 = None
                rec["redis_error"] = repr(e)
            r0 = cpu_ticks(redis_pids)
        snap0, ours0, mach0 = all_cpu_ticks(), self.our_pids(), machine_ticks()
        c0, o0 = cpu_ticks(tpids), cpu_ticks(opids)
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.monotonic()
        if scen in ("keepalive", "access-log", "ratelimit-local", "ratelimit-global"):
            res = wrk(s, peer.port, "/", a.conns, a.dur_log if scen == "access-log" else a.dur_ka)
        elif scen == "keepalive-16k":
            res = wrk(s, peer.port, "/16k", a.conns, a.dur_16k)
        elif scen in CACHED_SCENARIOS:
            res = wrk(s, peer.port, path, a.conns,
                      a.dur_ka if scen == "cached-13b" else a.dur_16k)
        elif scen == "new-conn":
            res = wrk(s, peer.port, "/", a.conns, a.dur_close, close=True)
        elif scen in ("latency", "ratelimit-latency"):
            res = oha(s, peer.port, a.rate, a.conns_latency, a.dur_lat)
        elif scen == "tls-handshake":
            res = tls_handshakes(s, peer.tls_port, a.tls_conns, a.dur_hs)
        elif scen == "tls-h2":
            res = tls_h2(s, peer.tls_port, 2, 50, a.dur_h2)
        else:
            raise ValueError(scen)
        wall = time.monotonic() - t0
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        c1, o1 = cpu_ticks(tpids), cpu_ticks(opids)
        snap1, mach1 = all_cpu_ticks(), machine_ticks()
        if redis is not None:
            r1 = cpu_ticks(redis_pids)
            try:
                redis1 = redis_stats(REDIS_PORT)
            except OSError as e:
                redis1 = None
                rec["redis_error"] = repr(e)
        rec.update(res)
        rec["wall_s"] = round(wall, 3)
        rec["proxy_cpu_s"] = (c1 - c0) / CLK_TCK
        rec["proxy_util"] = rec["proxy_cpu_s"] / wall
        rec["origin_cpu_s"] = (o1 - o0) / CLK_TCK
        rec["loadgen_cpu_s"] = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
        # with the 2-core layout, origin and load generator share one core: near
        # 1.0 here means that core, not the proxy, limited the run
        rec["origin_loadgen_util"] = (rec["origin_cpu_s"] + rec["loadgen_cpu_s"]) / wall
        top = []
        rec["foreign_cpu_s"] = round(foreign_cpu_s(snap0, snap1, ours0 | self.our_pids(), top), 3)
        rec["foreign_top"] = top
        rec["steal_s"] = round((mach1[1] - mach0[1]) / CLK_TCK, 3)
        if redis is not None:
            rec["redis_cpu_s"] = (r1 - r0) / CLK_TCK
            # Redis is pinned with the origin and the load generator by default
            rec["origin_loadgen_redis_util"] = (rec["origin_loadgen_util"]
                                                + rec["redis_cpu_s"] / wall)
        # all CPU time used meanwhile, less what the peer, the origin, the load
        # generator, Redis and the foreign processes seen in both snapshots used: the
        # driver itself, the kernel's own threads and interrupts, and processes
        # that started and ended between the snapshots (which foreign_cpu_s misses)
        rec["unaccounted_cpu_s"] = round((mach1[0] - mach0[0]) / CLK_TCK - rec["proxy_cpu_s"]
                                         - rec["origin_cpu_s"] - rec["loadgen_cpu_s"]
                                         - rec.get("redis_cpu_s", 0)
                                         - rec["foreign_cpu_s"], 3)
        n_ok = (res.get("requests") or 0) - (res.get("errors") or 0)
        if n_ok > 0:
            rec["cpu_s_per_100k"] = rec["proxy_cpu_s"] * 1e5 / n_ok
        if redis is not None and redis0 is not None and redis1 is not None:
            calls = {k[4:]: redis1[k] - redis0.get(k, 0) for k in redis1
                     if k.startswith("cmd:") and redis1[k] != redis0.get(k, 0)}
            calls.pop("info", None)             # the driver's own two INFO calls
            rec["redis_calls"] = calls
            rec["redis_reads"] = redis1.get("reads", 0) - redis0.get("reads", 0) - 2
            if n_ok > 0:
                # a decision is one EVALSHA (an EVAL when Redis lost the script)
                rec["redis_evals_per_req"] = (calls.get("evalsha", 0) + calls.get("eval", 0)) / n_ok
                rec["redis_cmds_per_req"] = sum(calls.values()) / n_ok
                rec["redis_reads_per_req"] = rec["redis_reads"] / n_ok
                rec["redis_cpu_s_per_100k"] = rec["redis_cpu_s"] * 1e5 / n_ok
                rec["total_cpu_s_per_100k"] = (rec["proxy_cpu_s"] + rec["redis_cpu_s"]) * 1e5 / n_ok
        if redis is not None and peer.name == "weir-global":
            rec["redis_unavailable_logged"] = \
                count_matches(peer.log_path, b"redis unavailable") - redis_warn0
            if rec["redis_unavailable_logged"]:
                rec["failed"] = "weir logged Redis unavailable: requests were decided without it"
            elif n_ok > 0 and rec.get("redis_evals_per_req") is not None and \
                    rec["redis_evals_per_req"] < 0.99:
                rec["failed"] = (f"{rec['redis_evals_per_req']:.3f} Redis decisions per request: "
                                 "some requests were decided without Redis")
        if scen == "tls-handshake" and res.get("handshakes"):
            rec["cpu_ms_per_handshake"] = rec["proxy_cpu_s"] * 1e3 / res["handshakes"]
        if log_before is not None:
            size = os.path.getsize(peer.access_log_path)
            lines = count_lines(peer.access_log_path, log_before)
            rec["log_lines"] = lines
            rec["log_bytes"] = size - log_before
            if res.get("requests") and lines < res["requests"] * 0.99:
                rec["failed"] = f"access log has {lines} lines for {res['requests']} requests"
            os.truncate(peer.access_log_path, 0)       # keep the results dir small
        if path:
            # every request answered from the cache: the origin saw none of them
            rec["origin_requests"] = origin_count(self.origin_dir, path) - origin_before
            if peer.cache_failed.get(path):
                rec["failed"] = f"cache check failed: {peer.cache_failed[path]}"
            elif res.get("requests") and rec["origin_requests"] > 0.001 * res["requests"]:
                rec["failed"] = (f"not served from the cache: {rec['origin_requests']} of "
                                 f"{res['requests']} requests reached the origin")
        if res.get("requests") and res.get("errors", 0) > 0.001 * res["requests"]:
            rec.setdefault("failed", f"{res['errors']} errors: {res.get('error_detail', '')}")
        if not target.alive():
            rec["failed"] = "process died"
        if not last and other_cpu_s(rec) > NOISY * wall:
            rec["superseded"] = "noisy: measured again"
        self.record(rec)
        if scen == "ratelimit-global" and rec.get("redis_evals_per_req") is not None:
            detail = (f"{fmt(rec.get('cpu_s_per_100k'), 2)} CPU s/100k, Redis "
                      f"{fmt(rec.get('redis_evals_per_req'), 3)} EVALSHA/req, "
                      f"{fmt(rec.get('redis_reads_per_req'), 3)} reads/req, "
                      f"{fmt(rec.get('redis_cpu_s_per_100k'), 2)} CPU s/100k")
        elif scen in ("latency", "ratelimit-latency"):
            detail = (f"p50 {fmt(rec.get('p50_ms'), 3)} p99 {fmt(rec.get('p99_ms'), 3)} "
                      f"p99.9 {fmt(rec.get('p999_ms'), 3)} ms")
        elif scen == "tls-handshake":
            detail = f"{fmt(rec.get('cpu_ms_per_handshake'), 3)} CPU ms/handshake"
        elif scen == "tls-h2":
            detail = f"{fmt(rec.get('cpu_s_per_100k'), 2)} CPU s/100k"
        elif path:
            detail = (f"p99 {fmt(rec.get('p99_ms'), 2)} ms, {fmt(rec.get('cpu_s_per_100k'), 2)} "
                      f"CPU s/100k hits, origin requests {rec.get('origin_requests')}")
        else:
            detail = (f"p99 {fmt(rec.get('p99_ms'), 2)} ms, {fmt(rec.get('cpu_s_per_100k'), 2)} "
                      f"CPU s/100k")
        log(f"{scen:14s} {peer.name:11s} rep{rep} {fmt(rec.get('rps'), 0):>9s} req/s  {detail}  "
            f"proxy util {rec['proxy_util']:.2f}  errors {rec.get('errors', '-')}  "
            f"foreign {rec['foreign_cpu_s']:.2f}s"
            + (f" ({', '.join(rec['foreign_top'])})" if rec["foreign_cpu_s"] >= 0.5 else "")
            + f"  unaccounted {rec['unaccounted_cpu_s']:.2f}s"
            + (f"  steal {rec['steal_s']:.2f}s" if rec["steal_s"] else "")
            + (f"  FAILED: {rec['failed']}" if rec.get("failed") else "")
            + (f"  ({rec['superseded']})" if rec.get("superseded") else ""))
        return rec

    def wait_quiet(self, max_s=120.0, window=2.0):
        """Until the machine's CPUs were busy less than NOISY of a core over
        `window` seconds (the benchmark's own processes idle between runs), or
        `max_s` seconds have passed."""
        end = time.monotonic() + min(max_s, max(0.0, CLOCK.left() - 30))
        while time.monotonic() < end:
            b0 = machine_ticks()[0]
            time.sleep(window)
            if (machine_ticks()[0] - b0) / CLK_TCK < NOISY * window:
                return True
        return False

    # ---- memory: fresh instance, RSS idle and with N idle connections ----
    def memory(self, peer, rep):
        CLOCK.check()
        s, a = self.s, self.a
        n = a.idle_conns
        port = peer.port + MEM_OFFSET
        rec = {"scenario": "memory", "peer": peer.name, "rep": rep, "conns": n}
        try:
            pr = peer.start(self.run_dir, tag=f"-mem{rep}", port=port, tls=False)
        except RuntimeError as e:
            rec["failed"] = str(e)
            self.record(rec)
            log(f"memory         {peer.name:9s} rep{rep}  FAILED to start: {e}")
            return
        holder = None
        try:
            http_get(port)                 # lazy initialisation done before "idle"
            time.sleep(1.0)
            rec["idle_rss_kib"], rec["idle_pss_kib"] = rss_kib(pr.tree())
            argv = s.pinned(s.loadgen_cpus) + [sys.executable, os.path.abspath(__file__), "_hold",
                                               "--port", str(port), "-n", str(n)]
            holder = Proc("hold", argv, capture=True, stdin_pipe=True,
                          logfile=os.path.join(self.run_dir, f"hold-{peer.name}-{rep}.log"))
            lines = queue.Queue()
            threading.Thread(target=lambda: [lines.put(x.decode()) for x in holder.p.stdout],
                             daemon=True).start()
            ready = wait_line(lines, "READY", 100)
            parts = ready.split() if ready else []
            if len(parts) < 5:
                raise RuntimeError("idle-connection holder did not report READY")
            rec["opened"], rec["ok200"], rec["open_errors"] = map(int, parts[1:4])
            rec["open_s"] = float(parts[4])
            time.sleep(2.0)                # idle: nothing in flight
            rec["held_rss_kib"], rec["held_pss_kib"] = rss_kib(pr.tree())
            rec["server_established"] = tcp_sockets(port, "01")
            holder.p.stdin.write(b"\n")
            holder.p.stdin.flush()
            done = wait_line(lines, "DONE", 30)
            rec["still_open"] = int(done.split()[1]) if done else None
            rec["kib_per_conn"] = (rec["held_rss_kib"] - rec["idle_rss_kib"]) / n
            rec["pss_kib_per_conn"] = (rec["held_pss_kib"] - rec["idle_pss_kib"]) / n
            rec["errors"] = n - min(rec["ok200"], rec["still_open"] or 0)
            if rec["ok200"] < n or (rec["still_open"] or 0) < n:
                rec["failed"] = (f"{rec['ok200']}/{n} got 200, {rec['still_open']}/{n} still open "
                                 f"at the end")
            log(f"memory         {peer.name:9s} rep{rep}  idle {rec['idle_rss_kib'] / 1024:.1f} MiB, "
                f"{n} conns {rec['held_rss_kib'] / 1024:.1f} MiB = {rec['kib_per_conn']:.2f} KiB/conn "
                f"(opened in {rec['open_s']:.1f}s; 200: {rec['ok200']}, open at end: "
                f"{rec['still_open']}, established at server: {rec['server_established']})"
                + (f"  FAILED: {rec['failed']}" if rec.get("failed") else ""))
        except Exception as e:  # noqa: BLE001 - recorded, the run goes on
            rec["failed"] = repr(e)
            log(f"memory         {peer.name:9s} rep{rep}  FAILED: {e!r}")
        finally:
            if holder is not None:
                holder.stop(grace=2.0)
            pr.stop()
        self.record(rec)

    def start_all(self, scenarios):
        os.makedirs(self.run_dir, exist_ok=True)
        self.origin = Peer("direct", self.s).start(self.run_dir, tag="-origin")
        log(f"origin nginx on {ORIGIN_PORT} (pid {self.origin.pid})")
        needed = set()
        for scen in scenarios:
            if scen != "memory":
                needed.update(p.name for p in self.peers_for(scen))
        want_tls = any(x in scenarios for x in TLS_SCENARIOS)
        if "weir-global" in needed:
            try:
                self.redis = start_redis(self.s, self.run_dir)
                log(f"started redis on {REDIS_PORT} (pid {self.redis.pid})")
            except RuntimeError as e:
                self.peers["weir-global"].skip = f"no Redis: {e}"
                log(f"SKIP weir-global: {e}")
                self.record({"scenario": "start", "peer": "redis", "failed": str(e)})
        for name in needed:
            peer = self.peers[name]
            if name == "direct" or peer.skip:
                continue
            try:
                peer.proc = peer.start(self.run_dir, tls=want_tls)
                peer.proc_dir = os.path.join(self.run_dir, name)
                peer.access_log_path = os.path.join(peer.proc_dir, "access.log")
                peer.log_path = os.path.join(peer.proc_dir, "output.log")
                log(f"started {name} on {peer.port}"
                    + (f" and TLS {peer.tls_port}" if want_tls and peer.tls_port else "")
                    + f" (pid {peer.proc.pid})")
            except RuntimeError as e:
                peer.skip = f"did not start: {e}"
                log(f"SKIP {name}: {e}")
                self.record({"scenario": "start", "peer": name, "failed": str(e)})

    def warm_up(self, scenarios):
        a = self.a
        for peer in self.peers.values():
            if peer.skip or (peer.proc is None and peer.name != "direct"):
                continue
            if self.s.wrk:
                wrk(self.s, peer.port, "/", a.conns, a.warmup)
                if "keepalive-16k" in scenarios and peer.name not in CACHE_PEERS:
                    wrk(self.s, peer.port, "/16k", a.conns, 1)
            if peer.name in CACHE_PEERS:
                for scen in CACHED_SCENARIOS:
                    if scen in scenarios:
                        self.check_cache(peer, CACHED_PATHS[scen])
                        wrk(self.s, peer.port, CACHED_PATHS[scen], a.conns, 1)
            if peer.name in ("weir-local", "weir-global") and peer.proc is not None:
                self.check_policy(peer)
            if peer.tls_port and self.s.h2load and peer.proc is not None and \
                    any(x in scenarios for x in TLS_SCENARIOS):
                h2load(self.s, ["-n", "2000", "-c", "2", "-m", "50"], peer.tls_port, 30)
        for peer in self.peers.values():
            if peer.name == "weir-log" and peer.proc is not None:
                os.truncate(peer.access_log_path, 0)

    def check_policy(self, peer, n=10):
        """Before any measurement: does the policy apply? weir's answers carry
        the RateLimit headers of the route's policy, and for a global policy
        each request is one decision in Redis."""
        rec = {"scenario": "policy-check", "peer": peer.name, "n": n}
        try:
            before = redis_stats(REDIS_PORT) if peer.name == "weir-global" else None
            c = http.client.HTTPConnection(HOST, peer.port, timeout=2.0)
            statuses, headers = [], {}
            try:
                for _ in range(n):
                    c.request("GET", "/")
                    r = c.getresponse()
                    r.read()
                    statuses.append(r.status)
                    headers = {k.lower(): v for k, v in r.getheaders()}
            finally:
                c.close()
            rec["ok"] = statuses.count(200)
            rec["headers"] = {k: headers[k] for k in ("ratelimit-policy", "ratelimit")
                              if k in headers}
            if before is not None:
                after = redis_stats(REDIS_PORT)
                rec["redis_evals"] = sum(after.get(k, 0) - before.get(k, 0)
                                         for k in ("cmd:evalsha", "cmd:eval"))
            if rec["ok"] < n:
                rec["failed"] = f"{n - rec['ok']} of {n} answers were not 200"
            elif "ratelimit-policy" not in rec["headers"]:
                rec["failed"] = "no RateLimit-Policy header: the policy does not apply"
            elif before is not None and rec["redis_evals"] < n:
                rec["failed"] = f"{rec['redis_evals']} Redis decisions for {n} requests"
        except (OSError, http.client.HTTPException) as e:
            rec["failed"] = repr(e)
        self.record(rec)
        if rec.get("failed"):
            peer.skip = f"policy check failed: {rec['failed']}"
        log(f"policy check   {peer.name:11s} {rec.get('ok', 0)}/{n} answers 200; headers "
            f"{rec.get('headers', {})}"
            + (f"; Redis decisions {rec['redis_evals']}" if "redis_evals" in rec else "")
            + (f"  FAILED: {rec['failed']} (peer skipped)" if rec.get("failed") else ""))

    def check_cache(self, peer, path):
        """Before any measurement: is the object answered from the peer's cache?"""
        rec = cache_check(peer.name, peer.port, path, self.origin_dir)
        self.record(rec)
        if rec.get("failed"):
            peer.cache_failed[path] = rec["failed"]
        log(f"cache check    {peer.name:11s} {path}: {rec.get('ok', 0)}/{rec['n']} answers 200 "
            f"with the origin's body, origin requests {rec.get('origin_requests', '-')} over "
            f"{rec['n']} after the first; headers {rec.get('headers', {})}"
            + (f"  FAILED: {rec['failed']}" if rec.get("failed") else "  -> hits"))

    def run(self, scenarios):
        self.start_all(scenarios)
        self.warm_up(scenarios)
        for rep in range(self.a.reps):
            for scen in scenarios:
                if scen == "cpu":
                    continue                    # measured during "keepalive"
                peers = self.peers_for(scen)
                k = rep % len(peers) if peers else 0
                for peer in peers[k:] + peers[:k]:
                    if scen == "memory":
                        self.memory(peer, rep)
                    else:
                        tries = 0
                        while self.measure(scen, peer, rep,
                                           last=tries >= self.a.retry_noisy).get("superseded"):
                            tries += 1
                            self.wait_quiet()
                    time.sleep(self.a.gap + (0.7 if scen in ("new-conn", "tls-handshake") else 0))


def wait_line(lines, prefix, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            line = lines.get(timeout=max(0.1, end - time.monotonic()))
        except queue.Empty:
            return None
        if line.startswith(prefix):
            return line.strip()
    return None


def count_matches(path, needle):
    """Lines of the file at `path` that contain `needle` (0 if it is missing)."""
    try:
        with open(path, "rb") as f:
            return sum(1 for line in f if needle in line)
    except OSError:
        return 0


def count_lines(path, offset):
    n = 0
    with open(path, "rb") as f:
        f.seek(offset)
        while True:
            chunk = f.read(1 << 20)
            if not chunk:
                return n
            n += chunk.count(b"\n")


# --------------------------------------------------------------- summary ---
def fmt(v, nd=2):
    if v is None or (isinstance(v, float) and v != v):
        return "-"
    return f"{v:,.{nd}f}"


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


class Table:
    """Medians per (scenario, peer) over the runs that did not fail."""

    def __init__(self, recs):
        self.recs = recs

    def runs(self, scen, peer):
        return [r for r in self.recs if r.get("scenario") == scen and r.get("peer") == peer
                and not r.get("superseded")]

    def med(self, scen, peer, key):
        return med([r.get(key) for r in self.runs(scen, peer) if not r.get("failed")])

    def errors(self, scen, peer):
        rs = self.runs(scen, peer)
        if not rs:
            return None
        return sum(r.get("errors") or 0 for r in rs), sum(1 for r in rs if r.get("failed")), len(rs)


NOISY = 0.10


def other_cpu_s(rec):
    """CPU seconds used during a measurement by what is not the benchmark:
    foreign processes, and short-lived ones seen only in the machine's total."""
    return rec.get("foreign_cpu_s", 0) + max(0.0, rec.get("unaccounted_cpu_s") or 0.0)


def ratio(v, ref):
    return v / ref if (v is not None and ref) else None


def cell(v, ref, nd):
    if v is None:
        return "-"
    r = ratio(v, ref)
    return fmt(v, nd) + (f" ({r:.2f})" if r is not None else "")


def best_cache_other(t, scen, key):
    """(value, peer) of the better of nginx-cache and varnish: the higher
    hits/s, the lower CPU; (None, None) when neither has a value."""
    vals = [(t.med(scen, x, key), x) for x in CACHE_OTHERS]
    vals = [v for v in vals if v[0] is not None]
    if not vals:
        return None, None
    return max(vals) if key == "rps" else min(vals)


def summarize(recs, meta):
    t = Table(recs)
    peers = [p for p in BASE_PEERS + CACHE_PEERS if any(r.get("peer") == p for r in recs)]
    out = []
    ref = REFERENCE
    p = meta["params"]

    def ref_value(scen, key):
        if scen in CACHED_SCENARIOS:
            return best_cache_other(t, scen, key)[0]
        return t.med(scen, ref, key)

    # headline
    cols = [
        ("keep-alive 13 B req/s", "keepalive", "rps", 0),
        ("16 KiB req/s", "keepalive-16k", "rps", 0),
        ("new conn/req req/s", "new-conn", "rps", 0),
        (f"p99 ms @{p['rate']}/s", "latency", "p99_ms", 3),
        ("CPU s/100k req", "keepalive", "cpu_s_per_100k", 2),
        ("idle RSS MiB", "memory", "idle_rss_mib", 1),
        ("KiB/idle conn", "memory", "kib_per_conn", 2),
        ("TLS handshakes/s", "tls-handshake", "rps", 0),
        ("h2 TLS req/s", "tls-h2", "rps", 0),
        ("cached 13 B hits/s", "cached-13b", "rps", 0),
        ("CPU s/100k hits, 13 B", "cached-13b", "cpu_s_per_100k", 2),
        ("cached 16 KiB hits/s", "cached-16k", "rps", 0),
        ("CPU s/100k hits, 16 KiB", "cached-16k", "cpu_s_per_100k", 2),
    ]
    for r in recs:
        if r.get("idle_rss_kib") is not None:
            r["idle_rss_mib"] = r["idle_rss_kib"] / 1024
    present = {r.get("scenario") for r in recs}
    cols = [c for c in cols if c[1] in present]
    cached = [x for x in CACHED_SCENARIOS if x in present]
    uncached = [c for c in cols if c[1] not in CACHED_SCENARIOS]
    refs = ([f"vs {ref}"] if uncached else []) + \
        ([("cached columns: " if uncached else "") + "vs the better of nginx-cache and varnish"]
         if cached else [])
    if cols:          # none when only the rate-limit scenarios ran: their own tables below
        out.append(f"### Summary: medians, (ratio {'; '.join(refs)})\n")
        out.append("| peer | " + " | ".join(c[0] for c in cols) + " | errors (failed runs) |")
        out.append("|---" * (len(cols) + 2) + "|")
        for peer in peers:
            row = [peer]
            for _, scen, key, nd in cols:
                row.append(cell(t.med(scen, peer, key), ref_value(scen, key), nd))
            errs = failed = 0
            for scen in present:
                e = t.errors(scen, peer)
                if e:
                    errs += e[0]
                    failed += e[1]
            row.append(f"{errs} ({failed})")
            out.append("| " + " | ".join(row) + " |")
        out.append("")
        out.append((f"Ratios are peer / {ref}: above 1 is better for req/s and handshakes/s, "
                    "below 1 is better for latency, CPU and memory. " if uncached else "")
                   + "Errors: socket errors, timeouts and "
                   "non-2xx responses summed over every run of every scenario; a run with more "
                   "than 0.1 % errors (or another failure) is left out of the medians."
                   + ((" Cached columns: the" if uncached else " The")
                      + " ratio is against the better of nginx-cache (nginx "
                      "proxy_cache) and varnish in that column (the higher hits/s, the lower "
                      "CPU), so weir-cache's is weir against the better of the two; a cached run "
                      "in which requests reached the origin, or whose peer failed the cache "
                      "check, counts as failed." if cached else ""))
        if cached:
            out.append("")
        for scen in cached:
            line = []
            for label, key in (("hits/s", "rps"), ("CPU s/100k hits", "cpu_s_per_100k")):
                v, (b, who) = t.med(scen, "weir-cache", key), best_cache_other(t, scen, key)
                if v is not None and b:
                    line.append(f"{label} {v / b:.2f}x ({who})")
            if line:
                out.append("- weir-cache against the better of nginx-cache and varnish, "
                           f"{scen}: " + ", ".join(line) + ".")
        if cached:
            out.append("")
    timed = [r for r in recs if r.get("wall_s") and not r.get("superseded")]
    noisy = [r for r in timed if other_cpu_s(r) > NOISY * r["wall_s"]]
    again = sum(1 for r in recs if r.get("superseded"))
    out.append(f"{len(noisy)} of {len(timed)} measurements ran while processes outside the "
               f"benchmark used more than {NOISY:.0%} of a core (column 'foreign CPU s', plus "
               "the CPU time of the machine that no process seen accounts for; kept in "
               "the medians)."
               + (f" {again} noisy measurements were measured again (--retry-noisy "
                  f"{p.get('retry_noisy')}) and are left out." if again else "") + "\n")

    def detail(title, scen, cols, peer_list=None):
        rows = []
        for peer in (peer_list or peers):
            e = t.errors(scen, peer)
            if not e:
                continue
            row = [peer]
            for _, key, nd, use_ratio in cols:
                v = t.med(scen, peer, key)
                row.append(cell(v, t.med(scen, ref, key), nd) if use_ratio else fmt(v, nd))
            row.append(f"{e[0]}")
            row.append(f"{e[2] - e[1]}/{e[2]}")
            rows.append("| " + " | ".join(row) + " |")
        if not rows:
            return
        out.append(f"### {title}\n")
        out.append("| peer | " + " | ".join(c[0] for c in cols) + " | errors | valid runs |")
        out.append("|---" * (len(cols) + 3) + "|")
        out.extend(rows)
        out.append("")

    load_cols = [("req/s (vs nginx)", "rps", 0, True), ("wrk p50 ms", "p50_ms", 3, False),
                 ("wrk p99 ms", "p99_ms", 3, False),
                 ("proxy CPU s/100k (vs nginx)", "cpu_s_per_100k", 2, True),
                 ("proxy CPU util", "proxy_util", 2, False),
                 ("origin+loadgen CPU util", "origin_loadgen_util", 2, False),
                 ("foreign CPU s", "foreign_cpu_s", 2, False)]
    detail(f"1a. Keep-alive throughput, 13 B body (wrk -t1 -c{p['conns']} -d{p['dur_ka']}s); "
           "5. CPU per 100k requests", "keepalive", load_cols)
    detail(f"1b. Keep-alive throughput, 16 KiB body (wrk -t1 -c{p['conns']} -d{p['dur_16k']}s)",
           "keepalive-16k", load_cols)
    detail(f"2. Latency at a fixed {p['rate']} req/s (oha -q {p['rate']} -c {p['conns_latency']} "
           f"-z {p['dur_lat']}s --latency-correction)", "latency",
           [("p50 ms (vs nginx)", "p50_ms", 3, True), ("p99 ms (vs nginx)", "p99_ms", 3, True),
            ("p99.9 ms (vs nginx)", "p999_ms", 3, True), ("achieved req/s", "rps", 0, False),
            ("proxy CPU util", "proxy_util", 2, False)])
    detail(f"3. New connection per request (wrk -t1 -c{p['conns']} -d{p['dur_close']}s "
           "-H 'Connection: close')", "new-conn", load_cols)
    detail(f"4. Memory: RSS of the proxy's process tree, idle and holding {p['idle_conns']} idle "
           "keep-alive client connections (fresh process)", "memory",
           [("idle RSS KiB", "idle_rss_kib", 0, False), ("held RSS KiB", "held_rss_kib", 0, False),
            ("KiB/conn (vs nginx)", "kib_per_conn", 2, True),
            ("PSS KiB/conn", "pss_kib_per_conn", 2, False),
            ("got 200", "ok200", 0, False), ("open at end", "still_open", 0, False)])
    detail(f"6a. TLS handshakes/s (h2load -t1 -n {p['tls_conns']} -c {p['tls_conns']} -m 1, "
           f"repeated for {p['dur_hs']}s; one h2 request per connection)", "tls-handshake",
           [("handshakes/s (vs nginx)", "rps", 0, True),
            ("proxy CPU ms/handshake (vs nginx)", "cpu_ms_per_handshake", 3, True),
            ("proxy CPU util", "proxy_util", 2, False),
            ("origin+loadgen CPU util", "origin_loadgen_util", 2, False)])
    detail(f"6b. HTTP/2 over TLS (h2load -t1 -c 2 -m 50 -D {p['dur_h2']})", "tls-h2",
           [("req/s (vs nginx)", "rps", 0, True),
            ("proxy CPU s/100k (vs nginx)", "cpu_s_per_100k", 2, True),
            ("proxy CPU util", "proxy_util", 2, False),
            ("origin+loadgen CPU util", "origin_loadgen_util", 2, False)])
    for scen, title in (("cached-13b", "8a. Cached 13 B object"),
                        ("cached-16k", "8b. Cached 16 KiB object")):
        rows = []
        path = CACHED_PATHS[scen]
        for peer in CACHE_PEERS:
            e = t.errors(scen, peer)
            if not e:
                continue
            row = [peer]
            for key, nd, use_ratio in (("rps", 0, True), ("p50_ms", 3, False),
                                       ("p99_ms", 3, False), ("cpu_s_per_100k", 2, True),
                                       ("proxy_util", 2, False), ("origin_loadgen_util", 2, False),
                                       ("foreign_cpu_s", 2, False)):
                v = t.med(scen, peer, key)
                row.append(cell(v, best_cache_other(t, scen, key)[0], nd) if use_ratio
                           else fmt(v, nd))
            row.append(str(sum(r.get("origin_requests") or 0 for r in t.runs(scen, peer))))
            checks = [r for r in recs if r.get("scenario") == "cache-check"
                      and r.get("peer") == peer and r.get("path") == path]
            if checks:
                c = checks[-1]
                row.append(f"{c.get('origin_requests', '-')} of {c['n']}"
                           + ("" if not c.get("failed") else " FAILED")
                           + f"; {', '.join(f'{k}: {v}' for k, v in c.get('headers', {}).items())}")
            else:
                row.append("-")
            row.append(f"{e[0]}")
            row.append(f"{e[2] - e[1]}/{e[2]}")
            rows.append("| " + " | ".join(row) + " |")
        if not rows:
            continue
        dur = p["dur_ka"] if scen == "cached-13b" else p["dur_16k"]
        out.append(f"### {title} (wrk -t1 -c{p['conns']} -d{dur}s on {path}; origin: "
                   "Cache-Control: max-age=3600)\n")
        out.append("| peer | hits/s (vs best other) | wrk p50 ms | wrk p99 ms | proxy CPU s/100k "
                   "hits (vs best other) | proxy CPU util | origin+loadgen CPU util | "
                   "foreign CPU s "
                   f"| origin requests during the runs | cache check: origin requests over "
                   f"{CACHE_CHECK_N} after the first; headers | errors | valid runs |")
        out.append("|---" * 12 + "|")
        out.extend(rows)
        out.append("")

    if any(x in present for x in RL_SCENARIOS):
        out.extend(rate_limit_tables(t, recs, p))

    tls = [r for r in recs if r.get("scenario") in TLS_SCENARIOS and r.get("tls_protocol")]
    if tls:
        seen = {}
        for r in tls:
            seen.setdefault(r["peer"], f"{r.get('tls_protocol')}, {r.get('cipher')}, "
                                       f"{r.get('kex')}, ALPN {r.get('alpn')}")
        out.append("Negotiated: " + "; ".join(f"{k}: {v}" for k, v in seen.items()) + "\n")

    if "access-log" in present:
        off_rps, on_rps = t.med("access-log", "weir", "rps"), t.med("access-log", "weir-log", "rps")
        off_cpu = t.med("access-log", "weir", "cpu_s_per_100k")
        on_cpu = t.med("access-log", "weir-log", "cpu_s_per_100k")
        e_off, e_on = t.errors("access-log", "weir"), t.errors("access-log", "weir-log")
        out.append(f"### 7. weir access log (JSON to a file) on vs off (wrk -t1 -c{p['conns']} "
                   f"-d{p['dur_log']}s, 13 B body)\n")
        out.append("| weir | req/s | CPU s/100k | bytes/line | errors | valid runs |")
        out.append("|---|---|---|---|---|---|")
        lines = t.med("access-log", "weir-log", "log_lines")
        nbytes = t.med("access-log", "weir-log", "log_bytes")
        for name, rps, cpu, e, bpl in (
                ("log off", off_rps, off_cpu, e_off, None),
                ("log on", on_rps, on_cpu, e_on, nbytes / lines if lines else None)):
            if e:
                out.append(f"| {name} | {fmt(rps, 0)} | {fmt(cpu, 2)} | {fmt(bpl, 0)} | {e[0]} | "
                           f"{e[2] - e[1]}/{e[2]} |")
        out.append(f"| on / off | {fmt(ratio(on_rps, off_rps), 2)} | {fmt(ratio(on_cpu, off_cpu), 2)} "
                   "| | | |")
        out.append("")
    return "\n".join(out)


def rate_limit_tables(t, recs, p):
    """Section 9: each peer with one policy that never limits against the same
    server without it (RL_BASE_OF); the plain peers' ratio is 1."""
    out = []

    def rows(scen, cols):
        lines = []
        for peer in RL_PEERS:
            e = t.errors(scen, peer)
            if not e:
                continue
            base = RL_BASE_OF.get(peer, peer)
            row = [peer]
            for _, key, nd, use_ratio in cols:
                v = t.med(scen, peer, key)
                row.append(cell(v, t.med(scen, base, key), nd) if use_ratio else fmt(v, nd))
            row.append(f"{e[0]}")
            row.append(f"{e[2] - e[1]}/{e[2]}")
            lines.append("| " + " | ".join(row) + " |")
        return lines

    def table(title, scen, cols):
        lines = rows(scen, cols)
        if not lines:
            return
        out.append(f"### {title}\n")
        out.append("| peer | " + " | ".join(c[0] for c in cols) + " | errors | valid runs |")
        out.append("|---" * (len(cols) + 3) + "|")
        out.extend(lines)
        out.append("")

    policy = (f'one policy that never limits: weir rate = "{RL_RATE}/s", burst = {RL_BURST}, '
              f'key = "client"; nginx limit_req_zone $binary_remote_addr rate={RL_RATE}r/s, '
              f"limit_req burst={RL_BURST} nodelay")
    table(f"9a. Rate limits, local: {policy} (wrk -t1 -c{p['conns']} -d{p['dur_ka']}s, "
          "13 B body)", "ratelimit-local",
          [("req/s (vs without)", "rps", 0, True), ("wrk p50 ms", "p50_ms", 3, False),
           ("wrk p99 ms", "p99_ms", 3, False),
           ("proxy CPU s/100k (vs without)", "cpu_s_per_100k", 2, True),
           ("proxy CPU util", "proxy_util", 2, False),
           ("origin+loadgen CPU util", "origin_loadgen_util", 2, False),
           ("foreign CPU s", "foreign_cpu_s", 2, False)])
    table(f"9b. Rate limits, global: the same policy with scope = \"global\", counted in a "
          f"local redis-server (wrk -t1 -c{p['conns']} -d{p['dur_ka']}s, 13 B body)",
          "ratelimit-global",
          [("req/s (vs without)", "rps", 0, True), ("wrk p99 ms", "p99_ms", 3, False),
           ("proxy CPU s/100k (vs without)", "cpu_s_per_100k", 2, True),
           ("Redis EVALSHA+EVAL per request", "redis_evals_per_req", 3, False),
           ("Redis commands per request, the script's TIME, GET, SET included",
            "redis_cmds_per_req", 3, False),
           ("Redis reads per request", "redis_reads_per_req", 3, False),
           ("Redis CPU s/100k", "redis_cpu_s_per_100k", 2, False),
           ("proxy+Redis CPU s/100k (vs without)", "total_cpu_s_per_100k", 2, True),
           ("proxy CPU util", "proxy_util", 2, False),
           ("origin+loadgen+Redis CPU util", "origin_loadgen_redis_util", 2, False),
           ("foreign CPU s", "foreign_cpu_s", 2, False)])
    table(f"9c. Rate limits, latency at a fixed {p['rate']} req/s (oha -q {p['rate']} "
          f"-c {p['conns_latency']} -z {p['dur_lat']}s --latency-correction)", "ratelimit-latency",
          [("p50 ms (vs without)", "p50_ms", 3, True), ("p99 ms (vs without)", "p99_ms", 3, True),
           ("p99.9 ms (vs without)", "p999_ms", 3, True), ("achieved req/s", "rps", 0, False),
           ("proxy CPU util", "proxy_util", 2, False),
           ("Redis EVALSHA+EVAL per request", "redis_evals_per_req", 3, False)])
    checks = [r for r in recs if r.get("scenario") == "policy-check"]
    if checks:
        out.append("Policy checks before measuring (10 requests each): " + "; ".join(
            f"{r['peer']}: {r.get('ok', 0)}/{r['n']} answered 200"
            + (f", RateLimit-Policy: {r['headers']['ratelimit-policy']}"
               if "ratelimit-policy" in r.get("headers", {}) else "")
            + (f", {r['redis_evals']} Redis decisions" if "redis_evals" in r else "")
            + (f", FAILED: {r['failed']}" if r.get("failed") else "") for r in checks) + ".")
        out.append("")
    out.append("Ratios are each peer against the same server without the policy (nginx-limit_req "
               "/ nginx, weir-local / weir, weir-global / weir). Redis figures: INFO "
               "commandstats and total_reads_processed before and after each run, and Redis's "
               "own CPU from /proc; a weir-global run with fewer than 0.99 Redis decisions per "
               "request, or in which weir logged Redis unavailable, counts as failed.")
    out.append("")
    return out


def versions_table(v):
    rows = ["| item | version |", "|---|---|"]
    for k, label in (("cpu", "CPU"), ("cores", "cores"), ("memory", "memory"), ("os", "OS"),
                     ("kernel", "kernel"), ("nginx", "nginx (peer and origin)"),
                     ("haproxy", "HAProxy"), ("varnish", "Varnish"), ("redis", "Redis"),
                     ("weir", "weir"),
                     ("wrk", "wrk"), ("oha", "oha"),
                     ("h2load", "h2load"), ("openssl", "OpenSSL (openssl CLI)"),
                     ("python", "Python"), ("packages", "Debian packages")):
        if v.get(k):
            rows.append(f"| {label} | {v[k]} |")
    return "\n".join(rows)


# ------------------------------------------------------------------ main ---
def find_bin(env, name, also=()):
    v = os.environ.get(env)
    if v:
        return v if os.path.isfile(v) and os.access(v, os.X_OK) else None
    found = shutil.which(name) if name else None
    for path in also if not found else ():
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return found


def cmd(argv, timeout=10):
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        return (r.stdout + r.stderr).strip()
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"n/a ({e})"


def versions(s):
    v = {"kernel": platform.release(), "python": platform.python_version(),
         "cores": str(os.cpu_count())}
    try:
        with open("/proc/cpuinfo") as f:
            models = [x.split(":", 1)[1].strip() for x in f if x.startswith("model name")]
        v["cpu"] = models[0] if models else "?"
        with open("/proc/meminfo") as f:
            kib = int(f.readline().split()[1])
        v["memory"] = f"{kib / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    try:
        with open("/etc/os-release") as f:
            m = re.search(r'^PRETTY_NAME="?([^"\n]*)', f.read(), re.M)
            v["os"] = m.group(1) if m else None
    except OSError:
        pass
    if s.nginx:
        out = cmd([s.nginx, "-V"]).splitlines()
        v["nginx"] = "; ".join(x for x in out if x.startswith(("nginx version", "built with")))
    if s.haproxy:
        v["haproxy"] = cmd([s.haproxy, "-v"]).splitlines()[0]
    if s.varnishd:
        v["varnish"] = cmd([s.varnishd, "-V"]).splitlines()[0]
    if s.redis_server:
        v["redis"] = cmd([s.redis_server, "--version"]).splitlines()[0]
    if s.weir:
        v["weir"] = cmd([s.weir, "--version"])
        head = cmd(["git", "-C", REPO, "describe", "--always", "--dirty"])
        if head and not head.startswith("n/a") and "fatal" not in head:
            v["weir"] += f" (repository HEAD at run time: {head})"
    if s.wrk:
        v["wrk"] = cmd([s.wrk, "-v"]).splitlines()[0]
    if s.oha:
        v["oha"] = cmd([s.oha, "--version"])
    if s.h2load:
        v["h2load"] = cmd([s.h2load, "--version"]).splitlines()[0]
    if s.openssl:
        v["openssl"] = cmd([s.openssl, "version"])
    if shutil.which("dpkg-query"):
        pk = cmd(["dpkg-query", "-W", "-f", "${Package} ${Version}\\n", "nginx", "haproxy",
                  "varnish", "redis-server", "wrk", "nghttp2-client", "openssl"])
        v["packages"] = ", ".join(x for x in pk.splitlines() if x.count(" ") == 1
                                  and not x.startswith("dpkg"))
    return v


def parse_args(argv):
    ap = argparse.ArgumentParser(
        description="weir vs nginx vs HAProxy (and Varnish, cached) on loopback "
                    "(see docs/benchmarks.md)",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--quick", action="store_true",
                    help="1 repetition, short durations (about 3 minutes)")
    ap.add_argument("--scenarios", default=None,
                    help="comma list of: " + ", ".join(SCENARIOS) + " (default: all but "
                    + ", ".join(OPT_IN_SCENARIOS) + ")")
    ap.add_argument("--peers", default=",".join(DEFAULT_PEERS),
                    help="comma list of: " + ", ".join(PEERS) + " (default: "
                    + ",".join(DEFAULT_PEERS) + "; 'direct' = the load generator straight at "
                    "the origin; varnish runs in the cached scenarios only, where nginx and "
                    "weir run with their caches on; in the rate-limit scenarios nginx and weir "
                    "run with and without a policy)")
    ap.add_argument("--reps", type=int, default=None, help="repetitions (default 3; --quick 1)")
    ap.add_argument("--conns", type=int, default=64, help="wrk connections")
    ap.add_argument("--rate", type=int, default=5000, help="fixed rate of the latency scenario")
    ap.add_argument("--conns-latency", type=int, default=16, help="oha connections")
    ap.add_argument("--idle-conns", type=int, default=8000, help="idle connections held (memory)")
    ap.add_argument("--tls-conns", type=int, default=1000,
                    help="connections per h2load run in tls-handshake")
    ap.add_argument("--tls-key", choices=("ec", "rsa"), default="ec",
                    help="certificate key: ECDSA P-256 (default) or RSA 2048")
    for k in ("dur_ka", "dur_16k", "dur_lat", "dur_close", "dur_hs", "dur_h2", "dur_log", "warmup"):
        ap.add_argument("--" + k.replace("_", "-"), type=int, default=None,
                        help=f"seconds (default {FULL[k]}; --quick {QUICK[k]})")
    ap.add_argument("--gap", type=float, default=0.3, help="pause between measurements, s")
    ap.add_argument("--retry-noisy", type=int, default=0, metavar="N",
                    help="measure a run again, up to N times, when processes outside the "
                         "benchmark used more than 10%% of a core during it (after waiting, up "
                         "to 2 min, for the machine to be quiet); the noisy run is kept in "
                         "raw.jsonl, marked superseded, and left out of the medians (default 0)")
    ap.add_argument("--no-pin", dest="pin", action="store_false", help="no taskset pinning")
    ap.add_argument("--out", default=None,
                    help="results directory (default: <system temp dir>/weir-load-bench/<timestamp>)")
    ap.add_argument("--max-minutes", type=float, default=None,
                    help="global deadline (default 30; --quick 8)")
    ap.add_argument("--summarize", metavar="DIR", default=None,
                    help="only rebuild DIR/summary.md from DIR/raw.jsonl and DIR/meta.json")
    a = ap.parse_args(argv)
    base = QUICK if a.quick else FULL
    for k, v in base.items():
        if getattr(a, k, None) is None:
            setattr(a, k, v)
    return a


def estimate_s(a, n_peers, n_cache, scenarios, peers=()):
    per = a.gap + 0.5
    t = (n_peers + n_cache + 1) * (a.warmup + 2)
    d = {"keepalive": a.dur_ka, "keepalive-16k": a.dur_16k, "latency": a.dur_lat,
         "new-conn": a.dur_close + 0.7, "memory": 8, "tls-handshake": a.dur_hs + 1.5,
         "tls-h2": a.dur_h2}
    for scen in scenarios:
        if scen == "access-log":
            t += a.reps * 2 * (a.dur_log + per)
        elif scen in CACHED_SCENARIOS:
            t += n_cache * 2 + a.reps * n_cache * (
                (a.dur_ka if scen == "cached-13b" else a.dur_16k) + per)
        elif scen in RL_SCENARIOS:
            n = len([x for x in RL_SCENARIO_PEERS[scen] if x in peers])
            t += 3 + a.reps * n * ((a.dur_lat if scen == "ratelimit-latency" else a.dur_ka) + per)
        elif scen in d:
            t += a.reps * n_peers * (d[scen] + per)
    return t


def cpu_layout(s):
    n = os.cpu_count() or 1
    if n >= 4:
        lay = {"loadgen": "0", "origin": "1", "proxy": "2"}
    elif n >= 2:
        # the proxy under test alone on core 1; origin and load generator share core 0
        lay = {"loadgen": "0", "origin": "0", "proxy": "1"}
    else:
        lay = {"loadgen": "", "origin": "", "proxy": ""}
        s.pin = False
    s.loadgen_cpus = os.environ.get("BENCH_LOADGEN_CPUS", lay["loadgen"])
    s.origin_cpus = os.environ.get("BENCH_ORIGIN_CPUS", lay["origin"])
    s.proxy_cpus = os.environ.get("BENCH_PROXY_CPUS", lay["proxy"])
    # Redis stands for a server of its own: not on the proxy's core, but with
    # the origin (another machine's work in a real deployment)
    s.redis_cpus = os.environ.get("BENCH_REDIS_CPUS", s.origin_cpus)


def main(argv):
    if argv[:1] == ["_hold"]:
        return hold_main(argv[1:])
    a = parse_args(argv)
    if a.summarize:
        d = os.path.abspath(a.summarize)
        with open(os.path.join(d, "meta.json")) as f:
            meta = json.load(f)
        with open(os.path.join(d, "raw.jsonl")) as f:
            recs = [json.loads(x) for x in f if x.strip()]
        text = versions_table(meta["versions"]) + "\n\n" + summarize(recs, meta)
        write(os.path.join(d, "summary.md"), text + "\n")
        print(text)
        return 0

    global CLOCK
    CLOCK = Clock(a.max_minutes)
    s = Setup()
    s.pin = a.pin
    s.nginx = find_bin("NGINX_BIN", "nginx")
    s.haproxy = find_bin("HAPROXY_BIN", "haproxy")
    s.varnishd = find_bin("VARNISHD_BIN", "varnishd", also=("/usr/sbin/varnishd",))
    s.wrk = find_bin("WRK_BIN", "wrk")
    s.oha = find_bin("OHA_BIN", "oha")
    s.h2load = find_bin("H2LOAD_BIN", "h2load")
    s.openssl = find_bin("OPENSSL_BIN", "openssl")
    s.redis_server = find_bin("REDIS_BIN", "redis-server")
    s.taskset = shutil.which("taskset")
    lb = os.environ.get("LB_BIN") or os.path.join(REPO, "target", "release", "weir")
    s.weir = lb if os.path.isfile(lb) and os.access(lb, os.X_OK) else None
    if not s.taskset and s.pin:
        log("taskset not found: running without CPU pinning")
        s.pin = False
    cpu_layout(s)
    if not s.nginx:
        sys.exit("nginx is needed (it is the origin): apt-get install -y nginx, or set NGINX_BIN")

    scenarios = a.scenarios.split(",") if a.scenarios else list(DEFAULT_SCENARIOS)
    bad = [x for x in scenarios if x not in SCENARIOS]
    if bad:
        sys.exit(f"unknown scenarios: {bad}; known: {', '.join(SCENARIOS)}")
    if "cpu" in scenarios and "keepalive" not in scenarios:
        scenarios.insert(0, "keepalive")
    scenarios = [x for x in SCENARIOS if x in scenarios]       # canonical order
    missing = {"wrk": (s.wrk, ("keepalive", "keepalive-16k", "new-conn", "cpu", "access-log",
                               *CACHED_SCENARIOS, "ratelimit-local", "ratelimit-global"),
                       "WRK_BIN"),
               "oha": (s.oha, ("latency", "ratelimit-latency"), "OHA_BIN"),
               "redis-server": (s.redis_server, ("ratelimit-global",), "REDIS_BIN"),
               "h2load": (s.h2load, TLS_SCENARIOS, "H2LOAD_BIN"),
               "openssl": (s.openssl, TLS_SCENARIOS, "OPENSSL_BIN")}
    for tool, (path, scens, env) in missing.items():
        if not path:
            drop = [x for x in scenarios if x in scens]
            if drop:
                log(f"SKIP {', '.join(drop)}: {tool} not found (PATH or {env})")
            scenarios = [x for x in scenarios if x not in scens]

    names = [x for x in a.peers.split(",") if x]
    bad = [x for x in names if x not in PEERS]
    if bad:
        sys.exit(f"unknown peers: {bad}; known: {', '.join(PEERS)}")
    peers = {}
    extra = ["weir-log"] if "access-log" in scenarios and "weir" in names else []
    if any(x in scenarios for x in CACHED_SCENARIOS):
        extra += [CACHE_PEER_OF[x] for x in names if x in CACHE_PEER_OF]
    if "ratelimit-local" in scenarios and "nginx" in names:
        extra.append("nginx-limit_req")
    if "weir" in names:
        if any(x in scenarios for x in ("ratelimit-local", "ratelimit-latency")):
            extra.append("weir-local")
        if any(x in scenarios for x in REDIS_SCENARIOS):
            extra.append("weir-global")
    for name in [x for x in names if x in BASE_PEERS] + extra:
        p = Peer(name, s)
        if not p.binary():
            env = {"haproxy": "HAPROXY_BIN", "varnish": "VARNISHD_BIN"}.get(
                name, "LB_BIN" if name.startswith("weir") else "NGINX_BIN")
            why = f"binary not found (PATH or {env})"
            if name.startswith("weir"):
                why = (f"{lb} not found or not executable: build it with "
                       "`cargo build --release --bin weir` or set LB_BIN")
            if name == "weir-global" and s.weir:
                why = ("redis-server not found (PATH or REDIS_BIN): the rate-limit scenarios run "
                       "without weir-global; install it with `apt-get install -y redis-server`")
            if name == "varnish":
                why = ("varnishd not found (PATH, /usr/sbin or VARNISHD_BIN): the cached "
                       "scenarios run without Varnish; install it with `apt-get install -y "
                       "--no-install-recommends varnish`")
            if name != "weir-log":
                log(f"SKIP peer {name}: {why}")
            continue
        peers[name] = p
    if "access-log" in scenarios and "weir-log" not in peers:
        scenarios.remove("access-log")
    if not any(x in peers for x in CACHE_PEERS):
        drop = [x for x in scenarios if x in CACHED_SCENARIOS]
        if drop:
            log(f"SKIP {', '.join(drop)}: no cache peer to run")
        scenarios = [x for x in scenarios if x not in CACHED_SCENARIOS]
    if not [p for p in peers if p != "weir-log"] or not scenarios:
        sys.exit("nothing to run")
    if REFERENCE not in peers:
        log(f"note: {REFERENCE} is not in the run: no ratios")

    # ports: all in range, all free
    ports = {ORIGIN_PORT}
    for p in peers.values():
        ports.update(x for x in (p.port, p.tls_port, p.port + MEM_OFFSET) if x)
    if "weir-global" in peers:
        ports.add(REDIS_PORT)
    assert all(PORT_MIN <= x <= PORT_MAX for x in ports)
    busy = sorted(x for x in ports if not port_free(x))
    if busy:
        sys.exit(f"ports in use: {busy}; refusing to run (another run of this benchmark?)")

    # file descriptors: held connections need one each in the proxy (HAProxy reserves 2)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(65536, hard), max(65536, hard)))
    except (ValueError, OSError):      # raising the hard limit needs CAP_SYS_RESOURCE
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    s.nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    cap = min(s.nofile - 1000, s.limits()["maxconn"] - 500)
    if "memory" in scenarios and a.idle_conns > cap:
        log(f"RLIMIT_NOFILE is {s.nofile}: memory scenario lowered to {cap} connections")
        a.idle_conns = cap

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    default_out = os.path.join(tempfile.gettempdir(), "weir-load-bench",
                               stamp + ("-quick" if a.quick else ""))
    out_dir = os.path.abspath(a.out or default_out)
    if os.path.commonpath([out_dir, REPO]) == REPO:
        sys.exit(f"--out {out_dir} is inside the repository; give a directory outside it")
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:
        sys.exit(f"cannot create the results directory {out_dir}: {e}; pass --out DIR")

    if any(x in scenarios for x in TLS_SCENARIOS):
        make_cert(s, out_dir, a.tls_key)

    v = versions(s)
    params = {k: getattr(a, k) for k in ("reps", "conns", "rate", "conns_latency", "idle_conns",
                                         "tls_conns", "tls_key", "dur_ka", "dur_16k", "dur_lat",
                                         "dur_close", "dur_hs", "dur_h2", "dur_log", "warmup",
                                         "quick", "retry_noisy")}
    params.update(pin=s.pin, loadgen_cpus=s.loadgen_cpus, origin_cpus=s.origin_cpus,
                  proxy_cpus=s.proxy_cpus, redis_cpus=s.redis_cpus, nofile=s.nofile)
    meta = {"started": stamp, "argv": argv, "scenarios": scenarios, "peers": list(peers),
            "params": params, "versions": v,
            "loadavg_start": open("/proc/loadavg").read().strip()}
    write(os.path.join(out_dir, "meta.json"), json.dumps(meta, indent=1))

    print(versions_table(v), flush=True)
    print(flush=True)
    log(f"results: {out_dir}")
    log(f"peers: {', '.join(peers)}; scenarios: {', '.join(scenarios)}; reps {a.reps}")
    log("pinning: " + (f"proxy cpu {s.proxy_cpus}, origin cpu {s.origin_cpus}, load generator "
                       f"cpu {s.loadgen_cpus}"
                       + (f", redis cpu {s.redis_cpus}" if "weir-global" in peers else "")
                       if s.pin else "off"))
    n = len([p for p in peers if p in BASE_PEERS])
    n_cache = len([p for p in peers if p in CACHE_PEERS])
    log(f"estimated time {estimate_s(a, n, n_cache, scenarios, peers) / 60:.1f} min "
        f"(global deadline {a.max_minutes:g} min)")

    def on_signal(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    t0 = time.monotonic()
    rc = 0
    runner = Runner(s, a, peers, out_dir)
    try:
        runner.run(scenarios)
    except (KeyboardInterrupt, Deadline) as e:
        log(f"aborted ({type(e).__name__}{': ' + str(e) if str(e) else ''}); stopping everything")
        rc = 1
    except Exception:
        log("error; stopping everything")
        raise
    finally:
        stop_all()
        runner.raw.close()
    meta["elapsed_s"] = round(time.monotonic() - t0, 1)
    meta["loadavg_end"] = open("/proc/loadavg").read().strip()
    write(os.path.join(out_dir, "meta.json"), json.dumps(meta, indent=1))
    with open(os.path.join(out_dir, "raw.jsonl")) as f:
        recs = [json.loads(x) for x in f if x.strip()]
    text = versions_table(v) + "\n\n" + summarize(recs, meta)
    write(os.path.join(out_dir, "summary.md"), text + "\n")
    print()
    print(text)
    log(f"done in {meta['elapsed_s']:.0f} s; results in {out_dir}")
    return rc


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    finally:
        stop_all()
