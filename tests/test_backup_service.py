"""The backup service's script (config/backup/backup.py), here rather than in its container:
its decisions as plain functions (schedule, retention, drill verdicts, status, credentials,
manifests), and its flows (a run, a drill, a restore's reads, the listings) against a
strict stand-in for the programs it runs (restic, psql, pg_dump, PostgreSQL's server
tools): each command is recorded as argv, and one the test did not expect raises. What the
real programs do with them is tested in tests/e2e/test_scheduled_backups.py."""
from __future__ import annotations

import datetime
import gzip
import hashlib
import importlib.util
import io
import json
import os
import subprocess
import sys
import tarfile
import types

import pytest

HOST = "hello@local"
SHA_A = hashlib.sha256(b"dump of database1").hexdigest()
PNG = b"\x89PNG a picture"
SHA_PNG = hashlib.sha256(PNG).hexdigest()


def load():
    spec = importlib.util.spec_from_file_location("backup_service", "config/backup/backup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- the stand-in for subprocess ------------------------------------------------------

class Psql:
    """An interactive psql session: answers the snapshot export and the row counts the
    script writes to its standard input, each followed by the end marker it echoes."""

    def __init__(self, end, counts, snapshot="00000003-0000001B-1"):
        self.end, self.counts, self.snapshot = end, counts, snapshot
        self.lines, self.written, self.returncode = [], [], None
        self.stdin = types.SimpleNamespace(write=self._write, flush=lambda: None, close=lambda: None)
        self.stdout, self.stderr = self, io.StringIO("")

    def _write(self, text):
        self.written.append(text)
        if "pg_export_snapshot()" in text:
            self.lines += [self.snapshot, self.end]
        elif "\\gexec" in text:
            self.lines += [f"{table}\t{rows}" for table, rows in self.counts.items()] + [self.end]

    def __iter__(self):
        return self

    def __next__(self):
        if not self.lines:
            raise StopIteration
        return self.lines.pop(0) + "\n"

    def poll(self):
        return self.returncode

    def wait(self, timeout=None):
        self.returncode = 0
        return 0

    def kill(self):
        self.returncode = -9


class Streamed:
    """A process whose output is read as a stream (restic backup's JSON lines, restic dump's tar)."""

    def __init__(self, stdout, stderr="", code=0, binary=False):
        if binary:
            self.stdout, self.stderr = io.BufferedReader(io.BytesIO(stdout)), io.BytesIO(stderr.encode())
        else:
            self.stdout, self.stderr = io.StringIO(stdout), io.StringIO(stderr)
        self.code, self.returncode = code, None

    def wait(self, timeout=None):
        self.returncode = self.code
        return self.code

    def poll(self):
        return self.returncode


class Programs:
    """subprocess as backup.py sees it. ANSWERS maps an argv prefix (a tuple) to what the
    program does: (exit status, standard output, standard error), or a function of (argv,
    keyword arguments) returning that or a process (for Popen); the longest prefix wins. A
    command no prefix matches raises."""
    DEVNULL, PIPE = subprocess.DEVNULL, subprocess.PIPE
    TimeoutExpired, CalledProcessError = subprocess.TimeoutExpired, subprocess.CalledProcessError

    def __init__(self, answers):
        self.answers = dict(answers)
        self.argv, self.envs = [], []

    def _answer(self, argv, kwargs):
        self.argv.append(list(argv))
        self.envs.append(kwargs.get("env"))
        for prefix in sorted(self.answers, key=len, reverse=True):
            if tuple(argv[:len(prefix)]) == prefix:
                answer = self.answers[prefix]
                return answer(argv, kwargs) if callable(answer) else answer
        raise AssertionError(f"unexpected command: {argv}")

    def run(self, argv, **kwargs):
        code, out, err = self._answer(argv, kwargs)
        sink = kwargs.get("stdout")
        if sink not in (None, subprocess.PIPE) and hasattr(sink, "write"):
            sink.write(out.encode() if isinstance(out, str) else out)
            out = None
        if kwargs.get("check") and code:
            raise subprocess.CalledProcessError(code, argv, out, err)
        return subprocess.CompletedProcess(argv, code, out, err)

    def Popen(self, argv, **kwargs):  # noqa: N802 - subprocess's name
        return self._answer(argv, kwargs)


# -- fixtures -----------------------------------------------------------------------------

@pytest.fixture
def script(tmp_path, monkeypatch):
    """backup.py with its folders under TMP_PATH and the environment the service's
    container gives it (a local repository, one database)."""
    module = load()
    folders = {"SECRETS": "secrets", "STATE": "state", "DUMPS": "backup/dumps", "MEDIA": "backup/media"}
    for name, folder in folders.items():
        (tmp_path / folder).mkdir(parents=True)
        monkeypatch.setattr(module, name, str(tmp_path / folder))
    monkeypatch.setattr(module, "CERTS", str(tmp_path / "backup/certs"))
    monkeypatch.setattr(module, "MANIFEST", f"{module.DUMPS}/manifest.json")
    for name in ("STATUS_FILE", "LOCK_FILE", "USE_FILE"):
        monkeypatch.setattr(module, name, str(tmp_path / "state" / os.path.basename(getattr(module, name))))
    monkeypatch.setattr(module, "EXPECTED", str(tmp_path / "expected.json"))
    (tmp_path / "secrets/restic_password").write_text("repository password\n")
    (tmp_path / "secrets/database1_password").write_text("app password\n")
    for name, value in {"BACKUP_REPOSITORY": "/repository", "BACKUP_HOST": HOST, "BACKUP_PROJECT": "hello",
                        "BACKUP_DATABASES": "database1", "BACKUP_KEEP": "daily=7,weekly=4,monthly=6",
                        "BACKUP_SCHEDULE": "15 3 * * *", "BACKUP_DRILL": "30 4 * * 0"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("BACKUP_REPOSITORY_ON_HOST", raising=False)
    monkeypatch.setattr(module.time, "sleep", lambda seconds: None)
    module.tmp_path = tmp_path
    return module


def programs(script, monkeypatch, answers):
    fake = Programs(answers)
    monkeypatch.setattr(script, "subprocess", fake)
    return fake


def shown(script, argv_list, **names):
    """ARGV_LIST with the test's folders written as T (and each of NAMES' paths as its name)."""
    def word(w):
        for name, path in names.items():
            w = w.replace(path, name)
        return w.replace(str(script.tmp_path), "T")
    return [[word(w) for w in argv] for argv in argv_list]


def manifest(**change):
    data = {"project": "hello", "host": HOST, "postgres_major": "15",
            "databases": {"database1": {"file": "database1.dump", "sha256": SHA_A, "bytes": 17,
                                        "tables": {"public.t": 3}}},
            "media": {"uploads/a.png": SHA_PNG}}
    data.update(change)
    return data


def listed(*snaps):
    return (0, json.dumps([{"short_id": s, "id": s * 8, "hostname": h, "time": "2026-12-05T03:15:00.123456Z",
                            "paths": ["/backup/dumps"], "tags": ["hello"]} for s, h in snaps]), "")


OK = (0, "", "")
VERSION = (0, "pg_dump (PostgreSQL) 15.8 (Debian 15.8-1)\n", "")


# -- decisions ------------------------------------------------------------------------------

class TestRetention:
    @pytest.mark.parametrize("keep, options", [
        ("daily=7,weekly=4,monthly=6", ["--keep-daily=7", "--keep-weekly=4", "--keep-monthly=6"]),
        ("hourly=24", ["--keep-hourly=24"]),
        ("daily=7,", ["--keep-daily=7"]),
    ], ids=["the-defaults", "one-period", "a-trailing-comma"])
    def test_the_keep_setting_becomes_restic_forget_options(self, script, keep, options):
        assert script.forget_options(keep) == options


class TestSchedule:
    class Every:
        """A cron iterator firing every STEP seconds from START."""

        def __init__(self, start, step):
            self.next, self.step = start, step

        def get_next(self, kind):
            self.next += self.step
            return kind(self.next)

    def test_the_next_run_is_the_first_firing_after_now(self, script):
        job = self.Every(1000, 60)
        assert script.next_after(job, 1000, 1030) == 1060

    def test_a_run_longer_than_the_interval_skips_the_firings_it_overran(self, script):
        job = self.Every(1000, 60)
        assert script.next_after(job, 1000, 1200) == 1240 and job.next == 1240

    def test_a_due_time_still_ahead_is_kept(self, script):
        assert script.next_after(self.Every(0, 60), 1300, 1200) == 1300

    @pytest.mark.parametrize("times, gap", [([0, 60, 120], 60), ([0, 86400, 86400 + 90000, 176400 + 86400], 90000)],
                             ids=["even", "a-day-of-25-hours"])
    def test_the_interval_is_the_longest_gap_between_firings(self, script, times, gap):
        assert script.longest_gap(times) == gap


class TestStatusVerdict:
    AT = datetime.datetime(2026, 12, 5, 12, 0, tzinfo=datetime.timezone.utc)

    def test_a_recent_success_is_fine(self, script):
        state = {"backup": {"last_success": "2026-12-05T03:15:00+00:00", "failures": 0}}
        assert script.verdict(state, 2 * 86400, self.AT) == {"age": 31500.0, "limit": 172800, "overdue": False,
                                                             "failing": False}

    def test_no_success_yet_is_overdue(self, script):
        assert script.verdict({}, 600, self.AT) == {"age": None, "limit": 600, "overdue": True, "failing": False}

    def test_a_success_older_than_the_limit_is_overdue(self, script):
        state = {"backup": {"last_success": "2026-12-01T03:15:00+00:00"}}
        assert script.verdict(state, 2 * 86400, self.AT)["overdue"] is True

    @pytest.mark.parametrize("state", [{"backup": {"failures": 2}}, {"drill": {"failures": 1}}],
                             ids=["run", "drill"])
    def test_a_failed_run_or_drill_is_failing(self, script, state):
        assert script.verdict(state, 60, self.AT)["failing"] is True


class TestRecord:
    def test_a_success_after_failures_is_a_recovery_and_remembers_the_repository(self, script):
        status, news = script.recorded({"backup": {"failures": 2, "last_error": "boom"}}, "backup", True,
                                       {"snapshot": "abcd1234"}, None, "2026-12-05T03:15:00+00:00", "/repository")
        assert status == {"backup": {"failures": 0, "last_error": None, "snapshot": "abcd1234",
                                     "last_attempt": "2026-12-05T03:15:00+00:00",
                                     "last_success": "2026-12-05T03:15:00+00:00", "repositories": ["/repository"]}}
        assert news == ("backup recovered", "backup succeeded again at 2026-12-05T03:15:00+00:00")

    def test_a_success_after_a_success_tells_no_one_and_lists_the_repository_once(self, script):
        status, news = script.recorded({"backup": {"failures": 0, "repositories": ["/repository"]}}, "backup", True,
                                       {}, None, "T", "/repository")
        assert news is None and status["backup"]["repositories"] == ["/repository"]

    def test_a_failed_drill_counts_and_is_told(self, script):
        status, news = script.recorded({"drill": {"failures": 1}}, "drill", False, {}, "snapshot x: bad", "T")
        assert status == {"drill": {"failures": 2, "last_error": "snapshot x: bad", "last_attempt": "T",
                                    "last_failure": "T"}}
        assert news == ("restore drill FAILED", "snapshot x: bad")


class TestDrillVerdicts:
    def test_media_that_match_the_manifest_have_no_problem(self, script):
        assert script.media_problems({"a": "1", "b/c": "2"}, {"a": "1", "b/c": "2"}) == []

    def test_each_difference_of_the_media_is_named(self, script):
        assert script.media_problems({"a": "1", "b": "2", "c": "3"}, {"a": "9", "c": "3", "d": "4", "e": "5"}) == [
            "media: 4 files, the manifest lists 3", "media/b: missing", "media/d: not in the manifest",
            "media/e: not in the manifest", "media/a: sha256 differs"]

    def test_a_table_whose_rows_differ_or_are_gone_is_named(self, script):
        assert script.count_problems("database1", {"public.a": 3, "public.b": 1, "public.c": 0},
                                     {"public.a": 3, "public.b": 2}) == [
            "database1.public.b: 2 rows, the backup counted 1", "database1.public.c: None rows, the backup counted 0"]

    def test_unapplied_migrations_are_one_problem_naming_the_first_five(self, script):
        expected = {f"app.{n:04}_m" for n in range(1, 8)}
        assert script.migration_problems("database1", expected, ["app.0001_m", "app.0007_m"]) == [
            "database1: 5 migration(s) of the running code not applied (migrate --check fails): "
            "app.0002_m, app.0003_m, app.0004_m, app.0005_m, app.0006_m"]
        assert script.migration_problems("database1", {"app.0001_m"}, ["app.0001_m", "other.0001_x"]) == []


class TestCredentials:
    def test_backend_credentials_are_read_and_comments_and_blanks_skipped(self, script):
        lines = ["# the bucket's\n", "\n", "AWS_ACCESS_KEY_ID = AKIA123\n", "AWS_SECRET_ACCESS_KEY=a=b\n", "noequals\n"]
        assert script.repository_credentials(lines) == {"AWS_ACCESS_KEY_ID": "AKIA123", "AWS_SECRET_ACCESS_KEY": "a=b"}

    @pytest.mark.parametrize("line", ["LD_PRELOAD=/tmp/x.so", "RESTIC_REPOSITORY=/elsewhere", "PATH=/tmp"])
    def test_anything_but_a_credential_is_refused(self, script, line):
        with pytest.raises(script.Failed, match=f"repository.env may set credentials only .*, not {line.split('=')[0]}$"):
            script.repository_credentials([line])

    def test_restic_gets_the_repository_password_file_and_credentials_and_no_backup_variable(self, script):
        (script.tmp_path / "secrets/repository.env").write_text("B2_ACCOUNT_ID=id\n")
        e = script.restic_env()
        assert e["RESTIC_REPOSITORY"] == "/repository" and e["B2_ACCOUNT_ID"] == "id"
        assert e["RESTIC_PASSWORD_FILE"] == f"{script.SECRETS}/restic_password"
        assert e["RESTIC_CACHE_DIR"] == f"{script.STATE}/cache" and e["HOME"] == script.STATE
        assert not [k for k in e if k.startswith("BACKUP_")]

    def test_a_missing_variable_is_one_line(self, script, monkeypatch):
        monkeypatch.delenv("BACKUP_HOST")
        with pytest.raises(script.Failed, match="^BACKUP_HOST is not set$"):
            script.host()


class TestOpening:
    @pytest.mark.parametrize("message, why", [
        ("Fatal: wrong password or no key found", "password"),
        ("Fatal: unable to open config file: stat /repository/config: no such file or directory", "missing"),
        ("Fatal: repository does not exist: unable to open config file", "missing"),
        ("Is there a repository at the following location?", "missing"),
        ("Fatal: unable to open repository: connection refused", "other"),
    ], ids=["password", "no-config", "does-not-exist", "is-there", "network"])
    def test_restics_message_says_why(self, script, message, why):
        assert script.opening_failure(message) == why

    def test_a_missing_repository_is_made(self, script, monkeypatch, capsys):
        fake = programs(script, monkeypatch, {
            ("restic", "cat", "config"): (1, "", "Fatal: unable to open config file: stat /repository/config\n"),
            ("restic", "init"): OK})
        script.ensure_repository()
        assert fake.argv == [["restic", "cat", "config"], ["restic", "init", "--repository-version", "2"]]
        assert "making a new restic repository at /repository" in capsys.readouterr().out

    def test_a_repository_this_stack_wrote_to_that_is_gone_is_an_error_not_a_new_one(self, script, monkeypatch):
        script.write_json(script.STATUS_FILE, {"backup": {"repositories": ["/repository"]}})
        fake = programs(script, monkeypatch, {("restic", "cat", "config"): (1, "", "Fatal: unable to open config file\n")})
        with pytest.raises(script.Failed, match="the repository at /repository is gone .* is its disk or bucket missing"):
            script.ensure_repository()
        assert fake.argv == [["restic", "cat", "config"]]

    def test_a_wrong_password_is_said(self, script, monkeypatch):
        programs(script, monkeypatch, {("restic", "cat", "config"): (1, "", "Fatal: wrong password or no key found\n")})
        with pytest.raises(script.Failed, match="^the repository refused the password: Fatal: wrong password"):
            script.ensure_repository()

    def test_an_sftp_repository_that_cannot_be_opened_says_what_ssh_says(self, script, monkeypatch):
        monkeypatch.setenv("BACKUP_REPOSITORY", "sftp:backup@vault.example.com:/srv/restic")
        for name in ("ssh_key", "known_hosts"):
            (script.tmp_path / "secrets" / name).write_text("x\n")
        fake = programs(script, monkeypatch, {
            ("restic",): (1, "", "Fatal: unable to open repository at sftp:...: unable to start the sftp session\n"),
            ("ssh",): (255, "", "Host key verification failed.\n")})
        with pytest.raises(script.Failed) as failed:
            script.ensure_repository()
        assert str(failed.value) == ("the repository cannot be opened: Fatal: unable to open repository at sftp:...: "
                                     "unable to start the sftp session (ssh: Host key verification failed.)")
        ssh = ["ssh", "-i", f"{script.SECRETS}/ssh_key", "-o", f"UserKnownHostsFile={script.SECRETS}/known_hosts",
               "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
               "-o", "ConnectTimeout=30", "-o", "ServerAliveInterval=30", "-o", "ServerAliveCountMax=4"]
        assert fake.argv == [
            ["restic", "-o", "sftp.command=" + " ".join(ssh + ["backup@vault.example.com", "-s", "sftp"]), "cat", "config"],
            ssh + ["-s", "backup@vault.example.com", "sftp"]]

    def test_an_sftp_repository_needs_the_key_and_the_servers_keys(self, script, monkeypatch):
        monkeypatch.setenv("BACKUP_REPOSITORY", "sftp:backup@vault.example.com:/srv/restic")
        (script.tmp_path / "secrets/ssh_key").write_text("key\n")
        (script.tmp_path / "secrets/known_hosts").write_text("\n")  # a cluster's blank secret: not set up
        with pytest.raises(script.Failed, match="run inv backup.ssh-key$"):
            script.sftp_options()


class TestKeyscan:
    def test_the_sftp_servers_keys_are_printed_as_known_hosts_lines(self, script, monkeypatch, capsys):
        monkeypatch.setenv("BACKUP_REPOSITORY", "sftp:backup@vault.example.com:/srv/restic")
        fake = programs(script, monkeypatch, {("ssh-keyscan",): (
            0, "# vault.example.com:22 SSH-2.0-OpenSSH\nvault.example.com ssh-ed25519 AAAA\n", "")})
        script.keyscan()
        assert fake.argv == [["ssh-keyscan", "-T", "15", "-t", "ed25519,ecdsa,rsa", "vault.example.com"]]
        assert capsys.readouterr().out == "vault.example.com ssh-ed25519 AAAA\n"

    def test_no_key_is_one_line(self, script, monkeypatch):
        monkeypatch.setenv("BACKUP_REPOSITORY", "sftp:vault.example.com:/srv/restic")
        programs(script, monkeypatch, {("ssh-keyscan",): (1, "", "")})
        with pytest.raises(script.Failed, match="^vault.example.com gave no SSH host key: no answer on port 22$"):
            script.keyscan()

    def test_another_repository_has_no_keys_to_scan(self, script):
        with pytest.raises(script.Failed, match="the repository is not sftp:"):
            script.keyscan()


class TestLockedRepository:
    def test_a_command_waits_for_another_places_lock_then_goes_on(self, script, monkeypatch, capsys):
        answers = iter([(1, "", "Fatal: unable to create lock in backend: repository is already locked by PID 7\n"),
                        (0, "[]", "")])
        fake = programs(script, monkeypatch, {("restic", "snapshots"): lambda argv, kw: next(answers)})
        assert script.restic("snapshots", "--json").stdout == "[]"
        assert len(fake.argv) == 2
        assert "the repository is locked by another run (Fatal: unable to create lock" in capsys.readouterr().err

    def test_a_backup_waits_for_a_lock_that_restic_reports_on_several_lines(self, script, monkeypatch, capsys):
        """restic 0.14's lock error ends with its hint about `unlock`: the backup still sees
        the lock in it, waits, and goes on (two hosts backing up to one repository at once)."""
        error = ("unable to create lock in backend: repository is already locked exclusively by PID 7 on web by root\n"
                 "lock was created at 2026-12-06 02:30:01 (1.2s ago)\nstorage ID 1a2b3c4d\n"
                 "the `unlock` command can be used to remove stale locks\n")
        summary = {"snapshot_id": "abcdef0123456789"}
        attempts, real_once = iter([script.Locked(error), summary]), script.backup_once

        def once(paths, files_from):
            outcome = next(attempts)
            if isinstance(outcome, Exception):
                raise outcome
            return outcome
        monkeypatch.setattr(script, "backup_once", once)
        monkeypatch.setattr(script.time, "sleep", lambda seconds: None)
        assert script.backup_with_progress(["/backup/dumps"], "/tmp/files") == summary
        assert ("the repository is locked by another run (unable to create lock in backend: repository is already "
                "locked exclusively by PID 7 on web by root)") in capsys.readouterr().err
        # What restic printed reaches the wait whole, the lock's line with it.
        programs(script, monkeypatch, run_answers(script, summary={}, backup_code=1, stderr=error))
        with pytest.raises(script.Locked) as locked:
            real_once(["/backup/dumps"], "/tmp/files")
        assert "is already locked exclusively by PID 7" in str(locked.value)
        monkeypatch.setattr(script, "LOCK_WAIT", 0)
        attempts = iter([script.Locked(error)])
        with pytest.raises(script.Failed, match=r"^restic backup: unable to create lock in backend: repository is "
                                                r"already locked exclusively by PID 7 on web by root$"):
            script.backup_with_progress(["/backup/dumps"], "/tmp/files")

    def test_waiting_ends_when_the_time_is_up(self, script, monkeypatch):
        monkeypatch.setattr(script, "LOCK_WAIT", 0)
        programs(script, monkeypatch, {("restic", "check"): (1, "", "Fatal: repository is already locked\n")})
        with pytest.raises(script.Failed, match="^restic check: Fatal: repository is already locked$"):
            script.restic("check")

    def test_another_failure_is_not_waited_for(self, script, monkeypatch):
        fake = programs(script, monkeypatch, {("restic", "check"): (1, "", "error: a pack is damaged\nusage...\n")})
        assert script.restic("check", check=False).returncode == 1 and len(fake.argv) == 1


class TestLastLine:
    @pytest.mark.parametrize("text, line", [
        ("one\ntwo\n\n", "two"), (b"bytes\n", "bytes"), ("", "no message"), (None, "no message"),
        ("Fatal: the error\nUsage: restic ...\n  more help\n", "Fatal: the error"),
    ], ids=["last", "bytes", "empty", "none", "restics-fatal"])
    def test_the_line_that_says_what_went_wrong(self, script, text, line):
        assert script.last_line(text) == line


# -- a backup run -------------------------------------------------------------------------

def run_answers(script, summary=None, backup_code=0, stderr="", messages=()):
    summary = {"message_type": "summary", "snapshot_id": "abcdef0123456789", "total_bytes_processed": 4096,
               "data_added": 1024} if summary is None else summary

    def pg_dump(argv, kw):
        path = next(w for w in argv if w.startswith("--file="))[len("--file="):]
        with open(path, "wb") as f:
            f.write(b"dump of database1")
        return OK

    def backup(argv, kw):
        lines = [{"message_type": "status", "percent_done": 0.5, "total_bytes": 4096}, *messages]
        lines += [summary] if summary else []
        return Streamed("not json\n" + "".join(json.dumps(line) + "\n" for line in lines), stderr, backup_code)

    return {("restic", "cat", "config"): OK, ("restic", "unlock"): OK, ("restic", "forget"): OK,
            ("restic", "check"): OK, ("pg_dump", "--version"): VERSION, ("pg_dump", "--format=custom"): pg_dump,
            ("psql", "-XAtq", "-v", "ON_ERROR_STOP=1"): lambda argv, kw: Psql(script.END, {"public.t": 3}),
            ("restic", "backup"): backup}


class TestRun:
    def test_a_run_dumps_sends_forgets_by_the_keep_setting_checks_and_records(self, script, monkeypatch, capsys):
        (script.tmp_path / "backup/media/uploads").mkdir()
        (script.tmp_path / "backup/media/uploads/a.png").write_bytes(PNG)
        fake = programs(script, monkeypatch, run_answers(script))
        assert script.main(["run"]) == 0
        dumps, state = f"{script.DUMPS}", script.STATE
        assert fake.argv == [
            ["restic", "cat", "config"],
            ["restic", "unlock"],
            ["pg_dump", "--version"],
            ["psql", "-XAtq", "-v", "ON_ERROR_STOP=1"],
            ["pg_dump", "--format=custom", "--compress=0", "--snapshot=00000003-0000001B-1", "--lock-wait-timeout=60s",
             "--no-password", f"--file={dumps}/database1.dump"],
            ["restic", "backup", "--json", "--host", HOST, "--tag", "hello", "--compression", "auto",
             "--files-from-raw", f"{state}/media-files", dumps],
            ["restic", "forget", "--host", HOST, "--prune", "--keep-daily=7", "--keep-weekly=4", "--keep-monthly=6"],
            ["restic", "check"]]
        # The database's password reaches psql and pg_dump in their environment alone.
        assert fake.envs[3]["PGPASSWORD"] == "app password" and fake.envs[4] is fake.envs[3]
        assert fake.envs[3]["PGHOST"] == "database1" and fake.envs[3]["PGUSER"] == "app"
        assert fake.envs[5]["RESTIC_REPOSITORY"] == "/repository"
        assert (script.tmp_path / "state/media-files").read_text() == f"{script.MEDIA}/uploads/a.png\0"
        assert os.listdir(dumps) == []  # the staged dumps are cleared after the run
        status = json.loads((script.tmp_path / "state/status.json").read_text())["backup"]
        assert {k: status[k] for k in ("snapshot", "bytes", "added", "failures", "repositories", "last_error")} == {
            "snapshot": "abcdef01", "bytes": 4096, "added": 1024, "failures": 0, "repositories": ["/repository"],
            "last_error": None}
        out = capsys.readouterr().out
        assert "snapshot abcdef01: 4,096 bytes, 1,024 added to the repository" in out
        assert "forgetting old snapshots: --keep-daily=7 --keep-weekly=4 --keep-monthly=6" in out

    def test_the_manifest_sent_holds_each_dumps_sum_and_counts_and_each_media_files_sum(self, script, monkeypatch):
        (script.tmp_path / "backup/media/a.png").write_bytes(PNG)
        (script.tmp_path / "backup/certs").mkdir()
        answers = run_answers(script)
        sent = {}

        def backup(argv, kw):
            sent["manifest"] = json.loads(open(f"{script.DUMPS}/manifest.json").read())
            sent["argv"] = argv
            return answers[("restic", "backup")](argv, kw)

        programs(script, monkeypatch, {**answers, ("restic", "backup"): backup})
        assert script.run() == 0
        taken = sent["manifest"]
        assert taken["databases"] == {"database1": {"file": "database1.dump", "sha256": SHA_A, "bytes": 17,
                                                    "tables": {"public.t": 3}}}
        assert taken["media"] == {"a.png": SHA_PNG} and taken["postgres_major"] == "15" and taken["host"] == HOST
        assert sent["argv"][-2:] == [script.DUMPS, script.CERTS]  # the certificates' folder, when there is one

    def test_an_empty_media_folder_is_sent_as_itself(self, script, monkeypatch):
        programs(script, monkeypatch, run_answers(script))
        assert script.run() == 0
        assert (script.tmp_path / "state/media-files").read_text() == f"{script.MEDIA}\0"

    def test_a_file_restic_could_not_read_fails_the_run_and_its_snapshot_is_forgotten(self, script, monkeypatch,
                                                                                       capsys):
        error = {"message_type": "error", "error": {"message": "permission denied"}, "item": "/backup/media/x"}
        fake = programs(script, monkeypatch, run_answers(script, backup_code=3, messages=[error, error]))
        assert script.main(["run"]) == 1
        assert fake.argv[-1] == ["restic", "forget", "abcdef0123456789"]
        assert "backup FAILED: restic backup: /backup/media/x: permission denied (and 1 more)" in capsys.readouterr().out
        status = json.loads((script.tmp_path / "state/status.json").read_text())["backup"]
        assert status["failures"] == 1 and status["last_error"].startswith("restic backup: /backup/media/x")
        assert os.listdir(script.DUMPS) == []

    def test_a_backup_locked_by_another_place_is_tried_again(self, script, monkeypatch):
        answers = run_answers(script)
        tries = iter([Streamed("", "Fatal: unable to create lock: repository is already locked\n", 1), None])

        def backup(argv, kw):
            return next(tries) or answers[("restic", "backup")](argv, kw)

        fake = programs(script, monkeypatch, {**answers, ("restic", "backup"): backup})
        assert script.run() == 0
        assert [argv[1] for argv in fake.argv if argv[0] == "restic"].count("backup") == 2

    def test_a_run_while_another_holds_the_lock_stops_with_75(self, script, monkeypatch, capsys):
        import fcntl

        programs(script, monkeypatch, {})
        with open(script.LOCK_FILE, "a") as held:
            fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
            assert script.main(["run"]) == 75
        assert "another backup run is under way" in capsys.readouterr().out

    def test_a_failed_dump_is_recorded_once_more_and_told(self, script, monkeypatch):
        (script.tmp_path / "secrets/notify").write_text("# where to\njson://hooks.example.com/backup\n")
        told = []

        class Apprise:
            def add(self, url):
                told.append(url)

            def notify(self, title, body):
                told.append((title, body))
                return True

        monkeypatch.setitem(sys.modules, "apprise", types.SimpleNamespace(Apprise=Apprise))
        script.write_json(script.STATUS_FILE, {"backup": {"failures": 1}})
        programs(script, monkeypatch, {**run_answers(script),
                                       ("pg_dump", "--format=custom"): (1, "", "pg_dump: error: connection lost\n")})
        assert script.run() == 1
        assert json.loads((script.tmp_path / "state/status.json").read_text())["backup"]["failures"] == 2
        assert told == ["json://hooks.example.com/backup",
                        ("backup FAILED: hello on hello@local", "pg_dump of database1: pg_dump: error: connection lost")]

    def test_a_notification_that_cannot_be_sent_never_fails_the_run(self, script, monkeypatch, capsys):
        (script.tmp_path / "secrets/notify").write_text("json://hooks.example.com/backup\n")

        class Apprise:
            add = staticmethod(lambda url: None)
            notify = staticmethod(lambda title, body: False)

        monkeypatch.setitem(sys.modules, "apprise", types.SimpleNamespace(Apprise=Apprise))
        script.notify("title", "body")
        monkeypatch.setitem(sys.modules, "apprise", None)
        script.notify("title", "body")
        (script.tmp_path / "secrets/notify").write_text("\n")
        script.notify("title", "body")  # a blank secret: no URL, nothing sent
        out = capsys.readouterr().out
        assert "notification: apprise could not deliver it" in out and "notification failed: " in out


# -- reading snapshots --------------------------------------------------------------------------

class TestResolve:
    def test_latest_is_this_places(self, script, monkeypatch):
        fake = programs(script, monkeypatch, {("restic", "snapshots"): listed(("abcd1234", HOST))})
        assert script.resolve("latest") == "abcd1234"
        assert fake.argv == [["restic", "snapshots", "--json", "--host", HOST, "latest"]]

    def test_another_places_snapshot_is_refused(self, script, monkeypatch):
        programs(script, monkeypatch, {("restic", "snapshots"): listed(("abcd1234", "hello@prod"))})
        with pytest.raises(script.Failed, match=r"^no snapshot abcd1234 of hello@local in the repository "
                                                r"\(it is hello@prod's\)$"):
            script.resolve("abcd1234")

    def test_a_legacy_snapshot_named_by_id_is_restored_as_named(self, script, monkeypatch, capsys):
        programs(script, monkeypatch, {("restic", "snapshots"): listed(("abcd1234", "hello"))})
        assert script.resolve("abcd1234") == "abcd1234"
        assert "was taken before each place had its own (hello)" in capsys.readouterr().err

    def test_no_latest_of_this_place_points_at_the_legacy_ones(self, script, monkeypatch):
        fake = programs(script, monkeypatch, {
            ("restic", "snapshots", "--json", "--host", HOST): (0, "[]", ""),
            ("restic", "snapshots", "--json", "--host", "hello"): listed(("abcd1234", "hello"))})
        with pytest.raises(script.Failed, match="it holds snapshots of hello, taken before each place had its own"):
            script.resolve("latest")
        assert fake.argv[-1] == ["restic", "snapshots", "--json", "--host", "hello"]


class TestSnapshots:
    def test_each_snapshot_is_listed_with_its_size_and_what_its_manifest_says_it_holds(self, script, monkeypatch,
                                                                                        capsys):
        fake = programs(script, monkeypatch, {
            ("restic", "snapshots"): listed(("abcd1234", HOST), ("0000beef", "hello"), ("1111cafe", HOST)),
            ("restic", "stats", "--json", "--mode", "restore-size", "abcd1234"): (0, '{"total_size": 5000}', ""),
            ("restic", "stats"): (1, "", "Fatal: no such snapshot"),
            ("restic", "dump", "abcd1234"): (0, json.dumps(manifest()), ""),
            ("restic", "dump", "0000beef"): (0, json.dumps(manifest(media=[])), ""),  # forged: not believed
            ("restic", "dump", "1111cafe"): (1, "", "Fatal: path not found")})
        assert script.main(["snapshots"]) == 0
        rows = json.loads(capsys.readouterr().out)
        base = {"time": "2026-12-05T03:15:00Z", "paths": ["/backup/dumps"], "tags": ["hello"]}
        assert rows == [{"id": "abcd1234", **base, "legacy": False, "bytes": 5000, "databases": {"database1": 3},
                         "media_files": 1},
                        {"id": "0000beef", **base, "legacy": True, "bytes": None},
                        {"id": "1111cafe", **base, "legacy": False, "bytes": None}]
        assert fake.argv[0] == ["restic", "snapshots", "--json", "--host", HOST, "--host", "hello"]

    def test_a_time_without_a_zone_is_kept_as_restic_wrote_it(self, script):
        snap = {"short_id": "a", "time": "2026-12-05T03:15:00.1+01:00", "hostname": "x"}
        assert script.snapshot_row(snap, "x") == {"id": "a", "time": "2026-12-05T03:15:00.1+01:00", "paths": [],
                                                  "tags": [], "legacy": False}


class TestDump:
    def test_a_dump_whose_sum_matches_the_manifest_is_written_out(self, script, monkeypatch, capsysbinary):
        fake = programs(script, monkeypatch, {
            ("restic", "snapshots"): listed(("abcd1234", HOST)),
            ("restic", "dump", "abcd1234", f"{script.DUMPS}/manifest.json"): (0, json.dumps(manifest()), ""),
            ("restic", "dump", "abcd1234", f"{script.DUMPS}/database1.dump"): (0, b"dump of database1", "")})
        assert script.main(["dump", "latest", "/backup/dumps/database1.dump"]) == 0
        assert capsysbinary.readouterr().out == b"dump of database1"
        assert fake.argv[1:] == [["restic", "dump", "abcd1234", f"{script.DUMPS}/manifest.json"],
                                 ["restic", "dump", "abcd1234", f"{script.DUMPS}/database1.dump"]]

    @pytest.mark.parametrize("path, data, message", [
        ("database1.dump", b"something else", "database1.dump in snapshot abcd1234 does not match its manifest's "
                                              "sha256: not restoring it"),
        ("database2.dump", b"", "snapshot abcd1234 holds no database2.dump"),
    ], ids=["changed", "not-there"])
    def test_a_dump_the_manifest_does_not_vouch_for_is_refused(self, script, monkeypatch, capsys, path, data,
                                                               message):
        programs(script, monkeypatch, {
            ("restic", "snapshots"): listed(("abcd1234", HOST)),
            ("restic", "dump", "abcd1234", f"{script.DUMPS}/manifest.json"): (0, json.dumps(manifest()), ""),
            ("restic", "dump", "abcd1234", f"{script.DUMPS}/{path}"): (0, data, "")})
        assert script.main(["dump", "abcd1234", path]) == 1
        assert capsys.readouterr().err == message + "\n"

    def test_a_snapshot_without_a_manifest_is_refused(self, script, monkeypatch):
        programs(script, monkeypatch, {("restic", "dump"): (1, "", "Fatal: path not found\n")})
        with pytest.raises(script.Failed, match="^snapshot x has no manifest: Fatal: path not found$"):
            script.manifest_of("x")


def media_tar(script, entries):
    out = io.BytesIO()
    prefix = script.MEDIA.lstrip("/")
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in entries:
            info = tarfile.TarInfo(f"/{prefix}/{name}" if not name.startswith("!") else name[1:])
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


class TestMedia:
    def answers(self, script, entries, code=0):
        return {("restic", "snapshots"): listed(("abcd1234", HOST)),
                ("restic", "dump", "abcd1234", f"{script.DUMPS}/manifest.json"): (0, json.dumps(manifest()), ""),
                ("restic", "dump", "--archive"): lambda argv, kw: Streamed(media_tar(script, entries), "", code,
                                                                           binary=True)}

    def test_the_media_are_a_tar_rooted_at_the_volume_with_the_live_roots_owner(self, script, monkeypatch,
                                                                                  capsysbinary):
        fake = programs(script, monkeypatch, self.answers(script, [("uploads", None), ("uploads/a.png", PNG)]))
        os.chmod(script.MEDIA, 0o750)
        assert script.main(["media", "latest"]) == 0
        assert fake.argv[-1] == ["restic", "dump", "--archive", "tar", "abcd1234", script.MEDIA]
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(capsysbinary.readouterr().out))) as tar:
            members = tar.getmembers()
            assert [(m.name, m.type, m.mode) for m in members] == [
                (".", tarfile.DIRTYPE, 0o750), ("./uploads", tarfile.DIRTYPE, 0o644), ("./uploads/a.png", tarfile.REGTYPE, 0o644)]
            assert members[0].uid == os.stat(script.MEDIA).st_uid
            assert tar.extractfile(members[2]).read() == PNG

    @pytest.mark.parametrize("entries, message", [
        ([("uploads/a.png", b"changed")], "media/uploads/a.png in abcd1234 does not match its manifest's sha256"),
        ([("!etc/passwd", b"x")], "unexpected entry 'etc/passwd' in the media of abcd1234"),
        ([], "the media of abcd1234 holds 0 files, its manifest 1"),
    ], ids=["changed", "outside", "missing"])
    def test_media_the_manifest_does_not_vouch_for_fail(self, script, monkeypatch, entries, message):
        programs(script, monkeypatch, self.answers(script, entries))
        with pytest.raises(script.Failed, match=f"^{message}$"):
            script.media("abcd1234")

    def test_restic_failing_before_its_first_byte_is_its_own_message(self, script, monkeypatch):
        programs(script, monkeypatch, {**self.answers(script, []), ("restic", "dump", "--archive"):
                                       lambda argv, kw: Streamed(b"", "Fatal: no such file\n", 1, binary=True)})
        with pytest.raises(script.Failed, match="^restic dump of the media: Fatal: no such file$"):
            script.media("abcd1234")


