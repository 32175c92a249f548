"""Scheduled backups on the real engine: the stack's backup service with a real restic
repository (a folder on this machine, bind-mounted), a scheduled run, the restore of a
destroyed stack, deduplication measured, restore drills, notifications to a real webhook,
and the faults: a repository gone, a wrong password, a run killed midway, a full disk, a
corrupted pack file.

The tests run in order and share one stack (a copy of the project with [backups]).
"""
import http.server
import json
import os
import re
import shutil
import subprocess
import threading
import time
from datetime import datetime

import pytest

from tests.e2e.conftest import Stack, free_port
from testkit import INV
from testkit.projectcopy import copy_project

pytestmark = pytest.mark.e2e

PROJECT = "hello-e2e-sched"
EVERY_MINUTE = "* * * * *"
ONCE_A_YEAR = "0 3 1 1 *"
LONG_NAME = "café-" + "é" * 60 + ".txt"


def gateway() -> str:
    """This machine's address on Docker's default bridge: containers reach it (the webhook)."""
    out = subprocess.run(["docker", "network", "inspect", "bridge", "--format", "{{(index .IPAM.Config 0).Gateway}}"],
                         capture_output=True, text=True, check=True).stdout.strip()
    return out or "172.17.0.1"


class Webhook:
    """An HTTP server that keeps every JSON body POSTed to it (apprise's json:// sends one
    per notification)."""

    def __init__(self, address):
        received = self.received = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append(json.loads(body or b"{}"))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer((address, 0), Handler)
        self.url = f"json://{address}:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, word: str, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for message in self.received:
                if word in message.get("title", ""):
                    return message
            time.sleep(0.5)
        raise AssertionError(f"no notification with {word!r} in its title; got {self.received}")


@pytest.fixture(scope="module")
def webhook():
    hook = Webhook(gateway())
    yield hook
    hook.server.shutdown()


@pytest.fixture(scope="module")
def sched(tmp_path_factory, webhook):
    root = copy_project(tmp_path_factory.mktemp("project"))
    repository = tmp_path_factory.mktemp("restic") / "repository"
    s = Stack(PROJECT, free_port(0), root=root)
    s.repository = repository
    configure(s, EVERY_MINUTE, webhook.url)
    s.purge()
    s.inv("up", timeout=900)
    yield s
    s.purge()
    shutil.rmtree(repository, ignore_errors=True)


def configure(s: Stack, schedule: str, notify: str) -> None:
    text = (s.root / "config/stack.toml").read_text().split("\n[backups]")[0]
    (s.root / "config/stack.toml").write_text(
        text + f'\n[backups]\nschedule = "{schedule}"\nrepository = "{s.repository}"\ndrill = "off"\n'
               f'notify = "{notify}"\n')
    s.inv("render")


def script(s: Stack, *args, check=True):
    """backup.py in a one-off container of the service, as the tasks run it."""
    return s.compose("run", "--rm", "-T", "backup", *args, check=check)


def status(s: Stack, check=True) -> dict:
    """The service's status, read in its running container: a one-off container for each
    look (two, with secrets-init) cost about 0.7 s of CPU, every 5 s while a run is waited for.
    Without CHECK, a service that cannot answer (restarting) gives {}."""
    read = s.compose("exec", "-T", "backup", "python3", "/usr/local/lib/hello-backup/backup.py", "status", check=check)
    return json.loads(read.stdout.strip().splitlines()[-1]) if read.returncode == 0 else {}


def snapshot_ids(s: Stack) -> list[str]:
    return [snap["id"] for snap in json.loads(script(s, "snapshots").stdout.strip().splitlines()[-1])]


def restic(s: Stack, command: str, check=True):
    """A restic command line in a one-off container, with the service's repository and password."""
    env = ("export RESTIC_REPOSITORY=$BACKUP_REPOSITORY RESTIC_PASSWORD_FILE=/run/secrets/backup/restic_password "
           "RESTIC_CACHE_DIR=/var/lib/hello-backup/cache; ")
    return s.compose("run", "--rm", "-T", "--entrypoint", "sh", "backup", "-ec", env + command, check=check)


def manage(s: Stack, code: str) -> str:
    return s.compose("exec", "-T", "djangoapp", "python", "manage.py", "shell", "-c", code).stdout


