"""Tasks that run Django's manage.py in the running app container."""
from __future__ import annotations

import shlex
import sys

from .cli import stack_task
from .execution.runner import interactive
from .errors import TaskError
from .plans import compose
from .procedures import places
from .procedures.django import collect_static


@stack_task(hosts="many-or-cluster", help={
    "database": "Migrate only this database, by name or alias (default: every database).",
    "timeout": "On a cluster, seconds to wait for each migration job"})
def migrate(r, database=None, timeout=None):
    """Apply migrations to every database, or to one.

    --database picks one. On a cluster: as one-off Swarm jobs of the live release's image."""
    places.of(r).migrate(database, timeout)


@stack_task(hosts="many-or-cluster", help={
    "username": "Create this user without prompting; the password comes from "
                "DJANGO_SUPERUSER_PASSWORD (default: ask on the terminal).",
    "email": "The user's e-mail address, with --username (default: none).",
})
def createsuperuser(r, username=None, email=None):
    """Create a Django admin user.

    Interactive on a terminal, or unattended with --username (the password from
    DJANGO_SUPERUSER_PASSWORD)."""
    if username is None and not interactive():
        raise TaskError("not on a terminal: give --username (and --email) and set DJANGO_SUPERUSER_PASSWORD")
    places.of(r).createsuperuser(username, email)


@stack_task()
def static(r):
    """Collect static files into the volume Nginx serves."""
    r.require_running(compose.APP)
    collect_static(r)


def _arguments_after_double_dash(argv) -> list[str]:
    # Invoke joins what follows `--` into one string; read it from argv to keep the
    # user's word boundaries (`inv manage -- shell -c "print(1)"`).
    return list(argv[argv.index("--") + 1:]) if "--" in argv else []


@stack_task(hosts="many-or-cluster", help={
    "args": "manage.py arguments as one string, when not given after `--` (default: none)."})
def manage(r, args=""):
    """Run a manage.py command in the app container.

    The command follows `--`: inv manage -- showmigrations. On a cluster: in a running replica."""
    words = _arguments_after_double_dash(sys.argv) or shlex.split(args)
    if not words:
        raise TaskError("give manage.py arguments: inv manage -- showmigrations")
    places.of(r).manage(words)
