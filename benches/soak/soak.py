#!/usr/bin/env python3
"""weir's soak: long mixed traffic with chaos, then leak and failure checks.

Run by hand, not in CI:  benches/soak/run --minutes 30   (--minutes 2: quick check)

On 127.0.0.1 only, ports 19500-19599 (checked free first):
  19500 weir's listener, 19501 weir's admin listener, 19510-19512 three backends.

What runs for --minutes of traffic:
  backends   3 HTTP/1.1 backends (child processes of this script: `soak.py _backend PORT`);
             every --kill-every s one of them (round robin) gets SIGKILL and is
             restarted --down-for s later
  weir       target/release/weir (built first when missing or older than the
             sources), small client timeouts, health checks every 1 s, outlier
             detection, retries; SIGHUP every --reload-every s, alternating two
             configs that differ in one backend weight
  clients    keep-alive GET/HEAD, GET on a new connection each, POST and PUT with
             small bodies, h2load bursts (h2c; skipped if h2load is missing),
             WebSocket sessions (short, long, idle), and hostile clients: slow
             request heads, stalled request bodies, clients that never read

Targets (PASS/FAIL, exit status 0 only when none FAILs):
  safe-retry   GET/HEAD/PUT of the well-behaved clients and the h2load GETs that
               failed (5xx, broken, timed out): 0, each listed with time and cause
  panics       "panicked" in weir's log: 0
  fds          weir's open descriptors after traffic stops and a settle period:
               those that are not backend connections back to the baseline (+1);
               backend connections, once a few GETs made the pools drop their
               expired ones: at most 2 per backend (pooled + a health check)
  open-conns   weir_connections_active back to 0 after the settle period
  rss          VmRSS sampled every minute: from minute 5 on, never above the
               minute-5 sample by more than 10 % (runs under 6 minutes: SKIP)
  reloads      every SIGHUP counted as a successful reload, none failed
  final-get    weir still answers GET /x with 200 at the end
  alive        weir did not exit during the run

Safety: every process is started by this script, tracked by PID and stopped by
PID (checked against its start time) on exit, Ctrl-C, SIGTERM or error; the
backends exit by themselves when this script goes away, weir gets SIGKILL from
the kernel (PR_SET_PDEATHSIG). Every client loop is bounded in count and time,
every socket has a timeout, and the whole run has a deadline. Output goes only
under --out (default ${TMPDIR:-/tmp}/weir-soak), never into the repository.

Python 3 standard library only.
"""
import argparse
import base64
import ctypes
import datetime
import hashlib
import http.client
import http.server
import json
import os
import random
import re
import select
import shutil
import signal
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
HOST = "127.0.0.1"

PORT_MIN, PORT_MAX = 19500, 19599
LB_PORT = 19500
ADMIN_PORT = 19501
BACKEND_PORTS = (19510, 19511, 19512)

# weir's listener timeouts (seconds), as written into its config
HEADER_TIMEOUT = 2
BODY_TIMEOUT = 2
SEND_TIMEOUT = 2
IDLE_TIMEOUT = 5
UPSTREAM_IDLE = 5            # timeouts.idle of the pooled backend connections
SHUTDOWN_TIMEOUT = 5
# After traffic stops: every client connection and pooled backend connection
# has passed its idle timeout by then.
SETTLE_S = max(IDLE_TIMEOUT, UPSTREAM_IDLE) + 5
# Descriptors at the end (see README.md): those that are not connections to
# backends must be back to the baseline, plus one; connections to backends, once
# a few GETs made every pool drop its expired ones: one pooled connection per
# backend, plus one health-check connection per backend (fresh every second).
FD_OTHER_ALLOWANCE = 1
FD_BACKEND_ALLOWANCE = 2 * len(BACKEND_PORTS)
RSS_TOLERANCE = 0.10
RSS_FROM_MINUTE = 5

BIG_SIZE = 8 * 1024 * 1024   # /big: larger than any loopback socket buffers on the way
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

# Client mix: (threads, requests per second per thread)
KEEPALIVE = (4, 10.0)
NEWCONN = (2, 5.0)
POSTERS = (2, 5.0)
WS_SHORT = 2
WS_LONG = 3
WS_IDLE = 1
SLOW_HEADER = 3
SLOW_BODY = 3
NEVER_READ = 2
H2LOAD_ARGS = ["-n", "400", "-c", "4", "-m", "10", "-t", "1", "-T", "20", "-N", "10"]

SAFE_KINDS = ("get-keepalive", "get-newconn", "put", "h2-get")


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def utc_now():
    return datetime.datetime.now(datetime.timezone.utc)


class Deadline(Exception):
    pass


# ================================================================ backend ===
# `soak.py _backend PORT`: one HTTP/1.1 backend, a child process of the soak.

def ws_mask(payload, key):
    n = len(payload)
    if n == 0:
        return b""
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(k, "big")).to_bytes(n, "big")


