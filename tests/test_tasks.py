"""Tasks against a MockContext: the commands each one runs, and what it refuses."""
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
from invoke import Result

from tasks import app, doctor, lifecycle
from tasks.errors import TaskError
from tasks.plans import archives, compose
from tasks.plans import rollout as rollout_plans
from tasks.source import settings
from tasks.execution.runner import Runner
from tasks.execution.targets import LocalTarget
from tasks.source.stack import loads
from tests.fakes import Recorder
from tests.stacks import COMMITTED

# Its tasks run against the checkout's own source of truth (testkit/livestate.py).
pytestmark = pytest.mark.live_state

COMPOSE = "docker compose --project-name hello"


class TestDry:
    def test_up_with_dry_runs_nothing(self, capsys):
        from invoke import MockContext

        strict = MockContext(run={})  # any command at all would raise
        lifecycle.up(strict, dry=True)
        out = capsys.readouterr().out
        switch = shlex.join(["docker", "compose", "--project-name", "hello", "exec", "-T", "nginx", "sh", "-c",
                             rollout_plans.switch_script("/etc/nginx/hello/nginx.conf")])
        # After the secrets (made here): the release phase in a one-off container, then the
        # rollout. A dry run learns of no app container, so it plans the first one; the
        # Nginx files are read from this checkout's config/ where they are (nothing installed).
        assert out.endswith("\n".join([
            f"[dry] {COMPOSE} build djangoapp",
            f"[dry] {COMPOSE} up --detach --remove-orphans --no-build --no-deps database1",
            "[dry] would wait for the databases",
            f"[dry] {COMPOSE} exec -T database1 psql --username database1 --dbname database1 --quiet --no-psqlrc",
            f"[dry] {COMPOSE} run --rm --no-deps -T secrets-init",
            "migrating database1 (alias default)",
            f"[dry] {COMPOSE} " + shlex.join(rollout_plans.release_phase([
                ["migrate", "--noinput", "--database", "default"], ["collectstatic", "--noinput", "--verbosity", "0"]])),
            "starting the stack",
            f"[dry] {COMPOSE} up --detach --no-deps --no-recreate --no-build --scale djangoapp=1 djangoapp",
            "[dry] would wait for the new app container hello-djangoapp-new",
            f"[dry] {COMPOSE} up --detach --remove-orphans --no-build --wait --wait-timeout 180 --no-deps nginx front",
            f"[dry] {switch}",
            f"[dry] {COMPOSE} exec -T front sh -c 'cat /etc/nginx/hello/front.conf /etc/hello/certs/site.conf 2>/dev/null | sha256sum | cmp -s - /run/front.sha256'",
            "[dry] would wait for http://127.0.0.1:8000/healthz",
        ]) + "\n")

    def test_up_without_build_migrations_or_static_skips_them(self, capsys):
        from invoke import MockContext

        lifecycle.up(MockContext(run={}), dry=True, build=False, migrate=False, static=False)
        out = capsys.readouterr().out
        assert f"[dry] {COMPOSE} run --rm --no-deps -T secrets-init\nstarting the stack\n" in out
        assert " build " not in out and "manage.py" not in out

    def test_invoke_global_dry_flag_is_honoured(self, capsys):
        from invoke import Config, MockContext
        strict = MockContext(config=Config(overrides={"run": {"dry": True}}), run={})
        lifecycle.down(strict)
        assert capsys.readouterr().out.strip() == f"[dry] {COMPOSE} down --remove-orphans"


class TestThePort:
    """`inv up` goes on when this stack's front holds the HTTP port (or its Nginx, for a
    stack started by a version before the front), and refuses when another program does."""

    @pytest.mark.parametrize("running, state", [("djangoapp\nnginx\nfront\ndatabase1\n", "ours"),
                                                ("djangoapp\nnginx\ndatabase1\n", "ours"),
                                                ("djangoapp\ndatabase1\n", "busy")],
                             ids=["the-front-runs", "an-earlier-version-s-nginx-runs", "neither-runs"])
    def test_a_held_port_is_ours_only_while_the_front_runs(self, mock_c, running, state):
        import socket

        from tasks.execution.runner import Runner
        from tasks.execution.targets import LocalTarget
        from tasks.source.stack import loads

        with socket.socket() as holder:
            holder.bind(("127.0.0.1", 0))
            holder.listen()
            port = holder.getsockname()[1]
            c = mock_c({shlex.join(compose.running_services("hello")): Result(running)})
            target = LocalTarget(c, loads(COMMITTED), env={"HTTP_PORT": str(port)})
            assert target.http_port == port
            assert target.port_state(Runner(target)) == state


    # A dry run takes every service as running, the front holding the port included.
    def test_a_dry_up_takes_the_port_as_ours(self, monkeypatch, capsys):
        import socket

        from invoke import MockContext

        with socket.socket() as holder:
            holder.bind(("127.0.0.1", 0))
            holder.listen()
            monkeypatch.setenv("HTTP_PORT", str(holder.getsockname()[1]))
            lifecycle.up(MockContext(run={}), dry=True)


