"""The scheduled backups' tasks (plans in tasks/plans/backups.py; the work itself is
config/backup/backup.py, run in the backup service's container, whose restic repository
[backups] in config/stack.toml names).

A restore goes through the paths the file-level backups use: each database dump, checked
against the sha256 its snapshot's manifest recorded, is loaded all or nothing
(procedures/dumps.py); the media are checked file by file the same way, then replace the
volume's content with a safety copy kept until the stack is healthy (procedures/volume_copy.py).

On a cluster ([clusters] in config/stack.toml), the stack's backup service runs on the
manager: the same script runs in its running container there, and what changes its
secrets deploys the live release's stack again (procedures/cluster_release.py), which
restarts that service alone.
"""
from __future__ import annotations

from ..errors import StackError, TaskError, last_line
from ..source import values

from ..execution.cluster import ClusterRun
from ..execution.runner import Runner, interactive
from ..plans import archives
from ..plans import backups as plans
from ..plans import swarm
from ..source.stack import APP_OWNER, BACKUP_CREDENTIALS, BACKUP_KNOWN_HOSTS, BACKUP_NOTIFY, BACKUP_SSH_KEY, SECRETS_DIR
from .backup_files import backup_dir, sha256, temporary_name, verify_volume_archive
from .cluster_release import refresh
from .dumps import load_database, load_into
from .locks import volume_lock
from .starting import start_backups
from .volume_copy import resolve_volume, restore_volume, stack_volumes


class Service:
    """backup.py run once on a host: in a one-off container of the compose service."""

    def __init__(self, r: Runner):
        self.r, self.name, self.flag = r, r.target.name, r.target.host_flag

    def run(self, args, **kwargs):
        return self.r.compose(plans.script(*args), **kwargs)

    def argv(self, args) -> list[str]:
        return self.r.compose_argv(plans.script(*args))

    def restart(self) -> None:
        start_backups(self.r)


class ClusterService(Service):
    """backup.py run once on a cluster: in the running container of the stack's service,
    on the manager."""

    def __init__(self, s: ClusterRun):
        self.s, self.r, self.name, self.flag = s, s.manager, f"cluster {s.cluster.name}", f" --cluster {s.cluster.name}"
        self._container = None

    def container(self) -> str:
        if self._container is None:
            ids = self.r.probe(swarm.task_containers(self.r.project, plans.SERVICE), anywhere=True,
                               prints="backup container").stdout.split()
            if not ids:
                raise TaskError(f"the backup service does not run on {self.s.cluster.manager}, the manager of "
                                f"{self.name}: deploy it (`inv deploy{self.flag}`), or see `inv swarm.status{self.flag}`")
            self._container = ids[0]
        return self._container

    def run(self, args, **kwargs):
        return self.r.run(self.argv(args), anywhere=True, **kwargs)

    def argv(self, args) -> list[str]:
        return swarm.exec_backup(self.container(), args)

    def restart(self) -> None:
        refresh(self.s)


def service(r) -> Service:
    return ClusterService(r) if isinstance(r, ClusterRun) else Service(r)


def configured(svc: Service):
    backups = svc.r.stack.backups
    if backups is None:
        raise TaskError("no [backups] in config/stack.toml: add schedule and repository there (docs/backups.md)")
    return backups


def script(svc: Service, command: str, *args, what: str, hide: bool = True):
    result = svc.run([command, *args], hide=hide, check=False, what=what)
    if result.failed:
        raise TaskError(f"{what} failed: {last_line(result.stderr, f'exit status {result.exited}')}")
    return result


def now(r) -> None:
    svc = service(r)
    configured(svc)
    result = svc.run(["run"], check=False, what="the backup run")
    if result.exited == plans.BUSY:
        raise TaskError(f"a backup run is under way on {svc.name} already (the scheduled one?): try again later")
    if result.failed:
        raise TaskError(f"the backup run failed: {last_line(result.stdout, 'see above')}")


def snapshots(r) -> list[list[str]]:
    svc = service(r)
    configured(svc)
    rows = plans.parse_json(script(svc, "snapshots", what="listing the snapshots").stdout) or []
    table = [["snapshot", "time (UTC)", "size", "holds"]]
    for snap in rows:
        holds = [f"{name} ({count:,} rows)" for name, count in snap.get("databases", {}).items()]
        holds.append(f"{snap.get('media_files', '?')} media file(s)")
        if "/backup/certs" in snap.get("paths", []):
            holds.append("the certificates")
        if snap.get("legacy"):
            holds.append("taken before each place had its own snapshots: restored by id only")
        table.append([snap["id"], snap["time"].replace("T", " ")[:19],
                      _size(snap["bytes"]) if snap.get("bytes") is not None else "?", ", ".join(holds)])
    return table


