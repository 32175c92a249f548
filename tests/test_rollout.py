"""Moving traffic to a new app container (tasks/procedures/rollout.py), against the fake
engine of tests/fakes.py: which containers start and stop, what Nginx is told, and what
happens when the new container, Nginx or the front says no."""
import json
import re
import shlex

import pytest
from invoke import Result

from tasks.errors import TaskError
from tasks.execution.runner import Runner
from tasks.execution.targets import HostTarget, LocalTarget
from tasks.plans import diagnosis
from tasks.plans import rollout as plans
from tasks.procedures import rollout
from tasks.source.stack import loads
from tests.fakes import Engine, Recorder
from tests.stacks import COMMITTED

STACK = loads(COMMITTED + """
[hosts.prod]
address = "203.0.113.10"
directory = "/srv/hello"
project = "hello-prod"
""")
RELEASE = "20261121T000000Z-abcdef012345"
RELEASE_DIR = f"/srv/hello/releases/{RELEASE}"
COMPOSE = "docker compose --project-name hello-prod"
APP1, APP2, APP3 = (f"hello-prod-djangoapp-{n}" for n in (1, 2, 3))
APP_IDS = ("docker ps --all --quiet --filter label=com.docker.compose.project=hello-prod "
           "--filter label=com.docker.compose.service=djangoapp --filter label=com.docker.compose.oneoff=False")
INSPECT = ("docker inspect --format "
           "'{{.Name}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}'")
HEALTH = shlex.join(plans.health_tests([]))
HEALTH_LOG = "docker inspect --format '{{json .State.Health}}'"
ANSWER2 = shlex.join(diagnosis.health_answer(APP2, diagnosis.HEALTH_URL))
UP_TO_DATE = f"{COMPOSE} --dry-run up --detach --no-deps --no-build djangoapp"
INSTALL = "bash -c " + shlex.quote(plans.install_files(f"{RELEASE_DIR}/config/nginx", "/srv/hello/shared/config/nginx"))
RESTORE = "bash -c " + shlex.quote(plans.restore_files("/srv/hello/shared/config/nginx", plans.NGINX_FILES))
NGINX_AND_FRONT = f"{COMPOSE} up --detach --remove-orphans --no-build --wait --wait-timeout 0 --no-deps nginx front"


def compose_exec(service, script, project="hello-prod"):
    return shlex.join(["docker", "compose", "--project-name", project, "exec", "-T", service, "sh", "-c", script])


SWITCH = compose_exec("nginx", plans.switch_script("/etc/nginx/hello/nginx.conf"))
FRONT_UNCHANGED = compose_exec("front", plans.front_sum_check())


@pytest.fixture(autouse=True)
def no_settling(monkeypatch):
    monkeypatch.setattr(rollout, "SETTLE", 0)


def on_host(answers=None, **engine):
    """A release on the host, with the engine's containers."""
    conn = Engine(answers, **engine)
    return Runner(HostTarget(conn, STACK.hosts["prod"], STACK, release=RELEASE, local_c=Recorder())), conn


def ran(conn):
    return [c for c in conn.commands if "version" not in c]


def test_a_container_that_runs_this_code_already_is_left_alone(capsys):
    r, conn = on_host(made_in=RELEASE_DIR)
    rollout.roll_out(r, timeout=0)
    assert ran(conn) == [APP_IDS, f"{INSPECT} {APP1}", UP_TO_DATE, INSTALL, NGINX_AND_FRONT, SWITCH, FRONT_UNCHANGED]
    assert conn.calls[conn.commands.index(SWITCH)][2] == f"set $djangoapp http://{APP1}:8000;\n"
    assert conn.app == {APP1: "running healthy"}
    assert f"the app container {APP1} runs this code already\n" in capsys.readouterr().out


def test_the_first_app_container_starts_with_nothing_to_drain():
    r, conn = on_host(app={})
    rollout.roll_out(r, timeout=0)
    assert ran(conn) == [
        APP_IDS,  # no container: nothing to inspect, nothing to compare
        f"{COMPOSE} up --detach --no-deps --no-recreate --no-build --scale djangoapp=1 djangoapp",
        APP_IDS, f"{INSPECT} {APP1}", f"{HEALTH} {APP1}",
        INSTALL, NGINX_AND_FRONT, SWITCH, FRONT_UNCHANGED,
    ]
    assert conn.app == {APP1: "running healthy"}


