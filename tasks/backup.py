"""The stack's two kinds of backup.

`inv archive.*`, file archives in backups/: `inv archive` dumps every database and archives
every volume, now; `inv archive.prune` deletes old ones (`volume.archive`, `volume.restore`,
`db.dump` and `db.load` handle one at a time). Their old names `inv backup`, `backup.all` and
`backup.prune` stay for one release.

`inv backup.*`, the scheduled backups into a restic repository ([backups] in
config/stack.toml, run by the stack's backup service): `inv backup.now`, `.snapshots`,
`.restore`, `.status`, `.drill`, `.key`, `.credentials`, `.ssh-key`, `.notify`; they take
`--cluster` too (the stack's backup service runs on the manager)."""
from __future__ import annotations

import sys
import time

from invoke import Collection

from .cli import print_table, renamed, stack_task
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
    """Archive every database and volume to backups/.

    Each database dumped while it runs, then each volume archived: compressed, checksummed,
    each with a manifest. Not the scheduled restic backups (backup.*)."""
    made = [dump_database(r, db) for db in r.stack.databases]
    for service in r.stack.services:
        r.say(f"skipping service {service.name} ({service.kind}): a queue or cache holds jobs in flight and "
              "cached values, not records")
    comp = compressor(r)
    made += [backup_volume(r, info, comp) for info in stack_volumes(r).values()]
    for path in made:
        r.target.bring_home(r, path)


@stack_task(hosts=None, configured={"keep": "keep_backups"}, help={
    "keep": "How many archives to keep per volume and dumps per database (at least 1)",
})
def prune(r, keep=None):
    """Delete old archives and dumps from backups/.

    The newest N of each volume and database stay (--keep)."""
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

@stack_task(hosts="many-or-cluster")
def now(r):
    """Run the scheduled restic backup now.

    With progress: every database dumped while it runs, the media (and the certificates),
    one encrypted restic snapshot, old snapshots forgotten as [backups] keep says, the
    repository checked."""
    scheduled.now(r)


@stack_task(hosts="many-or-cluster")
def snapshots(r):
    """List the restic repository's snapshots.

    Those of this stack: time, size, what they hold."""
    print_table(scheduled.snapshots(r))


@stack_task(hosts="many-or-cluster", help={
    "snapshot": "Which snapshot: `latest` or an id from `inv backup.snapshots`.",
    "database": "Restore only this database (repeatable; default: every database, and the media).",
    "media": "Restore the media (alone, unless --database is given too; default: off).",
    "yes": "Do not ask for confirmation (default: off).",
    "timeout": "Seconds to wait for the stack to be healthy again.",
}, iterable=["database"])
def restore(r, snapshot, database=None, media=False, yes=False, timeout=None):
    """Restore databases and media from a restic snapshot.

    Each database all or nothing (the dump is checked against the sha256 its snapshot
    recorded, loaded into a fresh database, then swapped in), the media with a safety copy
    that comes back if anything fails. On a cluster: the databases, each on the node that
    runs it (a cluster's media are each node's own volume)."""
    place = places.of(r)
    names = list(database or [])
    known = {db.name: db for db in r.stack.databases}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise TaskError(f"no database {', '.join(unknown)} in config/stack.toml (there are: {', '.join(known)})")
    if media and not place.restores_media:
        raise TaskError(f"--media: the media of {r.name} are each node's own volume, and the "
                        "backups take the manager's (docs/scaling-out.md); restore the databases alone")
    chosen = [known[name] for name in names] if names else ([] if media else list(known.values()))
    with_media = (media or not names) and place.restores_media
    what = ", ".join([db.name for db in chosen] + (["the media"] if with_media else []))
    r.confirm(yes, f"Replace {what} with snapshot {snapshot}?", f"restoring replaces {what}")
    place.restore(snapshot, chosen, with_media, timeout)


@stack_task(hosts="many-or-cluster")
def status(r):
    """Report the restic backups' health, for monitoring.

    The last successful backup: when, how old, how big; the last error and drill. Exits 1
    when the last run failed or the last success is older than twice the schedule's
    interval."""
    fine, lines, where = scheduled.status(r)
    for line in lines:
        print(line)
    if not fine:
        raise TaskError(f"backups on {where} are failing or overdue")


@stack_task(hosts="many-or-cluster", help={"snapshot": "Which snapshot (default: latest)."})
def drill(r, snapshot="latest"):
    """Check that a restic snapshot restores: PASS or FAIL.

    Restores it into a throwaway PostgreSQL (the databases' major, on no network) and checks
    every dump's checksum, every table's row count, every media file's checksum against what
    the backup recorded. PASS or FAIL with the time taken; exits 1 on FAIL."""
    scheduled.drill(r, snapshot)


@stack_task(hosts="many-or-cluster")
def key(r):
    """Print the restic repository's password, once.

    On a terminal only: without it no backup can be read."""
    scheduled.key(r)


@stack_task(hosts="many-or-cluster")
def credentials(r):
    """Set the restic repository's credentials from stdin.

    KEY=VALUE lines on standard input (such as AWS_ACCESS_KEY_ID=... and
    AWS_SECRET_ACCESS_KEY=... for s3:), kept 0600 on the host, never in a command line."""
    if interactive():
        print("KEY=VALUE lines, then Ctrl-D:")
    scheduled.credentials(r, sys.stdin.read())


@stack_task(hosts="many-or-cluster", name="ssh-key", help={
    "fingerprint": "The repository host's key fingerprint (SHA256:..., from `ssh-keygen -lf` on it): "
                   "trust that key alone, without asking (default: none; show the keys and ask).",
    "yes": "Trust the keys shown without a fingerprint to check them against (default: off).",
})
def ssh_key(r, fingerprint=None, yes=False):
    """Set up the SSH keys for an sftp: restic repository.

    Trust the repository host's SSH keys (scanned from this host, checked against
    --fingerprint or confirmed), make the backup service's own SSH key once (0600, on the
    host only) and print the line to authorize it on the repository host."""
    scheduled.ssh_key(r, fingerprint, yes)


@stack_task(hosts="many-or-cluster")
def notify(r):
    """Set the apprise URLs told of failed restic backups.

    Of failed and recovered backups and drills: one URL per line on standard input (none: no
    notifications), kept 0600 on the host alone. For URLs holding a token, instead of
    [backups] notify in config/stack.toml."""
    if interactive():
        print("apprise URLs, one per line, then Ctrl-D:")
    scheduled.notify(r, sys.stdin.read())


archive_ns = Collection("archive", all_, prune)
ns = Collection("backup", now, snapshots, restore, status, drill, key, credentials, ssh_key, notify,
                renamed(all_, "backup.all", "archive.all"), renamed(prune, "backup.prune", "archive.prune"))
