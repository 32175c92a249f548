"""Backups on a real engine, in a copy of the project: round trip, owners and modes, no
leftover volumes, refused archives, a killed backup, a restore that fails midway, logical
dumps."""
import json
import os
import re
import signal
import subprocess
import time

import pytest

from tasks.plans import archives
from testkit import INV

pytestmark = pytest.mark.e2e

NOTE = "from notes.models import Note; "


def notes(s):
    out = s.inv("manage", "--", "shell", "-c", NOTE + "print('notes', sorted(Note.objects.values_list('text', flat=True)))").stdout
    return out.split("notes ", 1)[1].strip()


def add_note(s, text):
    s.inv("manage", "--", "shell", "-c", NOTE + f"Note.objects.create(text={text!r})")


def app_exec(s, script):
    return s.compose("exec", "-T", "djangoapp", "python", "-c", script).stdout


def media_digest(s):
    return app_exec(s, "import hashlib, pathlib; p = pathlib.Path('/srv/media/upload.txt'); "
                       "print(hashlib.sha256(p.read_bytes()).hexdigest() if p.exists() else 'absent')").strip()


def latest(s, subject, extension=".tar.zst"):
    found = sorted((s.root / "backups").glob(f"{s.project}_{subject}_2*{extension}.json"))
    return found[-1].with_suffix("") if found else None


def in_volume(s, volume, script):
    """Run SCRIPT as root in a throwaway container (from the app image, which declares no
    VOLUME) with the stack's VOLUME at /v."""
    image = json.loads(s.compose("config", "--format", "json").stdout)["services"]["djangoapp"]["image"]
    return s.docker("run", "--rm", "--network", "none", "--user", "0", "--volume", f"{s.project}_{volume}:/v",
                    "--entrypoint", "sh", image, "-c", f"cd /v && {script}").stdout


def entries(s, volume, root_only=False):
    """{path: (uid, gid, mode)} of every entry of VOLUME, its root "." included; ROOT_ONLY for
    a volume in use (a walk of a running PostgreSQL's files can meet one it has just removed)."""
    depth = "-maxdepth 0 " if root_only else ""
    out = in_volume(s, volume, rf"find . {depth}-printf '%p\t%U\t%G\t%m\n'")
    return {path: tuple(rest) for path, *rest in (line.split("\t") for line in out.splitlines())}


ANONYMOUS = re.compile(r"[0-9a-f]{64}")


def anonymous_volumes(s):
    """Volumes without a name that no container uses: what a helper would leave behind."""
    out = s.docker("volume", "ls", "--quiet", "--filter", "dangling=true").stdout
    return {name for name in out.split() if ANONYMOUS.fullmatch(name)}


def started_at(s, service):
    container = s.compose("ps", "-q", service).stdout.strip()
    return s.docker("inspect", "--format", "{{.State.StartedAt}}", container).stdout.strip()


@pytest.fixture(scope="module")
def s(copied_stack):
    copied_stack.inv("up")
    add_note(copied_stack, "first")
    app_exec(copied_stack, "open('/srv/media/upload.txt', 'w').write('uploaded by a user\\n')")
    return copied_stack


def test_dry_backup_writes_nothing(s):
    out = s.inv("volume.archive", "--dry").stdout
    assert "[dry] bash -o pipefail -c 'umask 077; docker cp HELPER_CONTAINER:/data/. - | zstd" in out
    assert f"[dry] docker compose --project-name {s.project} stop database1" in out
    assert not (s.root / "backups").exists() or not list((s.root / "backups").iterdir())


def test_volume_list(s):
    out = s.inv("volume.list").stdout
    assert f"{s.project}_database1_volume" in out and "database1" in out
    assert "djangoapp, nginx (read-only)" in out


def test_round_trip_after_down_volumes(s):
    in_volume(s, "media_volume", "chmod 0775 .")  # not the mode a new volume gets
    out = s.inv("volume.archive").stdout
    for volume in ("database1_volume", "media_volume", "static_volume"):
        archive = latest(s, volume)
        assert archive and archive.exists(), out
        manifest = json.loads(archive.with_name(archive.name + ".json").read_text())
        assert manifest["volume"] == volume and len(manifest["sha256"]) == 64
        assert oct(archive.stat().st_mode & 0o777) == "0o600"
    assert json.loads(latest(s, "database1_volume").with_name(latest(s, "database1_volume").name + ".json").read_text())["postgres_major"] == "15"
    roots = {volume: entries(s, volume, root_only=True)["."] for volume in ("database1_volume", "media_volume")}
    s.inv("down", "--volumes", "--yes")
    assert "database1_volume" not in s.volumes()
    for volume in ("database1_volume", "media_volume"):
        s.inv("volume.restore", str(latest(s, volume)), "--yes")
    assert notes(s) == "['first']"
    # New volumes' roots get their owner, group and mode back too.
    assert {volume: entries(s, volume, root_only=True)["."] for volume in roots} == roots
    status, _, body = s.get("/media/upload.txt")
    assert status == 200 and body == b"uploaded by a user\n"
    assert s.health()[0] == 200
    # The safety copy is gone after a good restore, and hidden files are never served.
    assert app_exec(s, "import os; print(os.path.exists('/srv/media/.restore-safety'))").strip() == "False"
    assert s.get("/media/.restore-safety/upload.txt")[0] == 403
    # The restore's own start collected the static files into the new, empty static volume.
    assert s.get("/static/admin/css/base.css")[0] == 200
    assert s.get("/admin/login/")[0] == 200  # its template needs the static files' manifest


