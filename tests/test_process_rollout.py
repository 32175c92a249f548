"""Moving the stack's processes to new code with the app (tasks/procedures/processes.py),
against the fake engine of tests/fakes.py: their new containers are healthy before Nginx is
switched, the old ones stop after the old app drained, a singleton never runs twice, and a
failure anywhere takes the processes back with the app."""
import shlex

import pytest
from invoke import Result

from tasks.errors import StackError, TaskError
from tasks.execution.runner import Runner
from tasks.execution.targets import HostTarget
from tasks.plans import rollout as plans
from tasks.procedures import processes, rollout
from tasks.source.stack import loads
from tests.fakes import Engine, Recorder
from tests.stacks import COMMITTED, PROD

PROCESSES = """
[[processes]]
name = "worker"
command = ["celery", "-A", "hello", "worker"]
replicas = 2
[[processes]]
name = "beat"
command = ["celery", "-A", "hello", "beat"]
singleton = true
"""
RELEASE = "20261121T000000Z-abcdef012345"
RELEASE_DIR = f"/srv/hello/releases/{RELEASE}"
OLD_DIR = "/srv/hello/releases/20261120T000000Z-000000000000"
COMPOSE = "docker compose --project-name hello-prod"
APP1, APP2 = "hello-prod-djangoapp-1", "hello-prod-djangoapp-2"
W1, W2, W3, W4 = (f"hello-prod-worker-{n}" for n in (1, 2, 3, 4))
B1, B2 = "hello-prod-beat-1", "hello-prod-beat-2"
OLD = {W1: "worker running none", W2: "worker running none", B1: "beat running none"}
SWITCH = shlex.join(["docker", "compose", "--project-name", "hello-prod", "exec", "-T", "nginx", "sh", "-c",
                     plans.switch_script("/etc/nginx/hello/nginx.conf")])


@pytest.fixture(autouse=True)
def no_settling(monkeypatch):
    monkeypatch.setattr(rollout, "SETTLE", 0)


def on_host(answers=None, extra="", **engine):
    """A release on the host whose stack has a worker (2 replicas) and beat (a singleton)."""
    stack = loads(COMMITTED + PROD + PROCESSES + extra)
    conn = Engine(answers, **{"processes": OLD, "process_made_in": OLD_DIR, "made_in": OLD_DIR, **engine})
    return Runner(HostTarget(conn, stack.hosts["prod"], stack, release=RELEASE, local_c=Recorder())), conn


def index(conn, command):
    return conn.commands.index(command)


class TestNewCode:
    def test_new_workers_start_beside_the_old_ones_and_the_old_stop_after_the_old_app(self):
        r, conn = on_host()
        rollout.roll_out(r, timeout=0)
        start = f"{COMPOSE} up --detach --no-deps --no-recreate --no-build --scale worker=4 worker"
        assert index(conn, start) < index(conn, SWITCH) < index(conn, f"docker stop {APP1}") \
            < index(conn, f"docker stop {W1} {W2}") < index(conn, f"docker rm --force {W1} {W2}")
        assert conn.processes == {W3: "worker running healthy", W4: "worker running healthy",
                                  "hello-prod-beat-2": "beat running healthy"}
        assert conn.running_most["worker"] == 4  # the old ones worked on while the new ones started

    def test_a_singleton_stops_before_its_successor_is_made_and_never_runs_twice(self):
        r, conn = on_host()
        rollout.roll_out(r, timeout=0)
        stop, create = f"docker stop {B1}", f"{COMPOSE} up --no-start --no-deps --no-recreate --no-build --scale beat=2 beat"
        assert index(conn, stop) < index(conn, create) < index(conn, f"docker start {B2}") < index(conn, SWITCH) \
            < index(conn, f"docker rm --force {B1}")
        assert conn.commands.count(stop) == 1  # stopped once, with its grace: step 3 only removes it
        assert conn.running_most["beat"] == 1

    def test_processes_that_run_this_code_are_left_alone(self, capsys):
        r, conn = on_host(process_made_in=RELEASE_DIR)
        rollout.roll_out(r, timeout=0)
        assert [c for c in conn.commands if ("worker" in c or "beat" in c) and "exec -T" not in c] == [
            "docker ps --all --quiet --filter label=com.docker.compose.project=hello-prod --filter label=com.docker.compose.service=worker --filter label=com.docker.compose.oneoff=False", f"docker inspect --format '{{{{.Name}}}} {{{{.State.Status}}}} "
            f"{{{{if .State.Health}}}}{{{{.State.Health.Status}}}}{{{{else}}}}none{{{{end}}}}' {W1} {W2}",
            f"{COMPOSE} --dry-run up --detach --no-deps --no-build --scale worker=2 worker",
            "docker ps --all --quiet --filter label=com.docker.compose.project=hello-prod --filter label=com.docker.compose.service=beat --filter label=com.docker.compose.oneoff=False", f"docker inspect --format '{{{{.Name}}}} {{{{.State.Status}}}} "
            f"{{{{if .State.Health}}}}{{{{.State.Health.Status}}}}{{{{else}}}}none{{{{end}}}}' {B1}",
            f"{COMPOSE} --dry-run up --detach --no-deps --no-build --scale beat=1 beat"]
        assert conn.processes == OLD
        out = capsys.readouterr().out
        assert "worker runs this code already\n" in out and "beat runs this code already\n" in out

    def test_the_first_start_makes_each_process(self):
        r, conn = on_host(processes={})
        rollout.roll_out(r, timeout=0)
        assert f"{COMPOSE} up --detach --no-deps --no-recreate --no-build --scale worker=2 worker" in conn.commands
        assert conn.processes == {W1: "worker running healthy", W2: "worker running healthy",
                                  B1: "beat running healthy"}


