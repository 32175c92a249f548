"""End-to-end fixtures: the README's commands, run for real against a Docker engine.

Locally the tests are skipped when no engine answers; with CI=true a missing engine is a
failure. They use their own compose project (and port 8000 unless it is taken) so that a
developer's own stack is left alone.
"""
import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from testkit import INV

ROOT = Path(__file__).resolve().parents[2]
PROJECT = "hello-e2e"


def engine_answers() -> bool:
    try:
        return subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"],
                              capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


# Modules that share a compose project or a fixture run in one group, on one worker;
# the groups run side by side (pytest-xdist, --dist loadgroup in pytest.ini).
GROUPS = {"test_stack": "local", "test_databases": "local-databases", "test_backups": "local-backups",
          "test_hardening": "local",
          "test_deploy": "deploy", "test_faults": "faults", "test_bench": "bench", "test_upgrade": "upgrade", "test_upgrade_host": "upgrade", "test_zero_downtime": "zero",
          "test_nginx_config": "upgrade", "test_https": "https", "test_scheduled_backups": "scheduled",
          "test_swarm": "swarm", "test_shared_repository": "shared", "test_jobs": "jobs", "test_services": "services",
          "test_schedules": "schedules", "test_standins": "standins", "test_processes": "processes",
          "test_testhost": "testhost", "test_cluster_jobs": "cluster-jobs", "test_logs": "logs",
          "test_pg_upgrade": "pg-upgrade", "test_ship_image": "ship", "test_shared_front": "front"}


# The groups, longest first (their seconds in CI, summed over their tests: the report's
# "xdist groups per worker"): xdist hands them to the workers in this order
# (--no-loadscope-reorder in pytest.ini; by default it would start the groups with the most
# tests first, and the one-test bench groups, among the longest, last), each to a worker
# that is free (testkit/xdist_groups.py), so the workers end close together.
# local-backups, local-databases (parts of local until now) and front placed by a guess until CI has timed them.
LONGEST_FIRST = ["scheduled", "jobs", "swarm", "local", "zero", "local-backups", "https", "front", "cluster-jobs", "deploy", "bench-deploy", "shared",
                 "engine28", "faults", "bench", "bench-load", "adopt", "processes", "diagnosis", "adopt-more", "upgrade", "pg-upgrade", "ship", "services",
                 "local-databases", "standins", "testhost", "logs", "schedules"]


def _group(item) -> str | None:
    marker = item.get_closest_marker("xdist_group")
    return None if marker is None else (marker.args[0] if marker.args else marker.kwargs.get("name"))


# First: xdist's worker reads the groups in a hook of its own, and registered before this
# conftest when the run names e2e modules on the command line (an initial conftest), it
# would come first and split a group across the workers.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    for item in items:
        # The e2e modules only: a fast test module of the same name (tests/test_swarm.py) is not in the group.
        group = GROUPS.get(item.module.__name__.rsplit(".", 1)[-1]) if "e2e" in item.keywords else None
        if group and item.get_closest_marker("xdist_group") is None:  # a test may name its own
            item.add_marker(pytest.mark.xdist_group(group))
    rank = {group: n for n, group in enumerate(LONGEST_FIRST)}
    # Stable: within a group, and among the fast tests (last), the collection's order.
    items.sort(key=lambda item: rank.get(_group(item), len(rank)))
    e2e = [item for item in items if "e2e" in item.keywords]
    if not e2e or engine_answers():
        return
    if os.environ.get("CI") == "true":
        # In CI a missing engine must fail the run, not skip the proof.
        for item in e2e:
            item.add_marker(pytest.mark.usefixtures("_engine_required"))
    else:
        skip = pytest.mark.skip(reason="no Docker engine reachable (set one up with .ci/engine.sh)")
        for item in e2e:
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter):
    """An engine that died during the run fails every test at once; say so, with the last
    lines of its log (where .ci/engine.sh started it) and the kernel's word if it killed it."""
    if not hasattr(terminalreporter.config, "workerinput") and terminalreporter.stats.get("failed") \
            and not engine_answers():
        terminalreporter.section("the Docker engine stopped answering during the run")
        log = Path("/tmp/dockerd.log")
        if log.exists():
            terminalreporter.write_line("\n".join(log.read_text(errors="replace").splitlines()[-30:]))
        kernel = subprocess.run(["dmesg"], capture_output=True, text=True).stdout.splitlines()
        terminalreporter.write_line("\n".join(line for line in kernel[-200:] if "oom" in line.lower() or "killed" in line.lower()))


@pytest.fixture
def _engine_required():
    pytest.fail("CI=true but no Docker engine is reachable: the end-to-end tests cannot run")


def own_build_cache(root: Path, name: str) -> None:
    """Give the project copy at ROOT build layers of its own: a `--no-cache` build of the same
    requirements elsewhere on this machine (the bench's cold build) replaces the layers later
    builds reuse, and a test counting the layers a code change makes would count those too.
    A comment in the requirements is a different cache key for every step from it on."""
    path = root / "hello/requirements.txt"
    path.write_text(path.read_text() + f"# build cache of {name}\n")


# The engine runs a host's health tests every 10 s (render.HEALTH_INTERVAL) and 20.10 has no
# faster first tick: its verdict on a container just started comes within that, bounded here.
ENGINE_VERDICT = 15


