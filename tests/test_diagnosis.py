"""What a failure tells the user (tasks/plans/diagnosis.py): the probes run for real here
(an HTTP server of the test's own, a project made by `django-admin startproject`), the
lines made from their answers compared exactly, and a failed migrate naming the database
the settings produced (tasks/procedures/django.py)."""
import http.server
import json
import os
import shlex
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from invoke import Result

from tasks.errors import TaskError
from tasks.execution.runner import Runner
from tasks.execution.targets import HostTarget
from tasks.plans import compose, diagnosis
from tasks.plans import rollout as rollout_plans
from tasks.procedures import django, starting
from tasks.source.stack import loads
from tests.fakes import Engine, Recorder
from tests.stacks import COMMITTED

BIN = Path(sys.executable).parent


class Answering(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/healthz":
            self.send_response(301)
            self.send_header("Location", "/healthz/")
            self.end_headers()
        else:
            body = b'{"status": "error", "databases": {"database1": "error: OperationalError"}}'
            self.send_response(503)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = http.server.HTTPServer(("127.0.0.1", 0), Answering)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def ask(url):
    """ANSWER_SCRIPT as the app container runs it (the argv after `docker exec NAME`)."""
    argv = diagnosis.health_answer("app", url)[3:]
    return diagnosis.parse_answer(subprocess.run([sys.executable, *argv[1:]], capture_output=True, text=True,
                                                 timeout=30).stdout)


class TestTheHealthAnswer:
    def test_a_redirect_is_not_followed_and_names_its_location(self, server):
        assert ask(f"{server}/healthz") == diagnosis.Answer(301, "/healthz/", "", None)

    def test_an_error_gives_its_status_and_the_start_of_its_body(self, server):
        answer = ask(f"{server}/other")
        assert (answer.status, answer.settled) == (503, False)
        assert str(answer) == '503 {"status": "error", "databases": {"database1": "error: OperationalError"}}'

    def test_nothing_listening_is_no_answer(self):
        with __import__("socket").socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]  # bound, not listening: refused
            answer = ask(f"http://127.0.0.1:{port}/healthz")
        assert answer.status is None and "refused" in answer.error
        assert not answer.settled and str(answer).startswith("no answer (")

    @pytest.mark.parametrize("status, settled", [(200, False), (301, True), (302, True), (400, True), (404, True),
                                                 (499, True), (500, False), (503, False)])
    def test_only_redirects_and_refusals_are_settled(self, status, settled):
        assert diagnosis.Answer(status).settled is settled

    def test_a_container_that_printed_nothing_gave_no_answer(self):
        assert diagnosis.parse_answer("") is None
        assert diagnosis.parse_answer("Error response from daemon: container is not running\n") is None


class TestTheHealthURL:
    def test_is_read_from_the_containers_own_test(self):
        test = {"Test": ["CMD", "python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen("
                                                "'http://127.0.0.1:8000/up/?full=1', timeout=4).status != 200)"]}
        assert diagnosis.health_url(test) == "http://127.0.0.1:8000/up/?full=1"

    @pytest.mark.parametrize("healthcheck", [None, {}, {"Test": ["CMD-SHELL", "true"]}], ids=["none", "empty", "no-url"])
    def test_is_the_stacks_when_the_test_names_none(self, healthcheck):
        assert diagnosis.health_url(healthcheck) == "http://127.0.0.1:8000/healthz"


class TestTheHealthLog:
    def test_gives_the_last_checks_last_lines(self):
        record = {"Status": "unhealthy", "Log": [{"ExitCode": 1, "Output": f"check {n}\nline {n}\n"} for n in range(5)]
                  + [{"ExitCode": -1, "Output": ""}]}
        assert diagnosis.parse_health_log(json.dumps(record)) == [
            diagnosis.Check(1, "line 3"), diagnosis.Check(1, "line 4"), diagnosis.Check(-1, "(no output)")]

    @pytest.mark.parametrize("stdout", ["", "null\n", "not json"])
    def test_is_empty_for_a_container_without_one(self, stdout):
        assert diagnosis.parse_health_log(stdout) == []


class TestTheSettledLine:
    @pytest.mark.parametrize("answer, hint", [
        (diagnosis.Answer(301, "/healthz/"), "the project redirects it to a slashed URL (APPEND_SLASH): it has no "
                                             "page at that path"),
        (diagnosis.Answer(301, "https://example.com/healthz"), "the project sends it to HTTPS (SECURE_SSL_REDIRECT or "
         "a middleware); the stack ends TLS in front of the app, which must answer plain HTTP there "
         "(DJANGO_HTTPS=false for a stack without TLS)"),
        (diagnosis.Answer(302, "/accounts/login/?next=/healthz"), "the project redirects it; the health check needs "
                                                                  "a 200 there"),
        (diagnosis.Answer(400), "the project refuses the request (ALLOWED_HOSTS must accept 127.0.0.1, the host the "
                                "health check asks)"),
        (diagnosis.Answer(403), "the project wants a login there; the health check must be public"),
        (diagnosis.Answer(404), "the project has no page there; the health check needs one that answers 200"),
        (diagnosis.Answer(405), "the project refuses it; the health check needs a 200 there"),
    ], ids=["append-slash", "https", "login", "bad-host", "forbidden", "not-found", "other"])
    def test_says_what_the_answer_means(self, answer, hint):
        line = diagnosis.settled_line("the new app container hello-djangoapp-2", diagnosis.HEALTH_URL, answer, 3)
        assert line == (f"http://127.0.0.1:8000/healthz on the new app container hello-djangoapp-2 answered "
                        f"{answer} 3 times in a row: {hint}")