class TestFailures:
    def test_a_new_worker_that_is_not_healthy_takes_the_new_app_back_and_nginx_is_never_switched(self, capsys):
        logs = f"docker logs --tail 30 {W3}"
        r, conn = on_host({logs: Result(stdout="", stderr="Error: No nodes replied within time constraint\n")},
                          new_process="exited none")
        with pytest.raises(TaskError) as err:
            rollout.roll_out(r, timeout=0)
        assert err.value.message == (f"error: the new worker container(s) {W3}, {W4} did not become healthy within 0s "
                                     f"(last: {W4} is exited); the new worker container(s) were removed and {W1}, {W2} "
                                     "still run(s)")
        assert SWITCH not in conn.commands
        assert conn.processes == OLD and conn.app == {APP1: "running healthy"}
        assert f"  {W3}: Error: No nodes replied within time constraint\n" in capsys.readouterr().out

    def test_a_new_singleton_that_is_not_healthy_gives_way_to_the_old_one_started_again(self):
        r, conn = on_host(extra='health = "heartbeat"\n', process_made_in=None)
        conn.made_in.update({W1: RELEASE_DIR, W2: RELEASE_DIR})  # the workers run this code
        conn.new_process = "running unhealthy"
        with pytest.raises(TaskError, match=f"the new beat container\\(s\\) {B2} did not become healthy within 0s "
                                            f"\\(last: {B2} is unhealthy\\); the new beat container\\(s\\) were removed "
                                            f"and {B1} still run"):
            rollout.roll_out(r, timeout=0)
        assert conn.commands[-2:] == [f"docker start {B1}", f"docker rm --force {APP2}"]  # and the new app goes
        assert conn.processes[B1] == "beat running unhealthy" and B2 not in conn.processes  # (the fake's new state)
        assert conn.running_most["beat"] == 1 and SWITCH not in conn.commands

    def test_nginx_refusing_the_new_app_takes_the_processes_back(self):
        refused = Result(exited=plans.REFUSED, stderr='nginx: [emerg] unknown directive "oops"\n')
        r, conn = on_host({SWITCH: refused})
        with pytest.raises(TaskError, match="Nginx refused the new configuration"):
            rollout.roll_out(r, timeout=0)
        after = conn.commands[index(conn, SWITCH):]
        assert f"docker rm --force {B2}" in after and f"docker start {B1}" in after and f"docker rm --force {W3} {W4}" in after
        assert conn.processes == {W1: "worker running none", W2: "worker running none", B1: "beat running healthy"}
        assert conn.running_most["beat"] == 1


class TestReplicas:
    def test_more_replicas_start_beside_the_ones_there(self):
        r, conn = on_host(extra="", process_made_in=RELEASE_DIR, processes={W1: "worker running none",
                                                                             B1: "beat running none"})
        rollout.roll_out(r, timeout=0)
        assert f"{COMPOSE} up --detach --no-deps --no-recreate --no-build --scale worker=2 worker" in conn.commands
        assert set(conn.processes) == {W1, W2, B1}

    def test_fewer_replicas_stop_the_newest_first(self):
        r, conn = on_host(process_made_in=RELEASE_DIR,
                          processes={W1: "worker running none", W2: "worker running none", W3: "worker running none",
                                     W4: "worker running none", B1: "beat running none"})
        rollout.roll_out(r, timeout=0)
        assert f"docker stop {W4} {W3}" in conn.commands
        assert set(conn.processes) == {W1, W2, B1}

    def test_a_process_scaled_to_zero_stops(self):
        r, conn = on_host(extra="replicas = 0\n", process_made_in=RELEASE_DIR)
        rollout.roll_out(r, timeout=0)
        assert f"docker stop {B1}" in conn.commands and set(conn.processes) == {W1, W2}