def status(r) -> tuple[bool, list[str], str]:
    """(fine, lines, where): the last success, its age, size and the last error; not fine
    when the last run failed, or the last success is older than twice the schedule's
    interval (or there is none)."""
    svc = service(r)
    configured(svc)
    state = plans.parse_json(script(svc, "status", what="reading the backup status").stdout)
    if not svc.r.require(isinstance(state, dict), "the backup service gave no status"):
        return True, [], svc.name  # nothing was read (a dry run): nothing to tell
    backup, drill = state.get("backup", {}), state.get("drill", {})
    where = svc.name
    if backup.get("last_success"):
        age = state["age"]
        lines = [f"{where}: last backup {backup['last_success']} ({_age(age)} ago), snapshot "
                 f"{backup.get('snapshot', '?')}, {_size(backup.get('bytes', 0))}, "
                 f"{_size(backup.get('added', 0))} added to the repository, {backup.get('seconds', '?')} s"]
    else:
        lines = [f"{where}: no backup has succeeded yet"]
    if backup.get("last_error"):
        lines.append(f"{where}: last error ({backup.get('last_failure')}): {backup['last_error']}")
    if drill.get("failures"):
        lines.append(f"{where}: last drill FAILED {drill['last_failure']}: {drill['last_error']}"
                     + (f" (last PASS {drill['last_success']})" if drill.get("last_success") else ""))
    elif drill:
        lines.append(f"{where}: last drill PASS {drill['last_success']} ({drill.get('seconds')} s)")
    if state.get("overdue"):
        lines.append(f"{where}: OVERDUE: no success within {_age(state['limit'])} (twice the schedule "
                     f"{state['schedule']!r})")
    return not (state.get("overdue") or state.get("failing")), lines, where


def _size(count) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:,.0f} {unit}" if unit == "B" else f"{count:,.1f} {unit}"
        count /= 1024


def _age(seconds) -> str:
    seconds = int(seconds)
    return f"{seconds // 86400} d {seconds % 86400 // 3600} h" if seconds >= 86400 else \
        f"{seconds // 3600} h {seconds % 3600 // 60} min" if seconds >= 3600 else f"{seconds // 60} min {seconds % 60} s"


def drill(r, snapshot: str) -> None:
    svc = service(r)
    configured(svc)
    _snapshot(snapshot)
    result = svc.run(["drill", snapshot], check=False, what="the restore drill")
    if result.failed:
        raise TaskError(f"the restore drill FAILED on {svc.name}: see above")


def _snapshot(snapshot: str) -> str:
    if plans.SNAPSHOT.fullmatch(snapshot or "") is None:
        raise TaskError(f"snapshot {snapshot!r} is not valid: `latest` or an id from `inv backup.snapshots`")
    return snapshot


def restore(r: Runner, snapshot: str, databases: list[str], media: bool, timeout: int) -> None:
    """Each chosen database from SNAPSHOT, all or nothing, then the media with a safety copy."""
    configured(Service(r))
    _snapshot(snapshot)
    directory = backup_dir(r)
    when = archives.stamp()
    media_tmp = None
    try:
        if media:
            # Read and checked before any database is touched: media a restore would refuse
            # leave the databases as they are too. A snapshot is as trustworthy as whoever
            # could write to the repository: its entries pass the checks of any volume
            # restore (files, folders and inside symlinks only, no setuid or setgid, owned by
            # the app), and its root is the app's.
            info = resolve_volume(stack_volumes(r), "media_volume")
            media_tmp = temporary_name(directory / f"{r.project}_media_snapshot-{snapshot}_{when}.tar.gz")
            r.run(archives.pipeline(r.compose_argv(plans.script("media", snapshot)), output=str(media_tmp)),
                  what=f"reading the media from snapshot {snapshot}")
            data = {"kind": "volume", "compression": "gzip", "sha256": sha256(r, media_tmp), "owners": [APP_OWNER]}
            r.do(f"check every entry of {media_tmp.name}", check_media, r, media_tmp, data)
        for db in databases:
            r.require_running(db.name)
            final = directory / f"{r.project}_{db.name}_snapshot-{snapshot}_{when}.dump"
            tmp = temporary_name(final)
            try:
                r.run(archives.pipeline(r.compose_argv(plans.script("dump", snapshot, f"{db.name}.dump")),
                                        output=str(tmp)), what=f"reading {db.name} from snapshot {snapshot}")
                load_database(r, db, tmp)
            finally:
                r.remove(tmp)
        if media:
            # The volume's lock, its users stopped, a safety copy, the stack healthy or the copy back.
            restore_volume(r, info, media_tmp, data, timeout)
    finally:
        if media_tmp is not None:
            r.remove(media_tmp)


