"""The tasks of `inv backup.*`, `inv volume.*` and `inv db.*` on a host, as the command line
calls them: the source of truth and the SSH connection are the only stand-ins (tasks.cli's
`load` and `connect`), the connection a strict recorder. What the tasks decide (which
databases, whether to ask, what exit status) is checked with the commands they run."""
from __future__ import annotations

import io
import json
import shlex

import pytest
from invoke import MockContext, Result

from tasks import backup, cli, db, volume
from tasks.errors import TaskError
from tasks.execution import targets
from tasks.plans import archives, compose
from tasks.plans import backups as plans
from tasks.procedures import backup_files
from tasks.procedures import backups as scheduled
from tasks.source.stack import loads
from tests.stacks import COMMITTED, NODES, PROD, SWARM
from tests.test_backup_procedures import ALWAYS, ENGINE, MARK, OK, RUNNING, STAMP, Host, commands, volume_backup

BASE = COMMITTED + PROD + NODES + SWARM
BACKUPS = '\n[backups]\nschedule = "15 3 * * *"\nrepository = "/srv/restic/hello"\n'
COMPOSE = ["docker", "compose", "--project-name", "hello-prod"]


def script(*args):
    return shlex.join(COMPOSE + plans.script(*args))


class Connection(Host):
    def close(self):
        pass


@pytest.fixture
def place(monkeypatch, tmp_path):
    """PLACE(*RULES, backups=True): the stack (with [backups]) the tasks load, and the
    recording connection every host of it gets."""
    monkeypatch.setattr(archives, "stamp", lambda: STAMP)
    monkeypatch.setattr(backup_files.secrets, "token_hex", lambda n: "0" * (2 * n))
    monkeypatch.setattr(backup_files, "writer_mark", lambda: MARK)
    monkeypatch.setattr(targets, "LOCAL_BACKUPS", tmp_path / "here")
    key = tmp_path / "config/secrets/backup_key"
    key.parent.mkdir(parents=True)
    key.write_text("k" * 64 + "\n")
    monkeypatch.setattr(backup_files, "ROOT", tmp_path)
    monkeypatch.setattr(backup_files, "KEY_FILE", key)
    monkeypatch.setattr(scheduled, "interactive", lambda: False)
    monkeypatch.setattr(backup, "interactive", lambda: False)

    def make(*rules, backups=True):
        stack = loads(BASE + (BACKUPS if backups else ""))
        conn = Connection([*rules, *ALWAYS])
        monkeypatch.setattr(cli, "load", lambda: stack)
        monkeypatch.setattr(cli, "connect", lambda host, dry=False: conn)
        return conn

    return make


def c():
    return MockContext(run={})


