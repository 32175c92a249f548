"""`inv db.add NAME --up` that fails takes the add back (tasks/procedures/adding.py): the
task runs in a git copy of the project against the fake engine of tests/fakes.py; the
files are compared byte for byte, and the engine's commands exactly."""
import json
import shlex
import socket

import pytest
from invoke import Result

from tasks import db as db_tasks
from tasks.errors import TaskError
from tasks.execution.runner import Runner
from tasks.execution.targets import LocalTarget
from tasks.plans import diagnosis
from tasks.plans import rollout as rollout_plans
from tasks.source.stack import loads, read_text
from testkit.projectcopy import copy_project, git_status
from tests.fakes import Engine

# Its tasks run against the checkout's own source of truth (testkit/livestate.py).
pytestmark = pytest.mark.live_state

PROJECT = "hello-undo"
COMPOSE = ["docker", "compose", "--project-name", PROJECT]
# The release phase of the add: both databases' migrations, then the static files, in one container.
RELEASE = shlex.join([*COMPOSE, *rollout_plans.release_phase([["migrate", "--noinput", "--database", "default"],
                                                              ["migrate", "--noinput", "--database", "database2"],
                                                              ["collectstatic", "--noinput", "--verbosity", "0"]])])
SETTINGS = shlex.join([*COMPOSE, *rollout_plans.run_once("djangoapp", diagnosis.settings_databases())])
VOLUME2 = f"docker volume inspect --format '{{{{.Name}}}}' {PROJECT}_database2_volume"
UNDONE = [f"{shlex.join(COMPOSE)} rm --force --stop database2", f"docker network rm {PROJECT}_database2_network"]
SECRETS_INIT = f"{shlex.join(COMPOSE)} run --rm --no-deps -T secrets-init"
FAILED = Result(exited=1, stderr="django.db.utils.ProgrammingError: permission denied to create extension "
                                 "\"pg_stat_statements\"\nrelease step 2 failed\n")
POSTGRES = json.dumps({a: {"ENGINE": "django.db.backends.postgresql", "NAME": n, "HOST": n, "PORT": "5432"}
                       for a, n in (("default", "database1"), ("database2", "database2"))})
MIGRATE_LINE = ("migrate on database2 failed (exit status 1: django.db.utils.ProgrammingError: permission denied to "
                "create extension \"pg_stat_statements\"); settings gave DATABASES['database2'] = postgresql "
                "(database2 on database2:5432)")
WATCHED = ("config/stack.toml", "docker-compose.yml", "config/nginx/default.conf", "config/nginx/nginx.conf",
           "config/nginx/front.conf", "config/django.env.example")
add = db_tasks.add.body.__wrapped__


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def tree(tmp_path):
    root = copy_project(tmp_path)
    (root / "config/secrets").mkdir(mode=0o700)
    (root / "config/secrets/database1_password").write_text("kept\n")
    return root


def files(root):
    found = {name: (root / name).read_bytes() for name in WATCHED}
    found["secrets"] = sorted(p.name for p in (root / "config/secrets").iterdir())
    return found


def runner(root, answers, **engine):
    conn = Engine(answers, project=PROJECT, app={f"{PROJECT}-djangoapp-1": "running healthy"}, **engine)
    conn.databases = ("database1", "database2")
    env = {"COMPOSE_PROJECT_NAME": PROJECT, "HTTP_PORT": str(free_port())}
    return Runner(LocalTarget(conn, loads(read_text(root)), root=root, env=env)), conn


