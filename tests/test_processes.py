"""[[processes]] in config/stack.toml: what a process is made of, and every value a user may
get wrong refused in one line that names it."""
import os
import re
import subprocess
import sys
import tempfile
import time

import pytest

from tasks.errors import StackError
from tasks.source.processes import CELERY_HEARTBEAT_FILE, HEARTBEAT_FILE, Process, celery_app, scale_request, with_replicas
from tasks.source.stack import loads
import yaml

from tasks.source import render
from tests.stacks import COMMITTED, NODES, SWARM, stack

WORKER = '[[processes]]\nname = "worker"\ncommand = ["celery", "-A", "hello", "worker"]\n'


def processes(text: str):
    """The processes of the committed document with TEXT added (a top-level key before its tables)."""
    return (loads(text + COMMITTED) if not text.startswith("[") else stack(text)).processes


class TestParsing:
    def test_a_stack_without_processes_has_none(self):
        assert stack().processes == () == stack().all_processes

    def test_a_process_takes_the_defaults(self):
        assert processes(WORKER) == (Process(name="worker", command=("celery", "-A", "hello", "worker"), replicas=1,
                                             singleton=False, stop_signal="SIGTERM", stop_grace_period=60,
                                             health=None, services=()),)

    def test_every_setting_is_kept(self):
        beat = processes('[[processes]]\nname = "beat"\ncommand = ["celery", "--app=hello", "beat"]\n'
                         'replicas = 0\nsingleton = true\nstop_signal = "SIGINT"\nstop_grace_period = 5\n'
                         'health = ["CMD", "test", "-e", "/tmp/ready"]\nservices = []\n')[0]
        assert (beat.replicas, beat.singleton, beat.stop_signal, beat.stop_grace_period, beat.health) \
            == (0, True, "SIGINT", 5, ("CMD", "test", "-e", "/tmp/ready"))
        assert beat.argv == ("python", "-m", "djangostack.run", "celery", "--app=hello", "beat")

    def test_processes_keep_their_order(self):
        two = processes(WORKER + WORKER.replace('"worker"', '"second"', 1))
        assert [p.name for p in two] == ["worker", "second"]

    def test_processes_are_stack_processes(self):
        s = stack(WORKER)
        assert s.all_processes == s.processes