class TestScale:
    """`inv scale`: only the count changes, whatever code the containers run."""

    def scaled(self, extra, **engine):
        r, conn = on_host(extra=extra, **engine)
        processes.scale(r, r.stack.processes[1 if "singleton" in extra else 0], timeout=0)
        return conn

    def test_up_starts_the_missing_ones_beside(self):
        conn = self.scaled("", processes={W1: "worker running none"})
        assert f"{COMPOSE} up --detach --no-deps --no-recreate --no-build --scale worker=2 worker" in conn.commands
        assert set(conn.processes) == {W1, W2}

    def test_down_stops_the_newest_with_their_grace(self):
        conn = self.scaled("", processes={W1: "worker running none", W2: "worker running none", W3: "worker running none"})
        assert conn.commands[-2:] == [f"docker stop {W3}", f"docker rm --force {W3}"]

    def test_a_new_one_that_is_not_healthy_is_removed_and_said(self):
        r, conn = on_host(processes={W1: "worker running none"}, new_process="exited none")
        with pytest.raises(TaskError, match=f"the new worker container\\(s\\) {W2} did not become healthy"):
            processes.scale(r, r.stack.processes[0], timeout=0)
        assert conn.processes == {W1: "worker running none"}

    def test_the_right_count_changes_nothing(self, capsys):
        conn = self.scaled("", processes={W1: "worker running none", W2: "worker running none"})
        assert not any(c.startswith(("docker stop", "docker rm", f"{COMPOSE} up")) for c in conn.commands)
        assert "worker has 2 container(s) already\n" in capsys.readouterr().out


def test_a_dry_run_prints_the_moves_and_changes_nothing(capsys):
    stack = loads(COMMITTED + PROD + PROCESSES)
    conn = Engine(processes=OLD, process_made_in=OLD_DIR, made_in=OLD_DIR)
    r = Runner(HostTarget(conn, stack.hosts["prod"], stack, release=RELEASE, local_c=Recorder()), dry=True)
    rollout.roll_out(r, timeout=0)
    assert conn.commands == [] and conn.processes == OLD
    out = capsys.readouterr().out
    assert "up --no-start --no-deps --no-recreate --no-build --scale beat=1 beat" in out
    assert "docker start\n" not in out and "docker start \n" not in out


class TestScaleTask:
    """`inv scale` writes the count to the source of truth, and takes it back when it fails."""

    @pytest.fixture
    def checkout(self, tmp_path, monkeypatch):
        from tasks import processes as process_tasks
        from tasks.source import render

        text = COMMITTED + PROCESSES
        (tmp_path / "config").mkdir()
        (tmp_path / "config/stack.toml").write_text(text)
        for path, rendered in render.rendered(loads(text)).items():
            (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / path).write_text(rendered)
        monkeypatch.setattr(process_tasks, "ROOT", tmp_path)
        return tmp_path, process_tasks.scale.body.__wrapped__

    def local(self, root, **engine):
        from tasks.execution.targets import LocalTarget

        conn = Engine(project="hello", **{"processes": {"hello-worker-1": "worker running none",
                                                        "hello-worker-2": "worker running none"}, **engine})
        return Runner(LocalTarget(conn, loads((root / "config/stack.toml").read_text()))), conn

    def test_the_count_is_written_then_applied(self, checkout):
        root, scale = checkout
        r, conn = self.local(root)
        scale(r, "worker=3", timeout=0)
        assert [(p.name, p.replicas) for p in loads((root / "config/stack.toml").read_text()).processes] == [
            ("worker", 3), ("beat", 1)]
        assert len(conn.of("worker")) == 3

    def test_a_count_that_does_not_start_well_is_taken_back(self, checkout):
        root, scale = checkout
        before = {path: path.read_text() for path in root.rglob("*") if path.is_file()}
        r, conn = self.local(root, new_process="exited none")
        with pytest.raises(TaskError, match="the new worker container\\(s\\) hello-worker-3 did not become healthy"):
            scale(r, "worker=3", timeout=0)
        assert {path: path.read_text() for path in root.rglob("*") if path.is_file()} == before
        assert len(conn.of("worker")) == 2

    def test_a_count_out_of_range_changes_nothing(self, checkout):
        root, scale = checkout
        r, conn = self.local(root)
        with pytest.raises(StackError, match="beat replicas 2 is not valid: a whole number from 0 to 1"):
            scale(r, "beat=2", timeout=0)
        assert conn.commands == [] and (root / "config/stack.toml").read_text() == COMMITTED + PROCESSES