def once_the_engine_says(fetch, ok, seconds=ENGINE_VERDICT):
    """FETCH() again every second, for at most SECONDS, until OK(what it gave): what it gave
    last (the caller asserts on it, so a verdict that never came fails there)."""
    deadline = time.monotonic() + seconds
    while True:
        value = fetch()
        if ok(value) or time.monotonic() > deadline:
            return value
        time.sleep(1)


def free_port(preferred=8000) -> int:
    for port in (preferred, 0):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
                return sock.getsockname()[1]
            except OSError:
                continue
    raise RuntimeError("no free port")


class Stack:
    def __init__(self, project, port, root=ROOT):
        self.root = root
        self.project = project
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.env = {**os.environ, "COMPOSE_PROJECT_NAME": project, "HTTP_PORT": str(port)}

    def inv(self, *args, check=True, env=None, timeout=600, input=None):
        """`inv ARGS` in the stack's checkout; INPUT its standard input (else none)."""
        result = subprocess.run([*INV, *args], cwd=self.root,
                                env={**self.env, **(env or {})}, capture_output=True, text=True, timeout=timeout,
                                **({"input": input} if input is not None else {"stdin": subprocess.DEVNULL}))
        if check and result.returncode != 0:
            raise AssertionError(f"inv {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
        return result

    def get(self, path, headers=None):
        request = urllib.request.Request(self.url + path, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    def health(self):
        status, _, body = self.get("/healthz")
        return status, json.loads(body)

    def health_inside(self):
        """/healthz asked inside the stack (the app container): it names every database."""
        code = ("import json, urllib.request, urllib.error\n"
                "try:\n    r = urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=5)\n"
                "except urllib.error.HTTPError as e:\n    r = e\n"
                "print(r.status, r.read().decode())")
        status, body = self.compose("exec", "-T", "djangoapp", "python", "-c", code).stdout.split(" ", 1)
        return int(status), json.loads(body)

    def compose(self, *args, check=True):
        return self.docker("compose", "--project-name", self.project, *args, check=check)

    def docker(self, *args, check=True):
        # In the project's directory: compose reads its compose file and env files there.
        return subprocess.run(["docker", *args], cwd=self.root, capture_output=True, text=True, check=check,
                              timeout=300)

    def purge(self):
        """Take the project down and delete every volume named after it, labelled by
        compose or not (a leftover of an interrupted run must not leak into this one)."""
        self.inv("down", "--volumes", "--yes", check=False)
        out = self.docker("volume", "ls", "--quiet", "--filter", f"name=^{self.project}_", check=False).stdout
        if out.split():
            self.docker("volume", "rm", "--force", *out.split(), check=False)

    def volumes(self):
        out = self.docker("volume", "ls", "--quiet", "--filter", f"label=com.docker.compose.project={self.project}").stdout
        return {name.removeprefix(f"{self.project}_") for name in out.split()}

    def containers(self):
        out = self.docker("ps", "--all", "--quiet", "--filter", f"label=com.docker.compose.project={self.project}").stdout
        return out.split()


@pytest.fixture(scope="session")
def stack():
    s = Stack(PROJECT, free_port(8000))
    s.purge()
    yield s
    s.purge()


@pytest.fixture(scope="module")
def copied_stack(request, tmp_path_factory):
    """A stack of its own in a git copy of the project, for tasks that edit the tree; its
    compose project is the module's, so that modules using one run side by side."""
    from testkit.projectcopy import copy_project

    module = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_").replace("_", "-")
    s = Stack(f"{PROJECT}-copy-{module}", free_port(0), root=copy_project(tmp_path_factory.mktemp("project")))
    s.purge()
    yield s
    s.purge()


BASE_IMAGES = [os.environ.get("PYTHON_IMAGE", "python:3.11-slim-bookworm"),
               os.environ.get("POSTGRES_IMAGE", "postgres:15"), os.environ.get("NGINX_IMAGE", "nginx:1.27")]
CERTBOT_IMAGE = os.environ.get("CERTBOT_IMAGE", "certbot/certbot:v2.11.0")
# The images of [[services]] by kind, as the rendered files name them (stand-ins in CI).
SERVICE_IMAGES = {"redis": os.environ.get("REDIS_IMAGE", "redis:7.4"),
                  "valkey": os.environ.get("VALKEY_IMAGE", "valkey/valkey:8.0"),
                  "memcached": os.environ.get("MEMCACHED_IMAGE", "memcached:1.6"),
                  "rabbitmq": os.environ.get("RABBITMQ_IMAGE", "rabbitmq:3.13")}


@pytest.fixture(scope="module")
def servers():
    """Make test hosts (testkit/testhost.py) for this module: `servers("prod")` gives a
    fresh server with its own address, engine and sshd, holding the base images and nothing
    else; `servers("prod", engine="28-containerd")` one running Docker 28 (testkit/testhost.py
    ENGINES). All of them are torn down when the module ends, whatever happened."""
    from testkit.testhost import Server, missing_tools

    missing = missing_tools()
    if missing:
        message = f"test hosts need {', '.join(missing)} (see testkit/testhost.py)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    made = []

    def make(name, images=tuple(BASE_IMAGES), engine="20.10"):
        try:
            host = Server(f"hello-{name}", engine=engine)
        except RuntimeError as exc:  # engine 28 not fetched (.ci/engine28.sh)
            (pytest.fail if os.environ.get("CI") == "true" else pytest.skip)(str(exc))
        made.append(host)
        return host.up(images)

    yield make
    for host in made:
        host.down()
