"""Constant load on a stack while an operation runs, and what it saw: the tests' proof of
"no request dropped", and `inv bench`'s figures for deploys under load.

Three things run together, each bounded in time and stopped when the operation ends:
- wrk, CONNECTIONS keep-alive connections requesting the page back to back: any socket
  error (connect, read, write, timeout) or a status other than 2xx/3xx is a failure;
- a probe, one request after the other: its failures, and the longest time between two
  good answers (the outage a visitor would see);
- slow requests (a test-only view that sleeps), one after the other: each must complete,
  the one in flight while traffic moves included.
Everything runs where the stack's port is reached: this machine, or a test host's network
namespace (nsenter), so the traffic never leaves the machine.
"""
from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

PROBE = r"""
import json, signal, ssl, sys, threading, time, urllib.error, urllib.request
url, slow_url, limit = sys.argv[1], sys.argv[2], float(sys.argv[3])
stop = threading.Event()
signal.signal(signal.SIGINT, lambda *_: stop.set())
deadline = time.time() + limit
probe = {"requests": 0, "failures": [], "longest_gap": 0.0}
slow = []

def get(target, timeout):
    try:
        # Availability is measured here, not trust (a test host's certificate is for its domains).
        with urllib.request.urlopen(target, timeout=timeout, context=ssl._create_unverified_context()) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except Exception as e:
        return 0, f"{type(e).__name__}: {e}"

def probing():
    last = time.time()
    while not stop.is_set() and time.time() < deadline:
        status, body = get(url, 10)
        now = time.time()
        probe["requests"] += 1
        if status == 200:
            probe["longest_gap"] = max(probe["longest_gap"], now - last)
            last = now
        elif len(probe["failures"]) < 20:
            probe["failures"].append([now, status, body[:200]])
        time.sleep(0.05)  # about 15 a second: an outage of 0.1 s shows

def slowing():
    while not stop.is_set() and time.time() < deadline:
        started = time.time()
        status, body = get(slow_url, 60)
        slow.append([started, time.time(), status, body.strip()[:200]])

threads = [threading.Thread(target=probing)] + ([threading.Thread(target=slowing)] if slow_url else [])
for t in threads:
    t.start()
while any(t.is_alive() for t in threads):
    for t in threads:
        t.join(0.2)
print(json.dumps({"probe": probe, "slow": slow}))
"""


@dataclass
class Seen:
    """What the load saw during one operation."""
    requests: int = 0
    wrk_errors: dict = field(default_factory=dict)
    non_2xx: int = 0
    probe_requests: int = 0
    probe_failures: list = field(default_factory=list)
    longest_gap: float = 0.0
    slow: list = field(default_factory=list)
    wrk_output: str = ""

    @property
    def failed(self) -> int:
        return sum(self.wrk_errors.values()) + self.non_2xx + len(self.probe_failures) + \
            sum(1 for s in self.slow if s[2] != 200)

    def summary(self) -> str:
        return (f"{self.requests + self.probe_requests} requests, {self.failed} failed "
                f"(wrk {self.wrk_errors}, non-2xx {self.non_2xx}, probe {self.probe_failures[:3]}, "
                f"slow {[s for s in self.slow if s[2] != 200][:3]}), longest gap {self.longest_gap:.2f}s")


def parse_wrk(output: str) -> tuple[int, dict, int]:
    """(requests, socket errors by kind, non-2xx/3xx answers) from wrk's report."""
    match = re.search(r"(\d+) requests in", output)
    if match is None:
        raise RuntimeError(f"wrk did not report:\n{output}")
    errors = dict.fromkeys(("connect", "read", "write", "timeout"), 0)
    found = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    if found:
        errors = dict(zip(errors, map(int, found.groups())))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return int(match.group(1)), errors, int(non_2xx.group(1)) if non_2xx else 0


# Where "no request failed" is the point and not the rate, the tests pace wrk: every
# connection stays open and busy through the operation, yet the load leaves the CPU to the
# deploy and to the other tests running beside it (flat out, wrk and Gunicorn took both
# cores of a CI machine for as long as any zero-downtime test ran). At 100 a second, a request
# lands in any 10 ms window of the operation (the probe adds one about every 65 ms): a
# switch that drops requests for longer is seen every time, and one that drops for 1 ms in one
# deploy out of ten. 200 a second halved that window for 6 % of the whole run's CPU.
RATE = 100  # requests per second, all connections together


def paced(connections: int, rate: float) -> str:
    """A wrk script (its `delay()` hook) that waits between one connection's requests, so
    that CONNECTIONS together send about RATE a second."""
    return f"function delay()\n  return {max(1, round(1000 * connections / rate))}\nend\n"