def test_a_restore_gives_back_every_owner_group_and_mode(s):
    in_volume(s, "media_volume",
              "mkdir by-app && chown 10001:10001 by-app && chmod 0750 by-app && "
              "echo mine > by-app/notes.txt && chown 10001:10001 by-app/notes.txt && chmod 0640 by-app/notes.txt && "
              "echo secret > root-only.txt && chmod 0600 root-only.txt && "
              "echo odd > odd-ids.txt && chown 123:456 odd-ids.txt && chmod 0604 odd-ids.txt")
    s.compose("stop", "database1")  # its files stay as they are backed up until listed
    before = {volume: entries(s, volume) for volume in ("database1_volume", "media_volume")}
    assert before["media_volume"]["./odd-ids.txt"] == ("123", "456", "604")
    s.inv("volume.archive", "--volume", "database1_volume", "--volume", "media_volume")
    for volume in ("database1_volume", "media_volume"):
        s.inv("volume.restore", str(latest(s, volume)), "--yes")
    s.compose("stop", "database1")
    after = {volume: entries(s, volume) for volume in ("database1_volume", "media_volume")}
    s.inv("up", "--no-build")
    assert after["media_volume"] == before["media_volume"]
    # The restore started PostgreSQL, which rewrites files of its own (its relation cache files,
    # pg_internal.init, go at start and come back on demand): compare the entries both hold.
    db_before, db_after = before["database1_volume"], after["database1_volume"]
    assert {p for p in db_before.keys() - db_after.keys() if not p.endswith("/pg_internal.init")} == set()
    common = db_before.keys() & db_after.keys()
    assert {p: db_after[p] for p in common} == {p: db_before[p] for p in common}
    # Every file is the server's user's and group's (its entrypoint gives back only the owner).
    assert len({(uid, gid) for uid, gid, _ in db_after.values()}) == 1
    # The app, its own user, can still change what it owns.
    appended = s.compose("exec", "-T", "djangoapp", "sh", "-c", "echo more >> /srv/media/by-app/notes.txt", check=False)
    assert appended.returncode == 0, appended.stderr
    in_volume(s, "media_volume", "rm -r by-app root-only.txt odd-ids.txt")


def test_backup_and_restore_of_a_database_volume_leave_no_anonymous_volume(s):
    """The postgres image declares VOLUME /var/lib/postgresql/data: a helper made from it
    gets an anonymous volume, which must go with the helper."""
    before = anonymous_volumes(s)
    s.inv("volume.archive", "--volume", "database1_volume")
    s.inv("volume.restore", str(latest(s, "database1_volume")), "--yes")
    assert anonymous_volumes(s) - before == set()