REFUSED = [
    ("not-a-list", 'processes = "worker"\n', "processes 'worker' is not valid: [[processes]] tables"),
    ("no-name", '[[processes]]\ncommand = ["x"]\n', "[[processes]] entry 1 name None is not valid"),
    ("bad-name", WORKER.replace('"worker"', '"Worker"', 1), "[[processes]] entry 1 name 'Worker' is not valid"),
    ("long-name", WORKER.replace('"worker"', '"w' + "x" * 30 + '"', 1), "the name is too long (31 characters"),
    ("reserved", WORKER.replace('"worker"', '"nginx"', 1), "[[processes]] nginx: the name is reserved"),
    ("a-database", WORKER.replace('"worker"', '"database1"', 1),
     "[[processes]] database1: the name is already a database's"),
    ("twice", WORKER + WORKER, "[[processes]] worker: the name is already another process's"),
    ("unknown", WORKER + "replica = 2\n", "[[processes]] worker: unknown setting(s) 'replica'"),
    ("no-command", '[[processes]]\nname = "worker"\n', "[[processes]] worker needs command"),
    ("command-text", '[[processes]]\nname = "worker"\ncommand = "celery worker"\n',
     "[[processes]] worker command 'celery worker' is not valid: a non-empty list of strings"),
    ("command-empty", '[[processes]]\nname = "worker"\ncommand = []\n', "worker command [] is not valid"),
    ("command-number", '[[processes]]\nname = "worker"\ncommand = ["sleep", 5]\n',
     "worker command ['sleep', 5] is not valid"),
    ("command-blank", '[[processes]]\nname = "worker"\ncommand = ["", "x"]\n', "the program (first item) cannot be empty"),
    ("command-newline", '[[processes]]\nname = "worker"\ncommand = ["sh", "-c", "a\\nb"]\n',
     "worker command argument 'a\\nb' is not valid: one line of printable characters"),
    ("replicas-high", WORKER + "replicas = 21\n", "worker replicas 21 is not valid: a whole number from 0 to 20"),
    ("replicas-negative", WORKER + "replicas = -1\n", "worker replicas -1 is not valid"),
    ("replicas-bool", WORKER + "replicas = true\n", "worker replicas True is not valid"),
    ("replicas-text", WORKER + 'replicas = "2"\n', "worker replicas '2' is not valid"),
    ("singleton-two", WORKER + "singleton = true\nreplicas = 2\n",
     "worker replicas 2 is not valid: a whole number from 0 to 1"),
    ("singleton-text", WORKER + 'singleton = "yes"\n', "worker singleton 'yes' is not valid: true or false"),
    ("signal", WORKER + 'stop_signal = "SIGKILL"\n', "worker stop_signal 'SIGKILL' is not valid: one of SIGTERM"),
    ("grace-zero", WORKER + "stop_grace_period = 0\n", "worker stop_grace_period 0 is not valid: a whole number from 1 to 3600"),
    ("grace-text", WORKER + 'stop_grace_period = "60s"\n', "worker stop_grace_period '60s' is not valid"),
    ("health-word", WORKER + 'health = "ping"\n', "worker health 'ping' is not valid: \"celery\", \"heartbeat\""),
    ("health-list", WORKER + 'health = ["test", "-e", "/x"]\n', "worker health ['test', '-e', '/x'] is not valid"),
    ("health-alone", WORKER + 'health = ["CMD"]\n', "worker health ['CMD'] is not valid"),
    ("health-number", WORKER + "health = 3\n", "worker health 3 is not valid"),
    ("celery-wrapped", '[[processes]]\nname = "worker"\ncommand = ["newrelic-admin", "run-program", "celery", "worker"]\n'
                       'health = "celery"\n', "health = \"celery\" needs Celery's own program first in command "
                                               "(celery ... or python -m celery ...), not 'newrelic-admin'"),
    ("celery-no-heartbeat", '[[processes]]\nname = "worker"\ncommand = ["celery", "-A", "x", "worker", '
                            '"--without-heartbeat"]\nhealth = "celery"\n', "--without-heartbeat turns off"),
    ("services-unknown", WORKER + 'services = ["redis"]\n',
     "[[processes]] worker services: no service named 'redis' in [[services]] (known: none)"),
    ("services-text", WORKER + 'services = "redis"\n', "worker services 'redis' is not valid: a list of [[services]] names"),
]


@pytest.mark.parametrize("text, message", [case[1:] for case in REFUSED], ids=[case[0] for case in REFUSED])
def test_a_wrong_value_is_refused_in_one_line(text, message):
    with pytest.raises(StackError) as refused:
        processes(text)
    assert message in str(refused.value)
    assert "\n" not in str(refused.value)
    assert str(refused.value).startswith("config/stack.toml: ")


@pytest.mark.parametrize("command, app", [
    (["celery", "-A", "hello", "worker"], "hello"), (["celery", "-Ahello.celery", "beat"], "hello.celery"),
    (["celery", "--app", "mysite", "worker"], "mysite"), (["celery", "--app=mysite", "worker"], "mysite"),
], ids=["-A", "-Aapp", "--app", "--app="])
def test_the_celery_app_is_read_from_the_command(command, app):
    assert celery_app(command) == app


class TestHealth:
    def test_a_celery_worker_is_healthy_while_its_heartbeats_touch_a_file(self):
        """djangostack.run touches the file at the worker's heartbeats (tests/test_djangostack.py
        runs a real worker); the check is the file's age, in sh."""
        worker = processes(WORKER + 'health = "celery"\n')[0]
        test = worker.health_test
        assert test[:3] == ("CMD", "sh", "-c") and test[4:] == ("heartbeat", CELERY_HEARTBEAT_FILE)
        assert worker.environment == {"STACK_CELERY_HEARTBEAT": CELERY_HEARTBEAT_FILE}
        # Ages a second away from the limit: sh compares whole seconds (stat's and date's), and
        # a second may turn between the file's time set here and sh's `date`.
        for age, status in ((0, 0), (8, 0), (11, 1)):
            with tempfile.NamedTemporaryFile() as beat:
                os.utime(beat.name, (time.time() - age, time.time() - age))
                assert subprocess.run(["sh", "-c", test[3], "heartbeat", beat.name]).returncode == status, age
        assert processes(WORKER + 'health = "heartbeat"\n')[0].environment == {}

    def test_a_heartbeat_is_a_file_touched_within_a_minute(self):
        test = processes(WORKER + 'health = "heartbeat"\n')[0].health_test
        assert test[:3] == ("CMD", "sh", "-c") and test[4:] == ("heartbeat", HEARTBEAT_FILE)
        for age, status in ((0, 0), (58, 0), (61, 1), (15360, 1)):
            with tempfile.NamedTemporaryFile() as beat:
                os.utime(beat.name, (time.time() - age, time.time() - age))
                assert subprocess.run(["sh", "-c", test[3], "heartbeat", beat.name]).returncode == status, age
        # No heartbeat yet: unhealthy, with Docker's "unhealthy" status (1), never 2.
        assert subprocess.run(["sh", "-c", test[3], "heartbeat", "/nonexistent"], capture_output=True).returncode == 1

    def test_a_test_of_its_own_is_kept_and_none_means_running(self):
        assert processes(WORKER + 'health = ["CMD-SHELL", "test -e /x"]\n')[0].health_test == ("CMD-SHELL", "test -e /x")
        assert processes(WORKER)[0].health_test is None


