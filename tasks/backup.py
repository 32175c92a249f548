"""`inv backup`: every volume and every database dump in one go, now, as files;
`inv backup.prune`. The scheduled backups into a restic repository ([backups] in
config/stack.toml, run by the stack's backup service): `inv backup.now`, `.snapshots`,
`.restore`, `.status`, `.drill`, `.key`, `.credentials`, `.ssh-key`, `.notify`; they
take `--cluster` too (the stack's backup service runs on the manager)."""
from __future__ import annotations

import sys
import time

from invoke import Collection

from .cli import print_table, stack_task
from .errors import TaskError
from .execution.runner import interactive
from .plans import archives
from .procedures import backups as scheduled
from .procedures import places
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

@stack_task(hosts="many-or-cluster", help={"dry": "Print the command only."})
def now(r):
    """Run the scheduled backup at once, with progress: every database dumped while it
    runs, the media (and the certificates), one encrypted restic snapshot, old snapshots
    forgotten as [backups] keep says, the repository checked."""
    scheduled.now(r)


@stack_task(hosts="many-or-cluster", help={"dry": "Print the command only."})
def snapshots(r):
    """The repository's snapshots of this stack: time, size, what they hold."""
    print_table(scheduled.snapshots(r))


@stack_task(hosts="many-or-cluster", help={
    "snapshot": "Which snapshot: `latest` or an id from `inv backup.snapshots`.",
    "database": "Restore only this database (repeatable; default: every database, and the media).",
    "media": "Restore the media (alone, unless --database is given too).",
    "yes": "Do not ask for confirmation.",
    "timeout": "Seconds to wait for the stack to be healthy again.",
    "dry": "Print the commands only.",
}, iterable=["database"])
def restore(r, snapshot, database=None, media=False, yes=False, timeout=None):
    """Restore a snapshot: each database all or nothing (the dump is checked against the
    sha256 its snapshot recorded, loaded into a fresh database, then swapped in), the media
    with a safety copy that comes back if anything fails. On a cluster: the databases, each
    on the node that runs it (a cluster's media are each node's own volume)."""
    place = places.of(r)
    names = list(database or [])
    known = {db.name: db for db in r.stack.databases}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise TaskError(f"no database {', '.join(unknown)} in config/stack.toml (there are: {', '.join(known)})")
    if media and not place.restores_media:
        raise TaskError(f"--media: the media of {r.name} are each node's own volume, and the "
                        "backups take the manager's (README: Scaling out); restore the databases alone")
    chosen = [known[name] for name in names] if names else ([] if media else list(known.values()))
    with_media = (media or not names) and place.restores_media
    what = ", ".join([db.name for db in chosen] + (["the media"] if with_media else []))
    r.confirm(yes, f"Replace {what} with snapshot {snapshot}?", f"restoring replaces {what}")
    place.restore(snapshot, chosen, with_media, timeout)


@stack_task(hosts="many-or-cluster", help={"dry": "Print the command only."})
def status(r):
    """The last successful backup: when, how old, how big; the last error and drill.
    Exits 1 when the last run failed or the last success is older than twice the
    schedule's interval: monitoring can call it."""
    fine, lines, where = scheduled.status(r)
    for line in lines:
        print(line)
    if not fine:
        raise TaskError(f"backups on {where} are failing or overdue")


@stack_task(hosts="many-or-cluster", help={"snapshot": "Which snapshot (default: latest).", "dry": "Print the command only."})
def drill(r, snapshot="latest"):
    """Restore a snapshot into a throwaway PostgreSQL (the databases' major, on no network)
    and check it: every dump's checksum, every table's row count, every media file's checksum
    against what the backup recorded. PASS or FAIL with the time taken; exits 1 on FAIL."""
    scheduled.drill(r, snapshot)


@stack_task(hosts="many-or-cluster", help={"dry": "Print the command only."})
def key(r):
    """Print the repository password, once, on a terminal: without it no backup can be read."""
    scheduled.key(r)


@stack_task(hosts="many-or-cluster", help={"dry": "Print the command only."})
def credentials(r):
    """Set the repository's credentials (such as AWS_ACCESS_KEY_ID=... and
    AWS_SECRET_ACCESS_KEY=... for s3:) from KEY=VALUE lines on standard input; they are
    kept 0600 on the host, never in a command line."""
    if interactive():
        print("KEY=VALUE lines, then Ctrl-D:")
    scheduled.credentials(r, sys.stdin.read())


@stack_task(hosts="many-or-cluster", name="ssh-key", help={
    "fingerprint": "The repository host's key fingerprint (SHA256:..., from `ssh-keygen -lf` on it): "
                   "trust that key alone, without asking.",
    "yes": "Trust the keys shown without a fingerprint to check them against.",
    "dry": "Print the command only.",
})
def ssh_key(r, fingerprint=None, yes=False):
    """For an sftp: repository: trust the repository host's SSH keys (scanned from this
    host, checked against --fingerprint or confirmed), make the backup service's own SSH key
    once (0600, on the host only) and print the line to authorize it on the repository host."""
    scheduled.ssh_key(r, fingerprint, yes)


@stack_task(hosts="many-or-cluster", help={"dry": "Print the command only."})
def notify(r):
    """Set the apprise URLs that hear of failed and recovered backups and drills, one per
    line on standard input (none: no notifications), kept 0600 on the host alone: for URLs
    holding a token, instead of [backups] notify in config/stack.toml."""
    if interactive():
        print("apprise URLs, one per line, then Ctrl-D:")
    scheduled.notify(r, sys.stdin.read())


ns = Collection("backup", all_, prune, now, snapshots, restore, status, drill, key, credentials, ssh_key, notify)
