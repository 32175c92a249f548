"""The scheduled backups' procedures (procedures/backups.py) on a host and on a cluster,
against a strict recording connection: the backup service's script is run as the tasks run
it (a one-off container of the compose service on a host, the running container of the
stack's service on a cluster's manager), and what it prints becomes the tasks' report."""
from __future__ import annotations

import json
import shlex

import pytest
from invoke import Result

from tasks.errors import TaskError
from tasks.execution.cluster import ClusterRun
from tasks.execution.runner import Runner
from tasks.execution.targets import HostTarget
from tasks.plans import archives, hostfiles
from tasks.plans import backups as plans
from tasks.plans import swarm
from tasks.procedures import backup_files, backups
from tasks.source.stack import BACKUP_CREDENTIALS, BACKUP_KNOWN_HOSTS, BACKUP_NOTIFY, BACKUP_SSH_KEY, loads
from tests.stacks import COMMITTED, NODES
from tests.test_backup_procedures import ALWAYS, BACKUPS, ENGINE, MARK, OK, RUNNING, STAMP, Host, commands

HOSTS = """
[hosts.prod]
address = "203.0.113.10"
directory = "/srv/hello"
http_port = 8080
project = "hello-prod"
"""
SFTP = '\n[backups]\nschedule = "15 3 * * *"\nrepository = "sftp:backup@vault.example.com:/srv/restic/hello"\n'
STACK = loads(COMMITTED + HOSTS + SFTP)
BARE = loads(COMMITTED + HOSTS)
COMPOSE = ["docker", "compose", "--project-name", "hello-prod"]
SECRETS = "/srv/hello/shared/config/secrets"


def script(*args):
    return shlex.join(COMPOSE + plans.script(*args))


def on_host(*rules, stack=STACK, dry=False):
    conn = Host([*rules, *ALWAYS])
    return Runner(HostTarget(conn, stack.hosts["prod"], stack, local_c=Host([])), dry), conn


@pytest.fixture(autouse=True)
def fixed_names(monkeypatch):
    monkeypatch.setattr(archives, "stamp", lambda: STAMP)
    monkeypatch.setattr(backup_files.secrets, "token_hex", lambda n: "0" * (2 * n))
    monkeypatch.setattr(backup_files, "writer_mark", lambda: MARK)


@pytest.fixture
def restarts(monkeypatch):
    """The backup service started again (procedures/starting.py, tested with the start):
    each call recorded with the runner's target."""
    calls = []
    monkeypatch.setattr(backups, "start_backups", lambda r: calls.append(r.target.name))
    return calls


