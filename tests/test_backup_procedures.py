"""The file backups' procedures on a host (procedures/dumps.py, volume_copy.py,
backup_files.py), against a strict recording connection: each command exactly, in order,
and a command the test did not expect raises. Names that hold the time or a random part
are fixed, so that every command can be written out."""
from __future__ import annotations

import hashlib
import io
import json
import shlex
import socket
import tarfile
from pathlib import Path, PurePosixPath

import pytest
from invoke import Result

from tasks.errors import TaskError
from tasks.execution.runner import Runner
from tasks.execution.targets import HostTarget
from tasks.plans import archives, compose, hostfiles
from tasks.procedures import backup_files, dumps, volume_copy
from tasks.source.stack import loads
from tests.fakes import Recorder
from tests.stacks import PROD_8080, stack

STACK = stack(PROD_8080)
HOST = STACK.hosts["prod"]
DB = STACK.databases[0]
ENGINE = ["docker version --format '{{.Server.Version}}'", "docker compose version --short"]
COMPOSE = ["docker", "compose", "--project-name", "hello-prod"]
RUNNING = shlex.join(compose.running_services("hello-prod"))
BACKUPS = PurePosixPath("/srv/hello/shared/backups")
STAMP = "20261205T030000Z"
MARK = ".4242@elsewhere.tmp"  # a writer on another machine: never taken for a killed one here
SUM = "ab" * 32


def bash(script):
    return f"bash -c {shlex.quote(script)}"


class Host(Recorder):
    """A host's connection: RULES, in order, are (the start of a command, or a function of
    it; what it answers: a Result, or a function of the command giving one). A command no
    rule covers raises; every command is recorded as Recorder does."""

    def __init__(self, rules):
        super().__init__()
        self.rules = list(rules)

    def run(self, command, **kwargs):
        super().run(command, **kwargs)
        for match, answer in self.rules:
            if (command.startswith(match) if isinstance(match, str) else match(command)):
                result = answer(command) if callable(answer) else answer
                if isinstance(result, BaseException):
                    raise result
                return Result(stdout=result.stdout, stderr=result.stderr, exited=result.exited, command=command)
        raise AssertionError(f"unexpected command: {command}")


def lock_commands(command):
    """A lock's shell (its owner names this process and the time) as `take NAME`/`release NAME`."""
    if command.startswith(bash(f"mkdir -p -m 700 {BACKUPS}/.locks; i=0;")[:40]) and "/.locks/" in command:
        return "take " + command.split("/.locks/")[1].split()[0]
    if command.startswith(f"bash -c 'rm -rf {BACKUPS}/.locks/"):
        return "release " + command.split("/.locks/")[1].rstrip("'")
    return command


OK = Result()
MISSING = Result(exited=1)
# The read, on the way out of a volume's backup or restore, of the helpers never started on it.
UNSTARTED = shlex.join(archives.unstarted_helpers("hello-prod", "hello-prod_media_volume"))
ALWAYS = [
    (UNSTARTED, OK),
    (ENGINE[0], OK), (ENGINE[1], OK),
    (RUNNING, Result(stdout="djangoapp\nnginx\nfront\ndatabase1\n")),
    (bash(f"mkdir -p -m 700 {BACKUPS}"), OK),
    (f"find {BACKUPS} -maxdepth 1 -name '.*.tmp'", OK),
    (lambda c: lock_commands(c) != c, OK),
    ("bash -c 'test -e ", MISSING),
    ("sha256sum /", Result(stdout=f"{SUM}  file\n")),
    ("bash -c 'stat -c %s ", Result(stdout="2048\n")),
    ("bash -c 'mv -f ", OK), ("bash -c 'umask 077; t=", OK), ("bash -c 'rm -f -- ", OK),
]


@pytest.fixture(autouse=True)
def fixed_names(monkeypatch, tmp_path):
    monkeypatch.setattr(archives, "stamp", lambda: STAMP)
    monkeypatch.setattr(backup_files.secrets, "token_hex", lambda n: "0" * (2 * n))
    monkeypatch.setattr(backup_files, "writer_mark", lambda: MARK)
    key = tmp_path / "config/secrets/backup_key"
    key.parent.mkdir(parents=True)
    key.write_text("k" * 64 + "\n")
    monkeypatch.setattr(backup_files, "ROOT", tmp_path)
    monkeypatch.setattr(backup_files, "KEY_FILE", key)


