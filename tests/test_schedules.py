"""[[schedules]]: what config/stack.toml may say, the one-line refusals of what it may not, and
the scheduler process and environment a stack with schedules gets."""
import json
import shlex
import subprocess

import pytest
import yaml

from invoke import MockContext, Result

from tasks import cli, schedule
from tasks.errors import StackError, TaskError
from tasks.plans import schedules as plans_schedules
from tasks.source import render
from tasks.procedures import places
from tasks.source.schedules import Schedule, parse_schedules, scheduler_process, schedules_variable
from tasks.source.stack import loads
from tests.stacks import COMMITTED, NODES, PROD, SWARM, stack
from tests.test_backup_procedures import ALWAYS, ENGINE, OK, commands
from tests.test_backup_tasks import COMPOSE, Connection

CLEAR = '\n[[schedules]]\nname = "clearsessions"\ncron = "17 3 * * *"\ncommand = ["clearsessions"]\n'
REPORT = ('\n[[schedules]]\nname = "report"\ncron = "0 * * * *"\n'
          'command = ["check", "--deploy", "--fail-level=WARNING"]\ntimeout = 120\n')


class TestParsing:
    def test_a_stack_without_schedules_has_none(self):
        assert stack().schedules == ()

    def test_each_entry_becomes_a_schedule_in_order_with_the_default_timeout(self):
        assert stack(CLEAR, REPORT).schedules == (
            Schedule("clearsessions", "17 3 * * *", ("clearsessions",), 3600),
            Schedule("report", "0 * * * *", ("check", "--deploy", "--fail-level=WARNING"), 120))

    @pytest.mark.parametrize("entry, message", [
        ({"cron": "* * * * *", "command": ["x"]}, "[[schedules]] entry 1 needs name"),
        ({"name": "a", "command": ["x"]}, "[[schedules]] entry 1 needs cron"),
        ({"name": "a", "cron": "* * * * *"}, "[[schedules]] entry 1 needs command"),
        ({"name": "A b", "cron": "* * * * *", "command": ["x"]},
         "[[schedules]] name 'A b' is not valid: lowercase letters, digits and underscores"),
        ({"name": "a" * 31, "cron": "* * * * *", "command": ["x"]}, "is too long (31 characters; at most 30)"),
        ({"name": 5, "cron": "* * * * *", "command": ["x"]}, "[[schedules]] name 5 is not valid"),
        ({"name": "a", "cron": "* * * *", "command": ["x"]}, "[[schedules]] a cron '* * * *' is not valid: five"),
        ({"name": "a", "cron": "61 * * * *", "command": ["x"]}, "the minute 61 is outside 0-59"),
        ({"name": "a", "cron": "* * * * *", "command": "clearsessions"},
         "[[schedules]] a command 'clearsessions' is not valid: a list of manage.py arguments"),
        ({"name": "a", "cron": "* * * * *", "command": []}, "[[schedules]] a command [] is not valid"),
        ({"name": "a", "cron": "* * * * *", "command": ["x"] * 51}, "(1 to 50 strings)"),
        ({"name": "a", "cron": "* * * * *", "command": ["--help"]},
         "[[schedules]] a command '--help' is not valid: it starts with a management command's name"),
        ({"name": "a", "cron": "* * * * *", "command": ["x", "a b"]},
         "[[schedules]] a command argument 'a b' is not valid: letters, digits and _@%+=:,./- only"),
        ({"name": "a", "cron": "* * * * *", "command": ["x", "$(id)"]}, "argument '$(id)' is not valid"),
        ({"name": "a", "cron": "* * * * *", "command": ["x", "it's"]}, "argument \"it's\" is not valid"),
        ({"name": "a", "cron": "* * * * *", "command": ["x", "a\nb"]}, "argument 'a\\nb' is not valid"),
        ({"name": "a", "cron": "* * * * *", "command": ["x", 3]}, "argument 3 is not valid"),
        ({"name": "a", "cron": "* * * * *", "command": ["x", "--settings=evil"]},
         "[[schedules]] a command argument '--settings=evil' is not allowed: the stack sets the settings"),
        ({"name": "a", "cron": "* * * * *", "command": ["x", "--pythonpath", "/tmp"]}, "'--pythonpath' is not allowed"),
        ({"name": "a", "cron": "* * * * *", "command": ["x"], "timeout": 0},
         "[[schedules]] a timeout 0 is not valid: a whole number from 1 to 86400"),
        ({"name": "a", "cron": "* * * * *", "command": ["x"], "timeout": 86401}, "from 1 to 86400"),
        ({"name": "a", "cron": "* * * * *", "command": ["x"], "timeout": True}, "timeout True is not valid"),
        ({"name": "a", "cron": "* * * * *", "command": ["x"], "timeout": "60"}, "timeout '60' is not valid"),
        ({"name": "a", "cron": "* * * * *", "command": ["x"], "every": 5},
         "[[schedules]] a: unknown setting(s) 'every' (known: command, cron, name, timeout)"),
        ("clearsessions", "[[schedules]] entry 1 'clearsessions' is not valid: a table with name, cron and command"),
    ], ids=lambda v: v if isinstance(v, str) else None)
    def test_a_bad_entry_is_refused_in_one_line(self, entry, message):
        with pytest.raises(StackError) as raised:
            parse_schedules([entry])
        assert message in str(raised.value)
        assert "\n" not in str(raised.value)

    def test_two_schedules_of_one_name_are_refused(self):
        entry = {"name": "a", "cron": "* * * * *", "command": ["x"]}
        with pytest.raises(StackError, match=r"\[\[schedules\]\] name 'a' is used twice"):
            parse_schedules([entry, entry])

    def test_schedules_that_are_not_an_array_of_tables_are_refused(self):
        with pytest.raises(StackError, match=r"config/stack.toml: schedules 'x' is not valid: \[\[schedules\]\] tables"):
            loads('schedules = "x"\n' + COMMITTED)

    def test_the_file_names_itself_in_a_refusal(self):
        with pytest.raises(StackError, match=r"^config/stack.toml: \[\[schedules\]\] clearsessions cron"):
            stack(CLEAR.replace("17 3 * * *", "daily"))