class TestOnAHost:
    def test_without_backups_every_task_says_where_to_set_them_up(self):
        r, conn = on_host(stack=BARE)
        for task in (backups.now, backups.snapshots, backups.status, backups.key):
            with pytest.raises(TaskError, match=r"^no \[backups\] in config/stack.toml: add schedule and repository"):
                task(r)
        assert conn.commands == []

    def test_a_run_now_is_the_script_in_a_one_off_container(self):
        r, conn = on_host((script("run"), OK))
        backups.now(r)
        assert commands(conn) == [*ENGINE, script("run")]

    @pytest.mark.parametrize("answer, message", [
        (Result(exited=plans.BUSY), "^a backup run is under way on prod already .*: try again later$"),
        (Result(stdout="dumping database1\nbackup FAILED: pg_dump of database1: no\n", exited=1),
         "^the backup run failed: backup FAILED: pg_dump of database1: no$"),
    ], ids=["busy", "failed"])
    def test_a_run_that_did_not_back_up_says_why(self, answer, message):
        r, _ = on_host((script("run"), answer))
        with pytest.raises(TaskError, match=message):
            backups.now(r)

    def test_the_snapshots_are_a_table_of_what_each_holds(self):
        listed = [{"id": "abcd1234", "time": "2026-12-05T03:15:00Z", "bytes": 3 * 1024 ** 2, "paths":
                   ["/backup/dumps", "/backup/certs"], "databases": {"database1": 1234}, "media_files": 2},
                  {"id": "0000beef", "time": "2026-12-01T03:15:00Z", "bytes": None, "legacy": True}]
        r, _ = on_host((script("snapshots"), Result(stdout="progress\n" + json.dumps(listed) + "\n")))
        assert backups.snapshots(r) == [
            ["snapshot", "time (UTC)", "size", "holds"],
            ["abcd1234", "2026-12-05 03:15:00", "3.0 MiB", "database1 (1,234 rows), 2 media file(s), the certificates"],
            ["0000beef", "2026-12-01 03:15:00", "?", "? media file(s), taken before each place had its own "
                                                     "snapshots: restored by id only"]]

    def test_a_listing_the_script_could_not_make_is_one_line(self):
        r, _ = on_host((script("snapshots"), Result(stderr="the repository cannot be opened: x\n", exited=1)))
        with pytest.raises(TaskError, match="^listing the snapshots failed: the repository cannot be opened: x$"):
            backups.snapshots(r)

    def status(self, **state):
        r, _ = on_host((script("status"), Result(stdout=json.dumps(state) + "\n")))
        return backups.status(r)

    def test_a_recent_success_and_a_passed_drill_are_fine(self):
        fine, lines, where = self.status(
            backup={"last_success": "2026-12-05T03:15:00+00:00", "snapshot": "abcd1234", "bytes": 5 * 1024 ** 3,
                    "added": 2048, "seconds": 12.5},
            drill={"last_success": "2026-12-01T04:30:00+00:00", "seconds": 40.1}, age=3725, limit=172800,
            overdue=False, failing=False, schedule="15 3 * * *")
        assert fine and where == "prod"
        assert lines == ["prod: last backup 2026-12-05T03:15:00+00:00 (1 h 2 min ago), snapshot abcd1234, "
                         "5.0 GiB, 2.0 KiB added to the repository, 12.5 s",
                         "prod: last drill PASS 2026-12-01T04:30:00+00:00 (40.1 s)"]

    def test_no_success_a_failure_and_a_failed_drill_are_not_fine(self):
        fine, lines, _ = self.status(
            backup={"last_error": "restic backup: no space", "last_failure": "2026-12-05T03:15:00+00:00",
                    "failures": 3},
            drill={"failures": 1, "last_failure": "2026-12-01T04:30:00+00:00", "last_error": "rows differ",
                   "last_success": "2026-11-24T04:30:00+00:00"},
            age=None, limit=2 * 86400 + 59, overdue=True, failing=True, schedule="15 3 * * *")
        assert not fine
        assert lines == ["prod: no backup has succeeded yet",
                         "prod: last error (2026-12-05T03:15:00+00:00): restic backup: no space",
                         "prod: last drill FAILED 2026-12-01T04:30:00+00:00: rows differ "
                         "(last PASS 2026-11-24T04:30:00+00:00)",
                         "prod: OVERDUE: no success within 2 d 0 h (twice the schedule '15 3 * * *')"]

    def test_no_status_from_the_script_is_an_error(self):
        r, _ = on_host((script("status"), Result(stdout="not json\n")))
        with pytest.raises(TaskError, match="^the backup service gave no status$"):
            backups.status(r)

    @pytest.mark.parametrize("count, shown", [(0, "0 B"), (1023, "1,023 B"), (1536, "1.5 KiB"),
                                              (5 * 1024 ** 4, "5,120.0 GiB")])
    def test_sizes_read_in_binary_units(self, count, shown):
        assert backups._size(count) == shown

    @pytest.mark.parametrize("seconds, shown", [(59, "0 min 59 s"), (3600, "1 h 0 min"), (90061, "1 d 1 h")])
    def test_ages_read_in_their_two_largest_units(self, seconds, shown):
        assert backups._age(seconds) == shown

    @pytest.mark.parametrize("snapshot", ["", "LATEST", "abcd123", "abcd1234; rm -rf /", "-h"])
    def test_a_snapshot_that_is_not_an_id_is_refused_before_anything_runs(self, snapshot):
        r, conn = on_host()
        with pytest.raises(TaskError, match="is not valid: `latest` or an id from `inv backup.snapshots`$"):
            backups.drill(r, snapshot)
        assert conn.commands == []

    def test_a_drill_runs_the_script_and_a_failed_one_says_so(self):
        r, conn = on_host((script("drill", "latest"), OK), (script("drill", "abcd1234"), Result(exited=1)))
        backups.drill(r, "latest")
        with pytest.raises(TaskError, match="^the restore drill FAILED on prod: see above$"):
            backups.drill(r, "abcd1234")
        assert commands(conn)[-2:] == [script("drill", "latest"), script("drill", "abcd1234")]

    def test_the_password_is_shown_on_a_terminal_only(self, monkeypatch, capsys):
        r, conn = on_host((script("key"), Result(stdout="the password\n")))
        monkeypatch.setattr(backups, "interactive", lambda: False)
        with pytest.raises(TaskError, match="^the repository password is shown on a terminal only"):
            backups.key(r)
        assert conn.commands == []
        monkeypatch.setattr(backups, "interactive", lambda: True)
        backups.key(r)
        out = capsys.readouterr().out
        assert out.endswith("the password\n") and out.startswith("WARNING: without this password no backup")

    def test_credentials_are_checked_written_0600_and_the_service_restarted(self, restarts):
        r, conn = on_host()
        backups.credentials(r, "# the bucket's\nAWS_ACCESS_KEY_ID=AKIA\nAWS_SECRET_ACCESS_KEY=s3cr3t\n")
        assert conn.calls == [(None, shlex.join(["bash", "-c", hostfiles.write(f"{SECRETS}/{BACKUP_CREDENTIALS}", 0o600)]),
                               "AWS_ACCESS_KEY_ID=AKIA\nAWS_SECRET_ACCESS_KEY=s3cr3t\n")]
        assert restarts == ["prod"]

    def test_credentials_that_are_not_a_backends_are_refused_and_nothing_written(self, restarts):
        r, conn = on_host()
        with pytest.raises(TaskError, match="^repository credentials: give KEY=VALUE lines.*; not: LD_PRELOAD$"):
            backups.credentials(r, "LD_PRELOAD=/tmp/x.so\n")
        assert conn.commands == [] and restarts == []

    def test_notify_urls_are_kept_on_the_host_0600_or_removed(self, restarts):
        r, conn = on_host()
        backups.notify(r, "json://hooks.example.com/a mailto://ops@example.com\n")
        backups.notify(r, "\n")
        assert conn.calls == [
            (None, shlex.join(["bash", "-c", hostfiles.write(f"{SECRETS}/{BACKUP_NOTIFY}", 0o600)]),
             "json://hooks.example.com/a\nmailto://ops@example.com\n"),
            (None, shlex.join(["bash", "-c", hostfiles.remove([f"{SECRETS}/{BACKUP_NOTIFY}"])]), None)]
        assert restarts == ["prod", "prod"]

    def test_notify_urls_are_refused_when_the_stack_sets_them_or_they_are_not_urls(self, restarts):
        with_notify = loads(COMMITTED + HOSTS + SFTP + 'notify = "json://hooks.example.com/a"\n')
        r, _ = on_host(stack=with_notify)
        with pytest.raises(TaskError, match=r"^\[backups\] notify is set in config/stack.toml, which wins"):
            backups.notify(r, "json://x.example.com/b")
        r, conn = on_host()
        with pytest.raises(TaskError, match="a notify URL"):
            backups.notify(r, "json://hooks.example.com/${HOME}")
        assert conn.commands == [] and restarts == []