def on_host(*rules, dry=False, stack=STACK):
    conn = Host([*rules, *ALWAYS])
    return Runner(HostTarget(conn, HOST, stack, local_c=Recorder()), dry), conn


def commands(conn):
    return [lock_commands(command) for command in conn.commands]


def compose_argv(*args):
    return shlex.join(COMPOSE + list(args))


IN_DB = archives.in_compose_service(COMPOSE, "database1")
LOADS = shlex.join(archives.run_sql(IN_DB, "database1", archives.loads_of_sql("database1")))
DUMP = BACKUPS / f"hello-prod_database1_{STAMP}.dump"
DUMP_TMP = BACKUPS / f".{DUMP.name}.00000000{MARK}"


class TestDumps:
    def test_a_dump_is_written_under_a_temporary_name_then_published_manifest_last(self):
        r, conn = on_host((LOADS, Result(stdout="database1\n")),
                          (compose_argv("exec", "-T", "database1", "postgres", "--version"),
                           Result(stdout="postgres (PostgreSQL) 16.4\n")), ("bash -o pipefail -c", OK))
        assert dumps.dump_database(r, DB) == DUMP
        assert commands(conn) == [
            *ENGINE, RUNNING, bash(f"mkdir -p -m 700 {BACKUPS}"), f"find {BACKUPS} -maxdepth 1 -name '.*.tmp'",
            "take volume-hello-prod_database1_volume", LOADS,
            bash(hostfiles.exists(DUMP)),
            compose_argv("exec", "-T", "database1", "postgres", "--version"),
            shlex.join(archives.pipeline(archives.pg_dump(IN_DB, "database1"), output=str(DUMP_TMP))),
            shlex.join(archives.sha256(str(DUMP_TMP))), bash(hostfiles.size(DUMP_TMP)),
            bash(hostfiles.rename(DUMP_TMP, DUMP)),
            bash(hostfiles.write(f"{DUMP}.sha256", 0o600)), bash(hostfiles.write(f"{DUMP}.json", 0o600)),
            "release volume-hello-prod_database1_volume"]
        sha_line, manifest_text = conn.calls[-3][2], conn.calls[-2][2]
        assert sha_line == f"{SUM}  {DUMP.name}\n"
        manifest = json.loads(manifest_text)
        assert {k: manifest[k] for k in ("kind", "archive", "sha256", "size_bytes", "postgres_major", "database")} == {
            "kind": "dump", "archive": DUMP.name, "sha256": SUM, "size_bytes": 2048, "postgres_major": "16",
            "database": "database1"}
        assert archives.authentic(manifest, b"k" * 64)

    def test_a_failed_dump_leaves_no_file_and_gives_the_lock_back(self):
        r, conn = on_host((LOADS, Result(stdout="database1\n")),
                          ("bash -o pipefail -c", Result(stderr="pg_dump: error: connection lost\n", exited=1)),
                          (compose_argv("exec", "-T", "database1", "postgres", "--version"), OK))
        with pytest.raises(TaskError, match=r"^pg_dump of database1 failed \(exit status 1\)$"):
            dumps.dump_database(r, DB)
        assert commands(conn)[-2:] == [bash(hostfiles.remove([DUMP_TMP])), "release volume-hello-prod_database1_volume"]

    def test_a_dump_of_a_database_that_is_not_running_is_refused(self):
        r, conn = on_host((RUNNING, Result(stdout="djangoapp\n")))
        with pytest.raises(TaskError, match="^service database1 is not running: start the stack with `inv up`$"):
            dumps.dump_database(r, DB)
        assert commands(conn) == [*ENGINE, RUNNING]

    def sql(self, statement):
        return shlex.join(archives.run_sql(IN_DB, "database1", statement))

    def test_a_dump_loads_into_a_fresh_database_then_is_swapped_in(self):
        fresh, retired = f"database1__load_{STAMP.lower()}", f"database1__old_{STAMP.lower()}"
        r, conn = on_host((LOADS, Result(stdout="database1\n")), (lambda c: "CREATE DATABASE" in c or "DROP" in c
                                                                   or "ALTER DATABASE" in c, OK),
                          ("bash -o pipefail -c", OK))
        dumps.load_database(r, DB, DUMP)
        assert commands(conn) == [
            *ENGINE, RUNNING, "take volume-hello-prod_database1_volume", LOADS,
            self.sql(f'CREATE DATABASE "{fresh}" OWNER "app"'),
            shlex.join(archives.pipeline(archives.pg_restore(IN_DB, fresh, "app"), input=str(DUMP))),
            self.sql(archives.swap_databases_sql("database1", fresh, retired)),
            self.sql(f'DROP DATABASE "{retired}"'),
            "release volume-hello-prod_database1_volume"]

    def test_a_dump_that_does_not_load_changes_nothing(self, capsys):
        fresh = f"database1__load_{STAMP.lower()}"
        r, conn = on_host((LOADS, Result(stdout="database1\n")), (lambda c: "DATABASE" in c, OK),
                          ("bash -o pipefail -c", Result(stderr="pg_restore: error: bad\n", exited=1)))
        with pytest.raises(TaskError, match=f"^pg_restore into {fresh} as app failed"):
            dumps.load_database(r, DB, DUMP)
        assert commands(conn)[-2:] == [self.sql(f'DROP DATABASE IF EXISTS "{fresh}"'),
                                       "release volume-hello-prod_database1_volume"]
        assert "nothing changed in database1: the dump did not load" in capsys.readouterr().out

    def test_what_a_killed_load_left_is_settled_first(self, capsys):
        left = "database1__load_20261204t000000z"
        r, conn = on_host((LOADS, Result(stdout=f"database1\n{left}\n")), (lambda c: "DATABASE" in c, OK),
                          ("bash -o pipefail -c", OK))
        dumps.settle_loads(r, DB, IN_DB)
        settled = archives.settle_loads("database1", ["database1", left])
        assert settled and commands(conn) == [LOADS] + [self.sql(s) for _, _, statements in settled
                                                        for s in statements]
        assert settled[0][1] in capsys.readouterr().out


