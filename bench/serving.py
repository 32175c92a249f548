"""Serving: requests per second, p99 latency and errors under wrk, on 127.0.0.1 only.

Targets, all from the running bench stack:
  static file   a hashed admin stylesheet served by Nginx from the static volume
  page          the Django page `/`, Nginx -> Gunicorn
  healthz       `/healthz`, Nginx -> Gunicorn -> a query on every database
  ceiling       the page's bytes (status, headers, body) from a bare WSGI application
                (bench/ceiling_app.py) in the same image, under the same Gunicorn
                configuration, behind the same Nginx: what serving the page costs without
                Django, the ceiling the page is compared with
  runserver     the same page from `manage.py runserver` in the same image, with the same
                settings, environment and networks (`docker compose run`): what the
                simplest tutorials ship, and the baseline of the ratios
  over HTTPS    the static file and the page again, after the same stack is switched to the
                site a host with `tls = "files"` gets (the front terminates TLS with the
                deploy's own rendering of docker-compose.yml and front.conf, a self-signed
                P-256 certificate installed by config/tls/certs.py); then back to plain HTTP.
                wrk keeps its connections open, so these rows price the encryption of every
                request and one handshake per connection, not a handshake per request.

Capacity: the page at CAPACITY_CONNECTIONS concurrent connections for CAPACITY_SECONDS, one
run: every request must be answered (requests beyond Gunicorn's pace wait in its queue),
none with a 5xx that Nginx made itself, as 768 worker connections once did (36,730 500s).

Each (target, connections) cell is a wrk run of --duration seconds, repeated --repeat
times; the median of the requests per second and of the p99 latency is kept and the
errors (socket errors and non-2xx/3xx answers) are summed. wrk uses one thread per
connection up to the number of cores.
"""
from __future__ import annotations

import json
import os
import re
import resource
import shlex
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from tasks.plans import rollout as rollout_plans
from tasks.plans import site as site_plans
from tasks.source import render
from tasks.source.stack import load, parse_site

from .harness import BenchError, Env, Section, free_port, log, median, wait_for_200