KEYSCAN = script("keyscan")
ED25519 = "vault.example.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"


class TestSSHKey:
    def test_a_repository_that_is_not_sftp_needs_no_key(self):
        local = loads(COMMITTED + HOSTS +
                      '\n[backups]\nschedule = "15 3 * * *"\nrepository = "/srv/restic/hello"\n')
        r, conn = on_host(stack=local)
        with pytest.raises(TaskError, match="is not sftp:user@host:/path: it needs no SSH key$"):
            backups.ssh_key(r, None, True)
        assert conn.commands == []

    def test_a_fingerprint_that_is_not_one_is_refused(self):
        r, conn = on_host()
        with pytest.raises(TaskError, match="^--fingerprint 'MD5:aa' is not valid: SHA256: and 43 characters"):
            backups.ssh_key(r, "MD5:aa", True)
        assert conn.commands == []

    def test_the_keys_are_trusted_by_their_fingerprint_a_key_made_and_its_line_printed(self, restarts, capsys):
        expected = plans.fingerprint(ED25519)
        r, conn = on_host((KEYSCAN, Result(stdout=f"# banner\n{ED25519}\n")),
                          (f"cat {SECRETS}/{BACKUP_KNOWN_HOSTS}", Result(exited=1)),
                          (f"cat {SECRETS}/{BACKUP_SSH_KEY}.pub", Result(exited=1)),
                          (f"grep -q '[^[:space:]]' {SECRETS}/{BACKUP_SSH_KEY}", Result(exited=1)))
        backups.ssh_key(r, expected, False)
        written = [(command, stdin) for _, command, stdin in conn.calls if command.startswith("bash -c 'umask")]
        assert [command for command, _ in written] == [
            shlex.join(["bash", "-c", hostfiles.write(f"{SECRETS}/{BACKUP_KNOWN_HOSTS}", 0o600)]),
            shlex.join(["bash", "-c", hostfiles.write(f"{SECRETS}/{BACKUP_SSH_KEY}", 0o600)]),
            shlex.join(["bash", "-c", hostfiles.write(f"{SECRETS}/{BACKUP_SSH_KEY}.pub", 0o644)])]
        assert written[0][1] == ED25519 + "\n" and written[1][1].startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
        public = written[2][1].strip()
        assert public.startswith("ssh-ed25519 ") and public.endswith(" hello-prod-backup@prod")
        assert restarts == ["prod"]
        out = capsys.readouterr().out
        assert f"restrict {public}\n\nThen: inv backup.now --host prod" in out and "Authorize it for backup on" in out

    def test_keys_without_the_expected_fingerprint_are_not_trusted(self):
        r, conn = on_host((KEYSCAN, Result(stdout=f"{ED25519}\n")))
        with pytest.raises(TaskError, match="does not show the key SHA256:A{43}: nothing trusted"):
            backups.ssh_key(r, "SHA256:" + "A" * 43, True)
        assert not [c for c in conn.commands if c.startswith("bash -c 'umask")]

    def test_keys_trusted_already_and_a_key_that_lost_its_public_half(self, restarts):
        r, conn = on_host((KEYSCAN, Result(stdout=f"{ED25519}\n")),
                          (f"cat {SECRETS}/{BACKUP_KNOWN_HOSTS}", Result(stdout=f"{ED25519}\n\n")),
                          (f"cat {SECRETS}/{BACKUP_SSH_KEY}.pub", Result(exited=1)),
                          (f"grep -q '[^[:space:]]' {SECRETS}/{BACKUP_SSH_KEY}", OK))
        with pytest.raises(TaskError, match="backup_ssh_key on prod has lost its .pub: restore it"):
            backups.ssh_key(r, None, False)
        assert not [c for c in conn.commands if c.startswith("bash -c 'umask")] and restarts == []

    def test_keys_that_are_not_host_keys_are_refused(self):
        r, _ = on_host((KEYSCAN, Result(stdout="vault.example.com ssh-dss AAAA\n")))
        with pytest.raises(TaskError, match="^vault.example.com's SSH host keys: "):
            backups.ssh_key(r, None, True)

    def test_keys_changed_since_they_were_trusted_are_trusted_again_only_when_confirmed(self):
        r, _ = on_host((KEYSCAN, Result(stdout=f"{ED25519}\n")),
                       (f"cat {SECRETS}/{BACKUP_KNOWN_HOSTS}", Result(stdout="vault.example.com ssh-ed25519 AAAAold\n")))
        with pytest.raises(TaskError, match="^trusting vault.example.com's keys CHANGED since they were trusted "
                                            "unchecked .*: add --yes to confirm$"):
            backups.ssh_key(r, None, False)


