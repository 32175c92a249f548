"""Tasks that run Django's manage.py in the running app container."""
from __future__ import annotations

import os
import shlex
import sys

from .cli import stack_task
from .execution.runner import interactive
from .errors import TaskError, last_line
from .plans import compose
from .execution.cluster import ClusterRun
from .procedures import cluster_tasks
from .procedures.django import collect_static, migrate_all


@stack_task(hosts="many-or-cluster", help={
    "database": "Migrate only this database, by name or alias (default: every database).",
    "timeout": "On a cluster, seconds to wait for each migration job"})
def migrate(r, database=None, timeout=None):
    """Apply migrations to every database, or to one.

    --database picks one. On a cluster: as one-off Swarm jobs of the live release's image."""
    if isinstance(r, ClusterRun):
        cluster_tasks.migrate(r, database, timeout)
        return
    migrate_all(r, database)


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
    if isinstance(r, ClusterRun):
        if username is not None and not os.environ.get("DJANGO_SUPERUSER_PASSWORD"):
            raise TaskError("set DJANGO_SUPERUSER_PASSWORD in the environment to create a user with --username")
        if username is None:
            cluster_tasks.manage(r, ["createsuperuser"], tty=True)
        else:
            cluster_tasks.createsuperuser(r, username, email, os.environ["DJANGO_SUPERUSER_PASSWORD"])
        return
    if username is not None:
        r.require(bool(os.environ.get("DJANGO_SUPERUSER_PASSWORD")),
                  "set DJANGO_SUPERUSER_PASSWORD in the environment to create a user with --username")
    r.require_running(compose.APP)
    if username is None:
        r.compose(compose.createsuperuser(tty=True), pty=True, what="createsuperuser")
        return
    # The password travels on standard input into the environment of `docker compose
    # exec -e NAME`: never in argv, here or on a host (where the SSH environment is not ours).
    argv = r.compose_argv(compose.createsuperuser(username, email))
    script = f"IFS= read -r DJANGO_SUPERUSER_PASSWORD; export DJANGO_SUPERUSER_PASSWORD; exec {shlex.join(argv)}"
    result = r.shell(script, stdin_text=os.environ.get("DJANGO_SUPERUSER_PASSWORD", "") + "\n", check=False)
    print(result.stdout, end="")
    if result.failed:
        raise TaskError(f"createsuperuser failed: {last_line(result.stderr, 'no output')}")


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
    if isinstance(r, ClusterRun):
        cluster_tasks.manage(r, words, tty=interactive())
        return
    r.require_running(compose.APP)
    tty = interactive()
    r.compose(compose.manage(words, tty=tty), pty=tty, stdin=True, what=f"manage.py {words[0]}")