@pytest.mark.parametrize("damage", ["flip-one-byte", "truncate"])
def test_a_damaged_archive_is_refused_before_anything_is_touched(s, damage):
    archive = latest(s, "database1_volume")
    original = archive.read_bytes()
    before = (notes(s), started_at(s, "database1"))
    try:
        if damage == "flip-one-byte":
            data = bytearray(original)
            data[len(data) // 2] ^= 0x01
            archive.write_bytes(bytes(data))
        else:
            archive.write_bytes(original[: len(original) // 2])
        result = s.inv("volume.restore", str(archive), "--yes", check=False)
        assert result.returncode == 1
        assert "is corrupt or truncated" in result.stderr and "nothing was changed" in result.stderr
        assert (notes(s), started_at(s, "database1")) == before  # not even restarted
    finally:
        archive.write_bytes(original)


def test_a_different_postgres_major_is_refused(s):
    archive = latest(s, "database1_volume")
    manifest_file = archive.with_name(archive.name + ".json")
    text = manifest_file.read_text()
    try:
        # Signed with the project's key: a real backup of a PostgreSQL 14 volume.
        fields = {k: v for k, v in json.loads(text).items() if k not in ("hmac", "format")}
        key = (s.root / "config/secrets/backup_key").read_text().strip().encode()
        manifest_file.write_text(archives.manifest(key, **{**fields, "postgres_major": "14"}))
        result = s.inv("volume.restore", str(archive), "--yes", check=False)
        assert result.returncode == 1
        assert "holds PostgreSQL 14 data" in result.stderr and "inv db.load" in result.stderr
    finally:
        manifest_file.write_text(text)


def test_a_killed_backup_leaves_nothing_that_looks_complete(s):
    app_exec(s, "import os; open('/srv/media/big.bin', 'wb').write(os.urandom(64 << 20))")
    backups = s.root / "backups"
    before = set(backups.iterdir())
    proc = subprocess.Popen([*INV, "volume.archive", "--volume", "media_volume"],
                            cwd=s.root, env=s.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 60
    while not [p for p in backups.iterdir() if p.name.endswith(".tmp")]:
        assert time.monotonic() < deadline and proc.poll() is None, "the backup never started copying"
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)  # the task and the copy pipeline with it
    proc.wait()
    new = set(backups.iterdir()) - before
    assert new and all(p.name.startswith(".") and p.name.endswith(".tmp") for p in new), new
    assert not [p for p in new if p.name.endswith(".json")]
    assert "djangoapp" not in s.compose("ps", "--services", "--status", "running").stdout.split()
    s.inv("up", "--no-build")
    s.inv("volume.archive", "--volume", "media_volume")  # finds and replaces the killed run's helper
    assert "djangoapp" in s.compose("ps", "--services", "--status", "running").stdout.split()
    app_exec(s, "import os; os.remove('/srv/media/big.bin')")


def test_a_restore_that_fails_midway_puts_the_safety_copy_back(s):
    """An archive that passes every check but whose unpacking fails halfway (a file, then an
    entry that needs it to be a folder, as a damaged backup could hold): the copy starts,
    fails, and the old content comes back."""
    from .test_hardening import ROOT_DIR, _entry, _forge

    app_exec(s, "import os; [open(f'/srv/media/f{i}.bin', 'wb').write(os.urandom(1 << 16)) for i in range(40)]")
    s.inv("volume.archive", "--volume", "media_volume")
    real = latest(s, "media_volume")
    entries = [ROOT_DIR, *(_entry(f"./g{i}.bin", content=os.urandom(1 << 12)) for i in range(40)),
               _entry("./clash", content=b"a file"), _entry("./clash/inside", content=b"needs a folder")]
    full = _forge(real, entries, key_file=s.root / "config/secrets/backup_key")
    app_exec(s, "import glob, os; [os.remove(p) for p in glob.glob('/srv/media/f*.bin')]")
    before = media_digest(s)
    result = s.inv("volume.restore", str(full), "--yes", check=False)
    assert result.returncode == 1
    assert "putting the safety copy back" in result.stdout
    assert "holds its previous content again" in result.stdout
    s.inv("up", "--no-build")
    assert media_digest(s) == before != "absent"
    assert app_exec(s, "import glob; print(len(glob.glob('/srv/media/f*.bin')))").strip() == "0"
    for path in archives.companions(full):
        path.unlink()


def test_dump_and_load_into_the_running_stack(s):
    out = s.inv("db.dump", "database1").stdout
    dump = latest(s, "database1", ".dump")
    assert dump.suffix == ".dump" and "dumping database1" in out
    add_note(s, "written after the dump")
    assert notes(s) == "['first', 'written after the dump']"
    s.inv("db.load", "database1", str(dump), "--yes")
    assert notes(s) == "['first']"  # the app's open connections were handled
    assert s.health() == (200, {"status": "ok"})
    listed = s.compose("exec", "-T", "database1", "psql", "-U", "database1", "-d", "postgres", "-Atc",
                       "select datname from pg_database where datname like 'database1%' order by 1").stdout.split()
    assert listed == ["database1"]  # neither the fresh copy nor the old one is left behind


def test_a_corrupt_dump_is_refused(s):
    dump = latest(s, "database1", ".dump")
    original = dump.read_bytes()
    try:
        dump.write_bytes(original[:-10])
        result = s.inv("db.load", "database1", str(dump), "--yes", check=False)
        assert result.returncode == 1 and "is corrupt or truncated" in result.stderr
        assert notes(s) == "['first']"
    finally:
        dump.write_bytes(original)


def test_backup_everything_then_prune(s):
    s.inv("archive")
    backups = s.root / "backups"
    subjects = {}
    for manifest in backups.glob("*.json"):
        data = json.loads(manifest.read_text())
        subjects.setdefault(data["subject"], []).append(data["created"])
    assert {"database1", "database1_volume", "media_volume", "static_volume"} <= set(subjects)
    assert len(subjects["media_volume"]) >= 3
    newest = {k: max(v) for k, v in subjects.items()}
    out = s.inv("archive.prune", "--keep", "1").stdout
    assert "kept the newest 1 backup(s)" in out
    left = {}
    for manifest in backups.glob("*.json"):
        data = json.loads(manifest.read_text())
        left.setdefault(data["subject"], []).append(data["created"])
        assert (backups / data["archive"]).exists()
    assert {k: v for k, v in left.items()} == {k: [v] for k, v in newest.items()}
    refused = s.inv("backup.prune", "--keep", "0", check=False)  # the old name still runs it, for a release
    assert refused.returncode == 1 and "`inv backup.prune` is now `inv archive.prune`" in refused.stderr
