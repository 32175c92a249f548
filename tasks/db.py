"""`inv db.*`: add, list, remove the stack's PostgreSQL databases, open a shell in one, dump
and load one.

A database is one entry in config/stack.toml; adding or removing it rewrites that file and
re-renders the compose file, all written only after everything rendered.
"""
from __future__ import annotations

from pathlib import Path

from invoke import Collection

from .cli import print_table, stack_task
from .execution.runner import interactive
from .errors import TaskError
from .execution.files import create_secret
from .plans import compose
from .procedures.backup_files import verified_on_target
from .procedures.dumps import dump_database, load_database
from .procedures import pg_upgrade
from .procedures.locks import project_lock
from .procedures.serving import wait_until_served
from .procedures.adding import (AddUndo, paths_changed_by, remove_unfinished as _remove_unfinished, save,
                               write_stack_change as _write_stack_change)
from .procedures.rollout import roll_out
from .procedures.starting import release_phase, start_backups, start_databases
from .source import render
from .source.stack import loads, read_text, validate_database_name, with_database_added, with_database_removed


@stack_task(hosts=None, help={
    "name": "The database: lowercase letters, digits and underscores, starting with a letter.",
    "up": "Start it now and run its migrations (default: off; prints the command instead).",
    "timeout": "With --up, seconds to wait for the stack to be healthy",
})
def add(r, name, up=False, timeout=None):
    """Add a PostgreSQL database to the stack.

    Its container, network, volume, secret and Django alias, in config/stack.toml and the
    files made from it; all taken back when a step fails (procedures/adding.py)."""
    validate_database_name(name)  # a bad name is refused before anything, the lock included
    with project_lock(r):
        _remove_unfinished(r, r.stack)
        new_text = with_database_added(read_text(r.root), name)
        new_stack = loads(new_text)
        db = new_stack.database(name)
        undo = AddUndo(r, save(r.root, paths_changed_by(r.stack, new_stack, db.secret_file)), name)
        try:
            new = _write_stack_change(r, new_text)
            secret = render.secret_files(new.stack)[Path(db.secret_file)]
            created = new.do(f"create {db.secret_file} (mode 0600) unless it exists", create_secret,
                             new.root / db.secret_file, secret)
            new.report(f"created {db.secret_file} (mode 0600, generated password)" if created else
                       f"kept the existing {db.secret_file} (its password matches any data volume kept from before)")
            if not up:
                new.say(f"Database {name} added (Django alias {db.alias!r}). "
                        "Next: `inv up` starts it and runs its migrations; commit config/ and docker-compose.yml.")
                return
            undo.starting(new, f"{new.project}_{db.volume}")
            start_databases(new, timeout)
            release_phase(new)
            new.say(f"starting {name}")
            roll_out(new, timeout)
            undo.serving = True
            start_backups(new)
            wait_until_served(new, timeout)
        except (Exception, KeyboardInterrupt) as exc:
            raise undo.undo(exc) from None
    new.report(f"Database {name} is up and migrated.")


@stack_task(name="list")
def list_(r):
    """List the databases and whether each one runs.

    Name, Django alias, network, volume, running or stopped."""
    running = r.running_services()
    rows = [("NAME", "ALIAS", "NETWORK", "VOLUME", "STATE")]
    for db in r.stack.databases:
        rows.append((db.name, db.alias, f"{r.project}_{db.network}", f"{r.project}_{db.volume}",
                     "running" if db.name in running else "stopped"))
    print_table(rows)


@stack_task(hosts=None, help={
    "name": "The database to remove (not the default one).",
    "purge": "Also delete its data volume and env file, for good (default: off; needs --yes).",
    "yes": "Confirm --purge without asking (default: off).",
})
def remove(r, name, purge=False, yes=False):
    """Remove a database from the stack.

    Its data volume is kept unless --purge --yes."""
    with project_lock(r):
        _remove_unfinished(r, r.stack)
        _remove(r, name, purge, yes)