def check_media(r: Runner, archive, data: dict) -> None:
    """The media ARCHIVE on R's target, read here (a host's copied into this machine's
    backups folder first, under a name the next task cleans if this one is killed), against DATA."""
    here = r.here()
    local = temporary_name(backup_dir(here) / archive.name.lstrip("."))
    with r.target.copy_here(archive, local) as path:
        verify_volume_archive(here, path, data, root_owner=APP_OWNER)


def restore_cluster(s: ClusterRun, snapshot: str, databases: list) -> None:
    """Each chosen database of a cluster from SNAPSHOT, all or nothing, on the node that
    runs it: the dump read by the backup service on the manager, checked against its
    manifest there, copied to the database's node if it is another, loaded into a fresh
    database and swapped in (as on a host); the app's replicas reconnect by themselves."""
    svc = ClusterService(s)
    configured(svc)
    _snapshot(snapshot)
    manager, project = s.manager, s.manager.project
    placement = dict(s.cluster.placement)
    directory = backup_dir(manager)
    when = archives.stamp()
    for db in databases:
        name = placement[db.name]
        node = s.nodes[name]
        ids = node.probe(swarm.task_containers(project, db.name), anywhere=True, prints=f"{db.name} container").stdout.split()
        if not ids:
            raise TaskError(f"{db.name} does not run on {name}: see `inv swarm.status --cluster {s.cluster.name}`")
        tmp = temporary_name(directory / f"{project}_{db.name}_snapshot-{snapshot}_{when}.dump")
        there = backup_dir(node) / tmp.name
        try:
            manager.run(archives.pipeline(svc.argv(["dump", snapshot, f"{db.name}.dump"]), output=str(tmp)),
                        anywhere=True, what=f"reading {db.name} from snapshot {snapshot}")
            if node is not manager:
                manager.do(f"copy the dump of {db.name} from {s.cluster.manager} to {name}",
                           manager.target.copy_to, node.target, tmp, there)
            with volume_lock(node, f"{project}_{db.volume}"):
                load_into(node, db, swarm.exec_in(ids[0]), tmp if node is manager else there, anywhere=True)
        finally:
            manager.remove(tmp)
            if node is not manager:
                node.remove(there)


def key(r) -> None:
    svc = service(r)
    configured(svc)
    if not interactive():
        raise TaskError("the repository password is shown on a terminal only (it is never logged or piped)")
    result = script(svc, "key", what="reading the repository password")
    print("WARNING: without this password no backup in the repository can be read, by anyone.\n"
          "Keep it somewhere other than this server (a password manager, a safe).\n")
    print(result.stdout.strip())


def credentials(r, text: str) -> None:
    """TEXT (KEY=VALUE lines, read from standard input) as the repository's credentials on
    the target, 0600; the backup service gets them at its next start, now."""
    svc = service(r)
    configured(svc)
    try:
        content = plans.credentials(text)
    except ValueError as exc:
        raise TaskError(f"repository credentials: {exc}") from None
    r = svc.r
    r.write(r.target.config_dir / "secrets" / BACKUP_CREDENTIALS, content, mode=0o600)
    r.report(f"wrote {SECRETS_DIR}/{BACKUP_CREDENTIALS} on {r.target.name} ({len(content.splitlines())} variables)")
    svc.restart()


def ssh_key(r, expected: str | None, yes: bool) -> None:
    """An sftp: repository's access: the service's own SSH key (made once, on the target),
    the repository host's keys (scanned from the target, trusted when their fingerprint is
    EXPECTED or on confirmation), then the public key to authorize there."""
    svc = service(r)
    r = svc.r
    backups = configured(svc)
    server = backups.sftp_host
    if server is None:
        raise TaskError(f"[backups] repository {backups.repository} is not sftp:user@host:/path: it needs no SSH key")
    if expected is not None and plans.FINGERPRINT.fullmatch(expected) is None:
        raise TaskError(f"--fingerprint {expected!r} is not valid: SHA256: and 43 characters, "
                        "as `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` prints on the server")
    if not _trust_host_keys(svc, server, expected, yes):
        return  # nothing was scanned (a dry run): nothing to trust
    line = _service_key(svc)
    svc.restart()
    user = backups.repository[len("sftp:"):].split(":", 1)[0].rpartition("@")[0] or "the user"
    print(f"\nAuthorize it for {user} on {server}: add this line to that user's ~/.ssh/authorized_keys\n"
          f"('restrict' allows SFTP and forbids a shell's extras: forwarding, a terminal):\n\n"
          f"restrict {line}\n\nThen: inv backup.now{svc.flag}")


