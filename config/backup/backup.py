"""The stack's scheduled backups, inside the backup service's container (config/backup/
Dockerfile: the PostgreSQL image of the databases, plus restic, croniter and apprise).

A run takes, into one restic snapshot:
  /backup/dumps/NAME.dump     a logical dump of each database (pg_dump custom format, not
                              compressed: restic compresses and deduplicates), taken in a
                              transaction whose snapshot also counts the rows of every table
  /backup/dumps/manifest.json what the run took: per database its sha256 and row counts per
                              table, per media file its sha256, the PostgreSQL major
  /backup/media, /backup/certs the media volume, and the certificates' when the site has one
then `forget --prune` by BACKUP_KEEP and `check`. The snapshot is written by restic at the
very end of `restic backup`: a run that fails or is killed before leaves none. Runs never
overlap (a lock file in the state volume); a killed run's stale restic lock is removed by
the next one.

Commands:
  schedule           run by BACKUP_SCHEDULE and drill by BACKUP_DRILL (cron, the host's
                     timezone), for ever (the service's command)
  run                one backup now, with progress; exit 1 on failure
  drill [SNAPSHOT]   restore SNAPSHOT (default latest) into a throwaway PostgreSQL server of
                     this image (the databases' major), listening on no network, and check
                     every dump's sha256, every table's row count and every media file's
                     sha256 against the manifest; PASS or FAIL with the time taken
  status             the state file as JSON, with `due`: whether the last success is older
                     than twice the schedule's interval
  snapshots          restic's snapshots of this host as JSON, each with its manifest's summary
  dump SNAPSHOT PATH one file of a snapshot on standard output, checked against the manifest
  media SNAPSHOT     the media folder of a snapshot as a tar stream on standard output
  keyscan            an sftp repository host's public keys, for `inv backup.ssh-key`
  key                the repository password, for `inv backup.key`

Failures and recoveries (the first success after a failure) are sent to the apprise URLs of
the secret file `notify`. Secrets are files in /run/secrets/backup (the password, each
database's app password, and when set up repository.env: credentials such as
AWS_ACCESS_KEY_ID; ssh_key and known_hosts for an sftp: repository; notify), read here and
passed to restic and pg_dump in their own environment only.
"""
import datetime
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

# A host's secrets-init puts them here; a cluster's Swarm secrets are in /run/secrets.
SECRETS = os.environ.get("BACKUP_SECRETS_DIR", "/run/secrets/backup")
STATE = "/var/lib/hello-backup"
STATUS_FILE = f"{STATE}/status.json"
LOCK_FILE = f"{STATE}/run.lock"
# Held shared by every command that reads the repository (a drill, a restore's dump, a
# listing), exclusively by a run while it removes stale restic locks and prunes: a one-off
# container of this place has this place's host name, and restic, which cannot see its
# processes, would take its live lock for a killed run's.
USE_FILE = f"{STATE}/use.lock"
DUMPS = "/backup/dumps"
MEDIA = "/backup/media"
CERTS = "/backup/certs"
MANIFEST = f"{DUMPS}/manifest.json"
EXPECTED = "/etc/hello/expected/migrations.json"
APP_ROLE = "app"
DRILLS = {"daily": "30 4 * * *", "weekly": "30 4 * * 0", "monthly": "30 4 1 * *"}
# Every user table, counted in the transaction's snapshot: psql runs each generated query.
COUNT_SQL = (
    "SELECT format('SELECT %L || chr(9) || count(*) FROM %I.%I;', n.nspname || '.' || c.relname, n.nspname, c.relname) "
    "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
    "AND n.nspname NOT LIKE 'pg_toast%' ORDER BY 1 \\gexec\n")
END = "__hello_backup_end__"
# The longest a scheduled run or drill may take before the schedule goes on without it.
RUN_LIMIT = 12 * 3600
# How long a command waits for the repository while another place's run holds it (each
# host and cluster of a project may share one repository: prune and check lock it alone).
LOCK_WAIT = 3600
LOCKED = "is already locked"
# What repository.env may set: the credentials of restic's backends, nothing else.
CREDENTIAL_PREFIXES = ("AWS_", "B2_", "AZURE_", "GOOGLE_", "OS_", "ST_", "RESTIC_REST_")


class Failed(Exception):
    """One line that says what went wrong."""


def say(message):
    print(message, flush=True)


def now():
    return datetime.datetime.now(datetime.timezone.utc)


def env(name, default=None):
    value = os.environ.get(name, default)
    if value is None:
        raise Failed(f"{name} is not set")
    return value


def databases():
    return [n for n in env("BACKUP_DATABASES", "").split(",") if n]


def skipped_services():
    """The stack's services ([[services]]: BACKUP_SERVICES, NAME:KIND,...), none of which a
    run takes: a queue or cache holds jobs in flight and cached values, not records."""
    return [tuple(item.split(":", 1)) for item in env("BACKUP_SERVICES", "").split(",") if ":" in item]


def repository_shown():
    """The repository as the user wrote it in [backups]: a local one's path on the host, not
    the path it is mounted at here."""
    return os.environ.get("BACKUP_REPOSITORY_ON_HOST") or env("BACKUP_REPOSITORY")


