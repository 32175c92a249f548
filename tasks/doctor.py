"""`inv doctor`: check what the stack needs, one line per check with a fix when it fails."""
from __future__ import annotations

import socket

from invoke import task

from . import compose, render
from .remote import HOST_HELP, on_hosts
from .runner import Runner, TaskError, task_errors
from .stack import STACK_FILE


def check_engine(r: Runner):
    result = r.probe(compose.engine_version())
    if result.ok:
        return True, f"Docker engine {result.stdout.strip()} is reachable", None
    if result.exited == 127:
        return False, "the docker command is not installed", "install Docker Engine: https://docs.docker.com/engine/install/"
    reason = (result.stderr.strip().splitlines() or ["no answer"])[-1]
    return False, f"no Docker engine is reachable ({reason})", "start it: `sudo systemctl start docker` (or Docker Desktop)"


def check_compose(r: Runner):
    v2 = r.probe(compose.compose_v2_version())
    if v2.ok:
        return True, f"Docker Compose v2 ({v2.stdout.strip()})", None
    v1 = r.probe(compose.compose_v1_version())
    if v1.ok:
        return True, f"docker-compose v1 ({v1.stdout.strip()}) - works, but v2 is faster and supported", \
            "install the compose plugin: https://docs.docker.com/compose/install/"
    return False, "Docker Compose is not installed", "install the compose plugin: https://docs.docker.com/compose/install/"


def check_env_files(r: Runner):
    missing = [str(p) for p in render.secret_files(r.stack) if not (r.root / p).exists()]
    if not missing:
        return True, "env files present", None
    return False, f"missing env files: {', '.join(missing)}", "`inv up` (or `inv build`) creates them with generated secrets"


def check_rendered(r: Runner):
    stale = render.drift(r.stack, r.root)
    if not stale:
        return True, f"generated files match {STACK_FILE}", None
    return False, f"out of date: {', '.join(map(str, stale))}", "run `inv render`"


def check_port(r: Runner):
    port = r.http_port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
            return True, f"port {port} is free", None
        except OSError:
            pass
    if "nginx" in r.running_services():
        return True, f"port {port} is served by this stack's Nginx", None
    return False, f"port {port} on 127.0.0.1 is in use by another program", \
        f"stop it, or change http_port in {STACK_FILE}"


@task(help={"host": HOST_HELP, "dry": "Print the checks' commands instead of running them."})
@task_errors
@on_hosts
def doctor(c, dry=False):
    """Check the engine, Compose, env files, generated files and the HTTP port."""
    r = Runner(c, dry=dry)
    if r.dry:
        for argv in (compose.engine_version(), compose.compose_v2_version(), compose.compose_v1_version()):
            r.say(f"[dry] {' '.join(argv)}")
        return
    checks = [check_engine, check_compose]
    if not r.remote:  # the rest is about this checkout; a deployed release was checked here
        checks += [check_env_files, check_rendered]
    results = []
    for check in checks:
        results.append(check(r))
        if check is check_compose and results[0][0] and results[-1][0] and not r.remote:
            results.append(check_port(r))
    failed = 0
    for ok, message, hint in results:
        print(f"{'ok  ' if ok else 'FAIL'} {message}")
        if hint and not ok:
            print(f"     fix: {hint}")
            failed += 1
    if failed:
        raise TaskError(f"{failed} check(s) failed")
    print("all checks passed")