def _trust_host_keys(svc, server: str, expected: str | None, yes: bool) -> bool:
    """SERVER's host keys, scanned from the target, written to its known_hosts when their
    fingerprint is EXPECTED or on confirmation; False when nothing was scanned (a dry run)."""
    r = svc.r
    scanned = script(svc, "keyscan", what=f"reading {server}'s SSH host keys").stdout
    try:
        keys, problem = plans.host_keys(scanned), None
    except ValueError as exc:
        keys, problem = [], f"{server}'s SSH host keys: {exc}"
    if not r.require(problem is None, problem):
        return False
    prints = [f"{line.split()[1]} {plans.fingerprint(line)}" for line in keys]
    print(f"{server}'s host keys, as seen from {r.target.name}:\n  " + "\n  ".join(prints))
    if expected is not None:
        # Only the key that matches: each key type is a connection of its own, and a man in
        # the middle could pass one through and answer another himself.
        keys = [line for line in keys if plans.fingerprint(line) == expected]
        if not keys:
            raise TaskError(f"{server} does not show the key {expected}: nothing trusted (is something "
                            "between the two hosts, or is it another server?)")
    known_hosts = r.target.config_dir / "secrets" / BACKUP_KNOWN_HOSTS
    known = r.probe(["cat", str(known_hosts)])
    # Blank lines are no key: a cluster's deploy leaves a blank file for a secret not set up.
    before = sorted(line for line in known.stdout.splitlines() if line.strip()) if known.ok else []
    if before == sorted(keys):
        r.report(f"{server}'s keys are trusted already")
        return True
    if expected is None:
        changed = " CHANGED since they were trusted" if before else ""
        r.confirm(yes, f"Trust these keys{changed} for the backups?",
                  f"trusting {server}'s keys{changed} unchecked (or give --fingerprint)")
    r.write(known_hosts, "\n".join(keys) + "\n", mode=0o600)
    r.report(f"trusted {server}'s host keys ({SECRETS_DIR}/{BACKUP_KNOWN_HOSTS} on {r.target.name})")
    return True


def _service_key(svc) -> str:
    """The public line of the backup service's SSH key, made on the target if it has none."""
    r = svc.r
    secrets = r.target.config_dir / "secrets"
    public = r.probe(["cat", str(secrets / f"{BACKUP_SSH_KEY}.pub")])
    # A blank file is no key: a cluster's deploy leaves one for a Swarm secret not set up.
    have_key = r.probe(["grep", "-q", "[^[:space:]]", str(secrets / BACKUP_SSH_KEY)]).ok
    if public.ok and have_key:
        return public.stdout.strip()
    if have_key:
        # Never replace the key a repository server may have authorized.
        raise TaskError(f"{SECRETS_DIR}/{BACKUP_SSH_KEY} on {r.target.name} has lost its .pub: restore it, or "
                        "remove the key too to make a new one (then authorize the new one)")
    private, line = plans.new_ssh_key(f"{r.project}-backup@{r.target.name}")
    r.write(secrets / BACKUP_SSH_KEY, private, mode=0o600)
    r.write(secrets / f"{BACKUP_SSH_KEY}.pub", line, mode=0o644)
    r.report(f"made the backup service's SSH key ({SECRETS_DIR}/{BACKUP_SSH_KEY} on {r.target.name})")
    return line.strip()


def notify(r, text: str) -> None:
    """TEXT's apprise URLs (one per line) kept on the target alone, 0600: for URLs that hold
    a token, which then never reach config/stack.toml, git or `docker inspect`."""
    svc = service(r)
    r = svc.r
    backups = configured(svc)
    if backups.notify:
        raise TaskError("[backups] notify is set in config/stack.toml, which wins: remove it there "
                        "to keep the URLs on the host alone")
    urls = text.split()
    try:
        urls = values.notify_urls(urls, "a notify URL") if urls else []
    except StackError as exc:
        raise TaskError(str(exc)) from None
    path = r.target.config_dir / "secrets" / BACKUP_NOTIFY
    if urls:
        r.write(path, "\n".join(urls) + "\n", mode=0o600)
        r.report(f"wrote {len(urls)} notify URL(s) to {SECRETS_DIR}/{BACKUP_NOTIFY} on {r.target.name}")
    else:
        r.remove(path)
        r.report(f"no notify URLs on {r.target.name}: failures are in `inv backup.status{svc.flag}` only")
    svc.restart()
