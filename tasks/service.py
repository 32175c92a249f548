"""`inv service.*`: add, list, remove the stack's services (Redis, Valkey, Memcached,
RabbitMQ: [[services]] in config/stack.toml).

A service is one entry in config/stack.toml; adding or removing it rewrites that file and
re-renders the compose file, all written only after everything rendered, and an add that
fails takes everything back, as `db.add` does (procedures/adding.py).
"""
from __future__ import annotations

from pathlib import Path

from invoke import Collection

from .cli import print_table, stack_task
from .execution.files import create_secret
from .plans import compose
from .plans import rollout as rollout_plans
from .procedures.adding import AddUndo, paths_changed_by, remove_unfinished, save, write_stack_change
from .procedures.locks import project_lock
from .procedures.rollout import roll_out
from .procedures.serving import wait_until_served
from .procedures.starting import start_databases
from .source import render
from .source.stack import (SERVICE_KINDS, loads, read_text, validate_service_name, with_service_added,
                           with_service_removed)

KINDS = ", ".join(kind for kind in SERVICE_KINDS if kind != "image")


@stack_task(hosts=None, help={
    "name": "The service: lowercase letters, digits and underscores, starting with a letter.",
    "kind": f"What it runs: one of {KINDS} (default: redis).",
    "up": "Start it now and restart the app with it (default: off; prints the command instead).",
    "timeout": "With --up, seconds to wait for the stack to be healthy",
})
def add(r, name, kind="redis", up=False, timeout=None):
    """Add a Redis, Valkey, Memcached or RabbitMQ service.

    Its container, network, volume and password, in config/stack.toml and the files made
    from it; the app gets its URL (REDIS_URL, CELERY_BROKER_URL, ...). All taken back when a
    step fails."""
    validate_service_name(name)  # a bad name is refused before anything, the lock included
    with project_lock(r):
        remove_unfinished(r, r.stack)
        new_text = with_service_added(read_text(r.root), name, kind)
        new_stack = loads(new_text)
        service = new_stack.service(name)
        undo = AddUndo(r, save(r.root, paths_changed_by(r.stack, new_stack, service.secret_file)), name, "service")
        try:
            new = write_stack_change(r, new_text)
            if service.secret_file:
                secret = render.secret_files(new.stack)[Path(service.secret_file)]
                created = new.do(f"create {service.secret_file} (mode 0600) unless it exists", create_secret,
                                 new.root / service.secret_file, secret)
                new.report(f"created {service.secret_file} (mode 0600, generated password)" if created else
                           f"kept the existing {service.secret_file} (its password matches any data volume kept "
                           f"from before)")
            if not up:
                new.say(f"Service {name} added (the app reads {service.url_variable}). "
                        "Next: `inv up` starts it; commit config/ and docker-compose.yml.")
                return
            undo.starting(new, f"{new.project}_{service.volume}" if service.persistent else None)
            start_databases(new, timeout)
            new.say(f"starting the app with {name}")
            roll_out(new, timeout)
            undo.serving = True
            wait_until_served(new, timeout)
        except (Exception, KeyboardInterrupt) as exc:
            raise undo.undo(exc) from None
    new.report(f"Service {name} is up; the app reads {service.url_variable}.")


@stack_task(name="list")
def list_(r):
    """List the services and whether each one runs.

    Name, kind, image, network, volume, running or stopped."""
    running = r.running_services()
    rows = [("NAME", "KIND", "IMAGE", "NETWORK", "VOLUME", "STATE")]
    for service in r.stack.services:
        rows.append((service.name, service.kind, service.image_expression, f"{r.project}_{service.network}",
                     f"{r.project}_{service.volume}" if service.persistent else "-",
                     "running" if service.name in running else "stopped"))
    print_table(rows)


@stack_task(hosts=None, help={
    "name": "The service to remove.",
    "purge": "Also delete its data volume and password, for good (default: off; needs --yes).",
    "yes": "Confirm --purge without asking (default: off).",
    "timeout": "Seconds to wait for the app to be healthy without it",
})
def remove(r, name, purge=False, yes=False, timeout=None):
    """Remove a service from the stack.

    Its data volume and password are kept unless --purge --yes."""
    with project_lock(r):
        remove_unfinished(r, r.stack)
        new_text = with_service_removed(read_text(r.root), name)
        old = r.stack.service(name)
        volume = f"{r.project}_{old.volume}"
        if purge:
            r.confirm(yes, f"Delete {name}'s password{f' and {volume} with its data' if old.persistent else ''}?",
                      f"--purge deletes {name}'s password{f' and the volume {volume}' if old.persistent else ''} "
                      f"for good")
        running = r.running_services()
        if name in running:
            r.compose(compose.rm([name]), what=f"stopping {name}")
        r = write_stack_change(r, new_text)
        if compose.APP in running:
            # A new app container without the service's network, variables and password,
            # switched to as a release is: no request dropped.
            r.compose(rollout_plans.run_once("secrets-init"), what="taking its password from the app", hide=True)
            roll_out(r, timeout)
        r.run(compose.remove_network(f"{r.project}_{old.network}"), check=False, hide=True)
        if purge:
            if old.persistent:
                r.run(compose.remove_volume(volume), what=f"deleting {volume}")
            if old.secret_file:
                r.remove(r.root / old.secret_file)
            r.say(f"Service {name} removed with its data.")
        elif old.persistent:
            r.say(f"Service {name} removed; its data stays in the volume {volume} "
                  f"(`inv service.add {name} --kind {old.kind}` brings it back, "
                  f"`inv service.remove {name} --purge --yes` deletes it).")
        else:
            r.say(f"Service {name} removed.")


ns = Collection("service", add, list_, remove)