@pytest.fixture(scope="module")
def startproject(tmp_path_factory):
    """A project nobody here wrote, its settings as `django-admin startproject` makes them."""
    folder = tmp_path_factory.mktemp("project")
    subprocess.run([str(BIN / "django-admin"), "startproject", "mysite", str(folder)], check=True)
    return folder


class TestTheSettingsDatabases:
    def test_name_the_sqlite_a_fresh_project_falls_back_to(self, startproject):
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": "mysite.settings"}
        result = subprocess.run([sys.executable, *diagnosis.settings_databases()[1:]], cwd=startproject, env=env,
                                capture_output=True, text=True, timeout=60)
        databases = diagnosis.parse_databases(result.stdout)
        assert databases == {"default": {"ENGINE": "django.db.backends.sqlite3",
                                         "NAME": str(startproject / "db.sqlite3"), "HOST": "", "PORT": ""}}
        assert diagnosis.databases_line(databases, "default", "database1") == (
            f"settings gave DATABASES['default'] = sqlite3 ({startproject / 'db.sqlite3'}): the project did not "
            "read the stack's databases (DATABASE_URL / DJANGO_DATABASES); the stack's database1 is PostgreSQL")

    def test_never_print_a_password(self, tmp_path):
        (tmp_path / "withpassword.py").write_text(
            "SECRET_KEY = 'x'\nDATABASES = {'default': {'ENGINE': 'django.db.backends.postgresql', 'NAME': 'db',"
            " 'HOST': 'database1', 'PORT': 5432, 'USER': 'app', 'PASSWORD': 's3cret-value'}}\n")
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": "withpassword"}
        result = subprocess.run([sys.executable, *diagnosis.settings_databases()[1:]], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=60)
        assert "s3cret-value" not in result.stdout + result.stderr
        assert diagnosis.parse_databases(result.stdout) == {
            "default": {"ENGINE": "django.db.backends.postgresql", "NAME": "db", "HOST": "database1", "PORT": "5432"}}

    @pytest.mark.parametrize("databases, alias, line", [
        ({"default": {"ENGINE": "django.db.backends.postgresql", "NAME": "database1", "HOST": "database1",
                      "PORT": "5432"}}, "default",
         "settings gave DATABASES['default'] = postgresql (database1 on database1:5432)"),
        ({"default": {"ENGINE": "django.db.backends.postgresql", "NAME": "app", "HOST": "localhost", "PORT": ""}},
         "default", "settings gave DATABASES['default'] = postgresql (app on localhost): the stack's database1 is "
                    "reached at host database1"),
        ({"default": {"ENGINE": "django.db.backends.postgresql", "NAME": "database1", "HOST": "database1",
                      "PORT": "5432"}}, "database2",
         "settings gave no DATABASES['database2'] (they have default): the project did not read the stack's "
         "databases (DATABASE_URL / DJANGO_DATABASES)"),
        (None, "default", "the settings could not be read (ModuleNotFoundError: No module named 'hello')"),
    ], ids=["the-stacks", "elsewhere", "no-alias", "unreadable"])
    def test_a_line_for_each_case(self, databases, alias, line):
        assert diagnosis.databases_line(databases, alias, "database1",
                                        "ModuleNotFoundError: No module named 'hello'") == line


STACK = loads(COMMITTED + """
[hosts.prod]
address = "203.0.113.10"
directory = "/srv/hello"
project = "hello-prod"
""")
COMPOSE = "docker compose --project-name hello-prod"
SQLITE = json.dumps({"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": "/app/hello/db.sqlite3",
                                 "HOST": "", "PORT": ""}})
FAILED = Result(exited=1, stderr="Traceback (most recent call last):\n  ...\n"
                                 "django.db.utils.OperationalError: unable to open database file\n")
SQLITE_LINE = ("migrate on database1 failed (exit status 1: django.db.utils.OperationalError: unable to open "
               "database file); settings gave DATABASES['default'] = sqlite3 (/app/hello/db.sqlite3): the project "
               "did not read the stack's databases (DATABASE_URL / DJANGO_DATABASES); the stack's database1 is "
               "PostgreSQL")


def on_host(answers):
    conn = Engine(answers)
    return Runner(HostTarget(conn, STACK.hosts["prod"], STACK, release="r1", local_c=Recorder())), conn