def proof_user_count(s: Stack) -> int:
    out = manage(s, "from django.contrib.auth.models import User; "
                    "print('count', User.objects.filter(username='scheduled-proof').count())")
    return int(re.search(r"count (\d+)", out)[1])


def repository_bytes(s: Stack) -> int:
    return sum(p.stat().st_size for p in s.repository.rglob("*") if p.is_file())


def test_a_scheduled_run_then_a_restore_brings_back_a_row_and_a_media_file(sched, webhook):
    s = sched
    manage(s, "from django.contrib.auth.models import User; User.objects.create_user('scheduled-proof')")
    s.compose("exec", "-T", "djangoapp", "sh", "-c", "mkdir -p /srv/media/uploads && "
              "echo 'kept by the schedule' > /srv/media/uploads/proof.txt && "
              f"echo accents > '/srv/media/uploads/{LONG_NAME}'")
    written = time.time()
    # The service runs every minute: wait for a run that started after the writes. The status
    # says when a run ended (to the second, rounded down) and how long it took.
    deadline = time.monotonic() + 200
    while True:
        backup = status(s, check=False).get("backup", {})
        if backup.get("last_success") and \
                datetime.fromisoformat(backup["last_success"]).timestamp() - backup["seconds"] > written:
            break
        assert time.monotonic() < deadline, s.compose("logs", "backup").stdout[-3000:]
        time.sleep(5)
    assert "backup: starting" in s.compose("logs", "backup").stdout
    # From here on the schedule stays out of the way of the tests' own runs.
    configure(s, ONCE_A_YEAR, webhook.url)
    s.inv("down", "--volumes", "--yes")
    s.inv("up", timeout=900)
    assert proof_user_count(s) == 0
    assert s.compose("exec", "-T", "djangoapp", "ls", "/srv/media").stdout.strip() == ""
    restored = s.inv("backup.restore", "latest", "--yes", timeout=900)
    assert "loaded" in restored.stdout and "the stack is healthy" in restored.stdout
    assert proof_user_count(s) == 1
    assert s.compose("exec", "-T", "djangoapp", "cat", "/srv/media/uploads/proof.txt").stdout == "kept by the schedule\n"
    # A long, non-ASCII name (a pax record in the tar stream) lands at its own path.
    assert s.compose("exec", "-T", "djangoapp", "cat", f"/srv/media/uploads/{LONG_NAME}").stdout == "accents\n"
    assert s.compose("exec", "-T", "djangoapp", "ls", "/srv/media").stdout.split() == ["uploads"]
    owner = s.compose("exec", "-T", "djangoapp", "stat", "-c", "%u:%g", "/srv/media/uploads/proof.txt").stdout.strip()
    assert owner == "10001:10001"
    assert s.health()[0] == 200


def test_an_unchanged_second_run_adds_one_chunk_at_most(sched):
    s = sched
    # About 200 MiB of rows, owned by the app's role (the backup reads as that role).
    s.compose("exec", "-T", "database1", "psql", "-U", "database1", "-d", "database1", "-v", "ON_ERROR_STOP=1", "-c",
              "SET ROLE app; CREATE TABLE bulk AS SELECT g AS id, md5(g::text) || md5((g + 1)::text) AS payload "
              "FROM generate_series(1, 2000000) g")
    before = repository_bytes(s)
    s.inv("backup.now", timeout=900)
    first = status(s)["backup"]
    on_disk_first = repository_bytes(s) - before
    s.inv("backup.now", timeout=900)
    second = status(s)["backup"]
    on_disk_second = repository_bytes(s) - before - on_disk_first
    # restic's own count of what each run added (before compression), against the size of
    # what the first run took; the folder's growth also counts prune's repacking.
    print(f"first run: {first['bytes']:,} B taken, {first['added']:,} B added; unchanged second run: "
          f"{second['added']:,} B added ({second['added'] / first['bytes']:.2%}); repository folder: "
          f"+{on_disk_first:,} B, then {on_disk_second:+,} B")
    assert first["bytes"] > 100_000_000 and first["added"] > 0.5 * first["bytes"]
    # What an unchanged run adds is the chunk of each dump that holds its header (pg_dump
    # writes the time there) plus the manifest and trees: restic's chunks are content-defined,
    # of 0.5 to 8 MiB (1 MiB on average, boundaries drawn per repository), so at most about
    # 8 MiB however big the database: 1.0% and 3.0% of this run's 155 MB were measured, under
    # 0.8% at the 1 GiB.
    assert second["added"] < 8.5 * 1024 * 1024  # one database: one such chunk, and a little more
    # The tests after this one back up, drill and restore the everyday data: the bulk rows go
    # (a run without them is the latest snapshot), or each of those would dump, send and load
    # 150 MB again.
    s.compose("exec", "-T", "database1", "psql", "-U", "database1", "-d", "database1", "-v", "ON_ERROR_STOP=1", "-c",
              "SET ROLE app; DROP TABLE bulk")
    s.inv("backup.now", timeout=900)