def test_what_an_interrupted_rollout_left_drains_with_the_old_one():
    """Two app containers (a rollout stopped before its drain): a third starts, both go."""
    r, conn = on_host(app={APP1: "running healthy", APP2: "running healthy"})
    rollout.roll_out(r, timeout=0)
    assert ran(conn) == [
        APP_IDS, f"{INSPECT} {APP1} {APP2}",  # two: no dry run asked, a new one starts
        f"{COMPOSE} up --detach --no-deps --no-recreate --no-build --scale djangoapp=3 djangoapp",
        APP_IDS, f"{INSPECT} {APP1} {APP2} {APP3}", f"{HEALTH} {APP3}",
        INSTALL, NGINX_AND_FRONT, SWITCH, FRONT_UNCHANGED,
        f"docker stop {APP1} {APP2}", f"docker rm --force {APP1} {APP2}",
    ]
    assert conn.app == {APP3: "running healthy"}


def test_an_unhealthy_container_of_this_code_is_replaced():
    r, conn = on_host(app={APP1: "running unhealthy"}, made_in=RELEASE_DIR)
    rollout.roll_out(r, timeout=0)
    assert UP_TO_DATE not in conn.commands  # not serving: replaced whatever it runs
    assert ran(conn)[-2:] == [f"docker stop {APP1}", f"docker rm --force {APP1}"]
    assert conn.app == {APP2: "running healthy"}


TEST = {"Test": ["CMD", "python", "-c", "check()"], "Interval": 3000000000}


def test_a_starting_container_whose_own_health_test_passes_takes_traffic_before_the_engines_next_tick():
    starting = Result(stdout=f"/{APP2}\trunning\tstarting\t{json.dumps(TEST)}\n")
    r, conn = on_host({f"{HEALTH} {APP2}": starting}, made_in=RELEASE_DIR + "-old")
    rollout.roll_out(r, timeout=0)
    assert f"docker exec {APP2} python -c 'check()'" in conn.commands
    assert conn.app == {APP2: "running healthy"}


def test_a_container_the_engine_calls_unhealthy_is_not_taken_on_its_own_tests_word():
    unhealthy = Result(stdout=f"/{APP2}\trunning\tunhealthy\t{json.dumps(TEST)}\n")
    r, conn = on_host({f"{HEALTH} {APP2}": unhealthy}, made_in=RELEASE_DIR + "-old")
    with pytest.raises(TaskError, match=f"did not become healthy within 0s \\(last: {APP2} is unhealthy\\)"):
        rollout.roll_out(r, timeout=0)
    # Its health test is not run; only what its health URL answers is asked, for the message.
    assert [c for c in conn.commands if c.startswith("docker exec")] == [ANSWER2]
    assert conn.app == {APP1: "running healthy"}


def test_a_new_container_that_exits_is_removed_with_its_last_lines_shown(capsys):
    logs = f"docker logs --tail 30 {APP2}"
    r, conn = on_host({logs: Result(stdout="[INFO] Booting\n", stderr="Error: no such table\n")}, new="exited unhealthy")
    with pytest.raises(TaskError) as err:
        rollout.roll_out(r, timeout=0)
    assert err.value.message == (f"error: the new app container {APP2} did not become healthy within 0s "
                                 f"(last: {APP2} is exited); "
                                 f"it was removed and {APP1} still serves")
    assert ran(conn)[-5:] == [f"{INSPECT} {APP1} {APP2}", f"{HEALTH} {APP2}", f"{HEALTH_LOG} {APP2}", logs,
                              f"docker rm --force {APP2}"]
    assert conn.app == {APP1: "running healthy"}  # Nginx was never told
    out = capsys.readouterr().out
    assert f"  {APP2}: [INFO] Booting\n  {APP2}: Error: no such table\n" in out