def host():
    """Whose snapshots these are: PROJECT@PLACE (a [hosts] name, `cluster.NAME`, or `local`
    for a checkout). Runs write, list, restore and forget this place's snapshots alone, so
    that hosts sharing a repository (and its password) never take each other's."""
    return env("BACKUP_HOST")


def legacy_host():
    """The host every place wrote its snapshots as before places had their own (the
    project's name): such snapshots are listed, and restored when named by id, never
    taken for `latest` nor forgotten, since any place of the project may have made them."""
    return env("BACKUP_PROJECT")


# -- restic ---------------------------------------------------------------------------

def restic_env():
    """restic's environment: the repository, the password file, the cache, and the
    credentials of repository.env (KEY=VALUE lines), which never enter the container's."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("BACKUP_")}
    e.update(RESTIC_REPOSITORY=env("BACKUP_REPOSITORY"), RESTIC_PASSWORD_FILE=f"{SECRETS}/restic_password",
             RESTIC_CACHE_DIR=f"{STATE}/cache", HOME=STATE)
    try:
        with open(f"{SECRETS}/repository.env") as f:
            e.update(repository_credentials(f))
    except FileNotFoundError:
        pass
    return e


def repository_credentials(lines):
    """repository.env's KEY=VALUE LINES (blank lines and comments skipped) as a dict: the
    credentials of restic's backends alone, anything else refused in one line."""
    found = {}
    for line in lines:
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            if not key.strip().startswith(CREDENTIAL_PREFIXES):
                raise Failed(f"repository.env may set credentials only (AWS_*, B2_*, ...), not {key.strip()}")
            found[key.strip()] = value.strip()
    return found


def secret_set(name):
    """Whether the optional secret NAME was set up: a cluster's Swarm secret exists either
    way (a blank line when not: Swarm takes no empty secret)."""
    try:
        with open(f"{SECRETS}/{name}", "rb") as f:
            return bool(f.read().strip())
    except FileNotFoundError:
        return False


def sftp_host():
    """The SSH server of an sftp:[user@]host:/path repository, else None."""
    repository = env("BACKUP_REPOSITORY")
    if not repository.startswith("sftp:"):
        return None
    return repository[len("sftp:"):].split(":", 1)[0]


def ssh_argv():
    """ssh to an sftp: repository's server with the service's own key and the server's keys
    as `inv backup.ssh-key` trusted them, never asking anything; None for other repositories."""
    target = sftp_host()
    if target is None:
        return None
    for name in ("ssh_key", "known_hosts"):
        if not secret_set(name):
            raise Failed("the sftp repository needs the service's SSH key and the server's keys: "
                         "run inv backup.ssh-key")
    return ["ssh", "-i", f"{SECRETS}/ssh_key", "-o", f"UserKnownHostsFile={SECRETS}/known_hosts",
            "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
            "-o", "ConnectTimeout=30", "-o", "ServerAliveInterval=30", "-o", "ServerAliveCountMax=4", target]


def sftp_options():
    """restic's options: its sftp backend's ssh command line (none of its words hold a space)."""
    argv = ssh_argv()
    return [] if argv is None else ["-o", "sftp.command=" + " ".join(argv + ["-s", "sftp"])]


def ssh_diagnosis():
    """Why ssh cannot open the sftp repository's session, in ssh's words (restic only says
    that it could not, and may exit before it passes ssh's own message on)."""
    argv = ssh_argv()
    if argv is None:
        return ""
    result = subprocess.run([*argv[:-1], "-s", argv[-1], "sftp"], stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=60)
    return "" if result.returncode == 0 else last_line(result.stderr, "")


def keyscan():
    """The sftp repository host's public keys, as known_hosts lines (ssh-keyscan)."""
    target = sftp_host()
    if target is None:
        raise Failed("the repository is not sftp:")
    name = target.rpartition("@")[2]
    result = subprocess.run(["ssh-keyscan", "-T", "15", "-t", "ed25519,ecdsa,rsa", name],
                            capture_output=True, text=True)
    lines = [line for line in result.stdout.splitlines() if line and not line.startswith("#")]
    if not lines:
        raise Failed(f"{name} gave no SSH host key: {last_line(result.stderr, 'no answer on port 22')}")
    print("\n".join(lines))


def restic(*args, capture=True, check=True, stdout=None):
    for wait in lock_waits():
        result = subprocess.run(["restic", *sftp_options(), *args],
                                env=restic_env(), stdin=subprocess.DEVNULL, text=stdout is None,
                                stdout=stdout if stdout is not None else (subprocess.PIPE if capture else None),
                                stderr=subprocess.PIPE)
        if result.returncode == 0 or not wait(result.stderr):
            break
    if check and result.returncode != 0:
        raise Failed(f"restic {args[0]}: {last_line(result.stderr)}")
    return result


def lock_line(text: str) -> str:
    """The line of restic's error that says who holds the lock (it ends with a hint about
    `unlock`, which is not what went wrong)."""
    return next((line.strip() for line in text.splitlines() if LOCKED in line), last_line(text))