class TestBackupFiles:
    def test_the_files_a_killed_task_left_are_deleted(self, capsys):
        gone = f".hello-prod_media_volume_x.tar.gz.00000000.999999999@{socket.gethostname()}.tmp"
        alive = f".hello-prod_media_volume_y.tar.gz.00000000{MARK}"
        r, conn = on_host((f"find {BACKUPS}", Result(stdout=f"{BACKUPS}/{gone}\n{BACKUPS}/{alive}\n")))
        assert backup_files.backup_dir(r) == BACKUPS
        assert commands(conn)[-1] == bash(hostfiles.remove([BACKUPS / gone]))
        assert f"deleted {gone}: left in {BACKUPS} by a task that was killed" in capsys.readouterr().out

    def test_a_name_taken_this_second_waits_for_the_next(self, monkeypatch):
        monkeypatch.setattr(backup_files.time, "sleep", lambda s: None)
        stamps = iter(["20261205T030000Z", "20261205T030001Z"])
        monkeypatch.setattr(archives, "stamp", lambda: next(stamps))
        r, conn = on_host((bash(hostfiles.exists(DUMP)), OK))
        assert backup_files.fresh_name(r, BACKUPS, "database1", ".dump").name == "hello-prod_database1_20261205T030001Z.dump"

    def test_a_name_taken_three_times_is_an_error(self, monkeypatch):
        monkeypatch.setattr(backup_files.time, "sleep", lambda s: None)
        r, _ = on_host(("bash -c 'test -e ", OK))
        with pytest.raises(TaskError, match=f"^{DUMP} exists already; try again$"):
            backup_files.fresh_name(r, BACKUPS, "database1", ".dump")

    def test_a_checksum_that_fails_says_why(self):
        r, _ = on_host(("sha256sum /", Result(stderr="sha256sum: x: No such file\n", exited=1)))
        with pytest.raises(TaskError, match="^could not checksum /x: sha256sum: x: No such file$"):
            backup_files.sha256(r, "/x")

    def test_the_key_is_made_on_first_use_0600(self, monkeypatch, capsys):
        key = backup_files.KEY_FILE
        key.unlink()
        r, _ = on_host()
        made = backup_files.signing_key(r.here())
        assert made == key.read_text().strip().encode() and len(made) == 64
        assert key.stat().st_mode & 0o777 == 0o600
        assert "created config/secrets/backup_key (mode 0600): keep a copy with your backups" in capsys.readouterr().out
        assert backup_files.signing_key(r.here()) == made

    def test_a_missing_key_refuses_to_verify(self):
        backup_files.KEY_FILE.unlink()
        with pytest.raises(TaskError, match="^config/secrets/backup_key is missing: backups are signed with it"):
            backup_files.verifying_key()