class TestDown:
    def test_keeps_volumes(self, mock_c):
        c = mock_c({f"{COMPOSE} down --remove-orphans": Result()})
        lifecycle.down(c)
        assert c.run.call_args_list[-1].args[0] == f"{COMPOSE} down --remove-orphans"

    def test_volumes_need_yes_when_not_on_a_terminal(self, mock_c, monkeypatch):
        monkeypatch.setattr("tasks.execution.runner.interactive", lambda: False)
        c = mock_c()
        with pytest.raises(TaskError, match="add --yes"):
            lifecycle.down(c, volumes=True)
        assert not any("down" in call.args[0] for call in c.run.call_args_list)

    def test_volumes_with_yes(self, mock_c):
        c = mock_c({f"{COMPOSE} down --remove-orphans --volumes": Result()})
        lifecycle.down(c, volumes=True, yes=True)
        assert c.run.call_args_list[-1].args[0].endswith("down --remove-orphans --volumes")


class TestEngineAndCompose:
    def test_no_engine_is_one_clear_line(self, mock_c):
        c = mock_c({"docker version --format '{{.Server.Version}}'":
                    Result(exited=1, stderr="Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?\n")})
        with pytest.raises(TaskError) as err:
            lifecycle.ps(c)
        message = err.value.message
        assert message.startswith("error: no Docker engine is reachable on local")
        assert "systemctl start docker" in message and "\n" not in message

    def test_compose_v1_alone_is_refused_with_how_to_get_v2(self, mock_c):
        # v1 has no `up --wait` (checked against Debian 12's docker-compose 1.29.2) and is
        # end-of-life: it is never run, and the error says in one line how to get v2.
        c = mock_c({
            "docker compose version --short": Result(exited=1, stderr="docker: 'compose' is not a docker command.\n"),
            "docker-compose version --short": Result("1.29.2\n"),
        })
        with pytest.raises(TaskError) as err:
            lifecycle.ps(c)
        message = err.value.message
        assert message.startswith("error: Docker Compose is not installed on local: install the Compose v2 plugin")
        assert "docker-compose v1 is end-of-life" in message and "\n" not in message
        assert not any(call.args[0].startswith("docker-compose") for call in c.run.call_args_list)

    def test_no_compose_at_all(self, mock_c):
        c = mock_c({
            "docker compose version --short": Result(exited=1),
            "docker-compose version --short": Result(exited=127),
        })
        with pytest.raises(TaskError, match="Docker Compose is not installed"):
            lifecycle.ps(c)

    def test_compose_project_name_from_the_environment_wins(self, mock_c, monkeypatch):
        monkeypatch.setenv("COMPOSE_PROJECT_NAME", "other")
        c = mock_c({"docker compose --project-name other ps": Result()})
        lifecycle.ps(c)
        assert c.run.call_args_list[-1].args[0] == "docker compose --project-name other ps"

    def test_a_failed_compose_command_is_one_line(self, mock_c):
        c = mock_c({f"{COMPOSE} ps": Result(exited=3)})
        with pytest.raises(TaskError) as err:
            lifecycle.ps(c)
        assert err.value.message == "error: compose ps failed (exit status 3)"


class TestMigrate:
    def test_every_database_one_at_a_time(self, mock_c):
        c = mock_c({f"{COMPOSE} exec -T djangoapp python manage.py migrate --noinput --database default": Result()})
        app.migrate(c)
        assert c.run.call_args_list[-1].args[0].endswith("migrate --noinput --database default")

    def test_one_database_by_name(self, mock_c):
        c = mock_c({f"{COMPOSE} exec -T djangoapp python manage.py migrate --noinput --database default": Result()})
        app.migrate(c, database="database1")

    def test_unknown_database(self, mock_c):
        with pytest.raises(TaskError, match="no database named 'nope'"):
            app.migrate(mock_c(), database="nope")

    def test_stack_not_running(self, mock_c):
        c = mock_c({shlex.join(compose.running_services("hello")): Result("database1\n")})
        with pytest.raises(TaskError, match="djangoapp is not running: start the stack with `inv up`"):
            app.migrate(c)


