"""Build, start, stop and look at the stack; keep the generated files in step with
config/stack.toml."""
from __future__ import annotations

import time
import urllib.error
import urllib.request

from invoke import task

from . import compose, render
from .files import create_secret, write_all
from .remote import HOST_HELP, on_hosts
from .runner import Runner, TaskError, confirm, task_errors
from .stack import STACK_FILE, load


def ensure_secret_files(r: Runner) -> None:
    """Create the git-ignored env files that are missing, with fresh secrets (0600).
    Existing ones are never touched: they hold the passwords the data volumes were made with.
    (On a host, `inv deploy` makes them there.)"""
    if r.remote:
        return
    missing = {p: t for p, t in render.secret_files(r.stack).items() if not (r.root / p).exists()}
    for path, text in missing.items():
        if r.dry:
            r.say(f"[dry] would create {path} (mode 0600, generated secret)")
        elif create_secret(r.root / path, text):
            r.say(f"created {path} (mode 0600, generated secret)")


def ensure_rendered(r: Runner) -> None:
    if r.remote:
        return  # a deployed release holds what was rendered and checked here
    stale = render.drift(r.stack, r.root)
    if stale:
        names = ", ".join(str(p) for p in stale)
        raise TaskError(f"{names} out of date with {STACK_FILE}: run `inv render` and commit the result")


HEALTH_THROUGH_NGINX = ("import sys, urllib.request; "
                        "sys.exit(urllib.request.urlopen('http://nginx/healthz', timeout=5).status != 200)")


def wait_until_served(r: Runner, timeout: float) -> str:
    """Wait for /healthz to answer 200 through Nginx; return the URL the stack serves.
    Here through the published port; on a host through Nginx from the app container, as
    the published port listens on the host's loopback only."""
    url = f"http://127.0.0.1:{r.http_port}/"
    if r.dry:
        r.say(f"[dry] would wait for {url}healthz to answer 200")
    elif not r.remote:
        wait_for_http(f"{url}healthz", timeout=timeout)
    else:
        probe = r.compose_argv(compose.exec_(compose.APP, ["python", "-c", HEALTH_THROUGH_NGINX]))
        deadline = time.monotonic() + timeout
        while not r.probe(probe).ok:
            if time.monotonic() > deadline:
                raise TaskError(f"/healthz did not answer 200 through Nginx on {r.host} within {timeout:.0f}s; see `inv logs --host {r.host}`")
            time.sleep(1)
    return url


def wait_for_http(url: str, timeout: float, interval: float = 0.5) -> tuple[int, float]:
    """Poll URL until it answers 200; return (status, seconds waited)."""
    start = time.monotonic()
    last = "no answer"
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return response.status, time.monotonic() - start
                last = f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            last = str(getattr(exc, "reason", exc))
        if time.monotonic() - start > timeout:
            raise TaskError(f"{url} did not answer 200 within {timeout:.0f}s (last: {last}); see `inv logs`")
        time.sleep(interval)


def check_port_free(r: Runner) -> None:
    """Refuse to start when another program holds the HTTP port (ours may hold it)."""
    import socket

    if r.dry or r.remote:
        return
    port = r.http_port
    if "nginx" in r.running_services():
        return
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            raise TaskError(
                f"port {port} on 127.0.0.1 is in use by another program: stop it, or set "
                f"http_port in {STACK_FILE} (or HTTP_PORT=8001 for one run)"
            ) from None


@task(help={
    "host": HOST_HELP,
    "service": "Build only this service (default: every service with a build section).",
    "pull": "Pull a newer base image first (default: off).",
    "no_cache": "Ignore the layer cache (default: off).",
    "dry": "Print the commands instead of running them.",
})
@task_errors
@on_hosts
def build(c, service=None, pull=False, no_cache=False, dry=False):
    """Build the app image (layers cached: a code-only change rebuilds in seconds)."""
    r = Runner(c, dry=dry)
    ensure_secret_files(r)
    r.compose(compose.build([service] if service else [], pull=pull, no_cache=no_cache))