def test_a_migrate_that_fails_puts_every_file_back_and_removes_what_started(tree):
    before = files(tree)
    r, conn = runner(tree, {RELEASE: FAILED, SETTINGS: Result(stdout=POSTGRES + "\n"), VOLUME2: Result(exited=1)})
    with pytest.raises(TaskError) as err:
        add(r, "database2", up=True, timeout=0)
    assert err.value.message == (
        f"error: {MIGRATE_LINE}; database database2 was not added: put back config/stack.toml, docker-compose.yml; "
        "deleted the new config/secrets/database2_password; removed its container and new volume")
    assert files(tree) == before
    assert git_status(tree) == ""
    after = conn.commands[conn.commands.index(SETTINGS) + 1:]
    assert after == [*UNDONE, f"docker volume rm {PROJECT}_database2_volume", SECRETS_INIT,
                     after[-1]]  # the project lock released
    assert not any("--scale" in c for c in conn.commands)  # no app container was started
    assert conn.app == {f"{PROJECT}-djangoapp-1": "running healthy"}


def test_a_volume_there_before_is_kept_with_its_secret(tree):
    """An earlier add left its volume and secret (`db.remove` keeps them): both stay."""
    (tree / "config/secrets/database2_password").write_text("matches the kept volume\n")
    (tree / "config/secrets/database2_password").chmod(0o600)
    before = files(tree)
    r, conn = runner(tree, {RELEASE: FAILED, SETTINGS: Result(stdout=POSTGRES + "\n")})
    with pytest.raises(TaskError) as err:
        add(r, "database2", up=True, timeout=0)
    assert err.value.message == (
        f"error: {MIGRATE_LINE}; database database2 was not added: put back config/stack.toml, docker-compose.yml; "
        f"removed its container; kept the volume {PROJECT}_database2_volume: it was there before this add "
        "(data of an earlier one)")
    assert files(tree) == before
    assert (tree / "config/secrets/database2_password").read_text() == "matches the kept volume\n"
    assert not any(c.startswith("docker volume rm") for c in conn.commands)


def test_ctrl_c_while_migrating_puts_everything_back(tree):
    before = files(tree)
    r, conn = runner(tree, {RELEASE: KeyboardInterrupt(), VOLUME2: Result(exited=1)})
    with pytest.raises(TaskError) as err:
        add(r, "database2", up=True, timeout=0)
    assert err.value.message.startswith("error: interrupted; database database2 was not added: put back "
                                        "config/stack.toml, docker-compose.yml")
    assert files(tree) == before
    assert UNDONE[0] in conn.commands


def test_a_new_app_container_that_never_gets_healthy_puts_everything_back(tree):
    before = files(tree)
    # The app's definition changed (a new network): a new container starts, and exits.
    r, conn = runner(tree, {VOLUME2: Result(exited=1)}, made_in="before", new="exited unhealthy")
    with pytest.raises(TaskError) as err:
        add(r, "database2", up=True, timeout=0)
    assert "did not become healthy" in err.value.message
    assert "database database2 was not added: put back config/stack.toml, docker-compose.yml" in err.value.message
    assert files(tree) == before
    assert conn.app == {f"{PROJECT}-djangoapp-1": "running healthy"}


def test_once_the_app_serves_with_it_the_database_is_kept_and_the_error_says_why(tree):
    r, conn = runner(tree, {})  # nothing answers /healthz on the port: the last wait fails
    with pytest.raises(TaskError) as err:
        add(r, "database2", up=True, timeout=0)
    assert err.value.message.endswith(
        "; the app already serves with database2, so it stays in config/stack.toml and docker-compose.yml: fix the "
        "cause and run `inv up`, or take it out with `inv db.remove database2`")
    assert "database2" in (tree / "config/stack.toml").read_text()
    assert (tree / "config/secrets/database2_password").exists()
    assert UNDONE[0] not in conn.commands


def test_a_failure_while_writing_leaves_nothing(tree, monkeypatch):
    before = files(tree)

    def full_disk(path, text):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(db_tasks, "create_secret", full_disk)
    r, conn = runner(tree, {})
    with pytest.raises(TaskError) as err:
        add(r, "database2", up=False)
    assert err.value.message == ("error: [Errno 28] No space left on device; database database2 was not added: put "
                                 "back config/stack.toml, docker-compose.yml")
    assert files(tree) == before