def test_the_drill_passes_on_a_good_snapshot_and_fails_on_a_tampered_dump(sched, webhook):
    s = sched
    passed = s.inv("backup.drill", timeout=900)
    assert re.search(r"PASS in [\d.]+ s", passed.stdout), passed.stdout
    assert re.search(r"\d+ tables, [\d,]+ rows", passed.stdout), passed.stdout
    assert re.search(r"migrate --check: all \d+ migrations of the running code applied", passed.stdout), passed.stdout
    # A snapshot whose dump differs from what its manifest recorded: one byte changed.
    good = snapshot_ids(s)
    restic(s, "cd / && restic restore latest --target / --include /backup/dumps && "
              "printf 'X' | dd of=/backup/dumps/database1.dump bs=1 seek=4096 conv=notrunc status=none && "
              "restic backup --quiet --host \"$BACKUP_HOST\" --tag hello /backup/dumps /backup/media && rm -f /backup/dumps/*")
    tampered = [i for i in snapshot_ids(s) if i not in good]
    assert len(tampered) == 1
    failed = s.inv("backup.drill", check=False, timeout=900)
    assert failed.returncode != 0 and "FAIL in" in failed.stdout, failed.stdout
    assert "database1.dump: sha256 differs from the manifest" in failed.stdout
    assert "restore drill FAILED" in webhook.wait_for("restore drill FAILED")["title"]
    # A restore refuses it too, and changes nothing.
    refused = s.inv("backup.restore", tampered[0], "--database", "database1", "--yes", check=False, timeout=600)
    assert refused.returncode != 0 and "does not match its manifest's sha256" in refused.stdout + refused.stderr
    assert proof_user_count(s) == 1
    restic(s, f"restic forget {tampered[0]}")
    assert s.inv("backup.drill", timeout=900).returncode == 0
    assert webhook.wait_for("restore drill recovered")


def test_the_drill_fails_a_snapshot_the_running_code_would_have_to_migrate(sched):
    s = sched
    expected = s.root / "config/backup-expected/migrations.json"
    saved = expected.read_text()
    migrations = json.loads(saved)
    assert "auth.0001_initial" in migrations["database1"]
    migrations["database1"].append("hello.9999_not_in_the_backup")
    expected.write_text(json.dumps(migrations))
    try:
        failed = s.inv("backup.drill", check=False, timeout=900)
    finally:
        expected.write_text(saved)
    assert failed.returncode != 0 and "migrate --check fails" in failed.stdout, failed.stdout
    assert "hello.9999_not_in_the_backup" in failed.stdout
    # A failed drill turns the status red until a drill passes again.
    assert s.inv("backup.status", check=False).returncode != 0
    s.inv("backup.drill", timeout=900)
    assert s.inv("backup.status").returncode == 0


