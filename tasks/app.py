"""Tasks that run Django's manage.py in the running app container."""
from __future__ import annotations

import os
import shlex
import sys

from invoke import task

from . import compose
from .remote import HOST_HELP, on_hosts
from .runner import Runner, TaskError, interactive, task_errors


def migrate_all(r: Runner, database=None) -> None:
    """Migrate DATABASE, or every database one after the other (Django migrates one
    database per command)."""
    targets = [r.stack.database(database)] if database else list(r.stack.databases)
    r.require_running(compose.APP)
    for db in targets:
        r.say(f"migrating {db.name} (alias {db.alias})")
        r.compose(compose.migrate(db.alias), what=f"migrate on {db.name}")


@task(help={
    "host": HOST_HELP,
    "database": "Migrate only this database, by name or alias (default: every database).",
    "dry": "Print the commands instead of running them.",
})
@task_errors
@on_hosts
def migrate(c, database=None, dry=False):
    """Apply migrations to every database, or to one with --database."""
    migrate_all(Runner(c, dry=dry), database)


@task(help={
    "host": HOST_HELP,
    "username": "Create this user without prompting; the password comes from "
                "DJANGO_SUPERUSER_PASSWORD (default: ask on the terminal).",
    "email": "The user's e-mail address, with --username (default: none).",
    "dry": "Print the command instead of running it.",
})
@task_errors
@on_hosts
def createsuperuser(c, username=None, email=None, dry=False):
    """Create an admin user: interactive on a terminal, or unattended with --username."""
    r = Runner(c, dry=dry)
    if username is None and not interactive():
        raise TaskError("not on a terminal: give --username (and --email) and set DJANGO_SUPERUSER_PASSWORD")
    if username is not None and not os.environ.get("DJANGO_SUPERUSER_PASSWORD") and not r.dry:
        raise TaskError("set DJANGO_SUPERUSER_PASSWORD in the environment to create a user with --username")
    r.require_running(compose.APP)
    if username is None:
        r.compose(compose.createsuperuser(tty=True), pty=True, what="createsuperuser")
        return
    # The password travels on standard input into the environment of `docker compose
    # exec -e NAME`: never in argv, here or on a host (where the SSH environment is not ours).
    argv = r.compose_argv(compose.createsuperuser(username, email))
    script = f"IFS= read -r DJANGO_SUPERUSER_PASSWORD; export DJANGO_SUPERUSER_PASSWORD; exec {shlex.join(argv)}"
    result = r.shell(script, stdin_text=os.environ.get("DJANGO_SUPERUSER_PASSWORD", "") + "\n", check=False)
    if result is not None:
        print(result.stdout, end="")
        if result.failed:
            reason = (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise TaskError(f"createsuperuser failed: {reason}")


@task(help={"host": HOST_HELP, "dry": "Print the command instead of running it."})
@task_errors
@on_hosts
def static(c, dry=False):
    """Collect static files into the static volume that Nginx serves."""
    r = Runner(c, dry=dry)
    r.require_running(compose.APP)
    r.compose(compose.collectstatic(), what="collectstatic")


def _arguments_after_double_dash(argv) -> list[str]:
    # Invoke joins what follows `--` into one string; read it from argv to keep the
    # user's word boundaries (`inv manage -- shell -c "print(1)"`).
    return list(argv[argv.index("--") + 1:]) if "--" in argv else []


@task(help={
    "host": HOST_HELP,
    "args": "manage.py arguments as one string, when not given after `--`.",
    "dry": "Print the command instead of running it.",
})
@task_errors
@on_hosts
def manage(c, args="", dry=False):
    """Run manage.py in the app container: inv manage -- showmigrations."""
    import shlex

    words = _arguments_after_double_dash(sys.argv) or shlex.split(args)
    if not words:
        raise TaskError("give manage.py arguments: inv manage -- showmigrations")
    r = Runner(c, dry=dry)
    r.require_running(compose.APP)
    tty = interactive()
    r.compose(compose.manage(words, tty=tty), pty=tty, stdin=True, what=f"manage.py {words[0]}")
