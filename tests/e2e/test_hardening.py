"""The security probe's cases, against the running stack: what Nginx shows, what a forged
archive or dump can do (nothing), what two tasks at once do to a volume, and what a task
interrupted (Ctrl-C) or killed at any step leaves behind."""
import hashlib
import io
import itertools
import json
import os
import re
import signal
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from tasks.plans import archives

from .conftest import ROOT
from testkit import INV

pytestmark = pytest.mark.e2e

KEY_FILE = ROOT / "config/secrets/backup_key"
FORGED = itertools.count()


@pytest.fixture(scope="module")
def up(stack):
    stack.inv("up")
    yield stack
    stack.purge()  # the next module starts from nothing: no containers, no volumes


def test_nginx_names_no_version_and_static_files_are_nosniff(up):
    status, headers, _ = up.get("/")
    assert status == 200 and headers["Server"] == "nginx"
    status, headers, body = up.get("/nonexistent-page-for-a-404")
    assert b"nginx/" not in body
    css = next(line for line in up.get("/admin/login/")[2].decode().split('"') if line.endswith(".css"))
    status, headers, _ = up.get(css)
    assert status == 200 and headers["X-Content-Type-Options"] == "nosniff"


def test_an_uploaded_page_is_not_served_as_a_page_of_the_site(up):
    up.compose("exec", "-T", "djangoapp", "sh", "-c",
               "printf '<script>alert(document.cookie)</script>' > /srv/media/x.html; "
               "printf '<svg xmlns=\"http://www.w3.org/2000/svg\"><script>1</script></svg>' > /srv/media/x.svg; "
               "printf 'png' > /srv/media/x.png; ln -sf /etc/passwd /srv/media/etcpasswd-link")
    for name in ("x.html", "x.svg"):
        status, headers, _ = up.get(f"/media/{name}")
        assert status == 200 and headers["Content-Type"] == "application/octet-stream", (name, headers)
        assert "sandbox" in headers["Content-Security-Policy"] and headers["X-Content-Type-Options"] == "nosniff"
    assert up.get("/media/x.png")[1]["Content-Type"] == "image/png"
    status, _, body = up.get("/media/etcpasswd-link")
    assert status in (403, 404) and b"root:" not in body


def test_public_healthz_names_no_database_but_inside_it_does(up):
    assert up.health() == (200, {"status": "ok"})
    assert up.health_inside() == (200, {"status": "ok", "databases": {"database1": "ok"}})


# -- archives ------------------------------------------------------------------------------

def _backup(s, volume="media_volume") -> Path:
    out = s.inv("volume.archive", "--volume", volume).stdout
    return ROOT / "backups" / next(w for w in out.split() if w.endswith((".tar.zst", ".tar.gz"))).rsplit("/", 1)[-1]


def _media(s) -> str:
    return s.compose("exec", "-T", "djangoapp", "sh", "-c", "cd /srv/media && ls -la --time-style=+ | sort").stdout


def _forge(real: Path, entries, sign=True, sha_file=None, key_file=KEY_FILE) -> Path:
    """An archive beside REAL holding ENTRIES (TarInfo, bytes), gzip, with a manifest copied
    from REAL's and its hash recomputed; signed with the project's key (in KEY_FILE) or not."""
    data = json.loads(real.with_name(real.name + ".json").read_text())
    name = f"{data['project']}_{data['subject']}_20990101T0000{next(FORGED):02d}Z.tar.gz"
    forged = real.with_name(name)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for info, content in entries:
            tar.addfile(info, io.BytesIO(content) if content is not None else None)
    forged.write_bytes(buffer.getvalue())
    digest = hashlib.sha256(forged.read_bytes()).hexdigest()
    fields = {k: v for k, v in data.items() if k not in ("hmac", "format")}
    fields.update(archive=name, sha256=digest, compression="gzip")
    key = key_file.read_text().strip().encode() if sign else b"a key that is not the project's"
    forged.with_name(name + ".json").write_text(archives.manifest(key, **fields))
    forged.with_name(name + ".sha256").write_text(sha_file or f"{digest}  {name}\n")
    return forged


