"""[[schedules]] for real: the app image built with a schedule (its scheduler virtualenv and
state folder), the scheduler run in a container of it with the app's environment and secrets
(secrets-init gives it the backups' notify URLs), a management command of a test app that
fails, then runs long, then succeeds:

- status.json says what ran, with exit codes and durations, and the firing that came while
  a run was still going is skipped and counted, never run beside it;
- the failure and the recovery each send one notification, and nothing else does: apprise's
  `json://` URL, to a small HTTP server in a container of the same image on the app's network,
  which prints each notification's title;
- a SIGTERM lets the run in flight finish, starts no other, and the scheduler exits 0.

croniter's sixth field (seconds) makes the schedule fire every 5 s: STACK_SCHEDULES is set
for the run (config/stack.toml takes five fields, which this copy's file has).
"""
import json
import os
import time

import pytest

from tests.e2e.conftest import Stack, free_port

pytestmark = pytest.mark.e2e

PROJECT = "hello-e2e-schedules"
SCHEDULER = f"{PROJECT}-scheduler"
HOOKS = f"{PROJECT}-hooks"
IMAGE = f"{PROJECT}-djangoapp:latest"
SCHEDULE = ('\n[[schedules]]\nname = "flaky"\ncron = "*/5 * * * *"\ncommand = ["flaky", "--pause=6"]\n'
            'timeout = 60\n')
# Run 1 fails, run 2 takes PAUSE seconds (a firing comes meanwhile), run 3 succeeds at once,
# run 4 takes 3 PAUSEs (the stop comes meanwhile: long enough that a slow poll still finds it
# under way). Each run counts itself in the container's /tmp.
FLAKY = '''from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
import time


class Command(BaseCommand):
    def add_arguments(self, parser):
        parser.add_argument("--pause", type=int, default=0)

    def handle(self, pause, **options):
        counter = Path("/tmp/flaky-runs")
        run = int(counter.read_text()) + 1 if counter.exists() else 1
        counter.write_text(str(run))
        if run == 1:
            raise CommandError("the first run fails")
        if run in (2, 4):
            time.sleep(pause if run == 2 else 3 * pause)
        self.stdout.write(f"run {run} done")
'''
# The notifications' receiver: each POST's JSON title on a line of its own.
HOOK_SERVER = '''import http.server, json
class Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        print("NOTIFIED", body.get("title"), flush=True)
        self.send_response(200)
        self.end_headers()
server = http.server.HTTPServer(("0.0.0.0", 8080), Hook)
print("LISTENING", flush=True)
server.serve_forever()
'''


@pytest.fixture(scope="module")
def copy(tmp_path_factory):
    from testkit.projectcopy import copy_project

    s = Stack(PROJECT, free_port(0), root=copy_project(tmp_path_factory.mktemp("project")))
    commands = s.root / "hello/notes/management/commands"
    commands.mkdir(parents=True)
    for folder in (commands.parent, commands):
        (folder / "__init__.py").write_text("")
    (commands / "flaky.py").write_text(FLAKY)
    with open(s.root / "config/stack.toml", "a") as f:
        f.write(SCHEDULE)
    yield s
    s.docker("rm", "--force", SCHEDULER, HOOKS, check=False)
    s.compose("down", "--volumes", check=False)
    s.docker("image", "rm", "--force", IMAGE, check=False)


def status(s):
    return json.loads(s.docker("exec", SCHEDULER, "/app/scheduler/bin/python", "/app/stack/djangostack/scheduler.py",
                               "status").stdout)


def wait_for(s, condition, what, limit=60):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        state = status(s)
        if condition(state):
            return state
        time.sleep(0.5)
    raise AssertionError(f"{what} within {limit} s; status: {json.dumps(state)}\n"
                         + s.docker("logs", SCHEDULER, check=False).stdout)


