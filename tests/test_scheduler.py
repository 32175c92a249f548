"""config/app/djangostack/scheduler.py, the scheduler process's program, driven by a fake
clock and fake runs: when each schedule runs next, that a run still going makes its next
firing a counted skip, that a run past its timeout is killed and fails, what the status file
says and when a notification goes out. The real thing runs in tests/e2e/test_schedules.py."""
import datetime
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "config/app/djangostack/scheduler.py"
spec = importlib.util.spec_from_file_location("stack_scheduler", SCRIPT)
scheduler = importlib.util.module_from_spec(spec)
spec.loader.exec_module(scheduler)

UTC = datetime.timezone.utc
START = datetime.datetime(2026, 3, 1, 12, 0, 30, tzinfo=UTC)


class Clock:
    def __init__(self, at=START):
        self.at = at

    def __call__(self):
        return self.at

    def forward(self, seconds):
        self.at += datetime.timedelta(seconds=seconds)


class FakeRun:
    """A run that ends when the test says, with the exit code it says."""

    def __init__(self, name, command):
        self.name, self.command, self.code, self.killed, self.last_line = name, command, None, False, None

    def poll(self):
        return self.code

    def kill(self):
        self.killed, self.code = True, -9


class Harness:
    def __init__(self, *schedules, previous=None):
        self.clock, self.runs, self.sent = Clock(), [], []
        self.scheduler = scheduler.Scheduler(list(schedules), clock=self.clock, launch=self.launch,
                                             notify=lambda title, body: self.sent.append((title, body)),
                                             previous=previous)

    def launch(self, name, command):
        self.runs.append(FakeRun(name, command))
        return self.runs[-1]

    def at(self, seconds):
        """The clock SECONDS past START, then one tick."""
        self.clock.at = START + datetime.timedelta(seconds=seconds)
        return self.scheduler.tick()

    def entry(self, name="job"):
        return self.scheduler.status[name]


def job(cron="* * * * *", command=("flaky",), timeout=3600, name="job"):
    return {"name": name, "cron": cron, "command": list(command), "timeout": timeout}


class TestNextRun:
    @pytest.mark.parametrize("cron, after, expected", [
        ("17 3 * * *", "2026-03-01T12:00:30+00:00", "2026-03-02T03:17:00+00:00"),
        ("* * * * *", "2026-03-01T12:00:30+00:00", "2026-03-01T12:01:00+00:00"),
        ("* * * * *", "2026-03-01T12:01:00+00:00", "2026-03-01T12:02:00+00:00"),  # strictly after
        ("0 * * * *", "2026-03-01T12:00:30+01:00", "2026-03-01T13:00:00+01:00"),  # in the clock's timezone
        ("* * * * * */10", "2026-03-01T12:00:30+00:00", "2026-03-01T12:00:40+00:00"),  # croniter's seconds
    ], ids=["daily", "every-minute", "strictly-after", "local-time", "seconds"])
    def test_is_the_first_firing_after_now(self, cron, after, expected):
        assert scheduler.next_run(cron, datetime.datetime.fromisoformat(after)).isoformat() == expected

    def test_a_new_scheduler_waits_for_each_schedule_s_first_firing(self):
        h = Harness(job(), job("30 4 * * *", name="nightly"))
        assert (h.entry()["next"], h.entry("nightly")["next"]) == ("2026-03-01T12:01:00+00:00",
                                                                   "2026-03-02T04:30:00+00:00")
        assert h.at(29) is False and h.runs == []


class TestRuns:
    def test_a_due_schedule_runs_its_command_and_its_end_is_recorded(self):
        h = Harness(job(command=("clearsessions", "--verbosity=2")))
        assert h.at(30) is True
        assert [(r.name, r.command) for r in h.runs] == [("job", ["clearsessions", "--verbosity=2"])]
        assert h.entry()["running"] is True and h.entry()["last_start"] == "2026-03-01T12:01:00+00:00"
        assert h.entry()["next"] == "2026-03-01T12:02:00+00:00"
        h.runs[0].code = 0
        h.at(42.5)
        assert {k: h.entry()[k] for k in ("running", "exit", "duration", "last_end", "failures", "last_error")} == {
            "running": False, "exit": 0, "duration": 12.5, "last_end": "2026-03-01T12:01:12+00:00", "failures": 0,
            "last_error": None}

    def test_a_run_still_going_when_its_schedule_is_due_again_makes_that_firing_a_counted_skip(self):
        h = Harness(job())
        h.at(30)
        h.at(90)
        h.at(150)
        assert len(h.runs) == 1 and h.entry()["skipped"] == 2 and h.entry()["next"] == "2026-03-01T12:04:00+00:00"
        h.runs[0].code = 0
        h.at(160)
        h.at(210)
        assert len(h.runs) == 2 and h.entry()["skipped"] == 2

    def test_two_schedules_run_side_by_side(self):
        h = Harness(job(), job(name="other"))
        h.at(30)
        assert sorted(r.name for r in h.runs) == ["job", "other"]

    def test_a_run_past_its_timeout_is_killed_and_fails(self):
        h = Harness(job(timeout=20))
        h.at(30)
        h.at(49)
        assert not h.runs[0].killed
        h.at(50)
        assert h.runs[0].killed
        h.at(51)
        assert h.entry()["exit"] == -9 and h.entry()["failures"] == 1
        assert h.entry()["last_error"] == "killed after its timeout of 20 s"
        assert h.sent == [("schedule job FAILED", "killed after its timeout of 20 s")]

    def test_once_stopping_no_run_starts_and_the_one_under_way_ends_it(self):
        h = Harness(job())
        h.at(30)
        h.scheduler.stopping = True
        h.at(90)
        assert len(h.runs) == 1 and h.entry()["skipped"] == 0 and h.scheduler.busy
        h.runs[0].code = 0
        h.at(91)
        assert not h.scheduler.busy and h.scheduler.document()["stopping"] is True