def test_the_stack_file_key_is_known():
    with pytest.raises(StackError, match=re.escape("unknown setting(s) process ")):
        stack('[[process]]\nname = "worker"\n')


class TestRendering:
    """Each process is a compose service (and a Swarm service) of the app's image."""

    TWO = (WORKER.replace('"worker"]', '"worker", "--hostname", "w@$HOSTNAME"]') + 'health = "celery"\n'
           'stop_grace_period = 30\n[[processes]]\nname = "beat"\ncommand = ["celery", "-A", "hello", "beat"]\n'
           'singleton = true\nstop_signal = "SIGINT"\n')

    def files(self):
        return render.rendered(stack(self.TWO, NODES, SWARM))

    def test_a_process_runs_the_apps_image_with_its_own_command_and_grace(self):
        files = self.files()
        services = yaml.safe_load(files[render.COMPOSE_FILE])["services"]
        app, worker = services["djangoapp"], services["worker"]
        assert worker["image"] == app["image"] == "${APP_IMAGE:-${COMPOSE_PROJECT_NAME}-djangoapp:latest}"
        assert "build" not in worker and "ports" not in worker and "scale" not in worker
        # `$` doubled: Compose passes it on as one, the container's shell expands it.
        assert worker["command"] == ["python", "-m", "djangostack.run", "celery", "-A", "hello", "worker",
                                     "--hostname", "w@$$HOSTNAME"]
        # The app's environment, and where its heartbeats go (health = "celery").
        assert worker["env_file"] == app["env_file"]
        assert worker["environment"] == {**app["environment"], "STACK_CELERY_HEARTBEAT": "/tmp/stack-celery-heartbeat"}
        assert worker["volumes"] == ["app_secrets:/run/secrets:ro", "media_volume:/srv/media"]
        assert worker["networks"] == ["database1_network"]  # never nginx_network
        assert worker["healthcheck"]["test"][-2:] == ["heartbeat", "/tmp/stack-celery-heartbeat"]
        assert (worker["stop_signal"], worker["stop_grace_period"], worker["restart"]) == ("SIGTERM", "30s", "unless-stopped")
        # The engine's init is PID 1: a stop while the worker still loads is passed on, not lost.
        assert worker["init"] is True and "init" not in app
        beat = services["beat"]
        assert (beat["stop_signal"], beat["stop_grace_period"], "healthcheck" in beat) == ("SIGINT", "60s", False)

    def test_on_swarm_a_singleton_stops_before_its_successor_starts(self):
        services = yaml.safe_load(self.files()[render.stack_file("swarm")])["services"]
        worker, beat = services["worker"], services["beat"]
        assert worker["image"] == "${APP_IMAGE}"
        assert worker["deploy"]["replicas"] == "${REPLICAS_WORKER}" and beat["deploy"]["replicas"] == "${REPLICAS_BEAT}"
        assert worker["deploy"]["update_config"] == {"parallelism": 1, "order": "start-first", "monitor": "20s",
                                                     "failure_action": "rollback"}
        assert beat["deploy"]["update_config"]["order"] == beat["deploy"]["rollback_config"]["order"] == "stop-first"
        assert [s["source"] for s in worker["secrets"]] == [s["source"] for s in services["djangoapp"]["secrets"]]
        assert (worker["stop_signal"], worker["stop_grace_period"], worker["init"]) == ("SIGTERM", "30s", True)
        assert "nginx_network" not in worker["networks"]

    def test_a_stack_without_processes_renders_what_it_did(self):
        plain = render.rendered(stack(NODES, SWARM))
        assert "djangostack.run" not in plain[render.COMPOSE_FILE] + plain[render.stack_file("swarm")]