def volume_backup(tmp_path, entries=(("./", None), ("./a.txt", b"hello")), owners=("0:0",), compression="gzip",
                  **change):
    """A signed volume backup in TMP_PATH: (archive, manifest data)."""
    archive = tmp_path / f"hello_media_volume_{STAMP}.tar.gz"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    archive.write_bytes(buffer.getvalue())
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    fields = dict(kind="volume", archive=archive.name, sha256=digest, compression=compression,
                  owners=None if owners is None else list(owners),
                  created="t")
    fields.update(change)
    (tmp_path / (archive.name + ".sha256")).write_text(f"{fields['sha256']}  {archive.name}\n")
    text = archives.manifest(b"k" * 64, **fields)
    (tmp_path / (archive.name + ".json")).write_text(text)
    return archive, json.loads(text)


class TestReadingABackup:
    def test_a_signed_backup_is_read_from_either_of_its_names(self, tmp_path):
        archive, data = volume_backup(tmp_path)
        assert backup_files.read_local(archive) == (archive, data)
        assert backup_files.read_local(f"{archive}.json") == (archive, data)

    @pytest.mark.parametrize("damage, message", [
        (lambda a: a.unlink(), "does not exist"),
        (lambda a: a.with_name(a.name + ".json").unlink(), ".json is missing: hello_media_volume_"),
        (lambda a: a.with_name(a.name + ".json").write_text("{"), "hello_media_volume_"),
        (lambda a: a.with_name(a.name + ".sha256").unlink(), ".sha256 is missing: refusing"),
        (lambda a: a.with_name(a.name + ".sha256").write_text(f"{'0' * 64}  {a.name}\n"), "disagree on the SHA-256"),
    ], ids=["no-archive", "no-manifest", "bad-manifest", "no-checksum-file", "checksums-disagree"])
    def test_a_backup_that_is_not_whole_is_refused(self, tmp_path, damage, message):
        archive, _ = volume_backup(tmp_path)
        damage(archive)
        with pytest.raises(TaskError, match=message):
            backup_files.read_local(archive)

    def test_a_backup_signed_with_another_key_is_refused(self, tmp_path, monkeypatch):
        archive, _ = volume_backup(tmp_path)
        backup_files.KEY_FILE.write_text("o" * 64 + "\n")
        with pytest.raises(TaskError, match=f"is not signed with this project's backup key .*: refusing {archive.name}"):
            backup_files.read_local(archive)

    def test_a_manifest_of_another_archive_is_refused(self, tmp_path):
        archive, _ = volume_backup(tmp_path)
        other = archive.with_name("hello_media_volume_other.tar.gz")
        archive.rename(other)
        archive.with_name(archive.name + ".json").rename(other.with_name(other.name + ".json"))
        with pytest.raises(TaskError, match=f"describes {archive.name}, not {other.name}"):
            backup_files.read_local(other)

    def test_a_complete_backup_is_listed_and_a_broken_manifest_is_not(self, tmp_path):
        volume_backup(tmp_path)
        (tmp_path / "broken.json").write_text("{")
        r, _ = on_host()
        r.target.backups = tmp_path
        assert [d["archive"] for d in backup_files.manifests(r)] == [f"hello_media_volume_{STAMP}.tar.gz"]

    def test_a_checksum_that_does_not_match_on_the_host_is_corruption(self):
        r, conn = on_host(("sha256sum --check", MISSING))
        with pytest.raises(TaskError, match=r"^a.dump is corrupt or truncated: its SHA-256 is abababab"):
            backup_files.verify(r, PurePosixPath("/srv/a.dump"), {"sha256": "cd" * 32})


