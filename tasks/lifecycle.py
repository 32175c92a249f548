"""Build, start, stop and look at the stack; keep the generated files in step with
config/stack.toml."""
from __future__ import annotations

import time

from .cli import print_table, stack_task
from .errors import TaskError
from .execution.files import write_all
from .plans import compose
from .procedures import building, places, server_front
from .procedures.dumps import settle_interrupted_loads
from .procedures.locks import project_lock
from .procedures.serving import check_port_free, wait_until_served
from .procedures.starting import start_stack
from .procedures.volume_copy import remove_leftover_helpers, settle_interrupted_restores
from .source import render
from .source.stack import STACK_FILE


@stack_task(help={
    "service": "Build only this service (default: every service with a build section).",
    "pull": "Pull a newer base image first (default: off).",
    "no_cache": "Ignore the layer cache (default: off).",
})
def build(r, service=None, pull=False, no_cache=False):
    """Build the app image.

    Layers are cached: a code-only change rebuilds in seconds."""
    r.target.ensure_secrets(r)
    building.build_app(r, "building", [service] if service else [], pull=pull, no_cache=no_cache)


@stack_task(help={
    "build": "Rebuild the app image first; the layer cache makes it quick (default: on).",
    "timeout": "Seconds to wait for every service to be healthy",
    "migrate": "Run migrations on every database before the new code serves (default: on).",
    "static": "Collect static files into the static volume before the new code serves (default: on).",
})
def up(r, build=True, timeout=None, migrate=True, static=True):
    """Start the stack, or move it to new code.

    Without dropping a request: migrate and collect static from the new image, start its app
    container beside the old one, reload Nginx, drain the old one. Containers whose
    definition did not change keep running."""
    r.target.ensure_own(r)
    r.target.ensure_rendered()
    r.target.ensure_secrets(r)
    check_port_free(r)
    started = time.monotonic()
    # What killed tasks left is finished or undone first: no service starts on half a restore.
    settle_interrupted_restores(r)
    settle_interrupted_loads(r)
    start_stack(r, build=build, timeout=timeout, migrate=migrate, static=static)
    url = wait_until_served(r, timeout)
    r.report(f"The stack is up{r.target.on} at {url} ({time.monotonic() - started:.1f}s). Admin: {url}admin/")


@stack_task(help={
    "volumes": "Also delete the named volumes: databases, static and media files (default: off).",
    "yes": "Confirm --volumes without asking (needed when not on a terminal; default: off).",
})
def down(r, volumes=False, yes=False):
    """Stop and remove the stack's containers.

    The data volumes stay unless --volumes --yes. On a host behind the shared front
    (front = "shared"), the front first stops routing the project's names and leaves its
    network; the other projects there keep serving. With --volumes, the certificate and key
    the project published to the front are deleted too."""
    if volumes:
        names = ", ".join(r.stack.volumes)
        r.confirm(yes, f"Delete the volumes {names} and all their data?", f"--volumes deletes {names} for good")
    remove_leftover_helpers(r)
    if r.target.site.shared:
        server_front.leave(r, forget=volumes)  # first: the shared front stops sending it requests
    r.compose(compose.down(volumes=volumes), what="stopping the stack")


@stack_task(hosts="many-or-cluster", help={"all": "Also list stopped containers (default: off)."})
def ps(r, all=False):
    """List the stack's containers, their state and health.

    On a cluster: its nodes, its services and where each replica runs."""
    for table in places.of(r).ps(all):
        print_table(table)


@stack_task(hosts="many-or-cluster", help={
    "service": "Show one service's logs (default: all): djangoapp, nginx, a database or a process.",
    "follow": "Keep streaming new lines until Ctrl-C (default: off).",
    "tail": "Lines to show from the end of each log",
})
def logs(r, service=None, follow=False, tail=None):
    """Show the services' logs."""
    places.of(r).logs(service, follow, tail)


@stack_task(name="render", hosts=None, help={
    "check": "Change nothing; exit non-zero if a generated file differs (default: off).",
})
def render_(r, check=False):
    """Regenerate the files made from config/stack.toml.

    The Dockerfile, .dockerignore, docker-compose.yml and the Nginx config; --check only
    compares them."""
    files = render.rendered(r.stack)
    stale = render.drift(r.stack, r.root)
    leftover = render.stale_examples(r.root, set(files))
    if check:
        for path in stale:
            print(f"out of date: {path}")
        for path in leftover:
            print(f"left over: {path} (its database is gone from {STACK_FILE})")
        if stale or leftover:
            raise TaskError("generated files differ from config/stack.toml: run `inv render`")
        print("generated files are up to date")
        return
    if not stale:
        print("generated files are up to date")
        return
    with project_lock(r):
        r.do(f"write {' and '.join(map(str, stale))}", write_all, {r.root / p: files[p] for p in stale})
    for path in stale:
        r.report(f"wrote {path}")