# The app image's Gunicorn settings (the stack's, config/app/djangostack/gunicorn_conf.py).
GUNICORN_CONF = render.APP_COMMAND[2]
CONNECTIONS = (1, 16, 64)
CAPACITY_CONNECTIONS = 2000
CAPACITY_SECONDS = 20
UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def parse_wrk(output: str) -> dict:
    """Requests per second, p99 latency (seconds), requests and errors from wrk --latency."""
    def number(pattern, default=None):
        match = re.search(pattern, output, re.MULTILINE)
        if match is None:
            if default is None:
                raise BenchError(f"unexpected wrk output (no match for {pattern!r}):\n{output}")
            return default
        return match.groups()

    rps = float(number(r"^Requests/sec:\s+([\d.]+)")[0])
    value, unit = number(r"^\s+99%\s+([\d.]+)(us|ms|s|m)\b")
    requests = int(number(r"^\s+(\d+) requests in")[0])
    socket_errors = sum(int(n) for n in number(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", ("0", "0", "0", "0")))
    non_2xx = int(number(r"Non-2xx or 3xx responses: (\d+)", ("0",))[0])
    return {"rps": rps, "p99": float(value) * UNITS[unit], "requests": requests, "errors": socket_errors + non_2xx,
            "non_2xx": non_2xx, "socket_errors": socket_errors}


def _open_files_to_the_limit():
    # wrk holds a file per connection: 2,000 need more than the usual soft limit of 1,024.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def wrk(url: str, connections: int, duration: float, timeout: float = 5, host: str | None = None) -> dict:
    threads = max(1, min(connections, os.cpu_count() or 1))
    argv = ["wrk", "--threads", str(threads), "--connections", str(connections), "--duration", f"{duration:g}s",
            "--timeout", f"{timeout:g}s", "--latency", *(["--header", f"Host: {host}"] if host else []), url]
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60,
                                stdin=subprocess.DEVNULL, preexec_fn=_open_files_to_the_limit)
    except subprocess.TimeoutExpired:
        raise BenchError(f"wrk did not finish: {' '.join(argv)}") from None
    if result.returncode != 0:
        raise BenchError(f"wrk failed ({result.returncode}): {result.stderr.strip() or result.stdout.strip()}")
    return parse_wrk(result.stdout)


def static_path(env: Env) -> str:
    """A hashed static file that collectstatic wrote (the admin's stylesheet)."""
    manifest = json.loads(env.compose("exec", "-T", "djangoapp", "cat", "/srv/static/staticfiles.json").stdout)
    return "/static/" + manifest["paths"]["admin/css/base.css"]


class runserver:
    """`manage.py runserver` in the app image, published on a free port of 127.0.0.1."""

    def __init__(self, env: Env):
        self.env = env
        self.port = free_port()
        self.name = f"{env.project}-runserver"

    def __enter__(self):
        self.env.run(["docker", "rm", "--force", self.name], check=False)
        self.env.compose("run", "--detach", "--no-deps", "--name", self.name,
                         "--publish", f"127.0.0.1:{self.port}:8000",
                         "djangoapp", "python", "manage.py", "runserver", "0.0.0.0:8000")
        wait_for_200(f"http://127.0.0.1:{self.port}/", timeout=60)
        return f"http://127.0.0.1:{self.port}/"

    def __exit__(self, *exc):
        self.env.run(["docker", "rm", "--force", self.name], check=False)
        return False


class https_site:
    """The stack switched to a host's HTTPS site (tls = "files") on free ports of 127.0.0.1:
    the compose file and front.conf rendered for that site as a deploy renders them, a
    self-signed certificate for DOMAIN installed by the certbot service's one-off run, the
    front recreated. On the way out the plain files are put back and the front recreated."""

    DOMAIN = "bench.localhost"

    def __init__(self, env: Env):
        self.env = env
        self.port = free_port()
        self.saved: dict[Path, str] = {}

    def __enter__(self) -> str:
        env = self.env
        self.tmp = tempfile.TemporaryDirectory(prefix="hello-bench-tls-")
        cert, key = Path(self.tmp.name, "site.pem"), Path(self.tmp.name, "site.key")
        env.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                 "-days", "2", "-subj", f"/CN={self.DOMAIN}", "-addext", f"subjectAltName=DNS:{self.DOMAIN}",
                 "-keyout", key, "-out", cert])
        stack = load(env.copy)
        site = parse_site({"domains": [self.DOMAIN], "tls": "files", "bind": "127.0.0.1", "http_port": env.port,
                           "https_port": self.port, "certificate": str(cert), "certificate_key": str(key)},
                          stack.http_port)
        files = render.site_files(stack, site)
        self.saved = {path: (env.copy / path).read_text() for path in files}
        for path, text in files.items():
            (env.copy / path).write_text(text)
        env.compose(*site_plans.install_files(site))
        env.compose("up", "-d", "--wait", "--remove-orphans")
        url = f"https://127.0.0.1:{self.port}"
        _wait_for_https(f"{url}/", self.DOMAIN, timeout=60)
        return url

    def __exit__(self, *exc):
        for path, text in self.saved.items():
            (self.env.copy / path).write_text(text)
        if self.saved:
            self.env.compose("up", "-d", "--wait", "--remove-orphans")
        self.tmp.cleanup()
        return False