@task(help={
    "host": HOST_HELP,
    "build": "Rebuild the app image first; the layer cache makes it quick (default: on).",
    "timeout": "Seconds to wait for every service to be healthy (default: 180).",
    "migrate": "Run migrations on every database after start (default: on).",
    "static": "Collect static files into the static volume (default: on).",
    "dry": "Print the commands instead of running them.",
})
@task_errors
@on_hosts
def up(c, build=True, timeout=180, migrate=True, static=True, dry=False):
    """Start the stack detached, wait until healthy, migrate, collect static, print the URL."""
    from . import app

    r = Runner(c, dry=dry)
    ensure_rendered(r)
    ensure_secret_files(r)
    check_port_free(r)
    started = time.monotonic()
    r.compose(compose.up(build=build, timeout=timeout), what="starting the stack")
    if migrate:
        app.migrate_all(r)
    if static:
        r.compose(compose.collectstatic(), what="collectstatic")
    url = wait_until_served(r, timeout)
    if not r.dry:
        where = f" on {r.host}" if r.remote else ""
        r.say(f"The stack is up{where} at {url} ({time.monotonic() - started:.1f}s). Admin: {url}admin/")


@task(help={
    "host": HOST_HELP,
    "volumes": "Also delete the named volumes: databases, static and media files (default: off).",
    "yes": "Confirm --volumes without asking (needed when not on a terminal).",
    "dry": "Print the commands instead of running them.",
})
@task_errors
@on_hosts
def down(c, volumes=False, yes=False, dry=False):
    """Stop and remove the containers; the data volumes stay unless --volumes --yes."""
    r = Runner(c, dry=dry)
    if volumes:
        names = ", ".join(r.stack.volumes)
        confirm(yes or r.dry, f"Delete the volumes {names} and all their data?", f"--volumes deletes {names} for good")
    from .backups import remove_leftover_helpers

    remove_leftover_helpers(r)
    r.compose(compose.down(volumes=volumes), what="stopping the stack")


@task(help={"host": HOST_HELP, "all": "Also list stopped containers (default: off).", "dry": "Print the command only."})
@task_errors
@on_hosts
def ps(c, all=False, dry=False):
    """List the stack's containers with their state and health."""
    Runner(c, dry=dry).compose(compose.ps(all_=all))


@task(
    help={
    "host": HOST_HELP,
        "service": "Show one service's logs (default: all): djangoapp, nginx or a database name.",
        "follow": "Keep streaming new lines until Ctrl-C (default: off).",
        "tail": "Lines to show from the end of each log (default: 200).",
        "dry": "Print the command only.",
    },
)
@task_errors
@on_hosts
def logs(c, service=None, follow=False, tail=200, dry=False):
    """Show the services' logs."""
    Runner(c, dry=dry).compose(compose.logs([service] if service else [], follow=follow, tail=tail),
                               check=False)


@task(name="render", help={
    "check": "Change nothing; exit non-zero if a generated file differs (default: off).",
    "dry": "Print what would change without writing.",
})
@task_errors
def render_(c, check=False, dry=False):
    """Regenerate docker-compose.yml and the Nginx config from config/stack.toml."""
    stack = load()
    files = render.rendered(stack)
    stale = render.drift(stack)
    leftover = render.stale_examples(render.ROOT, set(files))
    if check:
        if stale or leftover:
            for path in stale:
                print(f"out of date: {path}")
            for path in leftover:
                print(f"left over: {path} (its database is gone from {STACK_FILE})")
            raise TaskError("generated files differ from config/stack.toml: run `inv render`")
        print("generated files are up to date")
        return
    if Runner(c, stack=stack, dry=dry).dry:
        for path in stale:
            print(f"[dry] would write {path}")
        return
    write_all({render.ROOT / p: files[p] for p in stale})
    for path in stale:
        print(f"wrote {path}")
    if not stale:
        print("generated files are up to date")