def _entry(name, kind=tarfile.REGTYPE, mode=0o644, uid=10001, gid=10001, link="", content=b""):
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.uid, info.gid, info.linkname = kind, mode, uid, gid, link
    info.size = len(content) if kind == tarfile.REGTYPE else 0
    return info, content if kind == tarfile.REGTYPE else None


ROOT_DIR = _entry("./", tarfile.DIRTYPE, 0o755)


def _refused(s, archive, message):
    before = _media(s)
    result = s.inv("volume.restore", str(archive), "--yes", check=False)
    assert result.returncode == 1, result.stdout
    assert message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert _media(s) == before
    if "_20990101T" in archive.name:  # forged here: gone, so that no later test takes it for a backup
        for path in archives.companions(archive):
            path.unlink()


def test_an_archive_not_signed_with_the_key_is_refused(up):
    real = _backup(up)
    forged = _forge(real, [ROOT_DIR, _entry("./a.html", content=b"<script>1</script>")], sign=False)
    _refused(up, forged, "is not signed with this project's backup key")


def test_the_checksum_file_must_agree_with_the_manifest(up):
    real = _backup(up)
    (real.with_name(real.name + ".sha256")).write_text(f"deadbeef  {real.name}\n")
    _refused(up, real, "disagree on the SHA-256")


@pytest.mark.parametrize("entry, message", [
    (_entry("./su", mode=0o4755, uid=0, gid=0, content=b"#!/bin/sh\n"), "entry './su' is setuid or setgid"),
    (_entry("./null", tarfile.CHRTYPE, 0o666, 0, 0), "entry './null' is a device node"),
    (_entry("./fifo", tarfile.FIFOTYPE), "entry './fifo' is a FIFO"),
    (_entry("./etcpasswd-link", tarfile.SYMTYPE, 0o777, link="/etc/passwd"), "outside the volume"),
    (_entry("./.restore-safety/PG_VERSION", content=b"15\n"), "reserves for itself (.restore-safety)"),
    (_entry("./x", uid=4242, gid=4242, content=b"x"), "belongs to 4242:4242, an owner the manifest does not list"),
])
def test_a_signed_archive_with_a_forbidden_entry_is_refused_and_nothing_changes(up, entry, message):
    # Signed with the key: as a backup of a volume someone had already tampered with would be.
    real = _backup(up)
    assert "10001:10001" in json.loads(real.with_name(real.name + ".json").read_text())["owners"]
    _refused(up, _forge(real, [ROOT_DIR, _entry("./ok.txt", content=b"fine"), entry]), message)