COMPOSE_TEST = {"Test": ["CMD", "python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen("
                                            "'http://127.0.0.1:8000/healthz', timeout=4).status != 200)"]}
STARTING2 = Result(stdout=f"/{APP2}\trunning\tstarting\t{json.dumps(COMPOSE_TEST)}\n")
OWN_TEST2 = shlex.join(["docker", "exec", APP2, *COMPOSE_TEST["Test"][1:]])
HEALTH_RECORD = json.dumps({"Status": "starting", "FailingStreak": 4, "Log": [
    {"ExitCode": 1, "Output": "Traceback (most recent call last):\n  ...\nurllib.error.HTTPError: HTTP Error 404: Not Found\n"},
    {"ExitCode": 1, "Output": "Traceback (most recent call last):\n  ...\nConnectionRefusedError: [Errno 111] Connection refused\n"},
]})


def answered(**answer):
    return Result(stdout=json.dumps(answer) + "\n")


def failing_start(answer, logs="[INFO] Booting worker with pid: 7\n"):
    """A new app container that runs, is `starting`, fails its own test, and whose health
    URL gives ANSWER."""
    return on_host({f"{HEALTH} {APP2}": STARTING2, OWN_TEST2: Result(exited=1), ANSWER2: answer,
                    f"{HEALTH_LOG} {APP2}": Result(stdout=HEALTH_RECORD + "\n"),
                    f"docker logs --tail 30 {APP2}": Result(stdout=logs)}, made_in=RELEASE_DIR + "-old")


def test_a_health_url_that_keeps_redirecting_is_given_up_on_at_once_with_its_answer(monkeypatch, capsys):
    monkeypatch.setattr(rollout, "READY_POLL", 0)
    r, conn = failing_start(answered(status=301, location="/healthz/", body=""))
    with pytest.raises(TaskError) as err:
        rollout.roll_out(r, timeout=600)  # not waited for
    line = (f"http://127.0.0.1:8000/healthz on the new app container {APP2} answered 301 → /healthz/ 3 times in a "
            "row: the project redirects it to a slashed URL (APPEND_SLASH): it has no page at that path")
    assert err.value.message == f"error: {line}; it was removed and {APP1} still serves"
    assert conn.commands.count(ANSWER2) == 3
    assert ran(conn)[-3:] == [f"{HEALTH_LOG} {APP2}", f"docker logs --tail 30 {APP2}", f"docker rm --force {APP2}"]
    assert conn.app == {APP1: "running healthy"}  # Nginx was never told
    out = capsys.readouterr().out
    assert out.endswith(f"{line}\n"
                        f"  health URL: http://127.0.0.1:8000/healthz answered 301 → /healthz/\n"
                        "  health check (exit 1): urllib.error.HTTPError: HTTP Error 404: Not Found\n"
                        "  health check (exit 1): ConnectionRefusedError: [Errno 111] Connection refused\n"
                        "  its last 1 log lines:\n"
                        f"  {APP2}: [INFO] Booting worker with pid: 7\n")


@pytest.mark.parametrize("answer, words", [
    (answered(status=302, location="https://127.0.0.1/healthz"), "answered 302 → https://127.0.0.1/healthz 3 times "
     "in a row: the project sends it to HTTPS (SECURE_SSL_REDIRECT or a middleware)"),
    (answered(status=400, body="<h1>Bad Request (400)</h1>"), "answered 400 <h1>Bad Request (400)</h1> 3 times in "
     "a row: the project refuses the request (ALLOWED_HOSTS must accept 127.0.0.1"),
    (answered(status=404, body="Not Found"), "answered 404 Not Found 3 times in a row: the project has no page there"),
], ids=["https-redirect", "bad-host", "not-found"])
def test_each_settled_answer_says_what_to_look_at(monkeypatch, answer, words):
    monkeypatch.setattr(rollout, "READY_POLL", 0)
    r, conn = failing_start(answer)
    with pytest.raises(TaskError, match=re.escape(words)):
        rollout.roll_out(r, timeout=600)
    assert conn.app == {APP1: "running healthy"}


