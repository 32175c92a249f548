"""What every benchmark shares: a throwaway copy of the project with its own compose
project, port and image tag; running commands in it; medians; tables; the machine's
description.

Nothing here touches the developer's tree, stack or images: the copy is made with
testkit/projectcopy.py, the compose project is `hello-bench` (its own containers, networks
and volumes), the app image is `hello-bench-djangoapp`, and it all goes at the end.
"""
from __future__ import annotations

import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tasks.errors import TaskError
from tasks.procedures.serving import wait_for_http
from testkit.projectcopy import copy_project
from testkit import INV

ROOT = Path(__file__).resolve().parent.parent

PROJECT = "hello-bench"
MIB = 1024 * 1024


class BenchError(Exception):
    pass


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def median(values) -> float:
    return statistics.median(values)


def timed(func, *args, **kwargs) -> float:
    started = time.monotonic()
    func(*args, **kwargs)
    return time.monotonic() - started


def wait_for_200(url: str, timeout: float) -> float:
    """Poll URL every 50 ms until it answers 200 (the tasks' own poller); return the seconds waited."""
    try:
        return wait_for_http(url, timeout=timeout, interval=0.05)[1]
    except TaskError as exc:
        raise BenchError(str(exc).removeprefix("error: ")) from None


# Running things in the copy --------------------------------------------------------------------

@dataclass
class Env:
    copy: Path
    port: int
    project: str = PROJECT
    timeout: int = 600                            # seconds for one long operation
    vars: dict = field(default_factory=dict)
    workdir: Path | None = None                   # the temporary directory around the copy

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def app_image(self) -> str:
        return self.vars["APP_IMAGE"]

    @property
    def postgres_image(self) -> str:
        return self.vars.get("POSTGRES_IMAGE") or "postgres:15"

    @property
    def python_image(self) -> str:
        return self.vars.get("PYTHON_IMAGE") or "python:3.11-slim-bookworm"

    def run(self, argv, timeout=None, check=True, quiet=True, cwd=None, env=None) -> subprocess.CompletedProcess:
        """Run ARGV in the copy with the bench's environment; raise on failure or timeout."""
        try:
            result = subprocess.run([str(a) for a in argv], cwd=cwd or self.copy, env={**self.vars, **(env or {})},
                                    text=True, capture_output=quiet, stdin=subprocess.DEVNULL,
                                    timeout=timeout or self.timeout)
        except subprocess.TimeoutExpired:
            raise BenchError(f"timed out after {timeout or self.timeout}s: {' '.join(map(str, argv))}") from None
        if check and result.returncode != 0:
            tail = "\n".join(((result.stdout or "") + (result.stderr or "")).splitlines()[-20:])
            raise BenchError(f"exit status {result.returncode}: {' '.join(map(str, argv))}\n{tail}")
        return result

    def inv(self, *args, timeout=None, check=True) -> subprocess.CompletedProcess:
        return self.run([*INV, *args], timeout=timeout, check=check)

    def compose(self, *args, timeout=None, check=True) -> subprocess.CompletedProcess:
        return self.run(["docker", "compose", "--project-name", self.project, *args], timeout=timeout, check=check)

    def psql(self, service: str, sql: str, timeout=None, check=True) -> subprocess.CompletedProcess:
        return self.compose("exec", "-T", service, "psql", "-U", service, "-d", service,
                            "-v", "ON_ERROR_STOP=1", "-Atqc", sql, timeout=timeout, check=check)

    def image_bytes(self, image: str) -> int:
        return int(self.run(["docker", "image", "inspect", "--format", "{{.Size}}", image]).stdout.strip())

    def purge(self) -> None:
        """Take the project down and delete its volumes and app image, whatever state it is in."""
        self.inv("down", "--volumes", "--yes", timeout=300, check=False)
        names = self.run(["docker", "volume", "ls", "--quiet", "--filter", f"name=^{self.project}_"],
                         timeout=60, check=False).stdout.split()
        if names:
            self.run(["docker", "volume", "rm", "--force", *names], timeout=120, check=False)