class TestVerifyingAVolumeArchive:
    def test_a_good_archive_is_read_once_for_its_sum_and_its_entries(self, tmp_path, capsys):
        archive, data = volume_backup(tmp_path)
        r, _ = on_host()
        backup_files.verify_volume_archive(r.here(), archive, data)
        assert f"verified {archive.name} (sha256 {data['sha256'][:12]}; every entry read)" in capsys.readouterr().out

    @pytest.mark.parametrize("change, message", [
        (dict(compression="lz4"), "uses an unknown compression 'lz4'"),
        (dict(owners=None), "lists no owners: refusing it; nothing was changed"),
        (dict(sha256="0" * 64), "is corrupt or truncated"),
        (dict(entries=[("./", None), ("../escape", b"x")]), "refusing hello_media_volume_"),
    ], ids=["compression", "owners", "checksum", "entry"])
    def test_an_archive_that_fails_a_check_is_refused_before_anything_is_written(self, tmp_path, change, message):
        archive, data = volume_backup(tmp_path, **change)
        r, _ = on_host()
        with pytest.raises(TaskError, match=message):
            backup_files.verify_volume_archive(r.here(), archive, data)

    def test_a_file_that_is_not_a_tar_archive_is_refused(self, tmp_path):
        archive, data = volume_backup(tmp_path)
        archive.write_bytes(b"\x1f\x8b" + b"not gzip at all" * 10)
        data["sha256"] = hashlib.sha256(archive.read_bytes()).hexdigest()
        r, _ = on_host()
        with pytest.raises(TaskError, match="refusing .*(not a readable tar archive|could not decompress it)"):
            backup_files.verify_volume_archive(r.here(), archive, data)


MEDIA = volume_copy.VolumeInfo("media_volume", "hello-prod_media_volume", ("djangoapp",), ("nginx",), "hello-app",
                               False)
DB_VOLUME = volume_copy.VolumeInfo("database1_volume", "hello-prod_database1_volume", ("database1",), (),
                                   "postgres:15", True)
VOLUME_TAR = BACKUPS / f"hello-prod_media_volume_{STAMP}.tar.gz"
VOLUME_TMP = BACKUPS / f".{VOLUME_TAR.name}.00000000{MARK}"