# -- the restore drill -------------------------------------------------------------------------

class TestDrill:
    def answers(self, script, data=None, dump=b"dump of database1", counts=None, restored_code=0,
                applied="app.0001_initial\n"):
        counts = {"public.t": 3} if counts is None else counts

        def restore(argv, kw):
            target = argv[argv.index("--target") + 1]
            os.makedirs(target + script.DUMPS)
            os.makedirs(target + script.MEDIA + "/uploads")
            with open(target + script.DUMPS + "/manifest.json", "w") as f:
                json.dump(manifest() if data is None else data, f)
            with open(target + script.DUMPS + "/database1.dump", "wb") as f:
                f.write(dump)
            with open(target + script.MEDIA + "/uploads/a.png", "wb") as f:
                f.write(PNG)
            return OK

        return {("restic", "snapshots"): listed(("abcd1234", HOST)), ("restic", "restore"): restore,
                ("pg_dump", "--version"): VERSION, ("initdb",): OK, ("pg_ctl",): OK, ("createdb",): OK,
                ("psql", "-XAtq", "-d", "postgres"): OK, ("pg_restore",): (restored_code, "", "pg_restore: error: x\n"),
                ("psql", "-XAtq", "-v", "ON_ERROR_STOP=1", "-d", "database1"): lambda argv, kw: Psql(script.END, counts),
                ("psql", "-XAtq", "-d", "database1", "-c"): (0, applied, "")}

    def drilled(self, fake):
        return fake.argv[1][-1]

    def test_a_good_snapshot_passes_loaded_as_the_app_role_into_a_server_on_no_network(self, script, monkeypatch,
                                                                                         capsys):
        (script.tmp_path / "expected.json").write_text(json.dumps({"database1": ["app.0001_initial"]}))
        fake = programs(script, monkeypatch, self.answers(script))
        assert script.main(["drill"]) == 0
        tmp = self.drilled(fake)
        assert shown(script, fake.argv, DRILL=tmp) == [
            ["restic", "snapshots", "--json", "--host", HOST, "latest"],
            ["restic", "restore", "abcd1234", "--target", "DRILL"],
            ["pg_dump", "--version"],
            ["initdb", "-D", "DRILL/pgdata", "-U", "postgres", "--auth=trust", "--no-sync"],
            ["pg_ctl", "-D", "DRILL/pgdata", "-w", "-l", "DRILL/server.log", "-o",
             "-c listen_addresses='' -c unix_socket_directories=DRILL/sock -c fsync=off", "start"],
            ["psql", "-XAtq", "-d", "postgres", "-c", "CREATE ROLE app WITH LOGIN NOSUPERUSER NOCREATEDB "
             "NOCREATEROLE NOREPLICATION NOBYPASSRLS"],
            ["createdb", "-O", "app", "database1"],
            ["pg_restore", "--exit-on-error", "--no-owner", "--no-privileges", "-d", "database1",
             "DRILLT/backup/dumps/database1.dump"],
            ["psql", "-XAtq", "-v", "ON_ERROR_STOP=1", "-d", "database1"],
            ["psql", "-XAtq", "-d", "database1", "-c", "SELECT app || '.' || name FROM django_migrations"],
            ["pg_ctl", "-D", "DRILL/pgdata", "-m", "immediate", "stop"]]
        # The dump is read as the app's role; the superuser only makes the role and the database.
        assert [fake.envs[i]["PGUSER"] for i in (5, 6, 7, 8, 9)] == ["postgres", "postgres", "app", "app", "app"]
        assert not os.path.exists(tmp)
        out = capsys.readouterr().out
        assert "migrate --check: all 1 migrations of the running code applied" in out
        assert "PASS in " in out and "(snapshot abcd1234)" in out
        drill = json.loads((script.tmp_path / "state/status.json").read_text())["drill"]
        assert drill["snapshot"] == "abcd1234" and drill["failures"] == 0

    @pytest.mark.parametrize("change, problems", [
        (dict(counts={"public.t": 2}), ["database1.public.t: 2 rows, the backup counted 3"]),
        (dict(dump=b"changed"), ["database1.dump: sha256 differs from the manifest"]),
        (dict(data=manifest(postgres_major="14")), ["taken with PostgreSQL 14, drilled with 15"]),
        (dict(restored_code=1), ["database1: pg_restore failed: pg_restore: error: x"]),
        (dict(applied="other.0001_x\n"), ["database1: 1 migration(s) of the running code not applied "
                                          "(migrate --check fails): app.0001_initial"]),
        (dict(data=manifest(media={})), ["media: 1 files, the manifest lists 0", "media/uploads/a.png: not in the manifest"]),
        (dict(data=manifest(media=[])), ["the manifest of snapshot abcd1234 is not one a backup run writes: not trusting it"]),
    ], ids=["rows", "dump-sum", "major", "pg-restore", "migrations", "media", "forged-manifest"])
    def test_a_bad_snapshot_fails_naming_each_problem_and_is_recorded(self, script, monkeypatch, capsys, change,
                                                                       problems):
        (script.tmp_path / "expected.json").write_text(json.dumps({"database1": ["app.0001_initial"]}))
        programs(script, monkeypatch, self.answers(script, **change))
        assert script.drill() == 1
        out = capsys.readouterr().out
        assert all(f"\n  {problem}\n" in out for problem in problems)
        assert "FAIL in " in out
        drill = json.loads((script.tmp_path / "state/status.json").read_text())["drill"]
        assert drill["last_error"] == "snapshot abcd1234: " + "; ".join(problems) and drill["failures"] == 1

    def test_without_the_running_codes_migrations_none_are_checked(self, script, monkeypatch):
        fake = programs(script, monkeypatch, self.answers(script))
        assert script.drill("abcd1234") == 0
        assert not [argv for argv in fake.argv if "django_migrations" in " ".join(argv)]

    def test_a_database_with_no_migrations_table_fails_only_when_migrations_are_expected(self, script, monkeypatch):
        (script.tmp_path / "expected.json").write_text(json.dumps({"database1": ["app.0001_initial"]}))
        programs(script, monkeypatch, {**self.answers(script), ("psql", "-XAtq", "-d", "database1", "-c"):
                                       (1, "", 'ERROR:  relation "django_migrations" does not exist\n')})
        assert script.unapplied_migrations("database1", {}) == [
            'database1: no django_migrations table: ERROR:  relation "django_migrations" does not exist']
        (script.tmp_path / "expected.json").write_text(json.dumps({}))
        assert script.unapplied_migrations("database1", {}) == []


