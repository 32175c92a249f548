"""Moving traffic to a new app container (tasks/procedures/rollout.py), against the fake
engine of tests/fakes.py: which containers start and stop, what Nginx is told, and what
happens when the new container, Nginx or the front says no."""
import json
import shlex

import pytest
from invoke import Result

from tasks.errors import TaskError
from tasks.execution.runner import Runner
from tasks.execution.targets import HostTarget, LocalTarget
from tasks.plans import rollout as plans
from tasks.procedures import rollout
from tasks.source.stack import loads
from tests.fakes import Engine, Recorder

STACK = loads(open("config/stack.toml").read() + """
[hosts.prod]
address = "203.0.113.10"
directory = "/srv/hello"
project = "hello-prod"
""")
RELEASE = "20261121T000000Z-abcdef012345"
RELEASE_DIR = f"/srv/hello/releases/{RELEASE}"
COMPOSE = "docker compose --project-name hello-prod"
APP1, APP2, APP3 = (f"hello-prod-djangoapp-{n}" for n in (1, 2, 3))
APP_IDS = f"{COMPOSE} ps --all --quiet djangoapp"
INSPECT = ("docker inspect --format "
           "'{{.Name}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}'")
HEALTH = shlex.join(plans.health_tests([]))
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
    assert not any(c.startswith("docker exec") for c in conn.commands)
    assert conn.app == {APP1: "running healthy"}


def test_a_new_container_that_exits_is_removed_with_its_last_lines_shown(capsys):
    logs = f"docker logs --tail 20 {APP2}"
    r, conn = on_host({logs: Result(stdout="[INFO] Booting\n", stderr="Error: no such table\n")}, new="exited unhealthy")
    with pytest.raises(TaskError) as err:
        rollout.roll_out(r, timeout=0)
    assert err.value.message == (f"error: the new app container {APP2} did not become healthy within 0s "
                                 f"(last: {APP2} is exited); "
                                 f"it was removed and {APP1} still serves")
    assert ran(conn)[-4:] == [f"{INSPECT} {APP1} {APP2}", f"{HEALTH} {APP2}", logs, f"docker rm --force {APP2}"]
    assert conn.app == {APP1: "running healthy"}  # Nginx was never told
    out = capsys.readouterr().out
    assert f"  {APP2}: [INFO] Booting\n  {APP2}: Error: no such table\n" in out


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
    r = Runner(LocalTarget(conn, loads(open("config/stack.toml").read())))
    rollout.roll_out(r, timeout=0)
    local = "docker compose --project-name hello"
    assert ran(conn) == [
        f"{local} ps --all --quiet djangoapp", f"{INSPECT} hello-djangoapp-1",
        f"{local} --dry-run up --detach --no-deps --no-build djangoapp",  # made here, in this directory: Running
        f"{local} up --detach --remove-orphans --no-build --wait --wait-timeout 0 --no-deps nginx front",
        compose_exec("nginx", plans.switch_script("/etc/nginx/hello/nginx.conf"), "hello"),
        compose_exec("front", plans.front_sum_check(), "hello"),
    ]