class TestScheduler:
    def test_is_a_singleton_with_a_heartbeat_given_the_longest_timeout_and_ten_seconds_to_stop(self):
        process = scheduler_process(stack(REPORT, CLEAR + "timeout = 60\n").schedules)
        assert (process.name, tuple(process.command), process.replicas, process.singleton, process.stop_signal,
                process.stop_grace_period, process.health) == (
            "scheduler", ("/app/scheduler/bin/python", "/app/stack/djangostack/scheduler.py"), 1, True, "SIGTERM",
            130, "heartbeat")

    def test_its_grace_period_stays_within_the_engines_hour(self):
        assert scheduler_process(parse_schedules([{"name": "a", "cron": "* * * * *", "command": ["x"],
                                                   "timeout": 86400}])).stop_grace_period == 3600

    def test_reads_its_schedules_as_compact_json(self):
        assert json.loads(schedules_variable(stack(REPORT).schedules)) == [
            {"name": "report", "cron": "0 * * * *", "command": ["check", "--deploy", "--fail-level=WARNING"],
             "timeout": 120}]


class TestEnvironment:
    def test_the_app_and_its_processes_get_the_schedules_when_there_are_some(self):
        assert render.django_environment(stack(CLEAR))["STACK_SCHEDULES"] == (
            '[{"name":"clearsessions","cron":"17 3 * * *","command":["clearsessions"],"timeout":3600}]')

    def test_nothing_changes_without_schedules(self):
        assert "STACK_SCHEDULES" not in render.django_environment(stack())