def forge(s: Stack, change: str) -> str:
    """A snapshot made from the latest one with CHANGE (a shell script) applied to its
    /backup tree, by whoever holds the repository's password (here: root, every capability);
    returns its id."""
    config = json.loads(s.compose("config", "--format", "json").stdout)
    host = config["services"]["backup"]["environment"]["BACKUP_HOST"]
    before = set(snapshot_ids(s))
    s.docker("run", "--rm", "--user", "0", "--entrypoint", "sh", "-e", "RESTIC_REPOSITORY=/repository",
             "-e", "RESTIC_PASSWORD_FILE=/password", "-e", f"HOST={host}", "-v", f"{s.repository}:/repository",
             "-v", f"{s.root / 'config/secrets/restic_password'}:/password:ro", f"{PROJECT}-backup:latest", "-ec",
             'restic restore latest --host "$HOST" --target / --quiet && ' + change +
             ' && restic backup --quiet --host "$HOST" --tag hello /backup/dumps /backup/media'
             # What root wrote, the service's user must read (restic retries for minutes).
             ' && chown -R 10002:10002 /repository')
    made = set(snapshot_ids(s)) - before
    assert len(made) == 1
    return made.pop()


RECORD = ("python3 -c \"import hashlib, json; p = '/backup/dumps/manifest.json'; m = json.load(open(p)); "
          "m['media']['{name}'] = hashlib.sha256(open('/backup/media/{name}', 'rb').read()).hexdigest(); "
          "m.update({extra}); json.dump(m, open(p, 'w'))\"")


@pytest.mark.parametrize("change, refusal", [
    ("cp /bin/dash /backup/media/shell && chown 0:0 /backup/media/shell && chmod 4755 /backup/media/shell && "
     + RECORD.format(name="shell", extra="{}"), "'./shell' is setuid or setgid"),
    ("echo x > /backup/media/x && chown 0:0 /backup/media/x && " + RECORD.format(name="x", extra="{}"),
     "'./x' belongs to 0:0"),
    ("echo x > /backup/media/x && chown 10001:10001 /backup/media/x && chown 0:0 /backup/media && "
     "chmod 700 /backup/media && " + RECORD.format(name="x", extra="media_root={'uid': 0, 'gid': 0, 'mode': 0o700}"),
     None),
], ids=["setuid-root-binary", "owned-by-root", "root-locked-away"])
def test_a_forged_snapshot_s_media_are_refused_or_kept_in_their_place(sched, change, refusal):
    """Entries a volume restore would refuse are refused, and nothing changes; the media
    root's owner and mode are the stack's, whatever the snapshot says (REFUSAL None: the
    restore goes through, the root unchanged)."""
    s = sched
    forged = forge(s, change)
    try:
        restored = s.inv("backup.restore", forged, "--media", "--yes", check=False, timeout=600)
        output = restored.stdout + restored.stderr
        listed = s.compose("exec", "-T", "djangoapp", "ls", "-A", "/srv/media", "/srv/media/uploads").stdout
        if refusal:
            assert restored.returncode != 0 and refusal in output and "nothing was changed" in output, output
            assert "shell" not in listed and "x\n" not in listed and "proof.txt" in listed, listed
        else:
            assert restored.returncode == 0, output
            assert "x\n" in listed and "proof.txt" in listed, listed
        root = s.compose("exec", "-T", "djangoapp", "stat", "-c", "%u:%g %a", "/srv/media").stdout.strip()
        assert root == "10001:10001 755"
        assert s.health()[0] == 200
        # The app can write there.
        s.compose("exec", "-T", "djangoapp", "sh", "-c", "touch /srv/media/.written && rm /srv/media/.written")
    finally:
        restic(s, f"restic forget {forged}")


# SQL the app's role can write (what a compromised app could do): a function that leaves
# the role it runs as, then runs a program that writes PROOF. Called by a CHECK constraint
# while a dump's rows are loaded, and by an operator used in reading django_migrations.
ESCAPE = """CREATE FUNCTION public.g() RETURNS int LANGUAGE plpgsql AS $$ BEGIN BEGIN EXECUTE 'RESET ROLE';
  EXECUTE 'COPY (SELECT 1) TO PROGRAM ''(cat > /dev/null; id; cat /run/secrets/backup/restic_password) > {proof} 2>&1''';
EXCEPTION WHEN others THEN NULL; END; RETURN 1; END $$;"""


def as_app(s: Stack, sql: str):
    return s.compose("exec", "-T", "database1", "psql", "-U", "app", "-d", "database1", "-v", "ON_ERROR_STOP=1",
                     "-c", sql)