class TestScaleRequest:
    @pytest.mark.parametrize("text, wanted", [
        ("worker=3", {"worker": 3}), ("worker=3 beat=0", {"worker": 3, "beat": 0}),
        ("worker=3,beat=1", {"worker": 3, "beat": 1}), (" worker=0 ", {"worker": 0}),
    ], ids=["one", "spaces", "commas", "padded"])
    def test_names_and_counts(self, text, wanted):
        assert scale_request(text) == wanted

    @pytest.mark.parametrize("text, message", [
        ("", "give NAME=COUNT, such as `inv scale worker=3`"),
        ("worker", "'worker' is not NAME=COUNT, such as worker=3"),
        ("worker=-1", "'worker=-1' is not NAME=COUNT"),
        ("worker=3;rm", "'worker=3;rm' is not NAME=COUNT"),
        ("Worker=3", "'Worker=3' is not NAME=COUNT"),
        ("worker=1 worker=2", "worker is given twice"),
    ], ids=["nothing", "no-count", "negative", "trailing", "uppercase", "twice"])
    def test_anything_else_is_refused_in_one_line(self, text, message):
        with pytest.raises(StackError, match=re.escape(message)):
            scale_request(text)


class TestWithReplicas:
    TEXT = COMMITTED + "\n# the workers\n" + WORKER + "replicas = 1  # one is enough for now\n" + \
        '[[processes]]\nname = "beat"\ncommand = ["celery", "-A", "hello", "beat"]\nsingleton = true\n'

    def test_the_count_is_written_and_comments_kept(self):
        text = with_replicas(self.TEXT, {"worker": 3, "beat": 0})
        assert "# the workers\n" in text and "# one is enough for now" in text
        assert [(p.name, p.replicas) for p in loads(text).processes] == [("worker", 3), ("beat", 0)]
        assert text.replace("replicas = 3", "replicas = 1").replace("singleton = true\nreplicas = 0\n", "singleton = true\n") \
            == self.TEXT

    def test_an_unknown_process_is_named(self):
        with pytest.raises(StackError, match=re.escape("no process named 'web' in [[processes]] of config/stack.toml "
                                                       "(known: worker, beat)")):
            with_replicas(self.TEXT, {"web": 2})

    @pytest.mark.parametrize("wanted, message", [
        ({"worker": 21}, "[[processes]] worker replicas 21 is not valid: a whole number from 0 to 20"),
        ({"beat": 2}, "[[processes]] beat replicas 2 is not valid: a whole number from 0 to 1"),
    ], ids=["too-many", "singleton"])
    def test_a_count_out_of_range_is_refused_when_loaded(self, wanted, message):
        with pytest.raises(StackError, match=re.escape(message)):
            loads(with_replicas(self.TEXT, wanted))


def test_a_media_restore_stops_the_processes_too():
    """They mount the media read-write, as the app does: a copy of the volume must not see them write."""
    from tasks.procedures.volume_copy import volume_users

    assert volume_users(stack(TestRendering.TWO))["media_volume"][0] == ("djangoapp", "worker", "beat")
    assert volume_users(stack())["media_volume"][0] == ("djangoapp",)


def test_a_process_of_the_stacks_own_gets_its_mounts_and_every_services_network():
    """The scheduler ([[schedules]]) is one: its state volume, the host's timezone, all services."""
    import dataclasses

    scheduler = Process(name="scheduler", command=("/app/scheduler/bin/python", "scheduler.py"), singleton=True,
                        health="heartbeat", services=None,
                        mounts=("scheduler_state:/var/lib/stack-scheduler", "/etc/localtime:/etc/localtime:ro"))
    with_scheduler = dataclasses.replace(stack(NODES, SWARM), processes=(scheduler,))
    files = render.rendered(with_scheduler)
    for path in (render.COMPOSE_FILE, render.stack_file("swarm")):
        service = yaml.safe_load(files[path])["services"]["scheduler"]
        assert service["volumes"][-2:] == ["scheduler_state:/var/lib/stack-scheduler", "/etc/localtime:/etc/localtime:ro"]
        assert service["networks"] == ["database1_network",
                                       *(f"{s.name}_network" for s in getattr(with_scheduler, "services", ()))]