class TestCreatesuperuser:
    def test_unattended_needs_the_password_variable(self, mock_c):
        with pytest.raises(TaskError, match="DJANGO_SUPERUSER_PASSWORD"):
            app.createsuperuser(mock_c(), username="admin")

    def test_unattended_passes_the_password_on_stdin_only(self, mock_c, monkeypatch):
        import shlex

        monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", "s3cret-pass")
        compose_exec = (f"{COMPOSE} exec -T -e DJANGO_SUPERUSER_PASSWORD djangoapp python manage.py "
                        "createsuperuser --noinput --username admin --email a@example.com")
        script = f"IFS= read -r DJANGO_SUPERUSER_PASSWORD; export DJANGO_SUPERUSER_PASSWORD; exec {compose_exec}"
        c = mock_c({f"bash -c {shlex.quote(script)}": Result("Superuser created successfully.\n")})
        app.createsuperuser(c, username="admin", email="a@example.com")
        call = c.run.call_args_list[-1]
        assert "s3cret-pass" not in call.args[0]
        assert call.kwargs["in_stream"].read() == "s3cret-pass\n"

    def test_no_terminal_and_no_username(self, mock_c, monkeypatch):
        monkeypatch.setattr(app, "interactive", lambda: False)
        with pytest.raises(TaskError, match="not on a terminal"):
            app.createsuperuser(mock_c())


class TestManage:
    def test_arguments_after_double_dash_keep_their_words(self, mock_c, monkeypatch):
        monkeypatch.setattr(app, "interactive", lambda: False)
        monkeypatch.setattr("sys.argv", ["inv", "manage", "--", "shell", "-c", "print('a b')"])
        c = mock_c({f"{COMPOSE} exec -T djangoapp python manage.py shell -c 'print('\"'\"'a b'\"'\"')'": Result()})
        app.manage(c)

    def test_needs_arguments(self, mock_c, monkeypatch):
        monkeypatch.setattr("sys.argv", ["inv", "manage"])
        with pytest.raises(TaskError, match="give manage.py arguments"):
            app.manage(mock_c())


# What `inv doctor` asks about the leftovers of killed tasks; the answers say: none.
VOLUMES = "docker volume ls --quiet --filter 'name=^hello_'"
LOADS = shlex.join(archives.run_sql([*COMPOSE.split(), "exec", "-T", "database1"], "database1",
                                    archives.loads_of_sql("database1")))
NO_LEFTOVERS = {VOLUMES: Result(""), LOADS: Result("database1\n")}
# An engine the stack runs on well (the engine report's facts): it adds no failure of its own.
ENGINE_FACTS = {"docker info --format '{{json .}}'": Result(
    '{"ServerVersion": "28.5.2", "Driver": "overlay2", "DockerRootDir": "/var/lib/docker", "OSType": "linux"}'),
    "df -Pk -- /var/lib/docker": Result("Filesystem 1024-blocks Used Available Capacity Mounted on\n"
                                        "/dev/vda 263174212 54321000 52428800 51% /\n")}