class TestVolumes:
    def test_the_stacks_volumes_name_their_writers_readers_and_image(self):
        config = json.dumps({"services": {"djangoapp": {"image": "hello-prod-djangoapp:abc"},
                                          "database1": {"image": "postgres:15"}}})
        r, conn = on_host((compose_argv(*compose.config_json()), Result(stdout=config)))
        volumes = volume_copy.stack_volumes(r)
        assert volumes["media_volume"] == volume_copy.VolumeInfo(
            "media_volume", "hello-prod_media_volume", ("djangoapp",), ("nginx",), "hello-prod-djangoapp:abc", False)
        assert volumes["database1_volume"].postgres and volumes["database1_volume"].image == "postgres:15"
        assert volume_copy.resolve_volume(volumes, "hello-prod_media_volume") is volumes["media_volume"]
        with pytest.raises(TaskError, match=r"^no volume named 'x' in this stack \(known: database1_volume, "):
            volume_copy.resolve_volume(volumes, "x")

    def test_an_unreadable_compose_configuration_is_one_line(self):
        r, _ = on_host((compose_argv(*compose.config_json()), Result(stderr="yaml: bad\n", exited=1)))
        with pytest.raises(TaskError, match="^could not read the compose configuration: yaml: bad$"):
            volume_copy.stack_volumes(r)

    @pytest.mark.parametrize("answer, name", [(OK, "zstd"), (MISSING, "gzip")])
    def test_zstd_when_the_host_has_it(self, answer, name):
        r, _ = on_host(("zstd --version", answer))
        assert volume_copy.compressor(r).name == name

    def test_helpers_a_killed_backup_left_are_removed(self):
        found = shlex.join(archives.leftover_helpers("hello-prod"))
        r, conn = on_host((found, Result(stdout="c1\nc2\n")), ("docker rm", OK))
        volume_copy.remove_leftover_helpers(r)
        assert commands(conn) == [found, shlex.join(archives.remove_container("c1", "c2"))]

    def backup_rules(self, stats="1000\n3\n\n0:0 1000:1000\n\n"):
        return [(shlex.join(["docker", "volume", "inspect", MEDIA.name]), OK),
                (shlex.join(archives.volume_stats(MEDIA.name, MEDIA.image, "hello-prod")), Result(stdout=stats)),
                ("docker rm", OK), (shlex.join(archives.create_helper(MEDIA.image, MEDIA.name, "hello-prod")),
                                    Result(stdout="HELPER\n")),
                (compose_argv("stop"), OK), (compose_argv("start"), OK), ("bash -o pipefail -c", OK),
                ("docker run", OK)]

    def test_a_volume_is_archived_with_its_writers_stopped_through_a_helper(self):
        r, conn = on_host(*self.backup_rules())
        assert volume_copy.backup_volume(r, MEDIA, archives.GZIP) == VOLUME_TAR
        assert commands(conn) == [
            shlex.join(["docker", "volume", "inspect", MEDIA.name]),
            bash(f"mkdir -p -m 700 {BACKUPS}"), f"find {BACKUPS} -maxdepth 1 -name '.*.tmp'",
            "take volume-hello-prod_media_volume", bash(hostfiles.exists(VOLUME_TAR)),
            *ENGINE, RUNNING, compose_argv(*compose.stop(["djangoapp"])),
            shlex.join(archives.volume_stats(MEDIA.name, MEDIA.image, "hello-prod")),
            shlex.join(archives.remove_container(archives.helper_name(MEDIA.name))),
            shlex.join(archives.create_helper(MEDIA.image, MEDIA.name, "hello-prod")),
            shlex.join(archives.archive_volume("HELPER", archives.GZIP, str(VOLUME_TMP))),
            shlex.join(archives.remove_container("HELPER")),
            compose_argv(*compose.start(["djangoapp"])),
            shlex.join(archives.sha256(str(VOLUME_TMP))),
            bash(hostfiles.rename(VOLUME_TMP, VOLUME_TAR)),
            bash(hostfiles.write(f"{VOLUME_TAR}.sha256", 0o600)), bash(hostfiles.write(f"{VOLUME_TAR}.json", 0o600)),
            bash(hostfiles.size(VOLUME_TAR)), UNSTARTED, "release volume-hello-prod_media_volume"]
        manifest = json.loads(conn.calls[-4][2])
        assert {k: manifest[k] for k in ("kind", "volume", "services", "size_bytes", "files", "owners", "compression")} \
            == {"kind": "volume", "volume": "media_volume", "services": ["djangoapp", "nginx"], "size_bytes": 1000,
                "files": 3, "owners": ["0:0", "1000:1000"], "compression": "gzip"}

    def test_a_restore_a_killed_task_left_is_settled_before_the_archive(self, capsys):
        stats, settle = (shlex.join(archives.volume_stats(MEDIA.name, MEDIA.image, "hello-prod")),
                         shlex.join(archives.settle_restore(MEDIA.name, MEDIA.image, "hello-prod")))
        running = iter(["djangoapp\nnginx\nfront\ndatabase1\n", "nginx\nfront\ndatabase1\n"])
        found = iter(["1000\n3\n\n0:0\n.restore-new\n", "1000\n3\n\n0:0\n\n"])
        r, conn = on_host((RUNNING, lambda c: Result(stdout=next(running))), (stats, lambda c: Result(stdout=next(found))),
                          *self.backup_rules())
        assert volume_copy.backup_volume(r, MEDIA, archives.GZIP) == VOLUME_TAR
        # Every user of the volume stopped for the settling (the app is already), then the stats again.
        assert commands(conn)[8:15] == [compose_argv(*compose.stop(["djangoapp"])), stats, RUNNING,
                                        compose_argv(*compose.stop(["nginx"])), settle,
                                        compose_argv(*compose.start(["nginx"])), stats]
        assert "hello-prod_media_volume holds .restore-new, left by an interrupted restore" in capsys.readouterr().out

    def test_a_volume_that_does_not_exist_is_not_backed_up(self):
        r, conn = on_host((shlex.join(["docker", "volume", "inspect", MEDIA.name]), MISSING))
        with pytest.raises(TaskError, match="^volume hello-prod_media_volume does not exist: nothing to back up"):
            volume_copy.backup_volume(r, MEDIA, archives.GZIP)
        assert len(conn.commands) == 1

    def test_a_helper_that_cannot_be_made_fails_the_backup_and_starts_the_writers_again(self):
        r, conn = on_host((shlex.join(archives.create_helper(MEDIA.image, MEDIA.name, "hello-prod")),
                           Result(stderr="no such image\n", exited=1)), *self.backup_rules())
        with pytest.raises(TaskError, match="^could not create a helper container from hello-app .*: no such image$"):
            volume_copy.backup_volume(r, MEDIA, archives.GZIP)
        assert commands(conn)[-4:] == [compose_argv(*compose.start(["djangoapp"])),
                                       bash(hostfiles.remove([VOLUME_TMP])), UNSTARTED,
                                       "release volume-hello-prod_media_volume"]