def test_a_schedule_runs_never_overlaps_notifies_failure_and_recovery_and_stops_gracefully(copy):
    s = copy
    s.inv("render")
    s.inv("build", env={"PYTHON_IMAGE": os.environ.get("PYTHON_IMAGE", "python:3.11-slim-bookworm")})
    (s.root / "config/secrets/backup_notify").write_text(f"json://{HOOKS}:8080/\n")
    s.compose("run", "--rm", "secrets-init")
    # The app's networks made, then the receiver on one of them before the first firing.
    s.compose("run", "--rm", "--no-deps", "djangoapp", "true")
    network = f"{PROJECT}_nginx_network"
    s.docker("run", "--detach", "--name", HOOKS, "--network", network, IMAGE, "python", "-c", HOOK_SERVER)
    deadline = time.monotonic() + 60
    while "LISTENING" not in s.docker("logs", HOOKS).stdout:
        assert time.monotonic() < deadline, "the notifications' receiver did not start"
        time.sleep(0.2)
    every_5_seconds = [{"name": "flaky", "cron": "* * * * * */5", "command": ["flaky", "--pause=6"], "timeout": 60}]
    s.compose("run", "--detach", "--no-deps", "--name", SCHEDULER, "--env",
              f"STACK_SCHEDULES={json.dumps(every_5_seconds)}", "djangoapp",
              "/app/scheduler/bin/python", "/app/stack/djangostack/scheduler.py")

    # Run 1 fails, run 2 (6 s) overlaps the next firing, run 3 recovers.
    # Until the first firing there is neither an entry nor a run count: both read as nothing yet.
    def entry(st):
        return st["schedules"].get("flaky", {})

    def runs():
        return int(s.docker("exec", SCHEDULER, "cat", "/tmp/flaky-runs", check=False).stdout or 0)

    state = wait_for(s, lambda st: entry(st).get("last_success") and entry(st)["skipped"] >= 1
                     and not entry(st)["running"] and runs() >= 2,
                     "a failure, a skipped firing and a success")
    flaky = state["schedules"]["flaky"]
    assert flaky["exit"] == 0 and flaky["failures"] == 0 and not state["stale"] and not flaky["overdue"]
    assert flaky["cron"] == "* * * * * */5" and flaky["command"] == ["flaky", "--pause=6"]
    assert flaky["last_failure"] and flaky["last_failure"] < flaky["last_success"]
    logs = s.docker("logs", SCHEDULER).stdout
    assert "flaky: FAILED after" in logs and "exit status 1: CommandError: the first run fails" in logs
    assert "while its last run still goes: skipped" in logs
    # Never two at once: in the log each start is followed by its end before the next start.
    # (The next firing may already have started by now, its end not yet logged.)
    events = [("start" if "flaky: starting " in line else "end") for line in logs.splitlines()
              if "flaky: starting " in line or "flaky: done in " in line or "flaky: FAILED after " in line]
    assert events[:2 * (len(events) // 2)] == ["start", "end"] * (len(events) // 2), events
    assert 2 <= events.count("end") <= runs()
    age = s.docker("exec", SCHEDULER, "sh", "-c", 'echo $(( $(date +%s) - $(stat -c %Y /tmp/stack-heartbeat) ))')
    assert int(age.stdout) < 15  # touched every 5 s (the status' own bound is 60 s)

    # Run 4 (18 s) is in flight when the stop comes: it finishes, nothing else starts. The
    # count first: a status that says "running" is then about run 4.
    wait_for(s, lambda st: runs() == 4 and entry(status(s))["running"], "run 4 under way")
    began = time.monotonic()
    s.docker("stop", "--time", "30", SCHEDULER)
    stopped_after = time.monotonic() - began
    assert s.docker("inspect", "--format", "{{.State.ExitCode}}", SCHEDULER).stdout.strip() == "0"
    s.docker("cp", f"{SCHEDULER}:/var/lib/stack-scheduler/status.json", str(s.root / "status.json"))
    final = json.loads((s.root / "status.json").read_text())
    logs = s.docker("logs", SCHEDULER).stdout
    assert "run 4 done" in logs and "scheduler: stopped" in logs and "run 5 done" not in logs
    assert final["stopping"] is True and final["schedules"]["flaky"]["running"] is False
    assert final["schedules"]["flaky"]["exit"] == 0 and final["schedules"]["flaky"]["duration"] >= 6
    assert 1 < stopped_after < 30

    # One notification for the failure, one for the recovery; the later successes none.
    titles = [line.split(" ", 1)[1] for line in s.docker("logs", HOOKS).stdout.splitlines()
              if line.startswith("NOTIFIED ")]
    assert titles == ["schedule flaky FAILED", "schedule flaky recovered"]