class TestScheduledBackupTasks:
    def test_status_prints_each_line_and_exits_1_when_failing_or_overdue(self, place, capsys):
        state = {"backup": {"last_error": "restic backup: no space", "last_failure": "2026-12-05T03:15:00+00:00"},
                 "age": None, "limit": 172800, "overdue": True, "failing": True, "schedule": "15 3 * * *"}
        conn = place((script("status"), Result(stdout=json.dumps(state) + "\n")))
        with pytest.raises(TaskError, match="^backups on prod are failing or overdue$"):
            backup.status(c(), host="prod")
        assert commands(conn) == [*ENGINE, script("status")]
        assert capsys.readouterr().out.splitlines() == [
            "prod: no backup has succeeded yet", "prod: last error (2026-12-05T03:15:00+00:00): restic backup: no space",
            "prod: OVERDUE: no success within 2 d 0 h (twice the schedule '15 3 * * *')"]

    def test_status_of_a_fine_place_exits_0(self, place, capsys):
        state = {"backup": {"last_success": "2026-12-05T03:15:00+00:00", "bytes": 10, "added": 1},
                 "age": 60, "limit": 172800, "overdue": False, "failing": False}
        place((script("status"), Result(stdout=json.dumps(state) + "\n")))
        backup.status(c(), host="prod")
        assert capsys.readouterr().out.startswith("prod: last backup 2026-12-05T03:15:00+00:00 (1 min 0 s ago)")

    def test_now_snapshots_and_drill_run_the_script(self, place, capsys):
        conn = place((script("run"), OK), (script("snapshots"), Result(stdout="[]\n")), (script("drill", "latest"), OK))
        backup.now(c(), host="prod")
        backup.snapshots(c(), host="prod")
        backup.drill(c(), host="prod")
        assert [command for command in conn.commands if command.startswith(shlex.join(COMPOSE))] == [
            script("run"), script("snapshots"), script("drill", "latest")]
        assert "snapshot" in capsys.readouterr().out

    def test_a_restore_of_a_database_the_stack_lacks_is_refused_before_anything_runs(self, place):
        conn = place()
        with pytest.raises(TaskError, match=r"^no database nope in config/stack.toml \(there are: database1\)$"):
            backup.restore(c(), "latest", database=["nope"], yes=True, host="prod")
        assert conn.commands == []

    def test_a_restore_asks_first_and_refuses_without_a_terminal(self, place):
        conn = place()
        with pytest.raises(TaskError, match="^restoring replaces database1, the media: add --yes to confirm$"):
            backup.restore(c(), "latest", host="prod")
        assert conn.commands == []

    @pytest.mark.parametrize("database, media, chosen, with_media", [
        (None, False, ["database1"], True),
        (["database1"], False, ["database1"], False),
        (None, True, [], True),
        (["database1"], True, ["database1"], True),
    ], ids=["everything", "one-database", "media-alone", "both"])
    def test_a_restore_takes_what_was_named(self, place, monkeypatch, database, media, chosen, with_media):
        place()
        asked = []
        monkeypatch.setattr(scheduled, "restore", lambda r, snapshot, dbs, m, timeout: asked.append(
            (snapshot, [d.name for d in dbs], m, timeout)))
        backup.restore(c(), "abcd1234", database=database, media=media, yes=True, timeout=30, host="prod")
        assert asked == [("abcd1234", chosen, with_media, 30)]

    def test_a_clusters_media_are_not_restored(self, place):
        place()
        with pytest.raises(TaskError, match="^--media: the media of cluster swarm are each node's own volume"):
            backup.restore(c(), "latest", media=True, yes=True, cluster="swarm")

    def test_the_password_is_never_printed_without_a_terminal(self, place):
        conn = place()
        with pytest.raises(TaskError, match="^the repository password is shown on a terminal only"):
            backup.key(c(), host="prod")
        assert conn.commands == []

    def test_credentials_come_from_standard_input(self, place, monkeypatch):
        restarted = []
        monkeypatch.setattr(scheduled, "start_backups", lambda r: restarted.append(r.target.name))
        monkeypatch.setattr("sys.stdin", io.StringIO("AWS_ACCESS_KEY_ID=AKIA\n"))
        conn = place()
        backup.credentials(c(), host="prod")
        assert [stdin for _, _, stdin in conn.calls] == ["AWS_ACCESS_KEY_ID=AKIA\n"] and restarted == ["prod"]

    def test_without_backups_a_task_says_where_to_set_them_up(self, place):
        place(backups=False)
        with pytest.raises(TaskError, match=r"^no \[backups\] in config/stack.toml"):
            backup.now(c(), host="prod")

    def test_prune_keeps_at_least_one(self, place):
        place()
        with pytest.raises(TaskError, match="^--keep must be at least 1"):
            backup.prune(c(), keep=0)


DB_LIST = shlex.join(compose.running_services("hello-prod"))


class TestDatabaseTasks:
    def test_list_says_which_are_running(self, place, capsys):
        place((RUNNING, Result(stdout="djangoapp\n")))
        db.list_(c(), host="prod")
        out = capsys.readouterr().out.splitlines()
        assert out[0].split() == ["NAME", "ALIAS", "NETWORK", "VOLUME", "STATE"]
        assert out[1].split() == ["database1", "default", "hello-prod_database1_network", "hello-prod_database1_volume",
                                  "stopped"]

    def test_a_shell_needs_the_database_running(self, place):
        conn = place((RUNNING, Result(stdout="djangoapp\n")))
        with pytest.raises(TaskError, match="^service database1 is not running"):
            db.shell(c(), "database1", host="prod")
        assert commands(conn) == [*ENGINE, RUNNING]

    def test_a_shell_is_psql_in_the_databases_container(self, place, monkeypatch):
        monkeypatch.setattr(db, "interactive", lambda: False)
        psql = shlex.join(COMPOSE + compose.psql_shell("database1", tty=False))
        conn = place((psql, OK))
        db.shell(c(), "default", host="prod")
        assert commands(conn) == [*ENGINE, RUNNING, psql]

    def signed_dump(self, tmp_path, database="database1"):
        dump = tmp_path / f"hello-prod_{database}_{STAMP}.dump"
        dump.write_bytes(b"PGDMP")
        import hashlib
        digest = hashlib.sha256(b"PGDMP").hexdigest()
        (tmp_path / f"{dump.name}.sha256").write_text(f"{digest}  {dump.name}\n")
        (tmp_path / f"{dump.name}.json").write_text(archives.manifest(
            b"k" * 64, kind="dump", archive=dump.name, sha256=digest, database=database, created="t"))
        return dump

    def test_a_dump_of_another_database_is_refused_unless_named_with_from(self, place, tmp_path, monkeypatch):
        loaded = []
        monkeypatch.setattr(db, "load_database", lambda r, d, path: loaded.append((d.name, str(path))))
        dump = self.signed_dump(tmp_path, "database9")
        conn = place(("sha256sum --check", OK))
        with pytest.raises(TaskError, match=f"^{dump.name} is a dump of database9, not database1: add --from database9"):
            db.load(c(), "database1", str(dump), yes=True, host="prod")
        assert loaded == []
        db.load(c(), "database1", str(dump), from_="database9", yes=True, host="prod")
        assert loaded == [("database1", f"/srv/hello/shared/backups/{dump.name}")]
        assert [t[0] for t in conn.transfers] == ["put"] * 6  # the dump, its checksum and manifest, twice

    def test_a_volume_archive_is_not_loaded_as_a_dump(self, place, tmp_path):
        archive, _ = volume_backup(tmp_path)
        place(("sha256sum --check", OK))
        with pytest.raises(TaskError, match=f"^{archive.name} is a volume archive; use `inv volume.restore` for it$"):
            db.load(c(), "database1", str(archive), yes=True, host="prod")