class ceiling:
    """The page's bytes from a bare WSGI application (bench/ceiling_app.py) in a container of
    the app image, under the same Gunicorn configuration, put behind the same Nginx the way
    a deploy moves traffic (its live file, a reload); on the way out Nginx goes back to the
    app it served. What no Django page served this way can beat."""

    def __init__(self, env: Env):
        self.env = env
        self.name = f"{env.project}-ceiling"
        self.previous = None

    def _point_nginx(self, conf: str) -> None:
        script = rollout_plans.switch_script(rollout_plans.NGINX_MAIN)
        self.env.compose("exec", "-T", "nginx", "sh", "-c", f"printf %s {shlex.quote(conf)} | sh -c {shlex.quote(script)}")

    def __enter__(self) -> None:
        live = self.env.compose("exec", "-T", "nginx", "cat", rollout_plans.LIVE_FILE, check=False)
        if live.returncode != 0 or not live.stdout.strip():
            raise BenchError(f"no {rollout_plans.LIVE_FILE} in Nginx to go back to after the ceiling")
        self.previous = live.stdout
        try:
            self._start()
        except BaseException:
            self.__exit__()
            raise

    def _start(self) -> None:
        env = self.env
        folder = env.workdir / "ceiling"
        folder.mkdir(exist_ok=True)
        with urllib.request.urlopen(f"{env.url}/", timeout=10) as answer:
            body, status = answer.read(), f"{answer.status} {answer.reason}"
            headers = [(k, v) for k, v in answer.getheaders() if k.lower() not in HOP_AND_NGINX_HEADERS]
        (folder / "page.body").write_bytes(body)
        (folder / "page.json").write_text(json.dumps({"status": status, "headers": headers}))
        shutil.copy(Path(__file__).with_name("ceiling_app.py"), folder / "ceiling_app.py")
        for path in [folder, *folder.iterdir()]:
            path.chmod(0o755 if path.is_dir() else 0o644)  # the app's user reads them
        env.run(["docker", "rm", "--force", self.name], check=False)
        env.compose("run", "--detach", "--no-deps", "--name", self.name, "--volume", f"{folder}:/bench:ro",
                    "--env", "PYTHONPATH=/bench", "djangoapp",
                    "gunicorn", "--config", GUNICORN_CONF, "ceiling_app:application")
        deadline = time.monotonic() + 60
        probe = "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/', timeout=2)"
        while env.run(["docker", "exec", self.name, "python", "-c", probe], check=False).returncode != 0:
            if time.monotonic() > deadline:
                raise BenchError(f"the ceiling's Gunicorn ({self.name}) did not answer within 60 s")
            time.sleep(0.2)
        self._point_nginx(rollout_plans.live_conf(self.name))
        wait_for_200(f"{env.url}/", timeout=30)

    def __exit__(self, *exc):
        try:
            self._point_nginx(self.previous)
        finally:
            self.env.run(["docker", "rm", "--force", self.name], check=False)
        return False


# What the ceiling does not replay: Nginx's own headers and the connection's.
HOP_AND_NGINX_HEADERS = {"server", "date", "connection", "keep-alive", "transfer-encoding"}


def _wait_for_https(url: str, host: str, timeout: float) -> None:
    """Until URL answers 200 over TLS with Host: HOST (the certificate is self-signed)."""
    context = ssl._create_unverified_context()
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers={"Host": host}), timeout=5,
                                        context=context) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise BenchError(f"{url} did not answer 200 over HTTPS within {timeout:g}s")
        time.sleep(0.5)