@contextmanager
def sandbox(project: str = PROJECT):
    """A git copy of the project in a temporary directory, with its own compose project,
    free port and app image tag; everything it made is removed on the way out."""
    workdir = Path(tempfile.mkdtemp(prefix=f"{project}-"))
    env = None
    dangling_before = dangling_images()
    try:
        port = free_port()
        env = Env(copy=copy_project(workdir / "project"), port=port, project=project, workdir=workdir,
                  vars={**os.environ, "COMPOSE_PROJECT_NAME": project, "HTTP_PORT": str(port),
                        "APP_IMAGE": f"{project}-djangoapp:latest", "PIPENV_VERBOSITY": "-1"})
        env.purge()
        yield env
    finally:
        if env is not None:
            log(f"cleaning up {project}")
            env.purge()
            # The app image, and the backup service's (the scheduled-backups section builds it).
            env.run(["docker", "image", "rm", "--force", env.app_image, f"{project}-backup:latest"], timeout=120,
                    check=False)
            # Each rebuild moves a tag and leaves the old image untagged: remove those made here.
            made = sorted(dangling_images() - dangling_before)
            if made:
                env.run(["docker", "image", "rm", "--force", *made], timeout=300, check=False)
        shutil.rmtree(workdir, ignore_errors=True)


def dangling_images() -> set[str]:
    result = subprocess.run(["docker", "images", "--quiet", "--no-trunc", "--filter", "dangling=true"],
                            capture_output=True, text=True, timeout=60)
    return set(result.stdout.split())


# Reports ----------------------------------------------------------------------------------------

@dataclass
class Section:
    """One benchmark's result: a markdown table and the sentences that say how to read it."""
    title: str
    header: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        lines = [f"## {self.title}", "", table(self.header, self.rows)]
        if self.notes:
            lines += [""] + [f"- {note}" for note in self.notes]
        return "\n".join(lines)


def table(header, rows) -> str:
    """A markdown table padded so that it also reads well in a terminal."""
    cells = [list(map(str, header))] + [list(map(str, r)) for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    out = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in cells]
    out.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(out)


def seconds(value: float) -> str:
    return f"{value:.2f} s" if value < 10 else f"{value:.1f} s"


def ratio(value: float) -> str:
    return f"{value:.2f}×"


def size(value: float) -> str:
    return f"{value / MIB:.0f} MiB" if value >= 10 * MIB else f"{value / MIB:.1f} MiB"


# The machine ------------------------------------------------------------------------------------

def _first_line(argv) -> str:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=20)
        return (result.stdout or result.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "not found"


def machine(env: Env | None = None) -> list[str]:
    """The facts a reader needs to compare these figures with theirs."""
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem = next(int(line.split()[1]) * 1024 for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal"))
    except (OSError, StopIteration):
        mem = 0
    try:
        distro = next(line.split("=", 1)[1].strip('"') for line in Path("/etc/os-release").read_text().splitlines()
                      if line.startswith("PRETTY_NAME="))
    except (OSError, StopIteration):
        distro = platform.system()
    variables = env.vars if env else os.environ
    images = ", ".join(f"{name}={variables.get(name) or 'default (official image)'}"
                       for name in ("PYTHON_IMAGE", "POSTGRES_IMAGE", "NGINX_IMAGE"))
    return [
        f"CPU: {cpu}, {os.cpu_count()} logical cores; memory {mem / 2**30:.1f} GiB",
        f"OS: {distro}, kernel {platform.release()}",
        f"Docker Engine {_first_line(['docker', 'version', '--format', '{{.Server.Version}}'])}, "
        f"{_first_line(['docker', 'compose', 'version'])}",
        f"Images: {images}",
        f"Python {platform.python_version()}, {_first_line(['wrk', '--version'])}",
        "The load generator, the stack and the engine share the same cores.",
    ]