def ws_frame(opcode, payload, fin=True, mask=False):
    b0 = (0x80 if fin else 0) | opcode
    n = len(payload)
    mbit = 0x80 if mask else 0
    if n < 126:
        head = bytes([b0, mbit | n])
    elif n < 65536:
        head = bytes([b0, mbit | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([b0, mbit | 127]) + n.to_bytes(8, "big")
    if mask:
        key = os.urandom(4)
        return head + key + ws_mask(payload, key)
    return head + payload


def ws_read_frame(read_exact):
    """(fin, opcode, payload) or None at end of stream. read_exact(n) returns
    exactly n bytes, or fewer at end of stream."""
    h = read_exact(2)
    if len(h) < 2:
        return None
    fin, opcode, masked, n = bool(h[0] & 0x80), h[0] & 0x0F, bool(h[1] & 0x80), h[1] & 0x7F
    if n == 126:
        x = read_exact(2)
        if len(x) < 2:
            return None
        n = int.from_bytes(x, "big")
    elif n == 127:
        x = read_exact(8)
        if len(x) < 8:
            return None
        n = int.from_bytes(x, "big")
    key = b""
    if masked:
        key = read_exact(4)
        if len(key) < 4:
            return None
    payload = read_exact(n) if n else b""
    if len(payload) < n:
        return None
    if masked:
        payload = ws_mask(payload, key)
    return fin, opcode, payload


def backend_main(argv):
    port = int(argv[0])
    big = b"x" * BIG_SIZE
    parent = os.getppid()

    def watchdog():                     # the soak went away: go too
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(0)

    threading.Thread(target=watchdog, daemon=True).start()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "soak-backend"
        timeout = 120                   # an abandoned connection does not live forever

        def log_message(self, *args):
            pass

        def head(self, status, length, extra=()):
            reason = self.responses.get(status, ("",))[0]
            lines = [f"HTTP/1.1 {status} {reason}", "Content-Type: text/plain",
                     f"Content-Length: {length}", f"X-Backend: {port}", *extra]
            return ("\r\n".join(lines) + "\r\n\r\n").encode()

        def answer(self, status, body, head_only=False):
            # head and body in one write: a SIGKILL cannot split a small response
            self.wfile.write(self.head(status, len(body)) + (b"" if head_only else body))

        def path_only(self):
            return self.path.split("?", 1)[0]

        def do_GET(self):
            path = self.path_only()
            if path == "/ws" and "websocket" in self.headers.get("Upgrade", "").lower():
                return self.websocket()
            if path == "/big":
                self.wfile.write(self.head(200, len(big)))
                view = memoryview(big)
                for i in range(0, len(big), 65536):
                    self.wfile.write(view[i:i + 65536])
                return
            if path in ("/", "/x", "/healthz"):
                return self.answer(200, f"ok {port}\n".encode())
            self.answer(404, b"not found\n")

        def do_HEAD(self):
            path = self.path_only()
            if path in ("/", "/x", "/healthz"):
                return self.answer(200, f"ok {port}\n".encode(), head_only=True)
            self.answer(404, b"not found\n", head_only=True)

        def read_body(self):
            """Length of the request body, or None when it broke."""
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                total = 0
                while True:
                    line = self.rfile.readline(1024)
                    if not line.endswith(b"\n"):
                        return None
                    size = int(line.split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                            pass
                        return total
                    data = self.rfile.read(size + 2)
                    if len(data) < size + 2:
                        return None
                    total += size
            left = int(self.headers.get("Content-Length") or 0)
            total = 0
            while left > 0:
                data = self.rfile.read(min(left, 65536))
                if not data:
                    return None
                total += len(data)
                left -= len(data)
            return total

        def do_POST(self):
            n = self.read_body()
            if n is None:
                self.close_connection = True
                return
            self.answer(200, f"len={n}\n".encode())

        do_PUT = do_POST

        def websocket(self):
            key = self.headers.get("Sec-WebSocket-Key")
            if not key:
                return self.answer(400, b"no Sec-WebSocket-Key\n")
            accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
            self.wfile.write(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                              f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n"
                              f"X-Backend: {port}\r\n\r\n").encode())
            self.close_connection = True
            while True:
                frame = ws_read_frame(self.rfile.read)
                if frame is None:
                    return
                fin, op, payload = frame
                if op == 8:                       # close: answer it, then end
                    self.wfile.write(ws_frame(8, payload[:2]))
                    return
                if op == 9:
                    self.wfile.write(ws_frame(10, payload))
                elif op in (0, 1, 2):             # echo, fragments as they came
                    self.wfile.write(ws_frame(op, payload, fin=fin))

    class Server(http.server.ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 256
        allow_reuse_address = True

        def handle_error(self, request, client_address):
            pass                                  # resets are part of the game

    srv = Server((HOST, port), Handler)
    signal.signal(signal.SIGTERM, lambda *a: os._exit(0))
    print(f"backend {port} pid {os.getpid()} listening", file=sys.stderr, flush=True)
    srv.serve_forever(poll_interval=0.5)
    return 0


# ============================================================== processes ===
def proc_start_time(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except OSError:
        return None
    return int(s[s.rfind(")") + 2:].split()[19])


def pdeathsig_kill():
    """preexec_fn: the kernel kills the child when this process dies. Only
    used for processes started before any thread of ours runs."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG
    except Exception:   # noqa: BLE001 - best effort
        pass


class Proc:
    """A process started by the soak; stopped by PID only, never by name."""
    registry = []
    lock = threading.Lock()

    def __init__(self, name, argv, logfile=None, env=None, capture=False, deathsig=False,
                 inherit=False):
        """Output to `logfile`, to our own stdout/stderr (inherit), piped back
        (capture), or nowhere."""
        self.name = name
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.logf = open(logfile, "ab") if logfile else None
        sink = None if inherit else (self.logf or subprocess.DEVNULL)
        self.p = subprocess.Popen(argv, env=full_env, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE if capture else sink,
                                  stderr=subprocess.PIPE if capture else sink,
                                  start_new_session=True,
                                  preexec_fn=pdeathsig_kill if deathsig else None)
        self.pid = self.p.pid
        self.start_time = proc_start_time(self.pid)
        with Proc.lock:
            Proc.registry.append(self)

    def alive(self):
        return self.p.poll() is None

    def send_signal(self, sig):
        """Send sig to this process, if the PID is still ours (same start time)."""
        if not self.alive():
            return
        st = proc_start_time(self.pid)
        if st is None or (self.start_time is not None and st != self.start_time):
            return
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            pass

    def stop(self, grace=5.0, sig=signal.SIGTERM):
        if self.alive():
            self.send_signal(sig)
            try:
                self.p.wait(grace)
            except subprocess.TimeoutExpired:
                self.send_signal(signal.SIGKILL)
                try:
                    self.p.wait(5)
                except subprocess.TimeoutExpired:
                    pass
        self.close()
        return self.p.returncode

    def close(self):
        with Proc.lock:
            if self in Proc.registry:
                Proc.registry.remove(self)
        if self.logf:
            self.logf.close()
            self.logf = None


def stop_all():
    with Proc.lock:
        procs = list(Proc.registry)
    for pr in reversed(procs):
        try:
            pr.stop(grace=3.0)
        except Exception as e:  # noqa: BLE001 - go on with the others
            print(f"stopping {pr.name} (pid {pr.pid}) failed: {e}", file=sys.stderr)


def tcp_table():
    """{inode: (local, remote, state)} of every TCP socket."""
    states = {"01": "ESTABLISHED", "02": "SYN_SENT", "03": "SYN_RECV", "04": "FIN_WAIT1",
              "05": "FIN_WAIT2", "06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT",
              "09": "LAST_ACK", "0A": "LISTEN", "0B": "CLOSING"}

    def addr(x):
        ip, port = x.rsplit(":", 1)
        if len(ip) == 8:
            ip = ".".join(str(b) for b in bytes.fromhex(ip)[::-1])
        return f"{ip}:{int(port, 16)}"

    out = {}
    for fn in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(fn) as f:
                next(f)
                for line in f:
                    p = line.split()
                    out[p[9]] = (addr(p[1]), addr(p[2]), states.get(p[3], p[3]))
        except OSError:
            pass
    return out


def port_free(port):
    if any(st == "LISTEN" and loc.endswith(f":{port}") for loc, _, st in tcp_table().values()):
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


def port_listening(port, timeout=0.5):
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


def vm_status(pid):
    """{'VmRSS': kib, 'Threads': n} of pid, {} if it is gone."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmRSS", "VmHWM", "Threads"):
                    out[k] = int(v.split()[0])
    except OSError:
        pass
    return out


def fd_count(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def fd_inventory(pid):
    """Descriptors of pid by kind: sockets named by their TCP role."""
    roles = {str(LB_PORT): "client connection", str(ADMIN_PORT): "admin connection"}
    roles.update({str(p): f"backend {p} connection" for p in BACKEND_PORTS})
    tcp = tcp_table()
    kinds, lines = {}, []
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return {}, []
    for fd in sorted(names, key=int):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        kind = re.sub(r"\[.*\]$", "", target) if target.startswith(("anon_inode", "pipe")) else target
        m = re.match(r"socket:\[(\d+)\]", target)
        if m:
            t = tcp.get(m.group(1))
            if t is None:
                kind = "socket (not TCP)"
            else:
                loc, rem, st = t
                lport, rport = loc.rsplit(":", 1)[1], rem.rsplit(":", 1)[1]
                if st == "LISTEN":
                    kind = f"listening socket {loc}"
                elif lport in roles:
                    kind = f"{roles[lport]} {st}"
                elif rport in roles and rport != str(LB_PORT):
                    kind = f"{roles[rport]} {st}"
                else:
                    kind = f"tcp {st}"
                target += f" {loc} -> {rem} {st}"
        elif target.startswith("/"):
            kind = "file"
        kinds[kind] = kinds.get(kind, 0) + 1
        lines.append(f"{fd} {target}")
    return kinds, lines


# ================================================================= stats ===
class Stats:
    """Counts per request kind; failures with their time and cause."""

    def __init__(self, t0_mono, t0_wall):
        self.lock = threading.Lock()
        self.t0 = t0_mono
        self.t0_wall = t0_wall
        self.kinds = {}
        self.safe_failures = []        # every one (capped at 1000)
        self.safe_failures_total = 0
        self.other_failures = []       # a sample (capped at 200)
        self.events = []               # (t, what, backend port or None)

    def _k(self, kind):
        k = self.kinds.get(kind)
        if k is None:
            k = self.kinds[kind] = {"ok": 0, "failed": 0, "expected": 0, "causes": {},
                                    "expected_causes": {}, "backends": {}, "lat": [],
                                    "lat_max": 0.0, "notes": {}}
        return k

    def t(self):
        return time.monotonic() - self.t0

    def event(self, what, port=None):
        with self.lock:
            self.events.append((round(self.t(), 2), what, port))

    def ok(self, kind, backend=None, latency=None, n=1):
        with self.lock:
            k = self._k(kind)
            k["ok"] += n
            if backend:
                k["backends"][backend] = k["backends"].get(backend, 0) + n
            if latency is not None:
                k["lat_max"] = max(k["lat_max"], latency)
                if len(k["lat"]) < 20000:
                    k["lat"].append(latency)
                elif random.random() < 0.05:
                    k["lat"][random.randrange(20000)] = latency

    def note(self, kind, what, n=1):
        with self.lock:
            notes = self._k(kind)["notes"]
            notes[what] = notes.get(what, 0) + n

    def fail(self, kind, cause, method="", path="", n=1, t=None, expected=None):
        """A failure. `expected`: why it is not weir's fault (a killed backend
        under a request that cannot be retried), or None."""
        t = self.t() if t is None else t
        short = re.sub(r"\d+\.\d+|\d{4,}", "N", cause)[:90]
        with self.lock:
            k = self._k(kind)
            if expected:
                k["expected"] += n
                c = k["expected_causes"]
                key = f"{short} ({expected})"
                c[key] = c.get(key, 0) + n
                return
            k["failed"] += n
            k["causes"][short] = k["causes"].get(short, 0) + n
            rec = {"t": round(t, 2),
                   "time": (self.t0_wall + datetime.timedelta(seconds=t)).strftime(
                       "%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z",
                   "kind": kind, "method": method, "path": path, "cause": cause,
                   "count": n, "context": self._context(t)}
            if kind in SAFE_KINDS:
                self.safe_failures_total += n
                if len(self.safe_failures) < 1000:
                    self.safe_failures.append(rec)
            elif len(self.other_failures) < 200:
                self.other_failures.append(rec)

    def _context(self, t):
        """The chaos events of the 10 s before t (lock held)."""
        out = []
        for et, what, port in self.events:
            if t - 10 <= et <= t + 0.5:
                out.append(f"{what}{' ' + str(port) if port else ''} at {et:.1f} s "
                           f"({t - et:+.1f} s)")
        return "; ".join(out[-4:]) or "no kill, restart or reload in the 10 s before"

    def killed_between(self, port, t_from, t_to):
        with self.lock:
            return any(what == "kill" and p == port and t_from - 0.5 <= et <= t_to + 0.5
                       for et, what, p in self.events)

    def kill_within(self, t, before):
        with self.lock:
            return any(what == "kill" and t - before <= et <= t + 0.5
                       for et, what, p in self.events)


def pct(values, q):
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))]


# =============================================================== clients ===
class Client(threading.Thread):
    """One bounded client loop: stops at `stop`, at `t_end`, or after `cap` rounds."""
    kind = "?"

    def __init__(self, env, idx, rate=None):
        super().__init__(name=f"{self.kind}-{idx}", daemon=True)
        self.env = env
        self.idx = idx
        self.rate = rate
        self.rng = random.Random(idx * 7919 + hash(self.kind) % 1000)
        per_s = rate if rate else 2.0
        self.cap = int(env.minutes * 60 * per_s * 1.5) + 20

    @property
    def stats(self):
        return self.env.stats

    def running(self):
        return not self.env.stop.is_set() and time.monotonic() < self.env.t_end

    def run(self):
        interval = 1.0 / self.rate if self.rate else 0
        nxt = time.monotonic() + self.rng.random() * max(interval, 0.5)
        self.env.stop.wait(max(0.0, nxt - time.monotonic()))
        try:
            for _ in range(self.cap):
                if not self.running():
                    break
                self.round()
                if interval:
                    nxt += interval
                    now = time.monotonic()
                    if nxt < now:
                        nxt = now
                    self.env.stop.wait(nxt - now)
        except Exception as e:  # noqa: BLE001 - a harness bug must not pass silently
            self.stats.note(self.kind, f"client thread crashed: {e!r}")
            self.env.harness_errors.append(f"{self.name}: {e!r}")
        finally:
            self.cleanup()

    def round(self):
        raise NotImplementedError

    def cleanup(self):
        pass


def describe(e):
    s = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
    return s[:200]


class KeepAliveGet(Client):
    """GET /x (and HEAD every 10th) on one keep-alive connection."""
    kind = "get-keepalive"

    def __init__(self, env, idx, rate):
        super().__init__(env, idx, rate)
        self.conn = None
        self.n = 0

    def round(self):
        self.n += 1
        method = "HEAD" if self.n % 10 == 0 else "GET"
        t = time.monotonic()
        try:
            if self.conn is None:
                self.conn = http.client.HTTPConnection(HOST, LB_PORT, timeout=20)
            self.conn.request(method, "/x")
            r = self.conn.getresponse()
            body = r.read()
            lat = time.monotonic() - t
            if r.status != 200:
                self.stats.fail(self.kind, f"status {r.status}: {body[:80]!r}", method, "/x")
            elif method == "GET" and not body.startswith(b"ok "):
                self.stats.fail(self.kind, f"unexpected body {body[:80]!r}", method, "/x")
            else:
                self.stats.ok(self.kind, r.getheader("X-Backend"), lat)
            if r.will_close:
                self.stats.note(self.kind, "weir closed the keep-alive connection")
                self.drop()
        except (OSError, http.client.HTTPException) as e:
            self.stats.fail(self.kind, describe(e), method, "/x")
            self.drop()

    def drop(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    cleanup = drop


class NewConnGet(Client):
    """GET /x on a new connection each (Connection: close)."""
    kind = "get-newconn"

    def round(self):
        t = time.monotonic()
        c = http.client.HTTPConnection(HOST, LB_PORT, timeout=20)
        try:
            c.request("GET", "/x", headers={"Connection": "close"})
            r = c.getresponse()
            body = r.read()
            if r.status != 200:
                self.stats.fail(self.kind, f"status {r.status}: {body[:80]!r}", "GET", "/x")
            elif not body.startswith(b"ok "):
                self.stats.fail(self.kind, f"unexpected body {body[:80]!r}", "GET", "/x")
            else:
                self.stats.ok(self.kind, r.getheader("X-Backend"), time.monotonic() - t)
        except (OSError, http.client.HTTPException) as e:
            self.stats.fail(self.kind, describe(e), "GET", "/x")
        finally:
            c.close()


class Poster(Client):
    """POST and PUT with small bodies (1 B - 4 KiB) on a keep-alive connection.
    PUT is idempotent and its body is small enough to be replayed: safe to retry.
    POST is not: a POST that reached a killed backend may fail."""
    kind = "post"

    def __init__(self, env, idx, rate):
        super().__init__(env, idx, rate)
        self.conn = None
        self.n = 0

    def round(self):
        self.n += 1
        method = "PUT" if self.n % 2 else "POST"
        kind = method.lower()
        size = self.rng.randint(1, 4096)
        body = bytes(self.rng.getrandbits(8) for _ in range(16)) * (size // 16) + b"z" * (size % 16)
        t = time.monotonic()
        try:
            if self.conn is None:
                self.conn = http.client.HTTPConnection(HOST, LB_PORT, timeout=20)
            self.conn.request(method, "/echo", body=body,
                              headers={"Content-Type": "application/octet-stream"})
            r = self.conn.getresponse()
            data = r.read()
            if r.status != 200 or data != f"len={size}\n".encode():
                self.failed(kind, method, f"status {r.status}: {data[:80]!r}", t)
            else:
                self.stats.ok(kind, r.getheader("X-Backend"), time.monotonic() - t)
            if r.will_close:
                self.drop()
        except (OSError, http.client.HTTPException) as e:
            self.failed(kind, method, describe(e), t)
            self.drop()

    def failed(self, kind, method, cause, t_start):
        expected = None
        if method == "POST" and self.stats.kill_within(self.stats.t(),
                                                       time.monotonic() - t_start + 1):
            expected = "a backend was killed while it was in flight; POST is not retried"
        self.stats.fail(kind, cause, method, "/echo", expected=expected)

    def drop(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    cleanup = drop


class WsConn:
    """A minimal RFC 6455 client over a plain socket."""

    def __init__(self, timeout=10.0):
        self.s = socket.create_connection((HOST, LB_PORT), timeout=timeout)
        self.buf = b""
        self.backend = None

    def _fill(self):
        data = self.s.recv(65536)
        if not data:
            raise EOFError("connection closed")
        self.buf += data

    def read_exact(self, n):
        while len(self.buf) < n:
            try:
                self._fill()
            except EOFError:
                break
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def handshake(self):
        key = base64.b64encode(os.urandom(16)).decode()
        self.s.sendall((f"GET /ws HTTP/1.1\r\nHost: {HOST}:{LB_PORT}\r\nUpgrade: websocket\r\n"
                        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                        "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        while b"\r\n\r\n" not in self.buf:
            if len(self.buf) > 65536:
                raise ValueError("response head too large")
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        if len(status) < 2 or status[1] != "101":
            raise ValueError(f"handshake answered {lines[0]!r}")
        want = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        if headers.get("sec-websocket-accept") != want:
            raise ValueError(f"bad Sec-WebSocket-Accept {headers.get('sec-websocket-accept')!r}")
        if headers.get("upgrade", "").lower() != "websocket":
            raise ValueError(f"bad Upgrade {headers.get('upgrade')!r}")
        self.backend = headers.get("x-backend")

    def send(self, opcode, payload, fin=True):
        self.s.sendall(ws_frame(opcode, payload, fin=fin, mask=True))

    def recv(self):
        f = ws_read_frame(self.read_exact)
        if f is None:
            raise EOFError("connection closed mid-frame")
        return f

    def echo(self, payload, binary=False):
        op = 2 if binary else 1
        self.send(op, payload)
        fin, rop, data = self.recv()
        if rop != op or data != payload or not fin:
            raise ValueError(f"echo mismatch: opcode {rop}, {len(data)} B for {len(payload)} B")

    def close(self):
        """Closing handshake: send close, expect close back, then end of stream."""
        self.send(8, (1000).to_bytes(2, "big"))
        _, op, data = self.recv()
        if op != 8:
            raise ValueError(f"expected a close frame, got opcode {op}")
        self.s.settimeout(5)
        if self.s.recv(1) != b"":
            raise ValueError("data after the close frame")

    def abort(self):
        try:
            self.s.close()
        except OSError:
            pass


class WsClient(Client):
    """WebSocket sessions through weir. Short: a few echoes (text, binary,
    a fragmented message, a ping), then close. Long: open for 15-45 s, an
    echo every 2 s (under idle_timeout), then close."""
    kind = "websocket"

    def __init__(self, env, idx, long=False):
        super().__init__(env, idx, rate=None)
        self.long = long
        self.kind = "websocket-long" if long else "websocket"
        self.cap = int(env.minutes * 60 * (0.2 if long else 3)) + 10

    def round(self):
        t_start = self.stats.t()
        ws = None
        step = "connect"
        try:
            ws = WsConn()
            step = "handshake"
            ws.handshake()
            step = "echo"
            if self.long:
                end = time.monotonic() + self.rng.uniform(15, 45)
                while self.running() and time.monotonic() < end:
                    ws.echo(os.urandom(self.rng.randint(1, 200)), binary=True)
                    self.env.stop.wait(2.0)
            else:
                for size in (5, 125, 126, 300, self.rng.randint(1, 2000), 70000):
                    ws.echo(os.urandom(size), binary=True)
                ws.echo(b"hello soak")
                ws.send(1, b"frag-", fin=False)        # fragmented message
                ws.send(0, b"mented", fin=True)
                got = []
                while True:
                    fin, op, data = ws.recv()
                    got.append(data)
                    if fin:
                        break
                if b"".join(got) != b"frag-mented":
                    raise ValueError(f"fragmented echo mismatch {b''.join(got)!r}")
                ws.send(9, b"ping!")
                fin, op, data = ws.recv()
                if op != 10 or data != b"ping!":
                    raise ValueError(f"expected pong, got opcode {op}")
            step = "close"
            ws.close()
            self.stats.ok(self.kind, ws.backend, self.stats.t() - t_start)
        except (OSError, EOFError, ValueError) as e:
            expected = None
            port = int(ws.backend) if ws is not None and ws.backend else None
            if port and self.stats.killed_between(port, t_start, self.stats.t()):
                expected = "its backend was killed during the session"
            self.stats.fail(self.kind, f"{step}: {describe(e)}", "GET", "/ws", expected=expected)
        finally:
            if ws is not None:
                ws.abort()
        if not self.long:
            self.env.stop.wait(self.rng.uniform(0.3, 1.0))


class WsIdle(Client):
    """A WebSocket that says nothing: weir closes both sides after idle_timeout."""
    kind = "ws-idle"

    def __init__(self, env, idx):
        super().__init__(env, idx, rate=None)
        self.cap = int(env.minutes * 60 / IDLE_TIMEOUT * 1.5) + 10

    def round(self):
        ws = None
        try:
            ws = WsConn()
            ws.handshake()
            t = time.monotonic()
            limit = IDLE_TIMEOUT + 4
            ws.s.settimeout(limit)
            try:
                data = ws.s.recv(1024)
            except socket.timeout:
                self.stats.fail(self.kind, f"not closed after {limit} s of silence", "GET", "/ws")
                return
            except ConnectionResetError:
                data = b""
            dt = time.monotonic() - t
            if data:
                self.stats.fail(self.kind, f"unexpected data {data[:40]!r}", "GET", "/ws")
            elif dt < IDLE_TIMEOUT - 0.5:
                port = int(ws.backend) if ws.backend else None
                if port and self.stats.killed_between(port, self.stats.t() - dt, self.stats.t()):
                    self.stats.fail(self.kind, "closed early", "GET", "/ws",
                                    expected="its backend was killed")
                else:
                    self.stats.fail(self.kind, f"closed after {dt:.1f} s, before idle_timeout",
                                    "GET", "/ws")
            else:
                self.stats.ok(self.kind, ws.backend, dt)
        except (OSError, EOFError, ValueError) as e:
            self.stats.fail(self.kind, describe(e), "GET", "/ws")
        finally:
            if ws is not None:
                ws.abort()


def wait_cut(s, limit):
    """Wait up to `limit` s for the peer to answer or close. Returns
    (seconds, first bytes) at the first data or close, or (None, b'') on timeout."""
    t = time.monotonic()
    end = t + limit
    while True:
        left = end - time.monotonic()
        if left <= 0:
            return None, b""
        r, _, _ = select.select([s], [], [], min(left, 0.5))
        if r:
            try:
                data = s.recv(4096)
            except OSError:
                data = b""
            return time.monotonic() - t, data


class SlowHeader(Client):
    """A request head sent one byte every 0.3 s (15 s in all): weir must cut it
    at header_timeout (close, or 408 then close)."""
    kind = "slow-header"

    def __init__(self, env, idx):
        super().__init__(env, idx, rate=None)
        self.cap = int(env.minutes * 60 / HEADER_TIMEOUT * 1.5) + 10

    def round(self):
        head = f"GET /x HTTP/1.1\r\nHost: {HOST}\r\nUser-Agent: soak-slow-header\r\n\r\n".encode()
        s = socket.create_connection((HOST, LB_PORT), timeout=5)
        t = time.monotonic()
        limit = HEADER_TIMEOUT + 4
        try:
            for b in head:
                if time.monotonic() - t > limit or not self.running():
                    break
                try:
                    s.sendall(bytes([b]))
                except OSError:
                    return self.judge(time.monotonic() - t, b"")
                dt, data = wait_cut(s, 0.3)
                if dt is not None:
                    return self.judge(time.monotonic() - t, data)
            if not self.running():
                return
            dt, data = wait_cut(s, max(0.1, limit - (time.monotonic() - t)))
            if dt is None:
                self.stats.fail(self.kind, f"head still accepted after {limit} s", "GET", "/x")
            else:
                self.judge(time.monotonic() - t, data)
        finally:
            s.close()

    def judge(self, dt, data):
        if data and not data.startswith(b"HTTP/1.1 408"):
            self.stats.fail(self.kind, f"answered {data[:40]!r} to an unfinished head", "GET", "/x")
        elif dt < HEADER_TIMEOUT - 0.5:
            self.stats.fail(self.kind, f"cut after {dt:.1f} s, before header_timeout", "GET", "/x")
        elif dt > HEADER_TIMEOUT + 2.5:
            self.stats.fail(self.kind, f"cut only after {dt:.1f} s", "GET", "/x")
        else:
            self.stats.ok(self.kind, None, dt)
            self.stats.note(self.kind, "answered 408" if data else "closed without an answer")


class SlowBody(Client):
    """Content-Length: 1000, 10 bytes of body, then nothing: weir must answer
    408 (or close) at body_timeout. Alternates POST (streamed to the backend)
    and PUT (small and idempotent: read whole by weir first)."""
    kind = "slow-body"

    def __init__(self, env, idx):
        super().__init__(env, idx, rate=None)
        self.cap = int(env.minutes * 60 / BODY_TIMEOUT * 1.5) + 10
        self.n = idx

    def round(self):
        self.n += 1
        method = "PUT" if self.n % 2 else "POST"
        s = socket.create_connection((HOST, LB_PORT), timeout=5)
        limit = BODY_TIMEOUT + 4
        try:
            s.sendall(f"{method} /echo HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 1000\r\n"
                      "Content-Type: application/octet-stream\r\n\r\n".encode() + b"0123456789")
            dt, data = wait_cut(s, limit)
            if dt is None:
                self.stats.fail(self.kind, f"stalled body still accepted after {limit} s",
                                method, "/echo")
            elif data and not data.startswith(b"HTTP/1.1 408"):
                expected = None
                if (method == "POST" and data.startswith(b"HTTP/1.1 502")
                        and self.stats.kill_within(self.stats.t(), dt + 1)):
                    expected = ("its backend was killed while the body was streaming to it; "
                                "POST is not retried")
                self.stats.fail(self.kind, f"answered {data[:40]!r}", method, "/echo",
                                expected=expected)
            elif dt < BODY_TIMEOUT - 0.5:
                self.stats.fail(self.kind, f"cut after {dt:.1f} s, before body_timeout",
                                method, "/echo")
            elif dt > BODY_TIMEOUT + 2.5:
                self.stats.fail(self.kind, f"cut only after {dt:.1f} s", method, "/echo")
            else:
                self.stats.ok(self.kind, None, dt)
                self.stats.note(self.kind, f"{method}: answered 408" if data
                                else f"{method}: closed without an answer")
        finally:
            s.close()


class NeverRead(Client):
    """GET /big (8 MiB) with a small receive buffer, then read nothing for
    send_timeout + 4 s: weir must have given up on the client by then. Then
    the client drains what is left: the stream must end before the full body."""
    kind = "never-read"

    def __init__(self, env, idx):
        super().__init__(env, idx, rate=None)
        self.cap = int(env.minutes * 60 / (SEND_TIMEOUT + 4) * 1.5) + 10

    def round(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        s.settimeout(5)
        try:
            s.connect((HOST, LB_PORT))
            s.sendall(f"GET /big HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
            self.env.stop.wait(SEND_TIMEOUT + 4)
            if self.env.stop.is_set():
                return
            got, end = 0, time.monotonic() + 20
            head = b""
            while time.monotonic() < end:
                try:
                    data = s.recv(1 << 20)
                except ConnectionResetError:
                    data = b""
                except socket.timeout:
                    self.stats.fail(self.kind, "no data and no close while draining", "GET", "/big")
                    return
                if not data:
                    break
                if len(head) < 4096:
                    head += data[:4096]
                got += len(data)
            if not head.startswith(b"HTTP/1.1 200"):
                self.stats.fail(self.kind, f"answered {head[:40]!r}", "GET", "/big")
            elif got >= BIG_SIZE:
                self.stats.fail(self.kind, f"weir never gave up: the whole body ({got} B) arrived",
                                "GET", "/big")
            else:
                self.stats.ok(self.kind, None, None)
                self.stats.note(self.kind, "KiB received before the cut (sum)", got // 1024)
        except OSError as e:
            self.stats.fail(self.kind, describe(e), "GET", "/big")
        finally:
            s.close()


class H2Burst(Client):
    """Short bounded h2load bursts (h2c with prior knowledge) every `every` s."""
    kind = "h2-get"

    def __init__(self, env, h2load, every):
        super().__init__(env, 0, rate=1.0 / every)
        self.h2load = h2load

    def round(self):
        t = self.stats.t()
        argv = [self.h2load, *H2LOAD_ARGS, f"http://{HOST}:{LB_PORT}/x"]
        pr = Proc("h2load", argv, capture=True)
        try:
            out, err = pr.p.communicate(timeout=30)
            rc = pr.p.returncode
        except subprocess.TimeoutExpired:
            pr.stop(grace=1.0, sig=signal.SIGKILL)
            out, err = pr.p.communicate()
            rc = None
        finally:
            pr.close()
        text = (out or b"").decode(errors="replace") + (err or b"").decode(errors="replace")
        n = int(H2LOAD_ARGS[H2LOAD_ARGS.index("-n") + 1])
        m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                      r"(\d+) failed, (\d+) errored, (\d+) timeout", text)
        codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
        if rc is None or not m:
            self.stats.fail(self.kind, f"h2load {'timed out' if rc is None else 'exit ' + str(rc)}: "
                            f"{text.strip()[-200:]!r}", "GET", "/x", n=n, t=t)
            return
        total, _, done, ok = (int(m.group(i)) for i in (1, 2, 3, 4))
        bad = total - ok
        self.stats.ok(self.kind, None, None, n=ok)
        if bad:
            line = m.group(0) + ("; " + codes.group(0) if codes else "")
            self.stats.fail(self.kind, f"h2load burst: {line}", "GET", "/x", n=bad, t=t)


# ================================================================ config ===
def weir_config(weight):
    backends = ",\n".join(
        f'  {{ address = "{HOST}:{p}", weight = {weight if i == 0 else 1} }}'
        for i, p in enumerate(BACKEND_PORTS))
    return f"""\
# Written by benches/soak/soak.py. Two variants alternate on every SIGHUP:
# the first backend's weight is 1 or 3.
[runtime]
shutdown_timeout = "{SHUTDOWN_TIMEOUT}s"

[admin]
listen = "{HOST}:{ADMIN_PORT}"

[logging]
level = "info"
access_log = "off"

[[listeners]]
name = "soak"
listen = "{HOST}:{LB_PORT}"
header_timeout = "{HEADER_TIMEOUT}s"
body_timeout = "{BODY_TIMEOUT}s"
send_timeout = "{SEND_TIMEOUT}s"
idle_timeout = "{IDLE_TIMEOUT}s"
max_connections = 2000

[[routes]]
name = "all"
upstream = "app"

[upstreams.app]
strategy = "round_robin"
backends = [
{backends},
]
timeouts = {{ connect = "1s", response = "5s", idle = "{UPSTREAM_IDLE}s" }}

[upstreams.app.health_check]
path = "/healthz"
interval = "1s"
timeout = "1s"
healthy_threshold = 2
unhealthy_threshold = 2

[upstreams.app.outlier_detection]
consecutive_failures = 3
base_ejection_time = "5s"
max_ejection_time = "30s"

[upstreams.app.retries]
attempts = 2
"""


def write_atomic(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


# ======================================================== admin / checks ===
def http_get(port, path, timeout=5.0):
    c = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        c.request("GET", path, headers={"Connection": "close"})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def scrape():
    """{(name, labels): value} from weir's /metrics, or {} when it fails."""
    try:
        status, body = http_get(ADMIN_PORT, "/metrics")
    except (OSError, http.client.HTTPException):
        return {}
    if status != 200:
        return {}
    out = {}
    for line in body.decode(errors="replace").splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)", line)
        if m:
            try:
                out[(m.group(1), m.group(2) or "")] = float(m.group(3))
            except ValueError:
                pass
    return out


def metric_sum(metrics, name, **labels):
    total = 0.0
    for (n, lab), v in metrics.items():
        if n != name:
            continue
        if all(f'{k}="{val}"' in lab for k, val in labels.items()):
            total += v
    return total


def metric_by(metrics, name, label):
    out = {}
    for (n, lab), v in metrics.items():
        if n == name:
            m = re.search(label + r'="([^"]*)"', lab)
            key = m.group(1) if m else ""
            out[key] = out.get(key, 0) + v
    return out


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def weir_log_lines(path):
    try:
        with open(path, errors="replace") as f:
            return [ANSI.sub("", x.rstrip("\n")) for x in f]
    except OSError:
        return []


def log_time(line):
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?)Z", line)
    if not m:
        return None
    s = m.group(1)
    if "." in s:
        s = s[:26]
    try:
        return datetime.datetime.fromisoformat(s).replace(tzinfo=datetime.timezone.utc)
    except ValueError:
        return None


# ================================================================== build ===
def newest_source_mtime():
    newest = 0.0
    for top in ("src",):
        for d, _, files in os.walk(os.path.join(REPO, top)):
            for f in files:
                if f.endswith(".rs"):
                    newest = max(newest, os.path.getmtime(os.path.join(d, f)))
    for f in ("Cargo.toml", "Cargo.lock", "build.rs"):
        p = os.path.join(REPO, f)
        if os.path.exists(p):
            newest = max(newest, os.path.getmtime(p))
    return newest


def ensure_binary(path, build):
    stale = not os.path.isfile(path) or os.path.getmtime(path) < newest_source_mtime()
    if not stale:
        return None
    if not build:
        if os.path.isfile(path):
            log(f"note: {path} is older than the sources; used as it is (--no-build)")
            return None
        return f"{path} is missing (and --no-build was given)"
    cargo = shutil.which("cargo")
    if not cargo:
        return f"{path} is missing or stale and cargo is not on PATH"
    log("building weir: cargo build --release --bin weir (several minutes; it may wait "
        "on a cargo lock held by another build)")
    pr = Proc("cargo", [cargo, "build", "--release", "--bin", "weir",
                        "--manifest-path", os.path.join(REPO, "Cargo.toml")], inherit=True)
    try:
        rc = pr.p.wait(timeout=3600)
    except subprocess.TimeoutExpired:
        pr.stop(grace=5.0)
        return "cargo build did not finish within an hour"
    finally:
        pr.close()
    if rc != 0:
        return f"cargo build failed (exit {rc}); fix the build or run with --no-build"
    if not os.path.isfile(path):
        return f"{path} still missing after the build"
    return None


# ================================================================== soak ===
class Env:
    """What the client threads share."""

    def __init__(self, minutes, stats):
        self.minutes = minutes
        self.stats = stats
        self.stop = threading.Event()
        self.t_end = float("inf")
        self.harness_errors = []


class Soak:
    def __init__(self, a, out_dir, weir_bin, h2load):
        self.a = a
        self.out = out_dir
        self.weir_bin = weir_bin
        self.h2load = h2load
        self.cfg = os.path.join(out_dir, "weir.toml")
        self.weir_log = os.path.join(out_dir, "weir.log")
        self.weir = None
        self.backends = {}               # port -> Proc (None while down)
        self.samples = []
        self.reloads_sent = 0
        self.kills = 0
        self.restarts = 0
        self.weight = 1
        self.reloads_at_start = 0.0
        self.result = {}
        self.events_f = open(os.path.join(out_dir, "events.jsonl"), "w")

    def record(self, **kv):
        kv.setdefault("wall", utc_now().strftime("%H:%M:%S.%f")[:-3])
        self.events_f.write(json.dumps(kv) + "\n")
        self.events_f.flush()

    # ---------------------------------------------------------- processes --
    def start_backend(self, port):
        pr = Proc(f"backend-{port}", [sys.executable, os.path.abspath(__file__), "_backend",
                                      str(port)],
                  logfile=os.path.join(self.out, f"backend-{port}.log"))
        end = time.monotonic() + 10
        while time.monotonic() < end:
            if not pr.alive():
                raise RuntimeError(f"backend {port} exited with {pr.p.returncode}; see "
                                   f"backend-{port}.log")
            if port_listening(port, 0.3):
                self.backends[port] = pr
                return pr
            time.sleep(0.05)
        pr.stop(grace=1.0)
        raise RuntimeError(f"backend {port} did not listen within 10 s")

    def kill_backend(self, port):
        pr = self.backends.get(port)
        if pr is None:
            return
        pr.stop(grace=2.0, sig=signal.SIGKILL)
        self.backends[port] = None

    def start_weir(self):
        env = {"NO_COLOR": "1"}
        os.environ.pop("RUST_LOG", None)       # the config's level holds
        self.weir = Proc("weir", [self.weir_bin, "--config", self.cfg], logfile=self.weir_log,
                         env=env, deathsig=True)
        end = time.monotonic() + 30
        last = "no answer"
        while time.monotonic() < end:
            if not self.weir.alive():
                raise RuntimeError(f"weir exited with status {self.weir.p.returncode}; "
                                   f"see {self.weir_log}")
            try:
                st, _ = http_get(ADMIN_PORT, "/readyz", timeout=1)
                st2, body = http_get(LB_PORT, "/x", timeout=2)
                if st == 200 and st2 == 200 and body.startswith(b"ok "):
                    return
                last = f"readyz {st}, GET /x {st2} {body[:60]!r}"
            except (OSError, http.client.HTTPException) as e:
                last = describe(e)
            time.sleep(0.2)
        raise RuntimeError(f"weir not ready within 30 s: {last}")

    def fd_snapshot(self, name, n=5, spacing=0.4):
        """weir's descriptors at the quietest of n instants (fewest open): a
        health-check connection open at one instant is not counted. Written
        to fds-NAME.txt. Returns {total, backend, other, kinds}."""
        best = None
        for i in range(n):
            kinds, lines = fd_inventory(self.weir.pid)
            if lines and (best is None or len(lines) < len(best[1])):
                best = (kinds, lines)
            if i + 1 < n:
                time.sleep(spacing)
        if best is None:
            return None
        kinds, lines = best
        with open(os.path.join(self.out, f"fds-{name}.txt"), "w") as f:
            f.write("\n".join(lines) + "\n")
        backend = sum(v for k, v in kinds.items() if k.startswith("backend "))
        return {"total": len(lines), "backend": backend, "other": len(lines) - backend,
                "kinds": kinds}

    def dump_metrics(self, metrics, name):
        with open(os.path.join(self.out, name), "w") as f:
            for (n, lab), v in sorted(metrics.items()):
                f.write(f"{n}{lab} {v:g}\n")

    def sample(self, label, minute, stats):
        vs = vm_status(self.weir.pid)
        fds = fd_count(self.weir.pid)
        m = scrape()
        s = {"label": label, "minute": minute, "t": round(stats.t(), 1),
             "rss_kib": vs.get("VmRSS"), "hwm_kib": vs.get("VmHWM"),
             "threads": vs.get("Threads"), "fds": fds,
             "connections_active": metric_sum(m, "weir_connections_active") if m else None}
        with stats.lock:
            s["ok"] = sum(k["ok"] for k in stats.kinds.values())
            s["failed"] = sum(k["failed"] for k in stats.kinds.values())
        s["safe_failed"] = stats.safe_failures_total
        self.samples.append(s)
        self.record(event="sample", **s)
        return s

    # --------------------------------------------------------------- run --
    def run(self):
        a = self.a
        write_atomic(self.cfg, weir_config(self.weight))
        chk = subprocess.run([self.weir_bin, "--config", self.cfg, "--check"],
                             capture_output=True, text=True, timeout=30)
        if chk.returncode != 0:
            raise RuntimeError(f"weir --check refuses the soak config:\n{chk.stdout}{chk.stderr}")
        for p in BACKEND_PORTS:
            self.start_backend(p)
        log(f"backends up on {', '.join(str(p) for p in BACKEND_PORTS)}")
        self.start_weir()
        log(f"weir up: pid {self.weir.pid}, listener {HOST}:{LB_PORT}, admin {HOST}:{ADMIN_PORT}")

        time.sleep(3)                              # health checks running, nothing else
        m0 = scrape()
        self.dump_metrics(m0, "metrics-baseline.txt")
        self.reloads_at_start = metric_sum(m0, "weir_config_reloads_total", result="success")
        time.sleep(0.5)                            # the scrape's connection is gone
        fds = self.fd_snapshot("baseline")
        base_rss = vm_status(self.weir.pid).get("VmRSS")
        log(f"baseline: {fds['total']} open descriptors ({fds['backend']} to backends), "
            f"RSS {base_rss / 1024:.1f} MiB")
        self.result["baseline"] = {"fds": fds["total"], "fds_backend": fds["backend"],
                                   "fds_other": fds["other"], "fd_kinds": fds["kinds"],
                                   "rss_kib": base_rss}

        t0 = time.monotonic()
        stats = Stats(t0, utc_now())
        self.stats = stats
        env = Env(a.minutes, stats)
        env.t_end = t0 + a.minutes * 60
        clients = []
        clients += [KeepAliveGet(env, i, KEEPALIVE[1]) for i in range(KEEPALIVE[0])]
        clients += [NewConnGet(env, i, NEWCONN[1]) for i in range(NEWCONN[0])]
        clients += [Poster(env, i, POSTERS[1]) for i in range(POSTERS[0])]
        clients += [WsClient(env, i) for i in range(WS_SHORT)]
        clients += [WsClient(env, 100 + i, long=True) for i in range(WS_LONG)]
        clients += [WsIdle(env, i) for i in range(WS_IDLE)]
        clients += [SlowHeader(env, i) for i in range(SLOW_HEADER)]
        clients += [SlowBody(env, i) for i in range(SLOW_BODY)]
        clients += [NeverRead(env, i) for i in range(NEVER_READ)]
        if self.h2load:
            clients.append(H2Burst(env, self.h2load, a.h2load_every))
        else:
            self.result["notes"] = ["h2load not found: no HTTP/2 traffic (apt-get install "
                                    "nghttp2-client)"]
        for c in clients:
            c.start()
        log(f"traffic started: {len(clients)} client threads for {a.minutes:g} min")

        # the chaos schedule, on the main thread
        next_reload = t0 + a.reload_every
        next_kill = t0 + a.kill_every
        next_sample = t0 + 60
        minute = 0
        down = {}                                  # port -> restart time
        victim = 0
        weir_died = None
        while True:
            now = time.monotonic()
            if now >= env.t_end:
                break
            CLOCK.check()
            if not self.weir.alive():
                weir_died = self.weir.p.returncode
                stats.event("weir exited")
                log(f"weir EXITED with status {weir_died} during the run")
                break
            if now >= next_reload:
                self.weight = 3 if self.weight == 1 else 1
                write_atomic(self.cfg, weir_config(self.weight))
                self.weir.send_signal(signal.SIGHUP)
                self.reloads_sent += 1
                stats.event("reload")
                self.record(event="reload", n=self.reloads_sent, weight=self.weight)
                next_reload += a.reload_every
            if now >= next_kill:
                port = BACKEND_PORTS[victim % len(BACKEND_PORTS)]
                victim += 1
                if self.backends.get(port) is not None:
                    stats.event("kill", port)
                    self.kill_backend(port)
                    self.kills += 1
                    down[port] = now + a.down_for
                    self.record(event="kill", port=port)
                next_kill += a.kill_every
            for port, when in list(down.items()):
                if now >= when:
                    self.start_backend(port)
                    self.restarts += 1
                    stats.event("restart", port)
                    self.record(event="restart", port=port)
                    del down[port]
            if now >= next_sample:
                minute += 1
                s = self.sample("traffic", minute, stats)
                log(f"minute {minute}: RSS {s['rss_kib'] / 1024:.1f} MiB, {s['fds']} fds, "
                    f"{s['connections_active']} client connections, {s['ok']} ok, "
                    f"{s['failed']} failed ({s['safe_failed']} safe to retry), "
                    f"{self.reloads_sent} reloads, {self.kills} kills")
                next_sample += 60
            wake = min(next_reload, next_kill, next_sample, env.t_end,
                       *(down.values() or [env.t_end]))
            time.sleep(max(0.05, min(0.5, wake - time.monotonic())))

        if weir_died is None:
            self.sample("end of traffic", round(a.minutes, 2), stats)
        # stop the traffic
        env.stop.set()
        log("traffic stopped; waiting for the clients")
        join_end = time.monotonic() + 40
        for c in clients:
            c.join(max(0.1, join_end - time.monotonic()))
        stuck = [c.name for c in clients if c.is_alive()]
        if stuck:
            env.harness_errors.append(f"client threads still running after 40 s: {stuck}")
        for port in list(down):
            self.start_backend(port)
            self.restarts += 1
            stats.event("restart", port)
            self.record(event="restart", port=port)
        traffic_s = stats.t()

        final = {}
        if self.weir.alive():
            log(f"settling {SETTLE_S} s (idle_timeout {IDLE_TIMEOUT} s, pooled backend "
                f"connections idle {UPSTREAM_IDLE} s)")
            time.sleep(SETTLE_S)
            m_end = scrape()
            self.dump_metrics(m_end, "metrics-end.txt")
            time.sleep(0.5)                         # the scrape's connection is gone
            fds = self.fd_snapshot("end")
            final.update(fds=fds["total"], fds_backend=fds["backend"], fds_other=fds["other"],
                         fd_kinds=fds["kinds"])
            # Idle pooled backend connections are dropped when their pool is next
            # used: a few GETs (two rounds over the weights) make every pool drop
            # its expired connections; then one pooled connection per backend stays.
            n_touch = 2 * (self.weight + len(BACKEND_PORTS) - 1)
            for _ in range(n_touch):
                try:
                    http_get(LB_PORT, "/x")
                except (OSError, http.client.HTTPException):
                    pass
            time.sleep(0.5)
            fds = self.fd_snapshot("end-pools-used")
            final.update(pool_touch_gets=n_touch, fds_after_touch=fds["total"],
                         fds_backend_after_touch=fds["backend"],
                         fds_other_after_touch=fds["other"])
            vs = vm_status(self.weir.pid)
            final["rss_kib"] = vs.get("VmRSS")
            final["hwm_kib"] = vs.get("VmHWM")
            final["threads"] = vs.get("Threads")
            try:
                st, body = http_get(LB_PORT, "/x")
                final["get"] = f"{st} {body[:40]!r}"
                final["get_ok"] = st == 200 and body.startswith(b"ok ")
            except (OSError, http.client.HTTPException) as e:
                final["get"] = describe(e)
                final["get_ok"] = False
            final["metrics"] = {
                "requests_by_code": metric_by(m_end, "weir_requests_total", "code"),
                "upstream_requests_by_code": metric_by(m_end, "weir_upstream_requests_total",
                                                       "code"),
                "retries": metric_sum(m_end, "weir_retries_total"),
                "retry_budget_exhausted": metric_sum(m_end, "weir_retry_budget_exhausted_total"),
                "reloads_success": metric_sum(m_end, "weir_config_reloads_total",
                                              result="success"),
                "reloads_failure": metric_sum(m_end, "weir_config_reloads_total",
                                              result="failure"),
                "ejections": metric_sum(m_end, "weir_backend_ejections_total"),
                "health_transitions_unhealthy": metric_sum(
                    m_end, "weir_backend_health_transitions_total", to="unhealthy"),
                "connections_active": metric_sum(m_end, "weir_connections_active"),
                "connections_total": metric_sum(m_end, "weir_connections_total"),
                "upstream_active_requests": metric_sum(m_end, "weir_upstream_active_requests"),
            } if m_end else {}
            log("stopping weir (SIGTERM)")
            final["exit_status"] = self.weir.stop(grace=SHUTDOWN_TIMEOUT + 5)
        else:
            final["exit_status"] = self.weir.p.returncode
            self.weir.close()
        for port, pr in self.backends.items():
            if pr is not None:
                pr.stop(grace=2.0)
        self.result.update(final=final, weir_died=weir_died, traffic_s=round(traffic_s, 1),
                           harness_errors=env.harness_errors)
        self.events_f.close()
        return self.judge(stats)

    # ------------------------------------------------------------ verdict --
    def judge(self, stats):
        a, r = self.a, self.result
        final = r["final"]
        base = r["baseline"]
        lines = weir_log_lines(self.weir_log)
        panics = [x for x in lines if "panicked" in x]
        warns = [x for x in lines if re.search(r"\b(WARN|ERROR)\b", x)]
        warn_kinds = {}
        for x in warns:
            msg = re.sub(r"^\S+\s+(WARN|ERROR)\s+", r"\1 ", x)
            msg = re.sub(r"\d+(\.\d+)?", "N", msg)[:140]
            warn_kinds[msg] = warn_kinds.get(msg, 0) + 1

        # attach weir's WARN/ERROR lines near each safe-to-retry failure
        # (the hostile clients' stalled bodies are not news: left out)
        timed = [(log_time(x), x) for x in warns if "body stalled" not in x]
        for rec in stats.safe_failures[:30]:
            t = stats.t0_wall + datetime.timedelta(seconds=rec["t"])
            rec["weir_log"] = [x for lt, x in timed
                               if lt and -3.0 <= (lt - t).total_seconds() <= 1.0][-6:]

        targets = []

        def target(name, ok, detail, skip=False):
            targets.append({"target": name,
                            "status": "SKIP" if skip else ("PASS" if ok else "FAIL"),
                            "detail": detail})

        safe_total = sum(stats.kinds.get(k, {}).get("ok", 0) + stats.kinds.get(k, {}).get("failed", 0)
                         for k in SAFE_KINDS)
        target("safe-retry", stats.safe_failures_total == 0,
               f"{stats.safe_failures_total} of {safe_total} GET/HEAD/PUT requests failed although "
               "they were safe to retry (target 0)")
        target("panics", not panics, f"{len(panics)} 'panicked' lines in weir's log (target 0)")
        if final.get("fds") is None or base.get("fds") is None:
            target("fds", False, "weir was not running at the end: descriptors not measured")
        else:
            other_ok = final["fds_other"] <= base["fds_other"] + FD_OTHER_ALLOWANCE
            pool_ok = final["fds_backend_after_touch"] <= FD_BACKEND_ALLOWANCE
            target("fds", other_ok and pool_ok,
                   f"baseline {base['fds']} ({base['fds_other']} + {base['fds_backend']} to "
                   f"backends); after {SETTLE_S} s of settling {final['fds']} "
                   f"({final['fds_other']} + {final['fds_backend']} to backends), "
                   f"allowed {base['fds_other']} + {FD_OTHER_ALLOWANCE} not to backends; after "
                   f"{final['pool_touch_gets']} GETs that make the pools drop expired "
                   f"connections: {final['fds_backend_after_touch']} to backends, allowed "
                   f"{FD_BACKEND_ALLOWANCE}")
        rss_series = [s for s in self.samples if s["label"] == "traffic" and s["rss_kib"]]
        if a.minutes < RSS_FROM_MINUTE + 1:
            target("rss", True, f"cannot be judged: a {a.minutes:g}-minute run is shorter than "
                   f"{RSS_FROM_MINUTE + 1} minutes (RSS flat within {RSS_TOLERANCE:.0%} after "
                   f"minute {RSS_FROM_MINUTE})", skip=True)
        else:
            ref = next((s for s in rss_series if s["minute"] >= RSS_FROM_MINUTE), None)
            later = [s for s in rss_series if ref and s["minute"] >= ref["minute"]]
            end_s = [s for s in self.samples if s["label"] == "end of traffic" and s["rss_kib"]]
            later += end_s
            if not ref:
                target("rss", False, "no RSS sample at minute 5 (weir died?)")
            else:
                top = max(later, key=lambda s: s["rss_kib"])
                low = min(later, key=lambda s: s["rss_kib"])
                growth = top["rss_kib"] / ref["rss_kib"] - 1
                target("rss", growth <= RSS_TOLERANCE,
                       f"minute {ref['minute']}: {ref['rss_kib'] / 1024:.1f} MiB; highest later "
                       f"{top['rss_kib'] / 1024:.1f} MiB (minute {top['minute']}, {growth:+.1%}); "
                       f"lowest {low['rss_kib'] / 1024:.1f} MiB; allowed +{RSS_TOLERANCE:.0%}")
        met = final.get("metrics") or {}
        if met:
            succ = met["reloads_success"] - self.reloads_at_start   # the start counts as one
            fail = met["reloads_failure"]
            target("reloads", succ == self.reloads_sent and fail == 0,
                   f"{self.reloads_sent} SIGHUPs sent; weir counted {succ:.0f} successful and "
                   f"{fail:.0f} failed reloads")
            active = met["connections_active"]
            target("open-conns", active == 0,
                   f"weir_connections_active after traffic stopped and {SETTLE_S} s of "
                   f"settling: {active:.0f} (target 0; it also holds max_connections permits)")
        else:
            target("reloads", False, "no metrics at the end")
        target("final-get", bool(final.get("get_ok")),
               f"GET /x after the run: {final.get('get', 'not tried (weir not running)')}")
        target("alive", r.get("weir_died") is None,
               "weir ran to the end" if r.get("weir_died") is None
               else f"weir exited with status {r['weir_died']} during the run")
        if r.get("harness_errors"):
            target("harness", False, "; ".join(r["harness_errors"])[:500])

        kinds = {}
        for name, k in sorted(stats.kinds.items()):
            kinds[name] = {"ok": k["ok"], "failed": k["failed"], "expected_failures": k["expected"],
                           "failure_causes": k["causes"], "expected_causes": k["expected_causes"],
                           "by_backend": k["backends"], "notes": k["notes"],
                           "safe_to_retry": name in SAFE_KINDS,
                           "latency_s": {"p50": pct(k["lat"], 0.5), "p99": pct(k["lat"], 0.99),
                                         "max": k["lat_max"] or None}}
        summary = {
            "started": stats.t0_wall.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "minutes": a.minutes, "traffic_s": r["traffic_s"],
            "weir": self.weir_version, "weir_binary": self.weir_bin,
            "targets": targets,
            "passed": all(t["status"] != "FAIL" for t in targets),
            "kinds": kinds,
            "safe_retry_failures": stats.safe_failures,
            "other_failures_sample": stats.other_failures[:50],
            "samples": self.samples,
            "baseline": r["baseline"], "final": final,
            "chaos": {"reloads_sent": self.reloads_sent, "kills": self.kills,
                      "restarts": self.restarts, "kill_every_s": a.kill_every,
                      "down_for_s": a.down_for, "reload_every_s": a.reload_every},
            "weir_log": {"lines": len(lines), "panics": panics[:20],
                         "warn_error_lines": len(warns), "warn_error_kinds": warn_kinds},
            "notes": r.get("notes", []),
        }
        with open(os.path.join(self.out, "summary.json"), "w") as f:
            json.dump(summary, f, indent=1, default=str)
        text = render(summary, self.out)
        with open(os.path.join(self.out, "summary.txt"), "w") as f:
            f.write(text)
        print()
        print(text, end="")
        return 0 if summary["passed"] else 1


def fmt_s(v):
    return "-" if v is None else (f"{v * 1000:.0f} ms" if v < 10 else f"{v:.1f} s")


def render(s, out_dir):
    o = []
    o.append(f"weir soak: {s['minutes']:g} min of traffic ({s['traffic_s']:.0f} s), "
             f"started {s['started']}")
    o.append(f"weir: {s['weir']}")
    o.append("")
    o.append("targets")
    for t in s["targets"]:
        o.append(f"  {t['status']:4}  {t['target']:11} {t['detail']}")
    o.append("")
    o.append("traffic (ok / failed / failed-expected)      p50       p99       max")
    for name, k in s["kinds"].items():
        lat = k["latency_s"]
        tag = " *" if k["safe_to_retry"] else ""
        o.append(f"  {name + tag:18} {k['ok']:8} / {k['failed']:5} / {k['expected_failures']:5}"
                 f"   {fmt_s(lat['p50']):>8}  {fmt_s(lat['p99']):>8}  {fmt_s(lat['max']):>8}")
    o.append("  (* safe to retry: each failure counts against the safe-retry target; "
             "hostile kinds: ok = cut in time, latency = time to the cut)")
    for name, k in s["kinds"].items():
        for cause, n in sorted(k["failure_causes"].items(), key=lambda x: -x[1])[:6]:
            o.append(f"    {name}: {n} x {cause}")
        for cause, n in sorted(k["expected_causes"].items(), key=lambda x: -x[1])[:4]:
            o.append(f"    {name}: {n} x expected: {cause}")
        for note, n in sorted(k["notes"].items()):
            if note.endswith("(sum)") and k["ok"]:
                o.append(f"    {name}: {note[:-6]}: {n / k['ok']:.0f} on average")
            else:
                o.append(f"    {name}: {note}: {n}")
    byb = {}
    for name in ("get-keepalive", "get-newconn"):
        for b, n in s["kinds"].get(name, {}).get("by_backend", {}).items():
            byb[b] = byb.get(b, 0) + n
    if byb:
        o.append("  GETs answered per backend: " +
                 ", ".join(f"{b}: {n}" for b, n in sorted(byb.items())))
    o.append("")
    if s["safe_retry_failures"]:
        o.append(f"requests that failed although safe to retry (first "
                 f"{min(30, len(s['safe_retry_failures']))}):")
        for rec in s["safe_retry_failures"][:30]:
            o.append(f"  t={rec['t']:.1f}s {rec['time']} {rec['kind']} {rec['method']} "
                     f"{rec['path']}{' x' + str(rec['count']) if rec['count'] > 1 else ''}: "
                     f"{rec['cause']}")
            o.append(f"      chaos: {rec['context']}")
            for line in rec.get("weir_log", []):
                o.append(f"      weir: {line[:220]}")
        o.append("")
    c = s["chaos"]
    o.append(f"chaos: {c['reloads_sent']} reloads (every {c['reload_every_s']:g} s), "
             f"{c['kills']} backend kills (every {c['kill_every_s']:g} s, down "
             f"{c['down_for_s']:g} s), {c['restarts']} restarts")
    m = s["final"].get("metrics") or {}
    if m:
        o.append(f"weir metrics at the end: retries {m['retries']:.0f}, retry budget spent "
                 f"{m['retry_budget_exhausted']:.0f}, ejections {m['ejections']:.0f}, "
                 f"backends marked unhealthy {m['health_transitions_unhealthy']:.0f}, "
                 f"client connections open {m['connections_active']:.0f} "
                 f"(of {m['connections_total']:.0f}), upstream requests in flight "
                 f"{m['upstream_active_requests']:.0f}")
        o.append("  responses by status: " + ", ".join(
            f"{k}: {v:.0f}" for k, v in sorted(m["requests_by_code"].items()) if v))
        o.append("  backend answers by status: " + ", ".join(
            f"{k}: {v:.0f}" for k, v in sorted(m["upstream_requests_by_code"].items()) if v))
    o.append("")
    o.append("weir process  minute      RSS     fds  threads  client conns")
    b = s["baseline"]
    o.append(f"  baseline         -  {b['rss_kib'] / 1024:6.1f} MiB {b['fds']:5}")
    for smp in s["samples"]:
        rss = f"{smp['rss_kib'] / 1024:6.1f} MiB" if smp["rss_kib"] else "      -    "
        conns = "-" if smp["connections_active"] is None else f"{smp['connections_active']:.0f}"
        o.append(f"  {smp['label'][:14]:14} {smp['minute']:>4}  {rss} {smp['fds'] or '-':>5} "
                 f"{smp['threads'] or '-':>7}  {conns:>6}")
    f = s["final"]
    if f.get("fds") is not None:
        o.append(f"  after settling      {f['rss_kib'] / 1024:6.1f} MiB {f['fds']:5} "
                 f"{f['threads']:>7}   (peak RSS {f['hwm_kib'] / 1024:.1f} MiB)")
        o.append(f"  pools used          {'':10} {f['fds_after_touch']:5}          "
                 f"({f['fds_backend_after_touch']} to backends)")
        delta = {}
        for k in sorted(set(b["fd_kinds"]) | set(f["fd_kinds"])):
            d = f["fd_kinds"].get(k, 0) - b["fd_kinds"].get(k, 0)
            if d:
                delta[k] = d
        if delta:
            o.append("  descriptors, end vs baseline: " +
                     ", ".join(f"{k} {v:+d}" for k, v in sorted(delta.items())))
    if s["final"].get("fds") is not None:
        o.append(f"  weir's exit status after SIGTERM: {f.get('exit_status')}")
    else:
        o.append(f"  weir's exit status: {f.get('exit_status')}")
    wl = s["weir_log"]
    o.append("")
    o.append(f"weir's log: {wl['lines']} lines, {wl['warn_error_lines']} WARN/ERROR, "
             f"{len(wl['panics'])} panics")
    for msg, n in sorted(wl["warn_error_kinds"].items(), key=lambda x: -x[1])[:8]:
        o.append(f"  {n:6} x {msg}")
    for p in wl["panics"][:5]:
        o.append(f"  PANIC: {p[:300]}")
    for n in s["notes"]:
        o.append(f"note: {n}")
    o.append("")
    o.append(f"files in {out_dir}: summary.txt, summary.json, weir.log, weir.toml, "
             "events.jsonl, fds-*.txt, metrics-*.txt, backend-*.log")
    o.append(f"verdict: {'PASS' if s['passed'] else 'FAIL'}")
    return "\n".join(o) + "\n"


class Clock:
    def __init__(self, seconds):
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def check(self):
        if time.monotonic() > self.end:
            raise Deadline(f"global deadline of {self.seconds / 60:.1f} min reached")


CLOCK = Clock(3600)


def parse_args(argv):
    ap = argparse.ArgumentParser(
        description="weir soak: long mixed traffic with backend kills and reloads, "
                    "then leak and failure checks (run by hand, not in CI)",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--minutes", type=float, default=30.0,
                    help="minutes of traffic (default 30; 2 for a quick check)")
    ap.add_argument("--out", default=None,
                    help="output directory (default ${TMPDIR:-/tmp}/weir-soak)")
    ap.add_argument("--weir", default=None,
                    help="weir binary (default target/release/weir, built if missing or stale)")
    ap.add_argument("--no-build", action="store_true",
                    help="never run cargo build; use the binary as it is")
    ap.add_argument("--kill-every", type=float, default=30.0,
                    help="seconds between backend kills (default 30)")
    ap.add_argument("--down-for", type=float, default=5.0,
                    help="seconds a killed backend stays down (default 5)")
    ap.add_argument("--reload-every", type=float, default=10.0,
                    help="seconds between SIGHUP reloads (default 10)")
    ap.add_argument("--h2load-every", type=float, default=20.0,
                    help="seconds between h2load bursts (default 20)")
    a = ap.parse_args(argv)
    if a.minutes < 0.5:
        ap.error("--minutes must be at least 0.5")
    if a.down_for >= a.kill_every:
        ap.error("--down-for must be shorter than --kill-every")
    return a


def main(argv):
    if argv[:1] == ["_backend"]:
        return backend_main(argv[1:])
    a = parse_args(argv)

    out_dir = os.path.abspath(a.out or os.path.join(tempfile.gettempdir(), "weir-soak"))
    if os.path.commonpath([out_dir, REPO]) == REPO:
        sys.exit(f"--out {out_dir} is inside the repository; give a directory outside it")
    os.makedirs(out_dir, exist_ok=True)
    for name in ("summary.txt", "summary.json", "weir.log", "events.jsonl", "fds-baseline.txt",
                 "fds-end.txt", "fds-end-pools-used.txt", "metrics-baseline.txt",
                 "metrics-end.txt", *(f"backend-{p}.log" for p in BACKEND_PORTS)):
        try:
            os.remove(os.path.join(out_dir, name))
        except FileNotFoundError:
            pass

    ports = [LB_PORT, ADMIN_PORT, *BACKEND_PORTS]
    assert all(PORT_MIN <= p <= PORT_MAX for p in ports)
    busy = [p for p in ports if not port_free(p)]
    if busy:
        sys.exit(f"ports in use: {busy}; refusing to run (another soak running?)")

    def on_signal(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    try:
        weir_bin = os.path.abspath(a.weir) if a.weir else os.path.join(REPO, "target", "release",
                                                                      "weir")
        if not a.weir:
            err = ensure_binary(weir_bin, build=not a.no_build)
            if err:
                sys.exit(err)
        if not (os.path.isfile(weir_bin) and os.access(weir_bin, os.X_OK)):
            sys.exit(f"{weir_bin} is not an executable file")
        h2load = shutil.which("h2load")
        if not h2load:
            log("note: h2load not found: no HTTP/2 traffic (Debian: apt-get install nghttp2-client)")

        global CLOCK
        CLOCK = Clock(a.minutes * 60 + 300)
        soak = Soak(a, out_dir, weir_bin, h2load)
        try:
            soak.weir_version = subprocess.run([weir_bin, "--version"], capture_output=True,
                                               text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            soak.weir_version = "?"
        head = subprocess.run(["git", "-C", REPO, "describe", "--always", "--dirty"],
                              capture_output=True, text=True).stdout.strip()
        if head:
            soak.weir_version += f" (repository at {head})"
        log(f"soak: {a.minutes:g} min of traffic; output in {out_dir}")
        return soak.run()
    except (KeyboardInterrupt, Deadline) as e:
        log(f"aborted ({type(e).__name__}{': ' + str(e) if str(e) else ''}); stopping everything")
        return 2
    except RuntimeError as e:
        log(f"error: {e}")
        return 2
    finally:
        stop_all()


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    finally:
        stop_all()