def fmt_latency(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


STATIC, PAGE, HEALTHZ, RUNSERVER = ("static file (Nginx)", "page (Nginx → Gunicorn)",
                                    "/healthz (Nginx → Gunicorn → PostgreSQL)", "page (`manage.py runserver`)")
CEILING = "page's bytes, bare WSGI (Nginx → Gunicorn)"
STATIC_TLS, PAGE_TLS = "static file (Nginx), HTTPS", "page (Nginx → Gunicorn), HTTPS"


def _run_cells(targets: dict, cells: dict, repeat: int, duration: float, connections) -> None:
    """wrk over every (target, connections) REPEAT times, after a warm-up of each target:
    workers forked, code imported, connections open."""
    for name, (url, host) in targets.items():
        wrk(url, 1, min(duration, 1), host=host)
    for i in range(repeat):
        for c in connections:
            for name, (url, host) in targets.items():
                cells.setdefault((name, c), []).append(wrk(url, c, duration, host=host))
        log(f"  serving {i + 1}/{repeat}: " + ", ".join(
            f"{n.split(' (')[0]}{' tls' if host else ''}@{c} {cells[n, c][-1]['rps']:.0f}/s"
            for n, (url, host) in targets.items() for c in connections))


def measure(env: Env, repeat: int, duration: float, connections=CONNECTIONS,
            capacity_seconds: float = CAPACITY_SECONDS) -> Section:
    if shutil.which("wrk") is None:
        raise BenchError("wrk is not installed: apt-get install wrk")
    env.inv("up")
    static = static_path(env)
    cells: dict = {}
    with runserver(env) as runserver_url:
        targets = {STATIC: (f"{env.url}{static}", None), PAGE: (f"{env.url}/", None),
                   HEALTHZ: (f"{env.url}/healthz", None), RUNSERVER: (runserver_url, None)}
        for url, _ in targets.values():
            wait_for_200(url, timeout=30)
        _run_cells(targets, cells, repeat, duration, connections)
    page = targets[PAGE][0]
    with ceiling(env):
        _run_cells({CEILING: (page, None)}, cells, repeat, duration, connections)
    capacity = wrk(page, CAPACITY_CONNECTIONS, capacity_seconds, timeout=30)
    refused = env.compose("logs", "nginx").stdout.count("worker_connections are not enough")
    log(f"  capacity: {capacity['rps']:.0f}/s at {CAPACITY_CONNECTIONS} connections, "
        f"{capacity['non_2xx']} non-2xx, {capacity['socket_errors']} socket errors")
    with https_site(env) as https_url:
        _run_cells({STATIC_TLS: (f"{https_url}{static}", https_site.DOMAIN),
                    PAGE_TLS: (f"{https_url}/", https_site.DOMAIN)}, cells, repeat, duration, connections)
    order = [STATIC, STATIC_TLS, CEILING, PAGE, PAGE_TLS, HEALTHZ, RUNSERVER]

    def rps(name, c):
        return median([s["rps"] for s in cells[name, c]])

    rows = []
    for c in connections:
        base = rps(RUNSERVER, c)
        for name in order:
            samples = cells[name, c]
            rows.append([name, c, f"{rps(name, c):,.0f}", fmt_latency(median([s["p99"] for s in samples])),
                         f"{sum(s['errors'] for s in samples)} / {sum(s['requests'] for s in samples):,}",
                         f"{rps(name, c) / base:.2f}×" if base else "—"])
    rows.append([f"page (Nginx → Gunicorn), {capacity_seconds:g} s", CAPACITY_CONNECTIONS, f"{capacity['rps']:,.0f}",
                 fmt_latency(capacity["p99"]), f"{capacity['errors']} / {capacity['requests']:,}", "—"])
    workers = env.compose("exec", "-T", "djangoapp", "python", "-c",
                          "import runpy; c = runpy.run_path('/app/stack/djangostack/gunicorn_conf.py'); "
                          "print(c['workers'], c['threads'], c.get('worker_class', 'sync'))").stdout.split()
    return Section(
        title="Serving",
        header=["target", "connections", "requests/s", "p99", "errors / requests", "requests/s ÷ runserver"],
        rows=rows,
        notes=["**The page as a fraction of the ceiling (requests/s)**: " + "; ".join(
                   f"{c} connection{'s' if c > 1 else ''}: {rps(PAGE, c) / rps(CEILING, c):.2f}" for c in connections)
               + ". The ceiling: a bare WSGI application answering the page's bytes (status, headers, "
               "body), in the app image, under the same Gunicorn settings (config/app/djangostack/gunicorn_conf.py), behind the same Nginx "
               "(bench/ceiling_app.py): Nginx, Gunicorn and the network's cost without Django's.",
               "**HTTPS ÷ plain HTTP (requests/s)**: " + "; ".join(
                   f"{c} connection{'s' if c > 1 else ''}: static {rps(STATIC_TLS, c) / rps(STATIC, c):.2f}×, "
                   f"page {rps(PAGE_TLS, c) / rps(PAGE, c):.2f}×" for c in connections) + ".",
               f"wrk on 127.0.0.1, {duration:g} s per run, median of {repeat} run(s); errors are "
               "socket errors plus non-2xx/3xx answers, summed over the runs.",
               f"Gunicorn: {workers[0]} workers × {workers[1]} thread(s), {workers[2]} worker class "
               "(config/app/djangostack/gunicorn_conf.py). runserver: Django's threaded development server with its autoreloader; "
               "its ~45 ms per request at one connection is a wait, not CPU (the same at every "
               "concurrency), so the ratios at 1 connection overstate the difference in work.",
               "The ratio compares each target with the runserver page at the same number of connections.",
               "HTTPS: the same stack switched to the site of a host with tls = \"files\" (the deploy's "
               "rendering of the front: TLS 1.2/1.3, Mozilla intermediate ciphers, HSTS), a self-signed "
               "P-256 certificate; wrk (HTTP/1.1) keeps its connections open, so the rows price "
               "encrypting each request and one handshake per connection.",
               f"Capacity: {CAPACITY_CONNECTIONS:,} connections for {capacity_seconds:g} s on the page: "
               f"{capacity['non_2xx']} answers other than 2xx/3xx, {capacity['socket_errors']} socket errors, "
               f"{refused} 'worker_connections are not enough' in Nginx's log (wrk timeout 30 s: requests "
               "beyond Gunicorn's pace wait in its listen queue)."],
    )