class TestRendering:
    def test_the_image_gets_the_scheduler_s_own_virtualenv_and_state_folder_only_with_schedules(self):
        plain = render.rendered(stack())[render.DOCKERFILE]
        scheduled = render.rendered(stack(CLEAR))[render.DOCKERFILE]
        assert "scheduler" not in plain
        builder, runtime = scheduled.split("\nFROM ${PYTHON_IMAGE}\n")
        assert ("COPY config/app/scheduler-requirements.txt /build/\n"
                "RUN python -m venv --without-pip /app/scheduler \\\n"
                " && python -m pip --python /app/scheduler/bin/python install --no-deps --require-hashes \\\n"
                "      --requirement /build/scheduler-requirements.txt\n") in builder
        assert ("COPY --from=builder /app/.venv /app/.venv\n"
                "COPY --from=builder /app/scheduler /app/scheduler\n") in runtime
        assert "RUN mkdir -p /var/lib/stack-scheduler \\\n && chown app:app /var/lib/stack-scheduler\n" in runtime
        # Without the block the two files are the same, line for line.
        kept = [line for line in scheduled.splitlines() if line not in plain.splitlines()]
        assert len(kept) == len(scheduled.splitlines()) - len(plain.splitlines())

    def test_the_compose_file_gets_the_state_volume_only_with_schedules(self):
        assert "scheduler_state" in yaml.safe_load(render.rendered(stack(CLEAR))[render.COMPOSE_FILE])["volumes"]
        assert "scheduler_state" not in yaml.safe_load(render.rendered(stack())[render.COMPOSE_FILE])["volumes"]

    def test_a_cluster_s_stack_file_gets_the_state_volume_only_with_schedules(self):
        with_schedules = render.rendered(stack(NODES, SWARM, CLEAR))[render.stack_file("swarm")]
        assert "scheduler_state" in yaml.safe_load(with_schedules)["volumes"]
        assert "scheduler_state" not in yaml.safe_load(render.rendered(stack(NODES, SWARM))[render.stack_file("swarm")])[
            "volumes"]

    def test_on_a_cluster_the_scheduler_alone_gets_the_notify_urls_as_a_swarm_secret(self):
        document = yaml.safe_load(render.rendered(stack(NODES, SWARM, CLEAR))[render.stack_file("swarm")])
        given = {name: [s["source"] if isinstance(s, dict) else s for s in service.get("secrets", [])]
                 for name, service in document["services"].items()}
        assert {"source": "scheduler_notify", "target": "notify", "uid": "10001", "gid": "10001", "mode": 0o400} in \
            document["services"]["scheduler"]["secrets"]
        assert [name for name, sources in given.items() if "scheduler_notify" in sources] == ["scheduler"]
        # Named by its file's digest: new URLs, a new secret, the scheduler alone restarted.
        assert document["secrets"]["scheduler_notify"] == {
            "name": "${PROJECT}_scheduler_notify_${VERSION_scheduler_notify}",
            "file": "${STACK_CONFIG_DIR}/secrets/backup_notify"}
        plain = yaml.safe_load(render.rendered(stack(NODES, SWARM))[render.stack_file("swarm")])
        assert "scheduler_notify" not in plain["secrets"]

    @staticmethod
    def secrets_init(tmp_path, document, given):
        """The rendered secrets-init script run for real (sh, as root) on the files GIVEN;
        what the app's secrets folder holds then."""
        script = yaml.safe_load(render.rendered(document)[render.COMPOSE_FILE])["services"]["secrets-init"]
        script = script["entrypoint"][2]
        folders = {name: tmp_path / name for name in ("in", "out", "backup-out")}
        for folder in folders.values():
            folder.mkdir(exist_ok=True)
            for old in folder.iterdir() if folder.name == "in" else ():
                old.unlink()
        for name in given:
            (folders["in"] / name).write_text("json://hooks.example.com/x\n" if name == "backup_notify" else "s\n")
        script = script.replace("$$", "$").replace("/backup-out", str(folders["backup-out"]))
        script = script.replace("/out", str(folders["out"])).replace("/in/", f"{folders['in']}/")
        subprocess.run(["sh", "-ec", script], check=True, capture_output=True)
        return {p.name: (p.stat().st_mode & 0o777, p.stat().st_uid) for p in folders["out"].iterdir()}

    def test_secrets_init_gives_the_scheduler_the_backups_notify_urls_and_takes_them_back(self, tmp_path):
        backups = '\n[backups]\nschedule = "15 3 * * *"\nrepository = "/srv/restic/hello"\n'
        given = ["django_secret_key", "database1_password", "restic_password"]
        assert self.secrets_init(tmp_path, stack(CLEAR, backups), [*given, "backup_notify"]) == {
            "django_secret_key": (0o400, 10001), "database1_password": (0o400, 10001), "notify": (0o400, 10001)}
        assert (tmp_path / "out" / "notify").read_text() == "json://hooks.example.com/x\n"
        # Notifications no longer set up: the file goes.
        assert "notify" not in self.secrets_init(tmp_path, stack(CLEAR, backups), given)
        # Schedules removed: the app keeps no notify URLs (the backups' own copy stays theirs).
        self.secrets_init(tmp_path, stack(CLEAR, backups), [*given, "backup_notify"])
        assert "notify" not in self.secrets_init(tmp_path, stack(backups), [*given, "backup_notify"])
        assert (tmp_path / "backup-out" / "notify").exists()

    def test_secrets_init_gives_no_notify_urls_without_backups_set_up(self, tmp_path):
        assert sorted(self.secrets_init(tmp_path, stack(CLEAR), ["django_secret_key", "database1_password"])) == [
            "database1_password", "django_secret_key"]


