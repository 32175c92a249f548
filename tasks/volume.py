"""`inv volume.*`: list the stack's named volumes, archive them as files, restore an archive.
`inv volume.backup`, the old name of `volume.archive`, stays for one release."""
from __future__ import annotations

import json

from invoke import Collection

from .cli import print_table, renamed, stack_task
from .plans import compose
from .procedures.backup_files import verified_on_target
from .procedures.volume_copy import backup_volume, compressor, resolve_volume, restore_volume, stack_volumes


@stack_task(name="list")
def list_(r):
    """List the stack's volumes, their size and users.

    The users are the services that mount each volume."""
    volumes = stack_volumes(r)
    result = r.probe(compose.volume_sizes())
    sizes = {v["Name"]: v["Size"] for v in json.loads(result.stdout or "[]")} if result.ok else {}
    rows = [("VOLUME", "SIZE", "USED BY")]
    for info in volumes.values():
        users = [*info.writers, *(f"{s} (read-only)" for s in info.readers)]
        rows.append((info.name, sizes.get(info.name, "absent"), ", ".join(users)))
    print_table(rows)


@stack_task(name="archive", iterable=["volume"], help={
    "volume": "A volume to archive, by short or full name; repeat for several (default: all).",
})
def backup(r, volume=None):
    """Archive volumes to backups/ as files.

    Compressed, checksummed, each with a manifest; `inv volume.restore` puts one back. Not
    the scheduled restic backups (backup.*)."""
    volumes = stack_volumes(r)
    chosen = [resolve_volume(volumes, v) for v in volume] if volume else list(volumes.values())
    comp = compressor(r)
    for info in chosen:
        r.target.bring_home(r, backup_volume(r, info, comp))


@stack_task(help={
    "archive": "The archive (or its .json manifest) to restore, e.g. backups/hello_media_volume_20261120T101500Z.tar.zst.",
    "volume": "Restore into this volume instead of the one the archive came from (default: none).",
    "yes": "Do not ask for confirmation (needed when not on a terminal; default: off).",
    "timeout": "Seconds to wait for the stack to be healthy afterwards",
})
def restore(r, archive, volume=None, yes=False, timeout=None):
    """Restore a volume from an archive file in backups/.

    The volume's content is replaced; a safety copy comes back on any failure. A dry run
    does not verify the archive."""
    archive_file, data = verified_on_target(r, archive)
    info = resolve_volume(stack_volumes(r), volume or data.get("volume", ""))
    r.confirm(yes, f"Replace the content of {info.name} with {archive_file.name}?",
            f"restoring replaces everything in {info.name}")
    restore_volume(r, info, archive_file, data, timeout=timeout)


ns = Collection("volume", list_, backup, restore, renamed(backup, "volume.backup", "volume.archive"))
