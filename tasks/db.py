"""`inv db.*`: add, list, remove the stack's PostgreSQL databases and open a shell in one.

A database is one entry in config/stack.toml; adding or removing it rewrites that file and
re-renders the compose file, all written only after everything rendered.
"""
from __future__ import annotations

from pathlib import Path

from invoke import Collection, task

from . import compose, render
from .files import create_secret, write_all
from .lifecycle import wait_until_served
from .remote import HOST_HELP, on_hosts
from .runner import Runner, TaskError, confirm, interactive, task_errors
from .stack import STACK_FILE, loads, read_text, with_database_added, with_database_removed


def _stack_change(r: Runner, new_text: str):
    """The new Stack and every file to write for it, rendered in memory (nothing written)."""
    new_stack = loads(new_text)
    files = {STACK_FILE: new_text, **render.rendered(new_stack)}
    changed = {}
    for path, text in files.items():
        target = r.root / path
        if not target.exists() or target.read_text(encoding="utf-8") != text:
            changed[target] = text
    return new_stack, changed


def _write(r: Runner, files) -> None:
    if r.dry:
        for path in files:
            r.say(f"[dry] would write {path.relative_to(r.root)}")
        return
    write_all(files)
    for path in files:
        r.say(f"wrote {path.relative_to(r.root)}")


@task(help={
    "name": "The database: lowercase letters, digits and underscores, starting with a letter.",
    "up": "Start it now and run its migrations (default: off; prints the command instead).",
    "dry": "Print what would be written and run, and change nothing.",
})
@task_errors
def add(c, name, up=False, dry=False):
    """Add a PostgreSQL database (container, network, volume, env file, Django alias)."""
    r = Runner(c, dry=dry)
    new_stack, files = _stack_change(r, with_database_added(read_text(r.root), name))
    db = new_stack.database(name)
    secret = render.secret_files(new_stack)[Path(db.env_file)]
    _write(r, files)
    env_path = r.root / db.env_file
    if r.dry:
        r.say(f"[dry] would create {db.env_file} (mode 0600) unless it exists")
    elif create_secret(env_path, secret):
        r.say(f"created {db.env_file} (mode 0600, generated password)")
    else:
        r.say(f"kept the existing {db.env_file} (its password matches any data volume kept from before)")
    r.stack = new_stack
    if not up:
        r.say(f"Database {name} added (Django alias {db.alias!r}). "
              "Next: `inv up` starts it and runs its migrations; commit config/ and docker-compose.yml.")
        return
    r.compose(compose.up(build=False), what=f"starting {name}")
    from .app import migrate_all

    migrate_all(r, name)
    wait_until_served(r, timeout=120)
    if not r.dry:
        r.say(f"Database {name} is up and migrated.")


@task(name="list", help={"host": HOST_HELP, "dry": "Print the command used to find running services."})
@task_errors
@on_hosts
def list_(c, dry=False):
    """List the databases: name, Django alias, network, volume, running or not."""
    r = Runner(c, dry=dry)
    running = r.running_services() if not r.dry else set()
    rows = [("NAME", "ALIAS", "NETWORK", "VOLUME", "STATE")]
    for db in r.stack.databases:
        rows.append((db.name, db.alias, f"{r.project}_{db.network}", f"{r.project}_{db.volume}",
                     "running" if db.name in running else "stopped"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


@task(help={
    "name": "The database to remove (not the default one).",
    "purge": "Also delete its data volume and env file, for good (default: off; needs --yes).",
    "yes": "Confirm --purge without asking.",
    "dry": "Print what would be written and run, and change nothing.",
})
@task_errors
def remove(c, name, purge=False, yes=False, dry=False):
    """Remove a database from the stack; its data volume is kept unless --purge --yes."""
    r = Runner(c, dry=dry)
    new_stack, files = _stack_change(r, with_database_removed(read_text(r.root), name))
    old = r.stack.database(name)
    volume = f"{r.project}_{old.volume}"
    if purge:
        confirm(yes or r.dry, f"Delete {volume} and all of {name}'s data?",
                f"--purge deletes the volume {volume} and its data for good")
    running = r.running_services() if not r.dry else set()
    if name in running or r.dry:
        r.compose(compose.rm([name]), what=f"stopping {name}")
    _write(r, files)
    example = r.root / f"{old.env_file}.example"
    if not r.dry:
        example.unlink(missing_ok=True)
    r.stack = new_stack
    if "djangoapp" in running:
        # Recreate the app without the database's network and alias.
        r.compose(compose.up(build=False), what="restarting the app without it")
    r.run(["docker", "network", "rm", f"{r.project}_{old.network}"], check=False, hide=True)
    if purge:
        r.run(["docker", "volume", "rm", volume], what=f"deleting {volume}")
        if not r.dry:
            (r.root / old.env_file).unlink(missing_ok=True)
        r.say(f"Database {name} removed with its volume {volume}.")
    else:
        r.say(f"Database {name} removed; its data stays in the volume {volume} "
              f"(`inv db.add {name}` brings it back, `inv db.remove {name} --purge --yes` deletes it).")


@task(help={"host": HOST_HELP, "name": "The database, by name or alias (`default`).", "dry": "Print the command only."})
@task_errors
@on_hosts
def shell(c, name, dry=False):
    """Open psql in a database's container (SQL can also be piped in)."""
    r = Runner(c, dry=dry)
    db = r.stack.database(name)
    r.require_running(db.name)
    tty = interactive()
    r.compose(compose.psql(db.name, tty=tty), pty=tty, stdin=True, check=False)


@task(help={"host": HOST_HELP, "name": "The database to dump, by name or alias.", "dry": "Print the commands only."})
@task_errors
@on_hosts
def dump(c, name, dry=False):
    """Dump a running database with pg_dump -Fc to backups/ (checksummed, with a manifest)."""
    from . import backups

    r = Runner(c, dry=dry)
    made = backups.dump_database(r, r.stack.database(name))
    if r.remote:
        backups.fetch(r, made)


@task(help={
    "host": HOST_HELP,
    "name": "The database to replace, by name or alias.",
    "file": "A dump made by `inv db.dump` (its manifest must sit next to it).",
    "yes": "Do not ask for confirmation (needed when not on a terminal).",
    "dry": "Print the commands only.",
})
@task_errors
@on_hosts
def load(c, name, file, yes=False, dry=False):
    """Load a dump into a fresh database, then swap it in; all or nothing."""
    from . import backups

    r = Runner(c, dry=dry)
    db = r.stack.database(name)
    dump_file, data = backups.verified_on_target(r, file)
    if data["kind"] != "dump":
        raise TaskError(f"{dump_file.name} is a volume archive; use `inv volume.restore` for it")
    confirm(yes or r.dry, f"Replace {db.name} with {dump_file.name}?", f"loading replaces every table of {db.name}")
    backups.load_database(r, db, dump_file)


ns = Collection("db", add, list_, remove, shell, dump, load)