class TestStatusReport:
    DOC = {"stale": False, "updated": "2026-03-01T12:00:40+00:00", "schedules": {
        "clearsessions": {"last_start": "2026-03-01T03:17:00+00:00", "exit": 0, "duration": 1.5, "skipped": 0,
                          "next": "2026-03-02T03:17:00+00:00", "running": False, "failing": False,
                          "overdue": False},
        "report": {"last_start": "2026-03-01T12:00:00+00:00", "exit": 1, "duration": 0.8, "skipped": 2,
                   "next": "2026-03-01T13:00:00+00:00", "running": False, "failing": True, "overdue": False,
                   "last_failure": "2026-03-01T12:00:01+00:00", "last_error": "exit status 1: CommandError: x"}}}

    def test_is_a_table_of_each_schedule_and_the_problems_in_one_line_each(self):
        fine, rows, problems = plans_schedules.report(stack(CLEAR, REPORT).schedules, self.DOC)
        assert not fine and rows == [
            ["schedule", "cron", "last start", "exit", "duration", "next", "skipped", "state"],
            ["clearsessions", "17 3 * * *", "2026-03-01 03:17:00", "0", "1.5 s", "2026-03-02 03:17:00", "0", "ok"],
            ["report", "0 * * * *", "2026-03-01 12:00:00", "1", "0.8 s", "2026-03-01 13:00:00", "2", "failing"]]
        assert problems == ["report: last run FAILED at 2026-03-01 12:00:01: exit status 1: CommandError: x"]

    @pytest.mark.parametrize("change, problem", [
        ({"stale": True}, "the scheduler has not written its status for over a minute: it is not running"),
        ({"schedules": {"report": {"overdue": True, "next": "2026-03-01T12:00:00+00:00"}}},
         "report: OVERDUE: due at 2026-03-01 12:00:00, not started"),
        ({"schedules": {}}, "clearsessions: the scheduler does not know it"),
    ], ids=["stale", "overdue", "unknown"])
    def test_is_not_fine_when_the_scheduler_stopped_or_a_schedule_is_overdue_or_unknown(self, change, problem):
        document = {**self.DOC, **change}
        fine, _, problems = plans_schedules.report(stack(CLEAR, REPORT).schedules, document)
        assert not fine and any(line.startswith(problem) for line in problems)

    def test_a_fine_scheduler_is_fine(self):
        document = {**self.DOC, "schedules": {"clearsessions": self.DOC["schedules"]["clearsessions"]}}
        assert plans_schedules.report(stack(CLEAR).schedules, document)[0] is True