class Load:
    """`with Load(url, prefix) as seen:` runs the load for the block (at most LIMIT seconds)
    and fills SEEN when it ends. PREFIX runs the programs elsewhere (nsenter into a host).
    RATE paces wrk (requests a second in all); None sends flat out, as `inv bench` does."""

    def __init__(self, base_url: str, prefix=(), connections: int = 16, slow_path: str | None = None,
                 limit: float = 600, rate: float | None = RATE):
        self.base_url, self.prefix, self.connections = base_url.rstrip("/"), list(prefix), connections
        self.slow_path, self.limit, self.rate = slow_path, limit, rate
        self.seen = Seen()

    def __enter__(self) -> Seen:
        self.started = time.time()
        script = []
        if self.rate is not None:
            # The test hosts share this machine's files: the script is read where wrk runs.
            self.script = tempfile.NamedTemporaryFile("w", prefix="wrk-paced-", suffix=".lua")
            self.script.write(paced(self.connections, self.rate))
            self.script.flush()
            script = ["--script", self.script.name]
        self.wrk = subprocess.Popen([*self.prefix, "wrk", "--threads", "2", "--connections", str(self.connections),
                                     "--duration", f"{self.limit:g}s", "--timeout", "10s", *script,
                                     f"{self.base_url}/"],
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        slow_url = f"{self.base_url}{self.slow_path}" if self.slow_path else ""
        self.probe = subprocess.Popen([*self.prefix, sys.executable if not self.prefix else "python3", "-c", PROBE,
                                       f"{self.base_url}/healthz", slow_url, str(self.limit)],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(1.0)  # the load is on before the operation starts
        return self.seen

    def __exit__(self, *exc):
        time.sleep(1.0)  # and stays on a moment after it ends
        for process in (self.wrk, self.probe):
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        wrk_out, _ = self.wrk.communicate(timeout=60)
        probe_out, probe_err = self.probe.communicate(timeout=90)
        if self.rate is not None:
            self.script.close()
        seen = self.seen
        seen.wrk_output = wrk_out
        seen.requests, seen.wrk_errors, seen.non_2xx = parse_wrk(wrk_out)
        result = json.loads(probe_out.strip().splitlines()[-1]) if probe_out.strip() else None
        if result is None:
            raise RuntimeError(f"the probe said nothing: {probe_err}")
        seen.probe_requests = result["probe"]["requests"]
        seen.probe_failures = result["probe"]["failures"]
        seen.longest_gap = result["probe"]["longest_gap"]
        seen.slow = result["slow"]
        return False


HANDSHAKER = r"""
import json, signal, socket, ssl, sys, threading, time
host, port, name, rate, threads, limit = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
path, every = sys.argv[7], int(sys.argv[8])
stop = threading.Event()
signal.signal(signal.SIGINT, lambda *_: stop.set())
deadline = time.time() + limit
# Availability is measured here, not trust: any certificate will do, but the handshake must end.
context = ssl._create_unverified_context()
seen = {"handshakes": 0, "requests": 0, "failed": 0, "failures": []}
lock = threading.Lock()

def shaking():
    interval, due, n = threads / rate, time.time(), 0
    while not stop.is_set() and time.time() < deadline:
        n += 1
        asked = path and n % every == 0
        try:
            # A front handing over holds new connections (their SYNs wait, resent by the
            # client 1, 3, 7 and 15 s on): held up to 15 s is waited for, as a browser would.
            with socket.create_connection((host, port), timeout=20) as sock:
                sock.settimeout(10)
                with context.wrap_socket(sock, server_hostname=name) as tls:
                    failure = None
                    if asked:
                        tls.sendall(f"GET {path} HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n".encode())
                        status = tls.recv(64).split(b"\r\n", 1)[0].decode(errors="replace")
                        if " 200 " not in status + " ":
                            failure = f"GET {path}: {status or 'no answer'}"
        except Exception as e:
            failure = f"{type(e).__name__}: {e}"
        with lock:
            seen["handshakes"] += 1
            seen["requests"] += 1 if asked else 0
            if failure:
                seen["failed"] += 1
                if len(seen["failures"]) < 10:
                    seen["failures"].append(failure)
        due += interval
        time.sleep(max(0.0, due - time.time()))

workers = [threading.Thread(target=shaking) for _ in range(threads)]
for t in workers:
    t.start()
for t in workers:
    while t.is_alive():
        t.join(0.2)
print(json.dumps(seen))
"""


@dataclass
class Shaken:
    """What the handshakes saw: how many, how many failed, the first few errors."""
    handshakes: int = 0
    requests: int = 0
    failed: int = 0
    failures: list = field(default_factory=list)

    def summary(self) -> str:
        return f"{self.handshakes} TLS handshakes ({self.requests} with a request), {self.failed} failed {self.failures[:3]}"


class Handshakes:
    """`with Handshakes(host, port, name, prefix) as seen:` new TLS connections to HOST:PORT
    (server name NAME) for the block, at most RATE a second over THREADS threads (bounded in
    time by LIMIT), each one a full handshake, and every EVERY-th of a thread a request for
    PATH that must answer 200; SEEN is filled when it ends. A certificate and key that do
    not belong together fail a handshake, not a request on a connection that is open
    already: this is the load that sees it, at a bounded rate rather than flat out."""

    def __init__(self, host: str, port: int, name: str, prefix=(), rate: float = 200, threads: int = 4,
                 limit: float = 300, path: str = "", every: int = 10):
        self.argv = [*prefix, sys.executable if not prefix else "python3", "-c", HANDSHAKER,
                     host, str(port), name, str(rate), str(threads), str(limit), path, str(every)]
        self.seen = Shaken()

    def __enter__(self) -> Shaken:
        self.process = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(1.0)  # the handshakes run before the operation starts
        return self.seen

    def __exit__(self, *exc):
        time.sleep(1.0)  # and a moment after it ends
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        out, err = self.process.communicate(timeout=60)
        if not out.strip():
            raise RuntimeError(f"the handshakes said nothing: {err}")
        result = json.loads(out.strip().splitlines()[-1])
        self.seen.handshakes, self.seen.requests, self.seen.failed, self.seen.failures = (
            result["handshakes"], result["requests"], result["failed"], result["failures"])
        return False