def lock_waits():
    """For a command that may find the repository locked by another place's run: yields a
    WAIT(stderr) to call after each failed attempt, which sleeps and says True when the
    failure was that lock (and LOCK_WAIT has not passed), else False."""
    deadline, delay = time.monotonic() + LOCK_WAIT, 2.0

    def wait(stderr):
        nonlocal delay
        text = stderr.decode(errors="replace") if isinstance(stderr, bytes) else stderr or ""
        if LOCKED not in text or time.monotonic() + delay > deadline:
            return False
        print(f"the repository is locked by another run ({lock_line(text)}): trying again in {delay:.0f} s",
              file=sys.stderr, flush=True)
        time.sleep(delay)
        delay = min(delay * 2, 60.0)
        return True

    while True:
        yield wait


def last_line(text, default="no message"):
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    # restic's own one-line error, not the help that follows it.
    for line in lines:
        if line.startswith("Fatal:"):
            return line
    return lines[-1] if lines else default


def opening_failure(message):
    """Why restic could not open the repository, from its MESSAGE: "password" (a wrong
    one), "missing" (no repository there), else "other"."""
    if "wrong password" in message or "no key found" in message:
        return "password"
    if "unable to open config file" in message or "does not exist" in message or "Is there a repository" in message:
        return "missing"
    return "other"


def ensure_repository():
    """Open the repository; make it only where there is none and none was ever written to
    from here (a repository that held this stack's snapshots and is gone, say an unmounted
    disk, is an error, not an empty folder to start again in)."""
    result = restic("cat", "config", check=False)
    if result.returncode == 0:
        return
    message = last_line(result.stderr)
    why = opening_failure(message)
    if why == "password":
        raise Failed(f"the repository refused the password: {message}")
    if why == "missing":
        used = read_status().get("backup", {}).get("repositories", [])
        if env("BACKUP_REPOSITORY") in used:
            raise Failed(f"the repository at {repository_shown()} is gone (this stack's snapshots were "
                         f"there): is its disk or bucket missing? ({message})")
        say(f"making a new restic repository at {repository_shown()}")
        restic("init", "--repository-version", "2")
        return
    why = ssh_diagnosis()
    raise Failed(f"the repository cannot be opened: {message}" + (f" (ssh: {why})" if why else ""))


# -- taking a backup ------------------------------------------------------------------

def psql_session(name):
    """psql to database NAME as the app role, over the databases' network."""
    with open(f"{SECRETS}/{name}_password") as f:
        password = f.read().strip()
    e = dict(os.environ, PGHOST=name, PGUSER=APP_ROLE, PGDATABASE=name, PGPASSWORD=password,
             PGCONNECT_TIMEOUT="10", PGAPPNAME="hello-backup")
    return e, subprocess.Popen(["psql", "-XAtq", "-v", "ON_ERROR_STOP=1"], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=e)


def read_until_end(psql):
    lines = []
    for line in psql.stdout:
        line = line.rstrip("\n")
        if line == END:
            return lines
        lines.append(line)
    raise Failed(f"psql ended: {last_line(psql.stderr.read())}")


def counts_of(psql):
    psql.stdin.write(COUNT_SQL + f"\\echo {END}\n")
    psql.stdin.flush()
    counts = {}
    for line in read_until_end(psql):
        table, _, count = line.rpartition("\t")
        counts[table] = int(count)
    return counts