# -- the command line ---------------------------------------------------------------------

class TestCommandLine:
    def test_no_command_or_an_unknown_one_prints_the_usage_and_exits_2(self, script, capsys):
        assert script.main([]) == 2 and script.main(["nope"]) == 2
        assert "Commands:" in capsys.readouterr().err

    def test_status_prints_the_state_with_the_verdict(self, script, monkeypatch, capsys):
        monkeypatch.setattr(script, "interval", lambda expression: 86400.0)
        script.write_json(script.STATUS_FILE, {"backup": {"last_success": "2000-01-01T00:00:00+00:00"}})
        monkeypatch.setenv("BACKUP_REPOSITORY_ON_HOST", "/srv/restic")
        assert script.main(["status"]) == 0
        state = json.loads(capsys.readouterr().out)
        assert {k: state[k] for k in ("schedule", "drill_schedule", "limit", "overdue", "failing", "repository")} == {
            "schedule": "15 3 * * *", "drill_schedule": "30 4 * * 0", "limit": 172800.0, "overdue": True,
            "failing": False, "repository": "/srv/restic"}

    def test_key_prints_the_repository_password(self, script, capsys):
        assert script.main(["key"]) == 0
        assert capsys.readouterr().out == "repository password\n"

    def test_a_broken_state_file_is_no_state(self, script):
        (script.tmp_path / "state/status.json").write_text("{half")
        assert script.read_status() == {}