def test_sql_the_app_wrote_never_runs_with_more_rights_than_the_app_in_a_drill_or_a_start(sched):
    s = sched
    as_app(s, ESCAPE.format(proof="/var/lib/hello-backup/escaped") + """
        CREATE FUNCTION public.f(i int) RETURNS int LANGUAGE sql IMMUTABLE AS $$ SELECT i + public.g() - 1 $$;
        CREATE TABLE public.t (i int CHECK (public.f(i) = i)); INSERT INTO public.t VALUES (1);""")
    try:
        s.inv("backup.now", timeout=900)
        drilled = s.inv("backup.drill", timeout=900)
        assert re.search(r"PASS in [\d.]+ s", drilled.stdout), drilled.stdout
        # The function ran in the drill (its table's row was loaded and counted), as the app.
        state = restic(s, "ls -A /var/lib/hello-backup").stdout.split()
        assert "escaped" not in state, restic(s, "cat /var/lib/hello-backup/escaped", check=False).stdout
        # The migrations the running code expects are read at every start: an operator of
        # the app's in its schema, chosen over pg_catalog's for `varchar || varchar`, runs its
        # function as whoever reads the table.
        as_app(s, ESCAPE.replace("public.g()", "public.h()").format(proof="/tmp/escaped") + """
            CREATE FUNCTION public.cat(a varchar, b varchar) RETURNS text LANGUAGE plpgsql
              AS $$ BEGIN PERFORM public.h(); RETURN a::text || b::text; END $$;
            CREATE OPERATOR public.|| (LEFTARG = varchar, RIGHTARG = varchar, FUNCTION = public.cat);""")
        s.inv("up", timeout=900)
        found = s.compose("exec", "-T", "database1", "ls", "-A", "/tmp").stdout.split()
        assert "escaped" not in found, s.compose("exec", "-T", "database1", "cat", "/tmp/escaped").stdout
        expected = json.loads((s.root / "config/backup-expected/migrations.json").read_text())
        assert "auth.0001_initial" in expected["database1"]
    finally:
        as_app(s, "DROP OPERATOR IF EXISTS public.|| (varchar, varchar); DROP TABLE IF EXISTS public.t; "
                  "DROP FUNCTION IF EXISTS public.cat, public.f, public.g, public.h")


def test_a_repository_gone_fails_the_run_notifies_and_the_next_run_recovers(sched, webhook):
    s = sched
    moved = s.repository.with_name("moved-away")
    s.repository.rename(moved)
    s.repository.mkdir()
    shutil.copymode(moved, s.repository)
    os.chown(s.repository, 10002, 10002)
    try:
        failed = s.inv("backup.now", check=False, timeout=600)
        assert failed.returncode != 0 and "is gone" in failed.stdout, failed.stdout
        # Named by its path on the host, not the path the service mounts it at.
        assert f"the repository at {s.repository} is gone" in failed.stdout, failed.stdout
        checked = s.inv("backup.status", check=False)
        assert checked.returncode != 0 and "is gone" in checked.stdout, checked.stdout
        assert "backup FAILED" in webhook.wait_for("backup FAILED")["title"]
    finally:
        s.repository.rmdir()
        moved.rename(s.repository)
    s.inv("backup.now", timeout=900)
    assert s.inv("backup.status").returncode == 0
    assert webhook.wait_for("backup recovered")


def test_a_wrong_password_is_refused_in_one_line_and_changes_nothing(sched):
    s = sched
    secret = s.root / "config/secrets/restic_password"
    right = secret.read_text()
    count = len(snapshot_ids(s))
    secret.write_text("not-the-password\n")
    try:
        failed = s.inv("backup.now", check=False, timeout=600)
        assert failed.returncode != 0 and "refused the password" in failed.stdout, failed.stdout
    finally:
        secret.write_text(right)
    assert len(snapshot_ids(s)) == count