DUMP = BACKUPS / f".hello-prod_database1_snapshot-latest_{STAMP}.dump.00000000{MARK}"


class TestRestoreOnAHost:
    def test_each_database_is_read_from_the_snapshot_then_loaded_all_or_nothing(self, monkeypatch):
        loaded = []
        monkeypatch.setattr(backups, "load_database", lambda r, db, path: loaded.append((db.name, path)))
        read = shlex.join(archives.pipeline(COMPOSE + plans.script("dump", "latest", "database1.dump"),
                                            output=str(DUMP)))
        r, conn = on_host((read, OK))
        backups.restore(r, "latest", list(STACK.databases), False, 60)
        assert commands(conn) == [
            shlex.join(["bash", "-c", f"mkdir -p -m 700 {BACKUPS}"]), f"find {BACKUPS} -maxdepth 1 -name '.*.tmp'",
            *ENGINE, RUNNING, read, shlex.join(["bash", "-c", hostfiles.remove([DUMP])])]
        assert loaded == [("database1", DUMP)]

    def test_a_dump_the_script_refuses_is_removed_and_nothing_loaded(self, monkeypatch):
        monkeypatch.setattr(backups, "load_database", lambda *a: pytest.fail("loaded"))
        r, conn = on_host(("bash -o pipefail -c", Result(exited=1)))
        with pytest.raises(TaskError, match="^reading database1 from snapshot abcd1234 failed"):
            backups.restore(r, "abcd1234", list(STACK.databases), False, 60)
        assert conn.commands[-1].startswith("bash -c 'rm -f -- ")

    def test_the_media_are_read_and_checked_before_any_database_is_touched(self, monkeypatch):
        from tasks.source.stack import APP_OWNER

        events = []
        monkeypatch.setattr(backups, "check_media", lambda r, archive, data: events.append(("check", archive.name, data)))
        monkeypatch.setattr(backups, "load_database", lambda r, db, path: events.append(("load", db.name)))
        monkeypatch.setattr(backups, "restore_volume", lambda r, info, archive, data, timeout: events.append(
            ("restore", info.short, archive.name, timeout)))
        config = json.dumps({"services": {"djangoapp": {"image": "hello-prod-djangoapp:abc"}}})
        media = f".hello-prod_media_snapshot-latest_{STAMP}.tar.gz.00000000{MARK}"
        read = shlex.join(archives.pipeline(COMPOSE + plans.script("media", "latest"), output=f"{BACKUPS}/{media}"))
        r, conn = on_host((shlex.join(COMPOSE + ["config", "--format", "json"]), Result(stdout=config)),
                          ("bash -o pipefail -c", OK))
        backups.restore(r, "latest", list(STACK.databases), True, 60)
        assert events == [("check", media, {"kind": "volume", "compression": "gzip", "sha256": "ab" * 32,
                                            "owners": [APP_OWNER]}),
                          ("load", "database1"), ("restore", "media_volume", media, 60)]
        assert read in conn.commands
        assert conn.commands[-1] == shlex.join(["bash", "-c", hostfiles.remove([BACKUPS / media])])