@pytest.mark.parametrize("answer, said", [
    (answered(status=503, body='{"status": "error", "databases": {"database1": "error: OperationalError"}}'),
     'answered 503 {"status": "error", "databases": {"database1": "error: OperationalError"}}'),
    (answered(error="[Errno 111] Connection refused"), "gave no answer ([Errno 111] Connection refused)"),
], ids=["server-error", "refused"])
def test_a_starting_app_that_errs_or_does_not_listen_is_waited_for_until_the_timeout(monkeypatch, capsys, answer, said):
    monkeypatch.setattr(rollout, "READY_POLL", 0.01)
    r, conn = failing_start(answer, logs="[INFO] Loading a large model\n")
    with pytest.raises(TaskError) as err:
        rollout.roll_out(r, timeout=0.3)
    assert err.value.message == (f"error: the new app container {APP2} did not become healthy within 0s (last: {APP2} "
                                 f"is starting); http://127.0.0.1:8000/healthz {said}; it was removed and {APP1} "
                                 "still serves")
    assert conn.commands.count(ANSWER2) > 3
    out = capsys.readouterr().out
    assert "  health check (exit 1): ConnectionRefusedError: [Errno 111] Connection refused\n" in out
    assert f"  {APP2}: [INFO] Loading a large model\n" in out
    assert conn.app == {APP1: "running healthy"}


def test_a_configuration_nginx_refuses_puts_the_files_back_and_keeps_the_old_container():
    refused = Result(exited=plans.REFUSED, stderr='nginx: [emerg] unknown directive "oops" in default.conf:3\n')
    r, conn = on_host({SWITCH: refused})
    with pytest.raises(TaskError) as err:
        rollout.roll_out(r, timeout=0)
    assert err.value.message == ('error: Nginx refused the new configuration (nginx: [emerg] unknown directive "oops" '
                                 'in default.conf:3); it still runs the previous one')
    # The files go back, and the new container, which never took traffic, goes.
    assert ran(conn)[-5:] == [INSTALL, NGINX_AND_FRONT, SWITCH, RESTORE, f"docker rm --force {APP2}"]
    assert f"docker stop {APP1}" not in conn.commands  # the old container still serves


def test_a_reload_that_does_not_finish_is_not_called_refused():
    r, conn = on_host({SWITCH: Result(exited=1, stderr="the old workers still accept connections\n")})
    with pytest.raises(TaskError) as err:
        rollout.roll_out(r, timeout=0)
    assert err.value.message == "error: reloading Nginx failed (the old workers still accept connections)"
    assert ran(conn)[-2:] == [RESTORE, f"docker rm --force {APP2}"]


def test_the_front_is_reloaded_when_its_configuration_changed(capsys):
    r, conn = on_host({FRONT_UNCHANGED: Result(exited=1)})
    rollout.roll_out(r, timeout=0)
    assert ran(conn)[-4:] == [FRONT_UNCHANGED, compose_exec("front", plans.front_reload()),
                              f"docker stop {APP1}", f"docker rm --force {APP1}"]
    assert "the front's configuration changed: reloading it\n" in capsys.readouterr().out


def test_here_the_checkouts_nginx_files_are_read_where_they_are():
    """`inv up` in a checkout: the containers mount its config/ (STACK_CONFIG_DIR's default),
    so nothing is installed, and Compose runs under the local project."""
    conn = Engine(project="hello")
    r = Runner(LocalTarget(conn, loads(COMMITTED)))
    rollout.roll_out(r, timeout=0)
    local = "docker compose --project-name hello"
    assert ran(conn) == [
        ("docker ps --all --quiet --filter label=com.docker.compose.project=hello --filter "
         "label=com.docker.compose.service=djangoapp --filter label=com.docker.compose.oneoff=False"),
        f"{INSPECT} hello-djangoapp-1",
        f"{local} --dry-run up --detach --no-deps --no-build djangoapp",  # made here, in this directory: Running
        f"{local} up --detach --remove-orphans --no-build --wait --wait-timeout 0 --no-deps nginx front",
        compose_exec("nginx", plans.switch_script("/etc/nginx/hello/nginx.conf"), "hello"),
        compose_exec("front", plans.front_sum_check(), "hello"),
    ]
