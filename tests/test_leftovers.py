"""What killed tasks leave: settled by `inv up` before the stack starts, named by `inv doctor`
here and on a host (the commands recorded, no engine)."""
import json
import shlex

import pytest
from invoke import MockContext, Result

from tasks import doctor, lifecycle
from tasks.execution.runner import Runner
from tasks.execution.targets import HostTarget, LocalTarget
from tasks.plans import archives
from tasks.plans import compose as compose_plans
from tasks.source.stack import loads
from tests.fakes import Recorder
from tests.stacks import COMMITTED

STACK = loads(COMMITTED + """
[hosts.prod]
address = "203.0.113.10"
directory = "/srv/hello"
project = "hello-prod"
""")


def answers(project):
    """The engine of a running stack whose media volume holds what a restore killed before
    it was verified leaves, and whose database1 a load killed between its renames left."""
    compose = f"docker compose --project-name {project}"
    config = {"services": {"djangoapp": {"image": f"{project}-djangoapp:latest"},
                           "database1": {"image": "postgres:15"}}}
    volumes = {"database1_volume": f"{project}_database1_volume", "media_volume": f"{project}_media_volume"}
    in_db = [*compose.split(), "exec", "-T", "database1"]
    return {
        "docker version --format '{{.Server.Version}}'": Result("28\n"),
        "docker compose version --short": Result("2.40.3\n"),
        shlex.join(compose_plans.running_services(project)): Result("djangoapp\nnginx\nfront\ndatabase1\n"),
        f"docker volume ls --quiet --filter 'name=^{project}_'": Result("\n".join(volumes.values()) + "\n"),
        f"{compose} config --format json": Result(json.dumps(config)),
        shlex.join(archives.restore_leftovers(volumes, "postgres:15", project)):
            Result("media_volume .restore-safety\nmedia_volume .restore-new\n"),
        shlex.join(archives.volume_stats(f"{project}_media_volume", f"{project}-djangoapp:latest", project)):
            Result("10\n2\n\n10001:10001 \n.restore-safety .restore-new \n"),
        shlex.join(archives.run_sql(in_db, "database1", archives.loads_of_sql("database1"))):
            Result("database1__old_20261204t101500z\n"),
    }


def local_runner(extra=None, dry=False):
    conn = Recorder({**answers("hello"), **(extra or {})})
    return Runner(LocalTarget(conn, STACK), dry), conn


class TestUp:
    @pytest.mark.live_state
    def test_up_settles_what_killed_tasks_left_before_the_stack_starts(self, monkeypatch):
        done = []
        monkeypatch.setattr(lifecycle, "settle_interrupted_restores", lambda r: done.append("restores"))
        monkeypatch.setattr(lifecycle, "settle_interrupted_loads", lambda r: done.append("loads"))
        monkeypatch.setattr(lifecycle, "start_stack", lambda r, **kw: done.append("start"))
        lifecycle.up(MockContext(run={}), dry=True)
        assert done == ["restores", "loads", "start"]

    def test_a_restore_killed_before_it_was_verified_is_undone_under_the_volume_s_lock(self):
        from tasks.procedures.volume_copy import settle_interrupted_restores

        r, conn = local_runner()
        settle_interrupted_restores(r)
        ran = conn.commands
        settle = shlex.join(archives.settle_restore("hello_media_volume", "hello-djangoapp:latest", "hello"))
        stop, start = (f"docker compose --project-name hello {verb} djangoapp nginx" for verb in ("stop", "start"))
        lock = next(n for n, c in enumerate(ran) if "mkdir" in c and "volume-hello_media_volume" in c)
        # Looked at again under the lock, its users stopped, settled, started again.
        assert ran.index(stop) > lock
        assert ran.index(stop) < ran.index(settle) < ran.index(start)
        assert not any("hello_database1_volume-" in c and "mkdir" in c for c in ran)  # nothing left there

    def test_a_restore_that_ended_while_the_lock_was_awaited_is_left_alone(self):
        from tasks.procedures.volume_copy import settle_interrupted_restores

        stats = shlex.join(archives.volume_stats("hello_media_volume", "hello-djangoapp:latest", "hello"))
        r, conn = local_runner({stats: Result("10\n2\n\n10001:10001 \n\n")})
        settle_interrupted_restores(r)
        assert not any(archives.SETTLE in c for c in conn.commands)

    def test_the_live_data_left_under_its_retired_name_is_renamed_back_under_the_lock(self):
        from tasks.procedures.dumps import settle_interrupted_loads

        r, conn = local_runner()
        settle_interrupted_loads(r)
        ran = conn.commands
        lock = next(n for n, c in enumerate(ran) if "mkdir" in c and "volume-hello_database1_volume" in c)
        rename = next(n for n, c in enumerate(ran) if "RENAME TO" in c)
        assert lock < rename
        assert "database1__old_20261204t101500z" in ran[rename]

    def test_nothing_left_takes_no_lock(self):
        from tasks.procedures.dumps import settle_interrupted_loads
        from tasks.procedures.volume_copy import settle_interrupted_restores

        quiet = {shlex.join(archives.restore_leftovers({"database1_volume": "hello_database1_volume",
                                                        "media_volume": "hello_media_volume"}, "postgres:15",
                                                       "hello")): Result(""),
                 shlex.join(archives.run_sql(["docker", "compose", "--project-name", "hello", "exec", "-T",
                                              "database1"], "database1", archives.loads_of_sql("database1"))):
                     Result("database1\n")}
        r, conn = local_runner(quiet)
        settle_interrupted_restores(r)
        settle_interrupted_loads(r)
        assert not any(".locks" in c for c in conn.commands)


