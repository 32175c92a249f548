"""`inv backup`: every volume and every database dump in one go; `inv backup.prune`."""
from __future__ import annotations

import time

from invoke import Collection

from .cli import stack_task
from .errors import TaskError
from .plans import archives
from .procedures.backup_files import manifests
from .procedures.dumps import dump_database
from .procedures.volume_copy import backup_volume, compressor, stack_volumes

DAY = 86400


@stack_task(default=True, name="all")
def all_(r):
    """Dump every database (while it runs), then archive every volume."""
    made = [dump_database(r, db) for db in r.stack.databases]
    comp = compressor(r)
    made += [backup_volume(r, info, comp) for info in stack_volumes(r).values()]
    for path in made:
        r.target.bring_home(r, path)


@stack_task(hosts=None, configured={"keep": "keep_backups"}, help={
    "keep": "How many backups to keep per volume and per database (at least 1)",
    "dry": "List what would be deleted without deleting it.",
})
def prune(r, keep=None):
    """Delete old backups, keeping the newest N of each volume and database."""
    if keep < 1:
        raise TaskError("--keep must be at least 1: the newest backup of a volume is never deleted")
    doomed = archives.to_prune(manifests(r), keep)
    for manifest in doomed:
        # The manifest goes first: without it, what is left is no longer a backup.
        r.remove(*reversed(archives.companions(manifest["_path"].with_name(manifest["archive"]))))
        r.report(f"deleted {manifest['archive']}")
    # Leftovers of interrupted backups (hidden .tmp files) older than a day.
    for leftover in r.backups.glob(".*.tmp"):
        if time.time() - leftover.stat().st_mtime > DAY:
            r.remove(leftover)
            r.report(f"deleted the unfinished {leftover.name}")
    r.report(f"kept the newest {keep} backup(s) of each volume and database; {len(doomed)} deleted")

ns = Collection("backup", all_, prune)