def _remove(r, name, purge, yes):
    new_text = with_database_removed(read_text(r.root), name)
    old = r.stack.database(name)
    volume = f"{r.project}_{old.volume}"
    if purge:
        r.confirm(yes, f"Delete {volume} and all of {name}'s data?",
                f"--purge deletes the volume {volume} and its data for good")
    running = r.running_services()
    if name in running:
        r.compose(compose.rm([name]), what=f"stopping {name}")
    r = _write_stack_change(r, new_text)
    if compose.APP in running:
        # Recreate the app without the database's network and alias.
        r.compose(compose.up(build=False), what="restarting the app without it")
    r.run(compose.remove_network(f"{r.project}_{old.network}"), check=False, hide=True)
    if purge:
        r.run(compose.remove_volume(volume), what=f"deleting {volume}")
        r.remove(r.root / old.secret_file)
        r.say(f"Database {name} removed with its volume {volume}.")
    else:
        r.say(f"Database {name} removed; its data stays in the volume {volume} "
              f"(`inv db.add {name}` brings it back, `inv db.remove {name} --purge --yes` deletes it).")


@stack_task(help={"name": "The database, by name or alias (`default`)."})
def shell(r, name):
    """Open psql in a database's container.

    SQL can also be piped in."""
    db = r.stack.database(name)
    r.require_running(db.name)
    tty = interactive()
    r.compose(compose.psql_shell(db.name, tty=tty), pty=tty, stdin=True, check=False)


@stack_task(help={"name": "The database to dump, by name or alias."})
def dump(r, name):
    """Dump a database to backups/ as a file.

    pg_dump -Fc of the running database, checksummed, with a manifest; `inv db.load` loads
    it. Not the scheduled restic backups (backup.*)."""
    r.target.bring_home(r, dump_database(r, r.stack.database(name)))


@stack_task(name="load", help={
    "name": "The database to replace, by name or alias.",
    "file": "A dump made by `inv db.dump` (its manifest must sit next to it).",
    "from": "The database the dump was taken from, when it is not NAME: loading another "
            "database's dump is refused unless this names it (default: none).",
    "yes": "Do not ask for confirmation (needed when not on a terminal; default: off).",
})
def load(r, name, file, from_=None, yes=False):
    """Load a dump file into a database, all or nothing.

    Into a fresh database as the app's role, then swapped in."""
    db = r.stack.database(name)
    dump_file, data = verified_on_target(r, file)
    if data["kind"] != "dump":
        raise TaskError(f"{dump_file.name} is a volume archive; use `inv volume.restore` for it")
    source = data.get("database")
    if source != db.name and source != from_:
        raise TaskError(f"{dump_file.name} is a dump of {source}, not {db.name}: add --from {source} "
                        f"if loading it into {db.name} is what you mean; nothing was changed")
    r.confirm(yes, f"Replace {db.name} with {dump_file.name}?", f"loading replaces every table of {db.name}")
    load_database(r, db, dump_file)


@stack_task(help={
    "name": "The database to move, by name or alias.",
    "to": "The newer PostgreSQL major to move it to: 16, 17 or 18 (default: none; needed unless --rollback).",
    "rollback": "Go back to the older major's volume an upgrade kept (default: off).",
    "yes": "Confirm --rollback without asking (default: off).",
    "timeout": "Seconds to wait for each server to be ready",
})
def upgrade(r, name, to=None, rollback=False, yes=False, timeout=None):
    """Move a database to a newer PostgreSQL major.

    Dumped by the old major, restored as the app role into the new one's volume, rows and
    migrations compared, then switched; the old volume is kept for --rollback."""
    with project_lock(r):
        if rollback:
            if to is not None:
                raise TaskError("--rollback goes back to the volume an upgrade kept: leave --to out")
            db = r.stack.database(name)
            r.confirm(yes, f"Move {db.name} back to the volume its upgrade kept?",
                      f"--rollback loses what was written to {db.name} since its upgrade (kept in its volume)")
            pg_upgrade.rollback(r, name, timeout)
        elif to is None:
            raise TaskError("--to is needed: the PostgreSQL major to move to (or --rollback)")
        else:
            pg_upgrade.upgrade(r, name, to, timeout)


ns = Collection("db", add, list_, remove, shell, dump, load, upgrade)