def dump_database(name):
    """NAME.dump and its row counts, from one exported snapshot: what the dump holds is
    exactly what was counted, taken while the app keeps writing."""
    e, psql = psql_session(name)
    try:
        psql.stdin.write("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;\n"
                         f"SELECT pg_export_snapshot();\n\\echo {END}\n")
        psql.stdin.flush()
        snapshot = read_until_end(psql)
        if len(snapshot) != 1:
            raise Failed(f"{name}: no snapshot to dump from")
        path = f"{DUMPS}/{name}.dump"
        result = subprocess.run(["pg_dump", "--format=custom", "--compress=0", f"--snapshot={snapshot[0]}",
                                 "--lock-wait-timeout=60s",
                                 "--no-password", f"--file={path}"], env=e, stdin=subprocess.DEVNULL,
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise Failed(f"pg_dump of {name}: {last_line(result.stderr)}")
        counts = counts_of(psql)
        psql.stdin.write("COMMIT;\n\\q\n")
        psql.stdin.flush()
        psql.wait(timeout=60)
    except BrokenPipeError:
        raise Failed(f"{name}: {last_line(psql.stderr.read())}") from None
    finally:
        if psql.poll() is None:
            psql.kill()
            psql.wait()
    return {"file": f"{name}.dump", "sha256": sha256(path), "bytes": os.path.getsize(path), "tables": counts}


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tree_sums(root):
    """Every regular file under ROOT by relative path, with its sha256."""
    sums = {}
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(folder, name)
            if os.path.isfile(path) and not os.path.islink(path):
                sums[os.path.relpath(path, root)] = sha256(path)
    return sums


def postgres_major():
    out = subprocess.run(["pg_dump", "--version"], capture_output=True, text=True).stdout
    return out.split()[-1].split(".")[0] if out else None


def clear_dumps():
    for name in os.listdir(DUMPS):
        path = os.path.join(DUMPS, name)
        shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.remove(path)


def take():
    """One backup: dumps and manifest staged, one restic snapshot, forget --prune, check."""
    started = time.monotonic()
    ensure_repository()
    # A killed run's locks (this place's host name, a process that is gone) are stale;
    # another place's, live or not, are not ours to remove: restic's own `unlock` tells
    # them apart by the host name each lock records (the container's, one per place). No
    # command of this place's reads the repository meanwhile (USE_FILE): its lock, from a
    # container whose processes restic cannot see, would look as stale.
    restic("unlock")
    clear_dumps()
    manifest = {"project": env("BACKUP_PROJECT"), "host": host(), "created": now().isoformat(timespec="seconds"),
                "postgres_major": postgres_major(), "databases": {}, "media": {}}
    for name in databases():
        say(f"dumping {name}")
        manifest["databases"][name] = dump_database(name)
        tables = manifest["databases"][name]["tables"]
        say(f"  {manifest['databases'][name]['bytes']:,} bytes, {len(tables)} tables, {sum(tables.values()):,} rows")
    for name, kind in skipped_services():
        say(f"skipping service {name} ({kind}): a queue or cache holds jobs in flight and cached values, "
            "not records")
    manifest["media"] = tree_sums(MEDIA)
    top = os.stat(MEDIA)
    manifest["media_root"] = {"uid": top.st_uid, "gid": top.st_gid, "mode": top.st_mode & 0o7777}
    say(f"media: {len(manifest['media'])} files")
    paths = [DUMPS] + ([CERTS] if os.path.isdir(CERTS) else [])
    write_json(MANIFEST, manifest)
    # Exactly the media files hashed above (a file uploaded since waits for the next run),
    # NUL-separated (a name may hold a newline); the folder itself when it is empty.
    listed = f"{STATE}/media-files"
    with open(listed, "w") as f:
        f.write("".join(f"{MEDIA}/{name}\0" for name in manifest["media"]) or f"{MEDIA}\0")
    say(f"sending to {repository_shown()}")
    summary = backup_with_progress(paths, listed)
    forget = forget_options(env("BACKUP_KEEP"))
    say("forgetting old snapshots: " + " ".join(forget))
    restic("forget", "--host", host(), "--prune", *forget)
    say("checking the repository")
    restic("check")
    clear_dumps()
    return {"snapshot": summary.get("snapshot_id", "")[:8], "bytes": summary.get("total_bytes_processed", 0),
            "added": summary.get("data_added", 0), "seconds": round(time.monotonic() - started, 1)}


def forget_options(keep):
    """restic forget's options from BACKUP_KEEP (PERIOD=COUNT,...: daily=7,weekly=4): the
    snapshots each period keeps, all older ones forgotten."""
    periods = dict(part.split("=") for part in keep.split(",") if part)
    return [f"--keep-{period}={count}" for period, count in periods.items()]


def backup_with_progress(paths, files_from):
    for wait in lock_waits():
        try:
            return backup_once(paths, files_from)
        except Locked as exc:
            if not wait(str(exc)):
                raise Failed(f"restic backup: {lock_line(str(exc))}") from None


class Locked(Exception):
    """restic could not lock the repository: another place's run holds it."""


def backup_once(paths, files_from):
    process = subprocess.Popen(["restic", *sftp_options(), "backup", "--json", "--host", host(), "--tag", "hello",
                                "--compression", "auto", "--files-from-raw", files_from, *paths],
                               env=restic_env(), stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    summary, shown, unread = {}, 0.0, []
    for line in process.stdout:
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if message.get("message_type") == "status" and time.monotonic() - shown > 2:
            shown = time.monotonic()
            say(f"  {message.get('percent_done', 0) * 100:.0f}% of {message.get('total_bytes', 0):,} bytes")
        elif message.get("message_type") == "summary":
            summary = message
        elif message.get("message_type") == "error":
            detail = message.get("error")
            detail = detail.get("message", detail) if isinstance(detail, dict) else detail
            unread.append(f"{message.get('item', '?')}: {detail}")
    error = process.stderr.read()
    if process.wait() != 0 and not summary and LOCKED in error:
        raise Locked(error)  # whole: its last line is restic's hint, not the lock
    if process.returncode != 0 and summary.get("snapshot_id"):
        # Exit 3: some file could not be read, and restic wrote a snapshot without it. An
        # incomplete snapshot must never become `latest`.
        restic("forget", summary["snapshot_id"], check=False)
    if process.returncode != 0 or not summary:
        # A file restic could not read fails the run (and writes no snapshot): say which.
        raise Failed(f"restic backup: {unread[0] if unread else last_line(error)}"
                     + (f" (and {len(unread) - 1} more)" if len(unread) > 1 else ""))
    say(f"snapshot {summary['snapshot_id'][:8]}: {summary.get('total_bytes_processed', 0):,} bytes, "
        f"{summary.get('data_added', 0):,} added to the repository")
    return summary


# -- status and notifications -----------------------------------------------------------

def read_status():
    try:
        with open(STATUS_FILE) as f:
            return json.load(f)
    except (FileNotFoundError, ValueError):
        return {}


def write_json(path, data):
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".status-")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def notify(title, body):
    try:
        with open(f"{SECRETS}/notify") as f:
            urls = [line.strip() for line in f if line.strip() and not line.startswith("#")]
    except FileNotFoundError:
        return
    if not urls:
        return
    try:
        import apprise

        sender = apprise.Apprise()
        for url in urls:
            sender.add(url)
        if not sender.notify(title=title, body=body):
            say("notification: apprise could not deliver it")
    except Exception as exc:  # a notification must never turn a result into a crash
        say(f"notification failed: {exc}")


def record(kind, ok, detail, error=None):
    """The state file after a run or a drill, and the notification it calls for."""
    repository = env("BACKUP_REPOSITORY") if ok and kind == "backup" else None
    status, news = recorded(read_status(), kind, ok, detail, error, now().isoformat(timespec="seconds"), repository)
    write_json(STATUS_FILE, status)
    where = f"{env('BACKUP_PROJECT')} on {host()}"
    if news is not None:
        notify(f"{news[0]}: {where}", news[1])


def recorded(status, kind, ok, detail, error, when, repository=None):
    """(STATUS with the outcome of a run or a drill at WHEN, the notification it calls for:
    (title's start, body) or None). A failure is always told, a success only when it ends
    failures (a recovery); a successful run adds its REPOSITORY to those it wrote to."""
    entry = status.get(kind, {})
    was_failing = bool(entry.get("failures"))
    entry["last_attempt"] = when
    if ok:
        entry.update(last_success=entry["last_attempt"], last_error=None, failures=0, **detail)
        if kind == "backup" and repository not in entry.setdefault("repositories", []):
            entry["repositories"].append(repository)
    else:
        entry.update(last_error=error, last_failure=entry["last_attempt"], failures=entry.get("failures", 0) + 1)
    status[kind] = entry
    what = "backup" if kind == "backup" else "restore drill"
    if not ok:
        return status, (f"{what} FAILED", error)
    if was_failing:
        return status, (f"{what} recovered", f"{what} succeeded again at {entry['last_success']}")
    return status, None


def run():
    with lock() as held:
        if not held:
            say("another backup run is under way: this one stops")
            return 75
        try:
            with using(exclusive=True):
                detail = take()
        except Exception as exc:  # noqa: BLE001 - every failure is recorded and notified
            error = str(exc)
            say(f"backup FAILED: {error}")
            record("backup", False, {}, error)
            try:
                clear_dumps()
            except OSError:
                pass
            return 1
        record("backup", True, detail)
        say(f"backup done in {detail['seconds']} s: snapshot {detail['snapshot']}")
        return 0


class lock:
    def __enter__(self):
        self.file = open(LOCK_FILE, "a")
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def __exit__(self, *exc):
        self.file.close()
        return False


class using:
    """USE_FILE, shared (readers) or exclusive (a run), waited for: a run waits for the
    drills and restores under way, which wait for it in turn."""

    def __init__(self, exclusive=False):
        self.mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH

    def __enter__(self):
        self.file = open(USE_FILE, "a")
        try:
            fcntl.flock(self.file, self.mode | fcntl.LOCK_NB)
        except BlockingIOError:
            print("waiting for " + ("the drills and restores under way" if self.mode == fcntl.LOCK_EX
                                    else "the backup run under way"), file=sys.stderr, flush=True)
            fcntl.flock(self.file, self.mode)
        return self

    def __exit__(self, *exc):
        self.file.close()
        return False


def reading(command):
    """COMMAND, run while holding USE_FILE shared."""
    def run_reading(*args):
        with using():
            return command(*args)
    return run_reading


def interval(expression):
    """Seconds between two firings of a cron EXPRESSION (the longest of the next few)."""
    from croniter import croniter

    it = croniter(expression, datetime.datetime.now().astimezone())
    return longest_gap([it.get_next(float) for _ in range(6)])


def longest_gap(times):
    """The longest time between two consecutive TIMES (a schedule's next firings)."""
    return max(b - a for a, b in zip(times, times[1:]))


def status():
    state = read_status()
    state.update(verdict(state, 2 * interval(env("BACKUP_SCHEDULE")), now()))
    state.update(schedule=env("BACKUP_SCHEDULE"), drill_schedule=env("BACKUP_DRILL", ""),
                 repository=repository_shown())
    print(json.dumps(state, sort_keys=True))
    return 0


def verdict(state, limit, at):
    """What the state file says at AT: the last success's age in seconds (None: there is
    none), overdue when it is none or older than LIMIT, failing when the last run or drill failed."""
    backup = state.get("backup", {})
    last = backup.get("last_success")
    age = (at - datetime.datetime.fromisoformat(last)).total_seconds() if last else None
    return {"age": age, "limit": limit, "overdue": age is None or age > limit,
            "failing": bool(backup.get("failures") or state.get("drill", {}).get("failures"))}


# -- reading snapshots ------------------------------------------------------------------

def snapshots():
    listed = json.loads(restic("snapshots", "--json", "--host", host(), "--host", legacy_host()).stdout or "[]")
    rows = [snapshot_row(snap, host()) for snap in listed]
    for row in rows:
        stats = restic("stats", "--json", "--mode", "restore-size", row["id"], check=False)
        row["bytes"] = json.loads(stats.stdout).get("total_size") if stats.returncode == 0 else None
        manifest = restic("dump", row["id"], MANIFEST, check=False)
        try:
            data = checked_manifest(manifest.stdout, row["id"]) if manifest.returncode == 0 else None
        except Failed:
            data = None  # listed with what restic knows of it: its holdings are not believed
        if data is not None:
            row.update(holdings(data))
    print(json.dumps(rows))
    return 0


def snapshot_row(snap, place):
    """A listed snapshot of restic's as `snapshots` prints it: its time to the second, and
    legacy when another host than PLACE (the project's, before each place had its own) took it."""
    return {"id": snap["short_id"], "time": snap["time"][:19] + "Z" if snap["time"].endswith("Z") else snap["time"],
            "paths": snap.get("paths", []), "tags": snap.get("tags", []), "legacy": snap.get("hostname") != place}


def holdings(manifest):
    """What a snapshot holds, from its checked MANIFEST: each database's rows, the media files."""
    return {"databases": {n: sum(d["tables"].values()) for n, d in manifest["databases"].items()},
            "media_files": len(manifest["media"])}


def resolve(snapshot):
    """A snapshot id of this place (`latest` included; a legacy one named by its id), or a
    one-line refusal: another place's snapshots are not this place's to restore. (restic
    applies --host to `latest` only, not to a snapshot named by its id.)"""
    # An id restic does not know is an error of its own; `latest` of no snapshot is none.
    result = restic("snapshots", "--json", "--host", host(), snapshot, check=snapshot == "latest")
    listed = json.loads(result.stdout or "[]") if result.returncode == 0 else []
    found = listed[-1] if listed else None
    if found is None or found.get("hostname") not in (host(), legacy_host()):
        whose = f" (it is {found.get('hostname')}'s)" if found else ""
        older = ""
        if snapshot == "latest" and json.loads(restic("snapshots", "--json", "--host", legacy_host()).stdout or "[]"):
            older = (f"; it holds snapshots of {legacy_host()}, taken before each place had its own: "
                     "name one by its id (inv backup.snapshots)")
        raise Failed(f"no snapshot {snapshot} of {host()} in the repository{whose}{older}")
    if found["hostname"] != host():
        print(f"snapshot {snapshot} was taken before each place had its own ({legacy_host()}): "
              "restoring it as you named it", file=sys.stderr, flush=True)
    return found["short_id"]


def manifest_of(snapshot):
    result = restic("dump", snapshot, MANIFEST, check=False)
    if result.returncode != 0:
        raise Failed(f"snapshot {snapshot} has no manifest: {last_line(result.stderr)}")
    return checked_manifest(result.stdout, snapshot)


DATABASE_NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")
SHA256 = re.compile(r"[0-9a-f]{64}")


def checked_manifest(text, snapshot):
    """A snapshot's manifest, its shape checked before any of it names a file, a database or
    a command's argument (whoever holds the password may write one): database names of the
    stack's grammar, each dump NAME.dump, SHA-256s, row counts, media paths inside the folder."""
    try:
        manifest = json.loads(text)
        dbs, media = manifest["databases"], manifest["media"]
        ok = isinstance(dbs, dict) and isinstance(media, dict) and all(
            isinstance(name, str) and DATABASE_NAME.fullmatch(name) and isinstance(d, dict)
            and d.get("file") == f"{name}.dump" and isinstance(d.get("sha256"), str) and SHA256.fullmatch(d["sha256"])
            and isinstance(d.get("tables"), dict)
            and all(isinstance(t, str) and type(n) is int for t, n in d["tables"].items())
            for name, d in dbs.items()) and all(
            isinstance(path, str) and not path.startswith("/") and ".." not in path.split("/")
            and isinstance(digest, str) and SHA256.fullmatch(digest) for path, digest in media.items())
    except (ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        raise Failed(f"the manifest of snapshot {snapshot} is not one a backup run writes: not trusting it")
    return manifest


def dump(snapshot, path):
    """One dump of SNAPSHOT on standard output, after its sha256 matched the manifest."""
    snapshot = resolve(snapshot)
    manifest = manifest_of(snapshot)
    name = os.path.basename(path)
    expected = next((d["sha256"] for d in manifest["databases"].values() if d["file"] == name), None)
    if expected is None:
        raise Failed(f"snapshot {snapshot} holds no {name}")
    with tempfile.TemporaryDirectory(dir=STATE) as tmp:
        local = os.path.join(tmp, name)
        with open(local, "wb") as out:
            restic("dump", snapshot, f"{DUMPS}/{name}", stdout=out)
        if sha256(local) != expected:
            raise Failed(f"{name} in snapshot {snapshot} does not match its manifest's sha256: not restoring it")
        with open(local, "rb") as f:
            shutil.copyfileobj(f, sys.stdout.buffer)
    return 0


def media(snapshot):
    """The media folder of SNAPSHOT as a gzip'd tar rooted at the volume (`./` first, with
    the owner and mode of the live media volume's root: the snapshot's are not trusted), on
    standard output; every file's sha256 checked against the manifest and the count too,
    before the last byte is written (the caller keeps the output only when this exits 0,
    and checks every entry again as any volume restore does)."""
    import gzip
    import tarfile

    snapshot = resolve(snapshot)
    manifest = manifest_of(snapshot)
    live = os.stat(MEDIA)
    expected, root = manifest["media"], {"uid": live.st_uid, "gid": live.st_gid, "mode": live.st_mode & 0o777}
    # restic failing before its first byte (another place's run locks the repository, say)
    # is its own message, and waited for when it is that lock; never a tar error.
    for wait in lock_waits():
        process = subprocess.Popen(["restic", *sftp_options(), "dump", "--archive", "tar", snapshot, MEDIA],
                                   env=restic_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE)
        if process.stdout.peek(1):
            break
        error = process.stderr.read()
        process.wait()
        if not wait(error):
            raise Failed(f"restic dump of the media: {last_line(error)}")
    prefix = MEDIA.lstrip("/") + "/"
    seen = 0
    with gzip.GzipFile(fileobj=sys.stdout.buffer, mode="wb", compresslevel=1) as gz, \
            tarfile.open(fileobj=gz, mode="w|", format=tarfile.PAX_FORMAT) as out:
        top = tarfile.TarInfo("./")
        top.type, top.uid, top.gid, top.mode = tarfile.DIRTYPE, root["uid"], root["gid"], root["mode"]
        out.addfile(top)
        with tarfile.open(fileobj=process.stdout, mode="r|") as dumped:
            for member in dumped:
                name = member.name.lstrip("/")
                if not name.startswith(prefix) or not (member.isfile() or member.isdir()) \
                        or ".." in name.split("/"):
                    raise Failed(f"unexpected entry {member.name!r} in the media of {snapshot}")
                member.name = "./" + name[len(prefix):].rstrip("/")
                member.uname = member.gname = ""
                # A long or non-ASCII name travels in a pax record, which would beat member.name.
                member.pax_headers = {k: v for k, v in member.pax_headers.items()
                                      if k not in ("path", "linkpath", "uname", "gname")}
                if member.isfile():
                    relative, digest, source = member.name[2:], hashlib.sha256(), dumped.extractfile(member)
                    with tempfile.SpooledTemporaryFile(max_size=1 << 24, dir=STATE) as spool:
                        for block in iter(lambda: source.read(1 << 20), b""):
                            digest.update(block)
                            spool.write(block)
                        if digest.hexdigest() != expected.get(relative):
                            raise Failed(f"media/{relative} in {snapshot} does not match its manifest's sha256")
                        spool.seek(0)
                        out.addfile(member, spool)
                    seen += 1
                else:
                    out.addfile(member)
    if process.wait() != 0:
        raise Failed(f"restic dump of the media: {last_line(process.stderr.read())}")
    if seen != len(expected):
        raise Failed(f"the media of {snapshot} holds {seen} files, its manifest {len(expected)}")
    return 0


# -- the restore drill ------------------------------------------------------------------

def drill(snapshot="latest"):
    started = time.monotonic()
    try:
        snapshot = resolve(snapshot)
        problems = drill_snapshot(snapshot)
    except Exception as exc:  # noqa: BLE001 - every failure is recorded and notified
        problems = [str(exc)]
    took = round(time.monotonic() - started, 1)
    if problems:
        for problem in problems:
            say(f"  {problem}")
        say(f"FAIL in {took} s")
        record("drill", False, {}, f"snapshot {snapshot}: " + "; ".join(problems[:5]))
        return 1
    say(f"PASS in {took} s (snapshot {snapshot})")
    record("drill", True, {"snapshot": snapshot, "seconds": took})
    return 0


def drill_snapshot(snapshot):
    with tempfile.TemporaryDirectory(dir=STATE, prefix="drill-") as tmp:
        say(f"restoring snapshot {snapshot}")
        restic("restore", snapshot, "--target", tmp)
        root = tmp + DUMPS
        with open(f"{root}/manifest.json") as f:
            manifest = checked_manifest(f.read(), snapshot)
        problems = []
        if manifest.get("postgres_major") != postgres_major():
            problems.append(f"taken with PostgreSQL {manifest.get('postgres_major')}, drilled with {postgres_major()}")
        for name, expected in manifest["databases"].items():
            if sha256(f"{root}/{expected['file']}") != expected["sha256"]:
                problems.append(f"{expected['file']}: sha256 differs from the manifest")
        if not problems:
            problems += restore_databases(tmp, root, manifest)
        restored = tree_sums(tmp + MEDIA) if os.path.isdir(tmp + MEDIA) else {}
        return problems + media_problems(manifest["media"], restored)


def media_problems(listed, restored):
    """How the RESTORED media (relative path: sha256) differ from those the manifest LISTED."""
    problems = []
    if len(restored) != len(listed):
        problems.append(f"media: {len(restored)} files, the manifest lists {len(listed)}")
    problems += [f"media/{path}: missing" for path in sorted(set(listed) - set(restored))]
    problems += [f"media/{path}: not in the manifest" for path in sorted(set(restored) - set(listed))]
    problems += [f"media/{path}: sha256 differs" for path, digest in listed.items()
                 if path in restored and restored[path] != digest]
    return problems


def restore_databases(tmp, root, manifest):
    """Each dump into a throwaway server (this image's PostgreSQL, on a socket in TMP, no
    TCP at all), then every table's rows counted against the manifest.

    Everything that reads the dump runs as the app's role, a login role with no more rights
    than the app has on the live server (not a superuser, owner of its database alone): a
    dump is whatever the app's role could write, and the superuser that `pg_restore --role`
    would switch from can be switched back to by the dump's own SQL (RESET ROLE in a
    function a CHECK constraint calls while rows are loaded), and then run programs as this
    service's user. The superuser only makes the role and the databases."""
    data, sock = f"{tmp}/pgdata", f"{tmp}/sock"
    os.mkdir(sock)
    subprocess.run(["initdb", "-D", data, "-U", "postgres", "--auth=trust", "--no-sync"], check=True,
                   capture_output=True)
    problems = []
    try:
        subprocess.run(["pg_ctl", "-D", data, "-w", "-l", f"{tmp}/server.log", "-o",
                        f"-c listen_addresses='' -c unix_socket_directories={sock} -c fsync=off", "start"],
                       check=True, capture_output=True)
        superuser = dict(os.environ, PGHOST=sock, PGUSER="postgres")
        subprocess.run(["psql", "-XAtq", "-d", "postgres", "-c",
                        f"CREATE ROLE {APP_ROLE} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION "
                        "NOBYPASSRLS"], env=superuser, check=True, capture_output=True)
        e = dict(os.environ, PGHOST=sock, PGUSER=APP_ROLE)
        for name, expected in manifest["databases"].items():
            say(f"loading {name}")
            subprocess.run(["createdb", "-O", APP_ROLE, name], env=superuser, check=True, capture_output=True)
            loaded = subprocess.run(["pg_restore", "--exit-on-error", "--no-owner", "--no-privileges", "-d", name,
                                     f"{root}/{expected['file']}"], env=e, capture_output=True, text=True)
            if loaded.returncode != 0:
                problems.append(f"{name}: pg_restore failed: {last_line(loaded.stderr)}")
                continue
            psql = subprocess.Popen(["psql", "-XAtq", "-v", "ON_ERROR_STOP=1", "-d", name], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=e)
            counts = counts_of(psql)
            psql.stdin.close()
            psql.wait()
            problems += count_problems(name, expected["tables"], counts)
            problems += unapplied_migrations(name, e)
            say(f"  {len(counts)} tables, {sum(counts.values()):,} rows")
    finally:
        subprocess.run(["pg_ctl", "-D", data, "-m", "immediate", "stop"], capture_output=True)
    return problems


def count_problems(name, counted, counts):
    """The tables of database NAME whose restored row COUNTS differ from those the backup COUNTED."""
    return [f"{name}.{table}: {counts.get(table)} rows, the backup counted {rows}"
            for table, rows in counted.items() if counts.get(table) != rows]


def unapplied_migrations(name, e):
    """What `manage.py migrate --check` finds against the restored NAME: migrations the
    running code has (EXPECTED, written by the tasks at each start) that it lacks."""
    try:
        with open(EXPECTED) as f:
            expected = set(json.load(f).get(name, []))
    except FileNotFoundError:
        return []
    result = subprocess.run(["psql", "-XAtq", "-d", name, "-c", "SELECT app || '.' || name FROM django_migrations"],
                            env=e, capture_output=True, text=True)
    if result.returncode != 0:
        return [f"{name}: no django_migrations table: {last_line(result.stderr)}"] if expected else []
    problems = migration_problems(name, expected, result.stdout.split())
    if problems:
        return problems
    say(f"  migrate --check: all {len(expected)} migrations of the running code applied")
    return []


def migration_problems(name, expected, applied):
    """The migrations of the running code (EXPECTED) that database NAME has not APPLIED, as
    one problem (the first five named), or none."""
    missing = sorted(expected - set(applied))
    if missing:
        return [f"{name}: {len(missing)} migration(s) of the running code not applied (migrate --check fails): "
                + ", ".join(missing[:5])]
    return []


# -- the schedule -------------------------------------------------------------------------

def schedule():
    """Run and drill at their times, for ever; a SIGTERM ends the wait at once."""
    from croniter import croniter

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    base = datetime.datetime.now().astimezone()
    jobs = {"backup": croniter(env("BACKUP_SCHEDULE"), base)}
    if env("BACKUP_DRILL", ""):
        jobs["drill"] = croniter(env("BACKUP_DRILL"), base)
    due = {name: it.get_next(float) for name, it in jobs.items()}
    say("schedule: " + ", ".join(f"{name} next at {datetime.datetime.fromtimestamp(t).astimezone():%Y-%m-%d %H:%M %Z}"
                                 for name, t in due.items()))
    while True:
        name = min(due, key=due.get)
        time.sleep(max(0.0, due[name] - time.time()))
        say(f"{name}: starting at {now():%Y-%m-%d %H:%M:%S} UTC")
        # A child process: a crash or a kill of the run leaves the schedule going.
        try:
            subprocess.run([sys.executable, __file__, "run" if name == "backup" else "drill"], timeout=RUN_LIMIT)
        except subprocess.TimeoutExpired:
            say(f"{name}: stopped after {RUN_LIMIT // 3600} h; the next one runs at its time")
        due[name] = next_after(jobs[name], due[name], time.time())


def next_after(job, due, at):
    """JOB's next firing after AT, from the one DUE that was run: a run longer than the
    interval skips the firings it overran, never piles them up."""
    while due <= at:
        due = job.get_next(float)
    return due


def main(argv):
    commands = {"schedule": schedule, "run": run, "drill": reading(drill), "status": status,
                "snapshots": reading(snapshots), "dump": reading(dump), "media": reading(media), "keyscan": keyscan, "key": lambda: print(open(f"{SECRETS}/restic_password").read().strip())}
    if not argv or argv[0] not in commands:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        return commands[argv[0]](*argv[1:]) or 0
    except Failed as exc:
        print(exc, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
