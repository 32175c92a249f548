"""`inv backup`: every volume and every database dump in one go; `inv backup.prune`."""
from __future__ import annotations

import time

from invoke import Collection, task

from . import archive, backups
from .remote import HOST_HELP, on_hosts
from .runner import Runner, TaskError, task_errors


@task(default=True, name="all", help={"host": HOST_HELP, "dry": "Print the commands instead of running them."})
@task_errors
@on_hosts
def all_(c, dry=False):
    """Dump every database (while it runs), then archive every volume."""
    r = Runner(c, dry=dry)
    made = [backups.dump_database(r, db) for db in r.stack.databases]
    comp = backups.compressor(r)
    made += [backups.backup_volume(r, info, comp) for info in backups.stack_volumes(r).values()]
    if r.remote:
        for path in made:
            backups.fetch(r, path)


@task(help={
    "keep": "How many backups to keep per volume and per database (default: 7; at least 1).",
    "dry": "List what would be deleted without deleting it.",
})
@task_errors
def prune(c, keep=7, dry=False):
    """Delete old backups, keeping the newest N of each volume and database."""
    if keep < 1:
        raise TaskError("--keep must be at least 1: the newest backup of a volume is never deleted")
    r = Runner(c, dry=dry)
    doomed = archive.to_prune(backups.manifests(r), keep)
    for manifest in doomed:
        path = manifest["_path"]
        targets = [path.with_name(manifest["archive"]), path.with_name(manifest["archive"] + ".sha256"), path]
        if r.dry:
            r.say(f"[dry] would delete {manifest['archive']}")
            continue
        # The manifest goes first: without it, what is left is no longer a backup.
        for target in reversed(targets):
            target.unlink(missing_ok=True)
        r.say(f"deleted {manifest['archive']}")
    # Leftovers of interrupted backups (hidden .tmp files) older than a day.
    for leftover in r.backups.glob(".*.tmp"):
        if time.time() - leftover.stat().st_mtime > 86400 and not r.dry:
            leftover.unlink()
            r.say(f"deleted the unfinished {leftover.name}")
    r.say(f"kept the newest {keep} backup(s) of each volume and database; {len(doomed)} deleted")


ns = Collection("backup", all_, prune)