class TestRestoringAVolume:
    DATA = {"kind": "volume", "compression": "gzip", "sha256": SUM, "owners": ["0:0"]}

    @pytest.mark.parametrize("data, message", [
        (dict(DATA, kind="dump"), "is a dump backup; use `inv db.load` for database dumps"),
        (dict(DATA, compression="lz4"), "uses an unknown compression 'lz4'"),
    ], ids=["a-dump", "compression"])
    def test_what_is_not_a_volume_archive_is_refused(self, data, message):
        r, conn = on_host()
        with pytest.raises(TaskError, match=message):
            volume_copy.restore_volume(r, MEDIA, VOLUME_TAR, data, 60)
        assert conn.commands == []

    def test_data_of_another_postgres_major_is_refused(self):
        r, conn = on_host((shlex.join(archives.image_environment("postgres:15")), Result(stdout="PG_MAJOR=15\n")))
        with pytest.raises(TaskError, match="holds PostgreSQL 14 data but database1_volume runs postgres:15 "
                                            r"\(PostgreSQL 15\)"):
            volume_copy.restore_volume(r, DB_VOLUME, VOLUME_TAR, dict(self.DATA, postgres_major="14"), 60)

    def test_an_image_without_pg_major_is_asked_its_version(self):
        r, conn = on_host((shlex.join(archives.image_environment("postgres:15")), Result(stdout="PATH=/bin\n")),
                          (shlex.join(archives.postgres_version("postgres:15")), Result(stderr="no\n", exited=1)))
        with pytest.raises(TaskError, match="^could not run postgres --version in postgres:15: no$"):
            volume_copy.restore_volume(r, DB_VOLUME, VOLUME_TAR, self.DATA, 60)

    def rules(self):
        return [(shlex.join(archives.engine_facts()), Result(stdout="")),
                ("docker volume inspect", OK), (compose_argv("stop"), OK), (compose_argv("start"), OK),
                ("docker run", OK), ("bash -o pipefail -c", OK)]

    def test_a_restore_moves_the_content_aside_unpacks_starts_the_stack_and_drops_the_copy(self, monkeypatch):
        started = []
        monkeypatch.setattr(volume_copy, "start_stack", lambda r, **kw: started.append(kw))
        r, conn = on_host(*self.rules())
        volume_copy.restore_volume(r, MEDIA, VOLUME_TAR, self.DATA, 60)
        assert commands(conn) == [
            "take volume-hello-prod_media_volume",
            shlex.join(["docker", "volume", "inspect", "hello-prod_static_volume"]),
            shlex.join(["docker", "volume", "inspect", "hello-prod_database1_volume"]),
            shlex.join(["docker", "volume", "inspect", MEDIA.name]),
            shlex.join(archives.engine_facts()),
            *ENGINE, RUNNING, compose_argv(*compose.stop(["djangoapp", "nginx"])),
            shlex.join(archives.move_aside(MEDIA.name, MEDIA.image, "hello-prod")),
            shlex.join(archives.extract_volume(str(VOLUME_TAR), archives.GZIP, MEDIA.name, MEDIA.image, "hello-prod", fifo=None)),
            compose_argv(*compose.start(["djangoapp", "nginx"])),
            shlex.join(archives.drop_safety(MEDIA.name, MEDIA.image, "hello-prod")),
            UNSTARTED, "release volume-hello-prod_media_volume"]
        assert started == [dict(build=False, timeout=60, what="starting the stack after the restore", migrate=False,
                                static=False)]

    def test_a_failed_unpack_puts_the_safety_copy_back(self, monkeypatch):
        monkeypatch.setattr(volume_copy, "start_stack", lambda r, **kw: pytest.fail("started"))
        extract = shlex.join(archives.extract_volume(str(VOLUME_TAR), archives.GZIP, MEDIA.name, MEDIA.image, "hello-prod"))
        r, conn = on_host((extract, Result(stderr="tar: short read\n", exited=2)), *self.rules())
        with pytest.raises(TaskError, match="^restoring hello-prod_media_volume failed"):
            volume_copy.restore_volume(r, MEDIA, VOLUME_TAR, self.DATA, 60)
        assert commands(conn)[-5:] == [extract, shlex.join(archives.put_safety_back(MEDIA.name, MEDIA.image, "hello-prod")),
                                       compose_argv(*compose.start(["djangoapp", "nginx"])),
                                       UNSTARTED, "release volume-hello-prod_media_volume"]

    def test_a_helper_a_ctrl_c_left_never_started_is_removed_before_the_lock_is_given_back(self, monkeypatch):
        monkeypatch.setattr(volume_copy, "start_stack", lambda r, **kw: pytest.fail("started"))
        move = shlex.join(archives.move_aside(MEDIA.name, MEDIA.image, "hello-prod"))
        r, conn = on_host((move, KeyboardInterrupt()), (UNSTARTED, Result(stdout="c1\n")), ("docker rm", OK),
                          *self.rules())
        with pytest.raises(KeyboardInterrupt):
            volume_copy.restore_volume(r, MEDIA, VOLUME_TAR, self.DATA, 60)
        assert commands(conn)[-6:] == [move, shlex.join(archives.put_safety_back(MEDIA.name, MEDIA.image, "hello-prod")),
                                       compose_argv(*compose.start(["djangoapp", "nginx"])), UNSTARTED,
                                       shlex.join(archives.remove_container("c1")),
                                       "release volume-hello-prod_media_volume"]

    def test_a_stack_unhealthy_with_the_restored_volume_gets_its_previous_content_back(self, monkeypatch):
        def unhealthy(r, **kw):
            raise TaskError("djangoapp did not become healthy")

        monkeypatch.setattr(volume_copy, "start_stack", unhealthy)
        r, conn = on_host((compose_argv("up"), OK), *self.rules())
        with pytest.raises(TaskError, match=f"^restore of {VOLUME_TAR.name} rolled back: the stack was not healthy "
                                            r"with it \(djangoapp did not become healthy\); hello-prod_media_volume "
                                            "has its previous content again$"):
            volume_copy.restore_volume(r, MEDIA, VOLUME_TAR, self.DATA, 60)
        assert commands(conn)[-7:] == [
            RUNNING, compose_argv(*compose.stop(["djangoapp", "nginx"])),
            shlex.join(archives.put_safety_back(MEDIA.name, MEDIA.image, "hello-prod")),
            compose_argv(*compose.start(["djangoapp", "nginx"])),
            compose_argv(*compose.up(build=False, timeout=60)), UNSTARTED, "release volume-hello-prod_media_volume"]

    def test_a_volume_not_made_yet_is_made_by_compose_first(self, monkeypatch):
        monkeypatch.setattr(volume_copy, "start_stack", lambda r, **kw: None)
        r, conn = on_host((shlex.join(["docker", "volume", "inspect", MEDIA.name]), MISSING),
                          (compose_argv("up"), OK), *self.rules())
        volume_copy.restore_volume(r, MEDIA, VOLUME_TAR, self.DATA, 60)
        assert compose_argv(*compose.up(build=False, wait=False), "--no-start") in conn.commands

    @pytest.mark.parametrize("facts, fifo", [
        ("vm\nvm\n", True), ("vm name=seccomp\nvm\n", True), ("vm name=selinux\nvm\n", False),
        ("docker-desktop\nlaptop\n", False),
    ], ids=["same-machine", "seccomp", "selinux", "another-machine"])
    def test_the_archive_streams_through_a_fifo_when_the_engine_is_on_the_same_machine(self, facts, fifo):
        r, _ = on_host((shlex.join(archives.engine_facts()), Result(stdout=facts)))
        path = volume_copy.stream_path(r, VOLUME_TAR)
        # Beside the archive, hidden, unique to this run.
        assert (path or "").startswith(str(BACKUPS / f".{VOLUME_TAR.name}.00000000.")) if fifo else path is None
