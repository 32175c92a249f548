"""`inv volume.*`: list, back up and restore the stack's named volumes."""
from __future__ import annotations

from invoke import Collection, task

from . import backups
from .remote import HOST_HELP, on_hosts
from .runner import Runner, confirm, task_errors


@task(name="list", help={"host": HOST_HELP, "dry": "Print the commands instead of running them."})
@task_errors
@on_hosts
def list_(c, dry=False):
    """List the stack's volumes with their size and the services using them."""
    r = Runner(c, dry=dry)
    volumes = backups.stack_volumes(r)
    sizes = {}
    if not r.dry:
        import json

        result = r.probe(["docker", "system", "df", "--verbose", "--format", "{{json .Volumes}}"])
        if result.ok:
            sizes = {v["Name"]: v["Size"] for v in json.loads(result.stdout or "[]")}
    rows = [("VOLUME", "SIZE", "USED BY")]
    for info in volumes.values():
        users = [*info.writers, *(f"{s} (read-only)" for s in info.readers)]
        rows.append((info.name, sizes.get(info.name, "absent"), ", ".join(users)))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


@task(
    iterable=["volume"],
    help={
    "host": HOST_HELP,
        "volume": "A volume to back up, by short or full name; repeat for several (default: all).",
        "dry": "Print the commands instead of running them.",
    },
)
@task_errors
@on_hosts
def backup(c, volume=None, dry=False):
    """Archive volumes to backups/ (compressed, checksummed, with a manifest)."""
    r = Runner(c, dry=dry)
    volumes = backups.stack_volumes(r)
    chosen = [backups.resolve_volume(r, volumes, v) for v in volume] if volume else list(volumes.values())
    comp = backups.compressor(r)
    for info in chosen:
        made = backups.backup_volume(r, info, comp)
        if r.remote:
            backups.fetch(r, made)


@task(help={
    "host": HOST_HELP,
    "archive": "The archive (or its .json manifest) to restore, e.g. backups/hello_media_volume_20261120T101500Z.tar.zst.",
    "volume": "Restore into this volume instead of the one the archive came from.",
    "yes": "Do not ask for confirmation (needed when not on a terminal).",
    "timeout": "Seconds to wait for the stack to be healthy afterwards (default: 180).",
    "dry": "Verify nothing and print the commands instead of running them.",
})
@task_errors
@on_hosts
def restore(c, archive, volume=None, yes=False, timeout=180, dry=False):
    """Replace a volume's content with an archive; a safety copy comes back on any failure."""
    r = Runner(c, dry=dry)
    archive_file, data = backups.verified_on_target(r, archive)
    volumes = backups.stack_volumes(r)
    info = backups.resolve_volume(r, volumes, volume or data.get("volume", ""))
    confirm(yes or r.dry, f"Replace the content of {info.name} with {archive_file.name}?",
            f"restoring replaces everything in {info.name}")
    backups.restore_volume(r, info, archive_file, data, timeout=timeout)


ns = Collection("volume", list_, backup, restore)