CLUSTER = loads(COMMITTED + NODES + """[clusters.prod]
manager = "node1"
workers = ["node2"]
databases = { database1 = "node2" }
""" + SFTP)
FIND_BACKUP = shlex.join(swarm.task_containers("hello", "backup"))


def on_cluster(manager_rules=(), worker_rules=()):
    manager, worker = Host([*manager_rules, *ALWAYS]), Host([*worker_rules, *ALWAYS])
    s = ClusterRun(CLUSTER.clusters["prod"], {
        "node1": Runner(HostTarget(manager, CLUSTER.hosts["node1"], CLUSTER, local_c=Host([])), False),
        "node2": Runner(HostTarget(worker, CLUSTER.hosts["node2"], CLUSTER, local_c=Host([])), False)})
    return s, manager, worker


class TestOnACluster:
    def test_the_script_runs_in_the_services_container_on_the_manager(self):
        run = shlex.join(swarm.exec_backup("c0ffee", ["run"]))
        s, manager, worker = on_cluster([(FIND_BACKUP, Result(stdout="c0ffee\nbeef\n")), (run, OK)])
        backups.now(s)
        assert manager.commands == [FIND_BACKUP, run] and worker.commands == []

    def test_a_cluster_whose_backup_service_does_not_run_says_how_to_start_it(self):
        s, manager, _ = on_cluster([(FIND_BACKUP, OK)])
        with pytest.raises(TaskError, match=r"^the backup service does not run on node1, the manager of cluster prod: "
                                            r"deploy it \(`inv deploy --cluster prod`\)"):
            backups.status(s)

    def test_a_database_is_read_on_the_manager_copied_to_its_node_and_loaded_there(self, monkeypatch):
        loaded, copied = [], []
        monkeypatch.setattr(backups, "load_into", lambda r, db, in_db, path, anywhere: loaded.append(
            (r.target.name, in_db, str(path), anywhere)))
        monkeypatch.setattr(HostTarget, "copy_to", lambda self, other, a, b: copied.append((self.name, other.name)))
        find_db = shlex.join(swarm.task_containers("hello", "database1"))
        s, manager, worker = on_cluster([(FIND_BACKUP, Result(stdout="c0ffee\n")), ("bash -o pipefail -c", OK)],
                                        [(find_db, Result(stdout="dbdb\n"))])
        backups.restore_cluster(s, "latest", list(CLUSTER.databases))
        tmp = f".hello_database1_snapshot-latest_{STAMP}.dump.00000000{MARK}"
        assert copied == [("node1", "node2")]
        assert loaded == [("node2", swarm.exec_in("dbdb"), f"{BACKUPS}/{tmp}", True)]
        read = [c for c in manager.commands if c.startswith("bash -o pipefail")]
        assert read == [shlex.join(archives.pipeline(swarm.exec_backup("c0ffee", ["dump", "latest", "database1.dump"]),
                                                     output=f"{BACKUPS}/{tmp}"))]
        assert manager.commands[-1] == shlex.join(["bash", "-c", hostfiles.remove([f"{BACKUPS}/{tmp}"])])
        assert commands(worker)[-2:] == ["release volume-hello_database1_volume",
                                         shlex.join(["bash", "-c", hostfiles.remove([f"{BACKUPS}/{tmp}"])])]

    def test_a_database_that_does_not_run_on_its_node_is_refused(self):
        find_db = shlex.join(swarm.task_containers("hello", "database1"))
        s, _, _ = on_cluster([(FIND_BACKUP, Result(stdout="c0ffee\n"))], [(find_db, OK)])
        with pytest.raises(TaskError, match="^database1 does not run on node2: see `inv swarm.status --cluster prod`$"):
            backups.restore_cluster(s, "latest", list(CLUSTER.databases))