def test_runs_never_overlap_and_a_killed_one_leaves_no_snapshot_nor_blocks_the_next(sched):
    s = sched
    before = snapshot_ids(s)
    # Something for restic to send for a while: 384 MiB of new media (128 MiB were sent before
    # the run could be paused once the machine was less loaded).
    s.compose("exec", "-T", "djangoapp", "sh", "-c", "head -c 402653184 /dev/urandom > /srv/media/uploads/big.bin")
    run = subprocess.Popen(["docker", "compose", "--project-name", PROJECT, "run", "--rm", "-T", "--name",
                            f"{PROJECT}-killed-run", "backup", "run"], cwd=s.root, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    try:
        for line in run.stdout:
            if line.startswith("sending to"):
                break
        # Frozen midway (restic is reading 128 MiB), it holds the run's lock: a second run
        # stops at once, saying why. Then it is killed, still frozen: thawed first, it could
        # finish its snapshot before the kill lands.
        s.docker("pause", f"{PROJECT}-killed-run")
        second = s.inv("backup.now", check=False, timeout=120)
        s.docker("kill", f"{PROJECT}-killed-run")
        assert second.returncode != 0 and "under way" in second.stderr, second.stdout + second.stderr
    finally:
        run.wait(timeout=120)
    assert snapshot_ids(s) == before
    # restic's lock of the killed run does not block the next one.
    s.inv("backup.now", timeout=900)
    assert len(snapshot_ids(s)) >= 1 and snapshot_ids(s) != before


def test_a_full_disk_on_the_repository_side_fails_the_run_and_writes_no_snapshot(sched, tmp_path):
    s = sched
    before = snapshot_ids(s)
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-a", str(s.repository), str(copy)], check=True)  # owners and modes kept
    size = sum(p.stat().st_size for p in copy.rglob("*") if p.is_file()) + 8 * 1024 * 1024
    s.compose("exec", "-T", "djangoapp", "sh", "-c", "head -c 33554432 /dev/urandom > /srv/media/uploads/bigger.bin")
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},uid=10002,gid=10002,mode=700", "tmpfs",
                    str(s.repository)], check=True)
    try:
        subprocess.run(["cp", "-a", f"{copy}/.", str(s.repository)], check=True)
        failed = s.inv("backup.now", check=False, timeout=600)
        assert failed.returncode != 0 and "no space left on device" in failed.stdout.lower(), failed.stdout
        assert snapshot_ids(s) == before
    finally:
        subprocess.run(["umount", str(s.repository)], check=True)
    s.compose("exec", "-T", "djangoapp", "rm", "-f", "/srv/media/uploads/bigger.bin")