class TestDoctorOnAHost:
    def test_doctor_names_what_killed_tasks_left_there_with_the_command_for_that_host(self):
        assert {"interrupted_restores", "interrupted_loads"} <= set(HostTarget.doctor_checks)
        conn = Recorder(answers("hello-prod"))
        r = Runner(HostTarget(conn, STACK.hosts["prod"], STACK, local_c=Recorder()))
        (restore,) = doctor.check_interrupted_restores(r)
        assert restore == (False, "hello-prod_media_volume holds .restore-safety, .restore-new, left by an "
                                  "interrupted restore",
                           "`inv volume.archive --volume media_volume --host prod` settles it first (it was never "
                           "verified: that puts back the content from before it)")
        (load,) = doctor.check_interrupted_loads(r)
        assert load[:2] == (False, "database1__old_20261204t101500z in database1's server, left by an interrupted load")
        assert load[2].startswith("`inv db.dump database1 --host prod` settles it first (renaming ")
        # On the host, in its live release.
        assert ("/srv/hello/current", shlex.join(archives.restore_leftovers(
            {"database1_volume": "hello-prod_database1_volume", "media_volume": "hello-prod_media_volume"},
            "postgres:15", "hello-prod")), None) in conn.calls


    def test_doctor_names_the_unfinished_files_of_the_host_s_backups_folder_with_size_age_and_the_command(self):
        assert "unfinished_backups" in HostTarget.doctor_checks
        listing = shlex.join(archives.unfinished_transfers("/srv/hello/shared/backups"))
        conn = Recorder({listing: Result("1765000000\n"
                                         "52428800 1764992800.0 .hello_media_volume_20261205T101500Z.tar.zst.tmp\n"
                                         "512 1764999990.0 .hello_database1_20261205T111500Z.dump.tmp\n")})
        r = Runner(HostTarget(conn, STACK.hosts["prod"], STACK, local_c=Recorder()))
        assert doctor.check_unfinished_backups(r) == [
            (False, "/srv/hello/shared/backups/.hello_database1_20261205T111500Z.dump.tmp on prod (512 B, last written "
                    "0 min 10 s ago): left by an interrupted backup or transfer",
             "once no backup, dump or restore runs there, remove it there: "
             "`rm -f -- /srv/hello/shared/backups/.hello_database1_20261205T111500Z.dump.tmp`"),
            (False, "/srv/hello/shared/backups/.hello_media_volume_20261205T101500Z.tar.zst.tmp on prod (50.0 MiB, "
                    "last written 2 h 0 min ago): left by an interrupted backup or transfer",
             "once no backup, dump or restore runs there, remove it there: "
             "`rm -f -- /srv/hello/shared/backups/.hello_media_volume_20261205T101500Z.tar.zst.tmp`")]
        assert conn.calls == [(None, listing, None)]  # on the host, outside any release

    @pytest.mark.parametrize("answer, expected", [
        (Result(""), (True, "no unfinished file in /srv/hello/shared/backups", None)),  # no folder yet
        (Result("1765000000\n"), (True, "no unfinished file in /srv/hello/shared/backups", None)),
        (Result("garbage\n"), (False, "could not look into /srv/hello/shared/backups on prod (no answer)", None)),
        (Result(exited=1, stderr="bash: find: command not found\n"),
         (False, "could not look into /srv/hello/shared/backups on prod (bash: find: command not found)", None)),
    ], ids=["no-folder", "none", "unreadable", "failed"])
    def test_a_clean_or_unreadable_backups_folder_is_one_line(self, answer, expected):
        listing = shlex.join(archives.unfinished_transfers("/srv/hello/shared/backups"))
        r = Runner(HostTarget(Recorder({listing: answer}), STACK.hosts["prod"], STACK, local_c=Recorder()))
        assert doctor.check_unfinished_backups(r) == expected


def test_the_unfinished_files_script_takes_the_folder_as_an_argument_never_in_its_text():
    argv = archives.unfinished_transfers("/srv/my hello/backups")
    assert argv[:2] == ["bash", "-c"] and argv[-1] == "/srv/my hello/backups" and "my hello" not in argv[2]


@pytest.mark.parametrize("output, expected", [
    ("", {}),
    ("media_volume .restore-safety\nmedia_volume .restore-new\ncerts .restore-discard\n",
     {"media_volume": [".restore-safety", ".restore-new"], "certs": [".restore-discard"]}),
], ids=["none", "two-volumes"])
def test_the_helper_s_lines_are_read_per_volume(output, expected):
    assert archives.leftovers_by_volume(output) == expected