class TestTasks:
    STATUS = shlex.join(COMPOSE + ["exec", "-T", "scheduler", "/app/scheduler/bin/python",
                                   "/app/stack/djangostack/scheduler.py", "status"])

    @pytest.fixture
    def place(self, monkeypatch):
        def make(*rules, schedules=CLEAR + REPORT):
            document = loads(COMMITTED + PROD + schedules)
            conn = Connection([*rules, *ALWAYS])
            monkeypatch.setattr(cli, "load", lambda: document)
            monkeypatch.setattr(cli, "connect", lambda host, dry=False: conn)
            monkeypatch.setattr(places, "interactive", lambda: False)
            return conn
        return make

    def test_status_prints_the_table_and_exits_1_when_a_schedule_fails(self, place, capsys):
        conn = place((self.STATUS, Result(stdout=json.dumps(TestStatusReport.DOC) + "\n")))
        with pytest.raises(TaskError, match="^schedules on prod are failing or overdue$"):
            schedule.status(MockContext(), host="prod")
        assert commands(conn) == [*ENGINE, self.STATUS]
        out = capsys.readouterr().out.splitlines()
        assert out[0].split() == ["schedule", "cron", "last", "start", "exit", "duration", "next", "skipped", "state"]
        assert out[-1] == "prod: report: last run FAILED at 2026-03-01 12:00:01: exit status 1: CommandError: x"

    def test_status_of_a_fine_scheduler_exits_0(self, place, capsys):
        document = {**TestStatusReport.DOC, "schedules": {"clearsessions": TestStatusReport.DOC["schedules"]["clearsessions"]}}
        place((self.STATUS, Result(stdout=json.dumps(document) + "\n")), schedules=CLEAR)
        schedule.status(MockContext(), host="prod")
        assert "clearsessions" in capsys.readouterr().out

    def test_status_exits_1_when_the_scheduler_is_not_running(self, place):
        place((self.STATUS, Result(exited=1, stderr='service "scheduler" is not running\n')))
        with pytest.raises(TaskError, match='^the scheduler is not running on prod \\(service "scheduler" is not '
                                            'running\\): start it with `inv up`$'):
            schedule.status(MockContext(), host="prod")

    def test_without_schedules_the_tasks_say_how_to_add_one(self, place):
        conn = place(schedules="")
        for call in (lambda: schedule.status(MockContext(), host="prod"),
                     lambda: schedule.run(MockContext(), "clearsessions", host="prod")):
            with pytest.raises(TaskError, match=r"^no \[\[schedules\]\] in config/stack.toml: add one"):
                call()
        assert commands(conn) == []

    def test_run_runs_the_command_once_in_a_one_off_app_container(self, place):
        run = shlex.join(COMPOSE + ["run", "--rm", "--no-deps", "-T", "djangoapp", "python", "manage.py", "check",
                                    "--deploy", "--fail-level=WARNING"])
        conn = place((run, OK))
        schedule.run(MockContext(), "report", host="prod")
        assert commands(conn)[-1] == run

    def test_run_of_a_failing_command_fails(self, place):
        place((shlex.join(COMPOSE + ["run"]), Result(exited=3)))
        with pytest.raises(TaskError, match=r"^schedule clearsessions \(manage.py clearsessions\) failed with exit "
                                            r"status 3: see above$"):
            schedule.run(MockContext(), "clearsessions", host="prod")

    def test_run_of_an_unknown_schedule_names_the_known_ones_and_runs_nothing(self, place):
        conn = place()
        with pytest.raises(TaskError, match=r"^no schedule named 'nightly' in config/stack.toml "
                                            r"\(known: clearsessions, report\)$"):
            schedule.run(MockContext(), "nightly", host="prod")
        assert commands(conn) == []