class TestDoctor:
    @pytest.mark.parametrize("image, venv, line", [
        (None, None, "ok   Python 3.11 ([app] python) in what is built so far (nothing yet)"),
        ("3.11", "3.11", "ok   Python 3.11 ([app] python) in the image hello-djangoapp:latest and .venv-app"),
        ("3.13", None, 'FAIL [app] python = "3.11" but the image hello-djangoapp:latest has Python 3.13'),
        ("3.11", "3.12", 'FAIL [app] python = "3.11" but .venv-app has Python 3.12'),
    ])
    def test_the_apps_python_is_the_images_and_its_virtualenvs(self, tmp_path, capsys, image, venv, line):
        run = "docker run --rm --network none --entrypoint python hello-djangoapp:latest -c " + shlex.quote(doctor.PYTHON_VERSION)
        answers = {"docker image inspect hello-djangoapp:latest": Result("[]") if image else Result(exited=1),
                   run: Result(f"{image}\n")}
        if venv:
            (tmp_path / ".venv-app/bin").mkdir(parents=True)
            (tmp_path / ".venv-app/bin/python").touch()
            answers[f"{tmp_path}/.venv-app/bin/python -c " + shlex.quote(doctor.PYTHON_VERSION)] = Result(f"{venv}\n")
        r = Runner(LocalTarget(Recorder(answers), loads(COMMITTED), root=tmp_path))
        ok, message, fix = doctor.check_app_python(r)
        assert f"{'ok  ' if ok else 'FAIL'} {message}" == line
        assert ok or fix == "`inv build` makes the image again with [app] python, `inv venv` the virtualenv"

    def test_reports_every_failure_with_a_fix(self, mock_c, capsys):
        c = mock_c({
            "docker version --format '{{.Server.Version}}'": Result(exited=1, stderr="Cannot connect\n"),
            "docker compose version --short": Result(exited=1),
            "docker-compose version --short": Result(exited=127),
        })
        with pytest.raises(TaskError, match="check"):
            doctor.doctor(c)
        out = capsys.readouterr().out
        assert "FAIL no Docker engine is reachable (Cannot connect)" in out
        assert "FAIL Docker Compose is not installed" in out
        assert out.count("fix: ") >= 2

    def test_a_missing_buildx_is_named_with_the_package_to_install(self, mock_c, capsys, monkeypatch):
        # Only the engine's answers count: not what this checkout holds (its settings files
        # exist once a stack ran here, a killed task may have left a file, its generated files
        # may be edited), nor its git-ignored .env (another project name or port).
        for name in ("env_files", "rendered", "unfinished_files", "app_python"):
            monkeypatch.setitem(doctor.CHECKS, name, lambda r, name=name: (True, f"{name} as expected", None))
        monkeypatch.setattr(settings, "compose_variables", lambda root, environ=None: {})
        c = mock_c({"docker buildx version": Result(exited=1, stderr="docker: 'buildx' is not a docker command.\n"),
                    **NO_LEFTOVERS, **ENGINE_FACTS})
        with pytest.raises(TaskError, match="1 check"):
            doctor.doctor(c)
        out = capsys.readouterr().out
        assert "FAIL buildx is not installed: every build warns and falls back to Compose's own builder" in out
        assert "fix: install the buildx plugin (docker-buildx-plugin" in out

    def test_what_killed_tasks_left_is_named_one_line_each_with_the_task_that_settles_it(self, mock_c, capsys,
                                                                                          monkeypatch):
        # What this checkout built (an image, the app's virtualenv) is not what this test is about.
        monkeypatch.setitem(doctor.CHECKS, "app_python", lambda r: (True, "app_python as expected", None))
        config = ('{"services": {"djangoapp": {"image": "hello-djangoapp:latest"}, '
                  '"database1": {"image": "postgres:15"}}}')
        c = mock_c({
            VOLUMES: Result("hello_media_volume\nhello_database1_volume\n"),
            f"{COMPOSE} config --format json": Result(config),
            "docker image inspect postgres:15": Result("[]"),
            shlex.join(archives.restore_leftovers({"database1_volume": "hello_database1_volume",
                                                   "media_volume": "hello_media_volume"}, "postgres:15", "hello")):
                Result("media_volume .restore-safety\nmedia_volume .restore-new\n"),
            LOADS: Result("database1__load_20261205t101500z\ndatabase1__old_20261204t101500z\n"),
            "docker buildx version": Result("github.com/docker/buildx 0.29.1 0.29.1-4\n"),
            **ENGINE_FACTS,
        })
        with pytest.raises(TaskError, match="check"):
            doctor.doctor(c)
        out = capsys.readouterr().out
        assert ("FAIL hello_media_volume holds .restore-safety, .restore-new, left by an interrupted restore\n"
                "     fix: `inv volume.archive --volume media_volume` settles it first (it was never verified: "
                "that puts back the content from before it)\n") in out
        # database1 itself is missing: the retired copy is its data, renamed back, not dropped.
        assert ("FAIL database1__old_20261204t101500z in database1's server, left by an interrupted load\n"
                "     fix: `inv db.dump database1` settles it first (renaming database1__old_20261204t101500z back "
                "to database1: it holds database1's data (a load stopped between its renames))\n") in out
        assert ("FAIL database1__load_20261205t101500z in database1's server, left by an interrupted load\n"
                "     fix: `inv db.dump database1` settles it first (dropping database1__load_20261205t101500z: "
                "a load that was never swapped in)\n") in out


# A command that says something, waits, then says more, run the way a task runs it.
ECHOED = """
import tasks  # what `inv` loads first
from invoke import Context
from tasks.execution.runner import Runner
from tasks.execution.targets import LocalTarget
from tests.stacks import stack
Runner(LocalTarget(Context(), stack())).run(["sh", "-c", "sleep 3; echo done"])
"""


def test_a_commands_echo_reaches_a_pipe_before_the_command_ends():
    """Into a pipe (CI, `| tee`), with no PYTHONUNBUFFERED: the echoed command arrives as it
    starts, not with the output it announces at the end."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    proc = subprocess.Popen([sys.executable, "-c", ECHOED], stdout=subprocess.PIPE, text=True, env=env,
                            cwd=Path(__file__).parent.parent, stdin=subprocess.DEVNULL)
    arrived = [(line, time.monotonic()) for line in proc.stdout]
    assert proc.wait(timeout=60) == 0
    (echo, echoed), (done, ended) = arrived
    assert "sleep 3; echo done" in echo and done == "done\n"
    assert ended - echoed > 1.5, arrived