class TestVolumeTasks:
    CONFIG = json.dumps({"services": {"djangoapp": {"image": "hello-prod-djangoapp:abc"}}})

    def test_list_shows_each_volume_its_size_and_users(self, place, capsys):
        df = json.dumps([{"Name": "hello-prod_media_volume", "Size": "12MB"}])
        place((shlex.join(COMPOSE + compose.config_json()), Result(stdout=self.CONFIG)),
              (shlex.join(["docker", "system", "df", "--verbose", "--format", "{{json .Volumes}}"]),
               Result(stdout=df)))
        volume.list_(c(), host="prod")
        rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[1:]}
        assert rows["hello-prod_media_volume"][1] == "12MB" and "djangoapp" in " ".join(rows["hello-prod_media_volume"])
        assert rows["hello-prod_static_volume"][1] == "absent"

    def test_an_unknown_volume_is_refused_naming_the_known_ones(self, place):
        place((shlex.join(COMPOSE + compose.config_json()), Result(stdout=self.CONFIG)), ("zstd --version", OK))
        with pytest.raises(TaskError, match=r"^no volume named 'nope' in this stack \(known: "):
            volume.backup(c(), volume=["nope"], host="prod")

    def test_a_restore_asks_first_and_refuses_without_a_terminal(self, place, tmp_path, monkeypatch):
        monkeypatch.setattr("tasks.execution.runner.interactive", lambda: False)
        archive, _ = volume_backup(tmp_path, volume="media_volume")
        conn = place((shlex.join(COMPOSE + compose.config_json()), Result(stdout=self.CONFIG)), ("sha256sum --check", OK))
        with pytest.raises(TaskError, match="^restoring replaces everything in hello-prod_media_volume: add --yes"):
            volume.restore(c(), str(archive), host="prod")
        assert not [command for command in conn.commands if "docker run" in command]


class TestSwarmTasks:
    """tasks/swarm.py's bodies: what procedures/swarm.py found, printed (the procedure's
    commands are tested with it)."""

    def test_status_prints_the_nodes_then_the_services(self, place, monkeypatch, capsys):
        from tasks import swarm
        place()
        monkeypatch.setattr(swarm.swarm, "status", lambda s: (
            [["NODE", "STATUS"], ["node1", "Ready"]], [["SERVICE", "REPLICAS"], ["hello_djangoapp", "2/2"]]))
        swarm.status(c(), cluster="swarm")
        assert [line.split() for line in capsys.readouterr().out.splitlines()] == [
            ["NODE", "STATUS"], ["node1", "Ready"], [], ["SERVICE", "REPLICAS"], ["hello_djangoapp", "2/2"]]

    def test_status_before_a_deploy_says_there_are_no_services(self, place, monkeypatch, capsys):
        from tasks import swarm
        place()
        monkeypatch.setattr(swarm.swarm, "status", lambda s: ([["NODE", "STATUS"]], [["SERVICE", "REPLICAS"]]))
        swarm.status(c(), cluster="swarm")
        assert capsys.readouterr().out.splitlines()[-1] == "no services of this stack yet"

    def test_init_hands_the_cluster_to_the_procedure(self, place, monkeypatch):
        from tasks import swarm
        place()
        given = []
        monkeypatch.setattr(swarm.swarm, "init", lambda s: given.append((s.cluster.name, sorted(s.nodes))))
        swarm.init(c(), cluster="swarm")
        assert given == [("swarm", ["node1", "node2"])]