def test_two_backups_of_one_volume_at_once_both_complete(up):
    argv = [*INV, "volume.archive", "--volume", "media_volume"]
    runs = [subprocess.Popen(argv, cwd=up.root, env=up.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    outs = [run.communicate(timeout=300) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outs
    names = {w for out, _ in outs for w in out.split() if w.endswith((".tar.zst", ".tar.gz"))}
    assert len(names) == 2, outs
    assert not list((ROOT / "backups").glob(".*.tmp"))


# -- dumps --------------------------------------------------------------------------------

def _sql(s, sql, database="database1"):
    return s.compose("exec", "-T", "database1", "psql", "-U", "database1", "-d", database, "-v", "ON_ERROR_STOP=1",
                     "-Atc", sql).stdout.strip()


def _dump_of(s, database: str, claimed: str, tmp: Path) -> Path:
    """A pg_dump of DATABASE, signed as a dump of CLAIMED."""
    raw = subprocess.run(["docker", "compose", "--project-name", s.project, "exec", "-T", "database1", "pg_dump",
                          "--format", "custom", "-U", "database1", "-d", database], cwd=s.root, capture_output=True,
                         check=True).stdout
    name = f"{s.project}_{claimed}_20990101T000000Z.dump"
    dump = tmp / name
    dump.write_bytes(raw)
    digest = hashlib.sha256(raw).hexdigest()
    dump.with_name(name + ".sha256").write_text(f"{digest}  {name}\n")
    dump.with_name(name + ".json").write_text(archives.manifest(
        KEY_FILE.read_text().strip().encode(), kind="dump", project=s.project, subject=claimed, database=claimed,
        archive=name, sha256=digest, created="2099-01-01T00:00:00+00:00"))
    return dump


def test_a_dump_of_another_database_needs_from(up, tmp_path):
    _backup(up)  # the key exists
    users = _sql(up, "SELECT count(*) FROM auth_user")
    dump = _dump_of(up, "database1", "database2", tmp_path)
    result = up.inv("db.load", "database1", str(dump), "--yes", check=False)
    assert result.returncode == 1
    assert "is a dump of database2, not database1: add --from database2" in result.stderr
    up.inv("db.load", "database1", str(dump), "--from", "database2", "--yes")
    assert _sql(up, "SELECT count(*) FROM auth_user") == users
    assert _sql(up, "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE relname = 'auth_user'") == "app"


def test_a_dump_that_runs_a_program_is_refused(up, tmp_path):
    _backup(up)
    _sql(up, "DROP DATABASE IF EXISTS evil", "postgres")
    _sql(up, "CREATE DATABASE evil", "postgres")
    # COPY is refused in an IMMUTABLE function itself, not in a VOLATILE one it calls. The
    # program reads what COPY writes first: one that exits before may fail the COPY on EPIPE.
    _sql(up, "CREATE TABLE t (x int); INSERT INTO t VALUES (1); "
             "CREATE FUNCTION g() RETURNS int LANGUAGE plpgsql VOLATILE AS "
             "$$ BEGIN EXECUTE 'COPY (SELECT 1) TO PROGRAM ''cat > /dev/null; id > /tmp/pwned'''; RETURN 1; END $$; "
             "CREATE FUNCTION f(int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $$ BEGIN PERFORM public.g(); RETURN $1; END $$; "
             "CREATE INDEX ON t (f(x))", "evil")
    # Made by the superuser, the index ran the program: the dump is a real weapon.
    assert up.compose("exec", "-T", "database1", "test", "-e", "/tmp/pwned", check=False).returncode == 0
    up.compose("exec", "-T", "database1", "rm", "-f", "/tmp/pwned")
    tables = _sql(up, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
    dump = _dump_of(up, "evil", "database1", tmp_path)
    result = up.inv("db.load", "database1", str(dump), "--yes", check=False)
    assert result.returncode == 1 and "pg_restore" in result.stderr, result.stderr
    assert "must be superuser" in result.stdout + result.stderr or "permission denied" in result.stdout + result.stderr
    assert up.compose("exec", "-T", "database1", "test", "-e", "/tmp/pwned", check=False).returncode == 1
    assert _sql(up, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == tables
    assert up.health() == (200, {"status": "ok"})
    _sql(up, "DROP DATABASE evil", "postgres")


# -- interrupted and killed runs -------------------------------------------------------------

SERVICES = {"djangoapp", "nginx", "front", "database1"}


def _running(s) -> set[str]:
    return set(s.compose("ps", "--services", "--status", "running").stdout.split())


def _signal_at(s, args, pattern, sig, delay=0.2, ready=None):
    """Run `inv ARGS` in a process group of its own, as a terminal runs it, and send SIG to
    the whole group (what Ctrl-C does: the task and the command it runs both get it) DELAY
    seconds after the first line of its output that matches PATTERN (a step's command,
    echoed as it starts) and, with READY, once READY() says the step has begun its work (a
    busy machine can take longer than DELAY to start a command). Returns (exit status, output)."""
    proc = subprocess.Popen([*INV, *args], cwd=s.root, env=s.env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL, start_new_session=True)
    seen, sent = [], False
    try:
        for line in proc.stdout:
            seen.append(line)
            if not sent and re.search(pattern, line):
                until = time.monotonic() + 60
                while ready and not ready() and proc.poll() is None and time.monotonic() < until:
                    time.sleep(0.01)
                time.sleep(delay)
                os.killpg(proc.pid, sig)
                sent = True
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    output = "".join(seen)
    assert sent, f"no line matched {pattern!r}:\n{output}"
    return proc.returncode, output


def _serving(s, timeout=20) -> int:
    deadline = time.monotonic() + timeout
    while True:
        try:
            status = s.get("/healthz")[0]
        except OSError:
            status = 0
        if status == 200 or time.monotonic() > deadline:
            return status
        time.sleep(0.5)


def _listing(s) -> str:
    """The media volume's entries (reserved names included), as the app sees them."""
    return s.compose("exec", "-T", "djangoapp", "sh", "-c", "cd /srv/media && ls -A | sort").stdout


@pytest.fixture(scope="module")
def two_media(up):
    """An archive of the media volume holding 'then.txt', and the volume holding 'now.txt'
    instead: (the archive, the listing of each)."""
    up.compose("exec", "-T", "djangoapp", "sh", "-c", "cd /srv/media && rm -rf ./* && echo then > then.txt")
    archive, then = _backup(up), _listing(up)
    up.compose("exec", "-T", "djangoapp", "sh", "-c", "cd /srv/media && rm -f then.txt && echo now > now.txt")
    return archive, then, _listing(up)


RESTORE_STEPS = {
    "stopping": r"compose .* stop djangoapp nginx",
    "moving aside": r"--volume hello-e2e_media_volume:/data .*mkdir \.restore-safety",
    "unpacking": r"tar --extract",
    "starting again": r"compose .* start djangoapp nginx",
    "starting the databases": r"compose .* up .*--no-deps database1",
    "reloading the front": r"--wait .*nginx front",
    "dropping the safety copy": r"mv -T -- \.restore-safety \.restore-discard",
}


# No "rolling out" step: the app started again after the unpacking is kept once its own health
# test passes (roll_out asks it at once, not after the engine's tick), so whether a restore
# starts a second app container at all depends on how fast Gunicorn boots. An interrupt in the
# middle of a rollout needs a test of its own that makes one happen (a deploy of new code).
@pytest.mark.parametrize("step", RESTORE_STEPS)
def test_a_restore_interrupted_at_any_step_leaves_the_site_serving(up, two_media, step):
    archive, then, now = two_media
    before = _listing(up)
    assert before in (then, now)
    _signal_at(up, ["volume.restore", str(archive), "--yes"], RESTORE_STEPS[step], signal.SIGINT)
    assert _serving(up) == 200
    assert SERVICES <= _running(up)
    # All of the archive, or all of what was there: nothing of a restore half done.
    assert _listing(up) in (then, before), _listing(up)


def _never_started(s) -> list[str]:
    """Containers on the media volume that were made and never started: what a `docker run
    --rm` cut while it makes its container leaves (--rm removes a container once it ran)."""
    return s.docker("ps", "--all", "--quiet", "--filter", f"volume={s.project}_media_volume",
                    "--filter", "status=created").stdout.split()


@pytest.mark.parametrize("delay", [0.0, 0.04, 0.08, 0.12, 0.2])
def test_a_ctrl_c_while_a_helper_container_is_made_leaves_none_behind(up, two_media, delay):
    """The safety copy's removal, a step Ctrl-C lets finish, interrupted DELAY seconds after
    it starts: somewhere in these the interrupt reaches `docker run` while it makes its
    container, before it forwards signals (which one depends on the machine's speed)."""
    archive, then, now = two_media
    before = _listing(up)
    _signal_at(up, ["volume.restore", str(archive), "--yes"], RESTORE_STEPS["dropping the safety copy"],
               signal.SIGINT, delay=delay)
    assert _serving(up) == 200
    assert _listing(up) == then
    assert _never_started(up) == []
    assert before in (then, now)


BACKUP_STEPS = {
    "stopping": r"compose .* stop djangoapp",
    "archiving": r"docker cp ",
    "starting again": r"compose .* start djangoapp",
}


@pytest.mark.parametrize("step", BACKUP_STEPS)
def test_a_backup_interrupted_at_any_step_leaves_the_site_serving(up, step):
    backups = ROOT / "backups"
    before = {p.name for p in backups.iterdir()}
    _signal_at(up, ["volume.archive", "--volume", "media_volume"], BACKUP_STEPS[step], signal.SIGINT)
    assert _serving(up) == 200
    assert SERVICES <= _running(up)
    new = {p.name for p in backups.iterdir()} - before
    # A backup finished (its manifest written last) or none: never a part of one.
    assert not [n for n in new if n.endswith(".tmp")], new


def _doctor(s) -> str:
    """`inv doctor`'s report (it fails on any finding; other checks may fail here too)."""
    return s.inv("doctor", check=False).stdout


def _in_media_volume(s, script):
    image = json.loads(s.compose("config", "--format", "json").stdout)["services"]["djangoapp"]["image"]
    s.docker("run", "--rm", "--network", "none", "--user", "0", "--volume", f"{s.project}_media_volume:/v",
             "--entrypoint", "sh", image, "-c", f"set -e; cd /v; {script}")


def test_a_restore_killed_before_it_was_verified_is_reported_then_undone(up, two_media):
    archive, then, now = two_media
    up.compose("exec", "-T", "djangoapp", "sh", "-c", "cd /srv/media && rm -rf ./* && echo now > now.txt")
    assert _listing(up) == now
    # Unpacked, its users started again, the stack not yet verified healthy with it.
    _signal_at(up, ["volume.restore", str(archive), "--yes"], r"^starting the stack after the restore", signal.SIGKILL,
               delay=0)
    report = _doctor(up)
    assert (f"FAIL {up.project}_media_volume holds .restore-safety, .restore-new, left by an interrupted restore\n"
            "     fix: `inv volume.archive --volume media_volume` settles it first (it was never verified: "
            "that puts back the content from before it)") in report, report
    # `inv up` settles it before it starts anything on the volume.
    out = up.inv("up", "--no-build").stdout
    assert "putting back the content from before it" in out
    assert _listing(up) == now
    assert "left by an interrupted restore" not in _doctor(up)
    out = up.inv("volume.archive", "--volume", "media_volume").stdout
    assert "left by an interrupted restore" not in out
    # The archive made then holds the volume's content alone: a restore takes it.
    up.inv("volume.restore", str(_newest_media(up)), "--yes")
    assert _listing(up) == now and _serving(up) == 200


def _newest_media(s) -> Path:
    found = sorted((ROOT / "backups").glob(f"{s.project}_media_volume_2*.tar.*.json"))
    return found[-1].with_suffix("")


def test_a_restore_killed_once_verified_is_reported_then_finished(up, two_media):
    """The safety copy of a verified restore renamed, not yet deleted: a kill during its
    deletion leaves this (made here as it would be: the deletion is a helper container,
    which goes on after its task is killed, so a kill cannot stop it on cue)."""
    archive, then, now = two_media
    up.compose("exec", "-T", "djangoapp", "sh", "-c", "cd /srv/media && rm -rf ./* && echo then > then.txt")
    _in_media_volume(up, "mkdir .restore-discard .restore-new; echo now > .restore-discard/now.txt")
    assert "it was verified: that deletes its safety copy" in _doctor(up)
    out = up.inv("volume.archive", "--volume", "media_volume").stdout
    assert "a restore verified healthy left its safety copy: deleting it" in out
    assert _listing(up) == then
    assert "left by an interrupted restore" not in _doctor(up)


def _databases(s) -> list[str]:
    return _sql(s, "SELECT datname FROM pg_database WHERE datname LIKE 'database1%' ORDER BY 1", "postgres").split()


def test_a_load_killed_before_its_swap_is_reported_then_dropped(up, tmp_path):
    _backup(up)  # the key exists
    users = _sql(up, "SELECT count(*) FROM auth_user")
    dump = _dump_of(up, "database1", "database1", tmp_path)
    _signal_at(up, ["db.load", "database1", str(dump), "--yes"], r"pg_restore", signal.SIGKILL, delay=0.1)
    (fresh,) = [name for name in _databases(up) if name.startswith("database1__load_")]
    assert (f"FAIL {fresh} in database1's server, left by an interrupted load\n"
            f"     fix: `inv db.dump database1` settles it first (dropping {fresh}: a load that was never swapped in)"
            ) in _doctor(up)
    out = up.inv("db.dump", "database1").stdout
    assert f"dropping {fresh}" in out
    assert _databases(up) == ["database1"]
    assert _sql(up, "SELECT count(*) FROM auth_user") == users
    assert "left by an interrupted load" not in _doctor(up)


def test_the_live_data_left_under_its_retired_name_is_renamed_back_never_dropped(up):
    """The state a load killed between its two renames would leave (made here: the swap is
    one transaction, so no kill leaves it; a stale copy beside it is dropped)."""
    users = _sql(up, "SELECT count(*) FROM auth_user")
    _sql(up, "CREATE DATABASE database1__load_20990101t000000z", "postgres")
    _sql(up, "ALTER DATABASE database1 WITH ALLOW_CONNECTIONS false; SELECT count(pg_terminate_backend(pid)) "
             "FROM pg_stat_activity WHERE datname = 'database1' AND pid <> pg_backend_pid(); "
             "ALTER DATABASE database1 RENAME TO database1__old_20990101t000000z", "postgres")
    report = _doctor(up)
    assert ("fix: `inv db.dump database1` settles it first (renaming database1__old_20990101t000000z back to "
            "database1: it holds database1's data") in report, report
    out = up.inv("db.dump", "database1").stdout
    assert "renaming database1__old_20990101t000000z back to database1" in out
    assert "dropping database1__load_20990101t000000z" in out
    assert _databases(up) == ["database1"]
    assert _sql(up, "SELECT count(*) FROM auth_user") == users
    assert _serving(up, timeout=30) == 200


def test_a_dump_killed_while_written_leaves_a_file_the_next_one_deletes(up):
    backups = ROOT / "backups"
    def writing():
        return {p for p in backups.glob(".*.tmp") if "_database1_" in p.name}

    before = writing()
    _signal_at(up, ["db.dump", "database1"], r"pg_dump", signal.SIGKILL, delay=0, ready=lambda: writing() - before)
    (left,) = writing() - before
    assert (f"FAIL backups/{left.name}: a file a killed task was writing\n"
            "     fix: the next task that writes a backup or a dump deletes it") in _doctor(up)
    out = up.inv("db.dump", "database1").stdout
    assert f"deleted {left.name}" in out and not left.exists()
    assert "a killed task was writing" not in _doctor(up)


def test_a_secret_left_half_made_by_a_killed_db_add_is_reported_then_deleted(copied_stack):
    """The temporary file of a secret being made (config/secrets/.NAME.XXXX.PID@HOST.tmp):
    what a kill between its write and its link leaves; made here as it would be (that
    window is microseconds wide: no kill hits it on cue)."""
    import socket
    gone = subprocess.Popen(["true"])
    gone.wait()
    secrets = copied_stack.root / "config/secrets"
    secrets.mkdir(mode=0o700, exist_ok=True)
    left = secrets / f".database2_password.k3yx9q2a.{gone.pid}@{socket.gethostname()}.tmp"
    left.write_text("a password\n")
    left.chmod(0o600)
    assert (f"FAIL config/secrets/{left.name}: a file a killed task was writing\n"
            "     fix: `inv db.add` or `inv db.remove` deletes it, or delete it yourself") in _doctor(copied_stack)
    out = copied_stack.inv("db.add", "database2").stdout
    assert f"deleted config/secrets/{left.name}" in out and not left.exists()
    assert (secrets / "database2_password").stat().st_mode & 0o777 == 0o600