class TestNotifications:
    def test_a_failure_always_a_recovery_once_a_success_never(self):
        h = Harness(job())
        outcomes = [1, 1, 0, 0, 2]
        for minute, code in enumerate(outcomes):
            h.at(30 + 60 * minute)
            h.runs[-1].code, h.runs[-1].last_line = code, "CommandError: no luck"
            h.at(31 + 60 * minute)
        assert h.sent == [
            ("schedule job FAILED", "exit status 1: CommandError: no luck"),
            ("schedule job FAILED", "exit status 1: CommandError: no luck"),
            ("schedule job recovered", "schedule job succeeded again at 2026-03-01T12:03:01+00:00"),
            ("schedule job FAILED", "exit status 2: CommandError: no luck")]

    def test_failures_before_a_restart_still_make_the_next_success_a_recovery(self):
        previous = {"schedules": {"job": {"failures": 3, "skipped": 4, "exit": 1, "running": True}}}
        h = Harness(job(), previous=previous)
        assert h.entry()["running"] is False and h.entry()["skipped"] == 4
        h.at(30)
        h.runs[0].code = 0
        h.at(31)
        assert [title for title, _ in h.sent] == ["schedule job recovered"]

    def test_a_removed_schedule_leaves_the_status(self):
        h = Harness(job(), previous={"schedules": {"gone": {"failures": 1}}})
        assert list(h.scheduler.status) == ["job"]

    def test_are_sent_to_each_url_of_the_notify_file_and_never_raise(self, tmp_path, monkeypatch, capsys):
        sent = []

        class Apprise:
            def add(self, url):
                sent.append(url)

            def notify(self, title, body):
                sent.append((title, body))
                raise RuntimeError("unreachable")

        monkeypatch.setitem(sys.modules, "apprise", type(sys)("apprise"))
        sys.modules["apprise"].Apprise = Apprise
        urls = tmp_path / "notify"
        scheduler.notify("t", "b", str(tmp_path / "missing"))
        urls.write_text("# from [backups] notify in config/stack.toml\njson://a.example/x\n\nmailto://b@example.com\n")
        scheduler.notify("schedule job FAILED", "exit status 1", str(urls))
        assert sent == ["json://a.example/x", "mailto://b@example.com", ("schedule job FAILED", "exit status 1")]
        assert "notification failed: unreachable" in capsys.readouterr().out


class TestStatus:
    def test_is_written_whole_then_renamed_into_place(self, tmp_path, monkeypatch):
        path = tmp_path / "status.json"
        path.write_text('{"old": true}')
        seen = []
        real = os.replace
        monkeypatch.setattr(scheduler.os, "replace", lambda a, b: (seen.append(json.loads(Path(a).read_text())),
                                                                  json.loads(Path(b).read_text()), real(a, b)))
        h = Harness(job())
        scheduler.write_json(str(path), h.scheduler.document())
        assert seen[0]["schedules"]["job"]["next"] == "2026-03-01T12:01:00+00:00"
        assert json.loads(path.read_text()) == seen[0] and [p.name for p in tmp_path.iterdir()] == ["status.json"]

    def test_a_failed_write_leaves_the_old_file_and_no_leftover(self, tmp_path):
        path = tmp_path / "status.json"
        path.write_text('{"old": true}')
        with pytest.raises(TypeError):
            scheduler.write_json(str(path), {"not json": object()})
        assert path.read_text() == '{"old": true}' and [p.name for p in tmp_path.iterdir()] == ["status.json"]

    def test_says_what_is_failing_overdue_or_stale(self):
        h = Harness(job(), job("0 * * * *", name="hourly"))
        h.at(30)
        h.runs[0].code = 1
        h.at(31)
        document = json.loads(json.dumps(h.scheduler.document()))
        fine = scheduler.verdict(json.loads(json.dumps(document)), START + datetime.timedelta(seconds=40))
        assert (fine["stale"], fine["schedules"]["job"]["failing"], fine["schedules"]["job"]["overdue"],
                fine["schedules"]["hourly"]["failing"], fine["schedules"]["hourly"]["overdue"]) == (
            False, True, False, False, False)
        # Nobody wrote for three minutes: the scheduler is not running, and job's 12:02 passed.
        late = scheduler.verdict(document, START + datetime.timedelta(seconds=31 + 180))
        assert late["stale"] is True and late["schedules"]["job"]["overdue"] is True
        assert scheduler.verdict({}, START) == {"schedules": {}, "stale": True}

    def test_the_status_command_prints_the_verdict(self, tmp_path, monkeypatch, capsys):
        monkeypatch.setattr(scheduler, "STATUS_FILE", str(tmp_path / "status.json"))
        assert scheduler.main(["status"]) == 0
        assert json.loads(capsys.readouterr().out) == {"schedules": {}, "stale": True}
        assert scheduler.main(["nonsense"]) == 2


class TestSchedules:
    @pytest.mark.parametrize("text", ['{"name": "x"}', '[{"name": "x", "cron": "* * * * *"}]', "[1]", "nope"])
    def test_a_bad_variable_is_one_line_and_exit_1(self, text, monkeypatch, capsys):
        monkeypatch.setenv("STACK_SCHEDULES", text)
        assert scheduler.main([]) == 1
        assert capsys.readouterr().err.count("\n") == 1


def test_imports_nothing_of_django():
    """It runs in its own virtualenv, which has no Django."""
    code = f"import sys, runpy; sys.modules['django'] = None; runpy.run_path({str(SCRIPT)!r})"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