def test_a_corrupted_pack_file_is_caught_by_the_drill(sched):
    s = sched
    packs = sorted((p for p in (s.repository / "data").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    biggest = packs[-1]
    with open(biggest, "r+b") as f:
        f.seek(biggest.stat().st_size // 2)
        f.write(b"\0" * 64)
    failed = s.inv("backup.drill", check=False, timeout=900)
    assert failed.returncode != 0 and "FAIL in" in failed.stdout, failed.stdout


@pytest.fixture(scope="module")
def s3_server():
    """moto's S3-compatible server on this machine's bridge address, for the containers."""
    address, port = gateway(), free_port(0)
    server = subprocess.Popen(["moto_server", "-H", address, "-p", str(port)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while subprocess.run(["curl", "-fsS", "-o", "/dev/null", f"http://{address}:{port}/"]).returncode != 0:
        assert time.monotonic() < deadline and server.poll() is None, "moto_server did not start"
        time.sleep(0.5)
    yield f"{address}:{port}"
    server.terminate()
    server.wait(timeout=30)


def test_an_s3_repository_with_credentials_from_standard_input(sched, webhook, s3_server):
    s = sched
    text = (s.root / "config/stack.toml").read_text().split("\n[backups]")[0]
    (s.root / "config/stack.toml").write_text(
        text + f'\n[backups]\nschedule = "{ONCE_A_YEAR}"\nrepository = "s3:http://{s3_server}/hello-backups/e2e"\n'
               f'drill = "off"\nnotify = "{webhook.url}"\n')
    s.inv("render")
    keys = "AWS_ACCESS_KEY_ID=e2e-access\nAWS_SECRET_ACCESS_KEY=e2e-secret-not-in-argv\nAWS_DEFAULT_REGION=us-east-1\n"
    done = subprocess.run([*INV, "backup.credentials"], cwd=s.root, env=s.env, input=keys, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    secret = s.root / "config/secrets/backup_repository.env"
    assert secret.read_text() == keys and oct(secret.stat().st_mode & 0o777) == "0o600"
    s.inv("up", timeout=900)
    # The credentials are files of the service's user: not in its environment or `docker inspect`.
    inspected = s.docker("inspect", f"{PROJECT}-backup-1").stdout
    assert "e2e-secret-not-in-argv" not in inspected
    s.inv("backup.now", timeout=900)
    listed = s.inv("backup.snapshots").stdout
    assert re.search(r"[0-9a-f]{8} +20\d\d-", listed), listed
    drilled = s.inv("backup.drill", timeout=900)
    assert "PASS in" in drilled.stdout
    assert s.inv("backup.restore", "latest", "--database", "database1", "--yes", timeout=900).returncode == 0
    assert proof_user_count(s) == 1


def test_an_sftp_repository_on_another_server_through_its_real_sshd(sched, webhook, servers):
    """The repository on a test host (its own address and OpenSSH server), reached over SFTP
    with the service's own key: host keys trusted by fingerprint, the key authorized there
    with `restrict`, notify URLs set on the host alone (`inv backup.notify`)."""
    s = sched
    vault = servers("sched-vault", images=())
    folder = vault.dir / "restic"
    text = (s.root / "config/stack.toml").read_text().split("\n[backups]")[0]
    (s.root / "config/stack.toml").write_text(
        text + f'\n[backups]\nschedule = "{ONCE_A_YEAR}"\nrepository = "sftp:root@{vault.address}:{folder}"\n'
               'drill = "off"\n')
    s.inv("render")
    (s.root / "config/secrets/backup_notify").unlink(missing_ok=True)
    told = subprocess.run([*INV, "backup.notify"], cwd=s.root, env=s.env, input=webhook.url + "\n",
                          capture_output=True, text=True, timeout=600)
    assert told.returncode == 0, told.stdout + told.stderr
    real = subprocess.run(["ssh-keygen", "-lf", str(vault.dir / "host_key.pub")], capture_output=True, text=True,
                          check=True).stdout.split()[1]
    other = subprocess.run(["ssh-keygen", "-lf", str(vault.dir / "other_host_key.pub")], capture_output=True,
                           text=True, check=True).stdout.split()[1]

    # A fingerprint the server does not show: refused in one line, nothing trusted or made.
    refused = s.inv("backup.ssh-key", "--fingerprint", other, check=False, timeout=600)
    assert refused.returncode == 1 and f"does not show the key {other}" in refused.stderr, refused.stderr
    assert not (s.root / "config/secrets/backup_known_hosts").exists()
    assert not (s.root / "config/secrets/backup_ssh_key").exists()

    made = s.inv("backup.ssh-key", "--fingerprint", real, timeout=600).stdout
    assert real in made
    line = re.search(r"^restrict ssh-ed25519 \S+ \S+$", made, re.M)[0]
    key = s.root / "config/secrets/backup_ssh_key"
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    inspected = s.docker("inspect", f"{PROJECT}-backup-1").stdout
    assert webhook.url not in inspected and key.read_text().splitlines()[1] not in inspected

    # Not authorized yet: the run fails naming ssh's reason, and the webhook hears of it.
    webhook.received.clear()
    failed = s.inv("backup.now", check=False, timeout=600)
    assert failed.returncode == 1 and "Permission denied" in failed.stdout + failed.stderr, failed.stdout + failed.stderr
    webhook.wait_for("FAILED")

    with open(vault.dir / "authorized_keys", "a") as keys:
        keys.write(line + "\n")
    s.inv("backup.now", timeout=900)
    webhook.wait_for("recovered")
    assert (folder / "config").is_file() and any((folder / "data").rglob("*"))
    # The repository holds ciphertext only: no dump's or media file's bytes in the clear.
    assert not any(b"kept by the schedule" in p.read_bytes() for p in folder.rglob("*") if p.is_file())
    listed = s.inv("backup.snapshots").stdout
    assert re.search(r"[0-9a-f]{8} +20\d\d-.*database1 \(", listed), listed
    assert "PASS in" in s.inv("backup.drill", timeout=900).stdout
    # The same key again: trusted already, the key kept.
    again = s.inv("backup.ssh-key", "--fingerprint", real, timeout=600).stdout
    assert "trusted already" in again and line in again