class TestAFailedMigrate:
    def test_in_the_release_phase_names_the_database_the_settings_produced(self):
        release = shlex.join(["docker", "compose", "--project-name", "hello-prod", *rollout_plans.release_phase(
            [["migrate", "--noinput", "--database", "default"], ["collectstatic", "--noinput", "--verbosity", "0"]])])
        probe = shlex.join(["docker", "compose", "--project-name", "hello-prod",
                            *rollout_plans.run_once(compose.APP, diagnosis.settings_databases())])
        failed = Result(exited=1, stderr=FAILED.stderr + "release step 1 failed\n")
        r, conn = on_host({release: failed, probe: Result(stdout=SQLITE + "\n")})
        with pytest.raises(TaskError) as err:
            starting.release_phase(r)
        assert err.value.message == f"error: {SQLITE_LINE}"
        assert [c for c in conn.commands if "version" not in c][-2:] == [release, probe]

    def test_of_inv_migrate_asks_the_running_app(self):
        migrate = f"{COMPOSE} exec -T djangoapp python manage.py migrate --noinput --database default"
        probe = shlex.join(["docker", "compose", "--project-name", "hello-prod", "exec", "-T", "djangoapp",
                            *diagnosis.settings_databases()])
        r, conn = on_host({migrate: FAILED, probe: Result(stdout=SQLITE + "\n"),
                           shlex.join(compose.running_services("hello-prod")): Result(stdout="djangoapp\n")})
        with pytest.raises(TaskError) as err:
            django.migrate_all(r)
        assert err.value.message == f"error: {SQLITE_LINE}"
        assert conn.commands[-1] == probe

    def test_that_succeeds_asks_nothing_more(self):
        r, conn = on_host({})
        starting.release_phase(r, static=False)
        assert not any("django.setup()" in c for c in conn.commands)


class TestAFailedReleasePhase:
    """The step of the release phase's one container that failed is named; the settings are
    asked about only when it was a migrate."""
    RELEASE = shlex.join(["docker", "compose", "--project-name", "hello-prod", *rollout_plans.release_phase(
        [["migrate", "--noinput", "--database", "default"], ["collectstatic", "--noinput", "--verbosity", "0"]])])

    @pytest.mark.parametrize("result, message", [
        (Result(exited=1, stderr="0 static files copied\nrelease step 2 failed\n"), "collectstatic failed (exit status 1)"),
        (Result(exited=137, stderr=""), "the release phase (migrate, collectstatic) failed (exit status 137)"),
    ], ids=["collectstatic", "killed"])
    def test_names_the_step_or_the_whole_phase(self, result, message):
        r, conn = on_host({self.RELEASE: result})
        with pytest.raises(TaskError) as err:
            starting.release_phase(r)
        assert err.value.message == f"error: {message}"
        assert [c for c in conn.commands if "version" not in c][-1] == self.RELEASE  # no settings asked


class TestTheWaitThroughNginx:
    """After the switch, /healthz through Nginx: a redirect is reported with where it sends."""

    def run_probe(self, url):
        argv = compose.health_through_nginx()
        script = argv[argv.index("-c") + 1]
        return subprocess.run([sys.executable, "-c", script, url], capture_output=True, text=True, timeout=30)

    def test_from_a_host_names_the_redirect_or_the_error(self, server):
        redirected = self.run_probe(f"{server}/healthz")
        assert (redirected.returncode, redirected.stdout) == (1, "HTTP 301 → /healthz/\n")
        failed = self.run_probe(f"{server}/other")
        assert (failed.returncode, failed.stdout) == (
            1, 'HTTP 503 {"status": "error", "databases": {"database1": "error: OperationalError"}}\n')

    def test_from_a_host_ends_the_wait_with_that_answer(self):
        r, conn = on_host({})
        argv = shlex.join(r.compose_argv(compose.health_through_nginx()))
        conn.answers[argv] = Result(exited=1, stdout="HTTP 301 → https://example.com/healthz\n")
        from tasks.procedures.serving import wait_until_served

        with pytest.raises(TaskError) as err:
            wait_until_served(r, 0)
        assert err.value.message == ("error: /healthz through Nginx on prod did not answer 200 within 0s (last: HTTP "
                                     "301 → https://example.com/healthz); see `inv logs --host prod`")

    def test_here_names_the_redirect_instead_of_following_it(self, server):
        from tasks.execution import http

        assert http.problem(f"{server}/healthz") == "HTTP 301 → /healthz/"
        assert http.problem(f"{server}/other") == "HTTP 503"


@pytest.mark.parametrize("stderr, line", [
    ("Traceback (most recent call last):\n  File \"x\", line 1\npsycopg2.errors.InsufficientPrivilege: permission "
     "denied to create extension \"pg_stat_statements\"\nHINT:  Must be superuser to create this extension.\n",
     "psycopg2.errors.InsufficientPrivilege: permission denied to create extension \"pg_stat_statements\""),
    ("django.db.utils.OperationalError: unable to open database file\n",
     "django.db.utils.OperationalError: unable to open database file"),
    ("something else went wrong\n", "something else went wrong"),
    ("", ""),
], ids=["postgres-hint-after", "plain", "no-exception", "nothing"])
def test_a_failed_migrate_is_told_by_its_exception(stderr, line):
    assert django.error_line(stderr) == line
