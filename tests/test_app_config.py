"""[app] in config/stack.toml: the Django project the stack serves. Its values are checked by
the grammar of each key (one line naming the key, nothing written on a refusal) and every
file that names the project renders from them: the Dockerfile, the .dockerignore, the
app's environment, what a release ships."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.errors import StackError
from tasks.plans import release as shipping
from tasks.source import render
from tasks.source.stack import App, loads
from testkit import INV
from testkit.projectcopy import copy_project, git_status
from tests.stacks import COMMITTED

# A module-scoped copy of the checkout (copy_project reads its live files first).
pytestmark = pytest.mark.live_state

BASE = """
[project]
name = "shop"

[[databases]]
name = "database1"
"""
ADOPTED = """
[app]
path = "mysite"
settings = "mysite.settings"
wsgi = "mysite.wsgi:application"
python = "3.13"
requirements = "requirements/production.txt"
build_packages = ["build-essential", "libpq-dev"]
packages = ["libpq5"]

[app.env]
DB_HOST = "database1.host"
DB_PASSWORD_FILE = "database1.password_file"
SECRET = "secret_key"
"""


def stack(text=""):
    """BASE with TEXT: tables after it, a top-level key (`app = ...`) before it."""
    return loads(text + BASE if re.match(r"[a-z]+ =", text) else BASE + text)


class TestDefaults:
    def test_without_app_the_stack_serves_the_example(self):
        app = stack().app
        assert app == App(path="hello", settings="hello.settings.production", wsgi="hello.wsgi:application",
                          python="3.11", requirements="hello/requirements.txt")
        assert app.image == "python:3.11-slim"

    def test_the_committed_stack_names_the_example_as_the_defaults_do(self):
        # The example keeps the Debian release its image has always had (CI's images too).
        committed = loads(COMMITTED).app
        assert committed == App(python_image="python:3.11-slim-bookworm")
        assert committed.image == "python:3.11-slim-bookworm"

    def test_an_empty_app_table_keeps_every_default(self):
        assert stack("[app]\n").app == App()


class TestGoodInput:
    def test_every_key_is_read(self):
        app = stack(ADOPTED).app
        assert (app.path, app.settings, app.wsgi, app.python) == ("mysite", "mysite.settings",
                                                                  "mysite.wsgi:application", "3.13")
        assert app.requirements == "requirements/production.txt"
        assert app.build_packages == ("build-essential", "libpq-dev") and app.packages == ("libpq5",)
        assert app.env == (("DB_HOST", "database1.host"), ("DB_PASSWORD_FILE", "database1.password_file"),
                           ("SECRET", "secret_key"))
        assert app.image == "python:3.13-slim"

    @pytest.mark.parametrize("image", ["python:3.12-slim-bookworm", "local/python:3.13-slim",
                                       "registry.example.com:5000/team/python:3.12",
                                       "python@sha256:" + "a" * 64])
    def test_python_image_picks_the_base_image(self, image):
        assert stack(f'[app]\npython = "3.12"\npython_image = "{image}"\n').app.image == image

    @pytest.mark.parametrize("requirements, inputs", [
        ("hello/requirements.txt", ("hello/requirements.txt",)),
        ("requirements-prod.txt", ("requirements-prod.txt",)),
        ("mysite/Pipfile.lock", ("mysite/Pipfile", "mysite/Pipfile.lock")),
        ("Pipfile.lock", ("Pipfile", "Pipfile.lock")),
        ("mysite/uv.lock", ("mysite/uv.lock", "mysite/pyproject.tom[l]")),
        ("requirements/production.txt", ("requirements/*.txt",)),
    ], ids=["in-the-project", "at-the-root", "pipfile-lock", "root-pipfile-lock", "uv-lock", "requirements-folder"])
    def test_the_builder_copies_the_requirements_and_what_they_need_beside_them(self, requirements, inputs):
        assert stack(f'[app]\nrequirements = "{requirements}"\n').app.build_inputs == inputs

    def test_databases_name_the_apps_whose_models_they_hold(self):
        routed = stack('[[databases]]\nname = "reports"\napps = ["notes", "stats"]\n')
        assert routed.databases[1].apps == ("notes", "stats") and routed.databases[0].apps == ()


BAD = {
    "unknown-key": ('[app]\nmodule = "x"\n', "[app]: unknown setting(s) module (known: build_packages, env, packages, "
                                             "path, python, python_image, requirements, settings, wsgi)"),
    "not-a-table": ('app = "hello"\n', "app 'hello' is not valid: a table"),
    "path-nested": ('[app]\npath = "src/mysite"\n', "[app] path 'src/mysite' is not valid: one folder"),
    "path-dotdot": ('[app]\npath = ".."\n', "[app] path '..' is not valid"),
    "path-stack-folder": ('[app]\npath = "tasks"\n', "[app] path 'tasks' is not valid: it is a folder of the stack's"),
    "path-hidden": ('[app]\npath = ".ci"\n', "[app] path '.ci' is not valid: one folder"),
    "path-backups": ('[app]\npath = "backups"\n', "[app] path 'backups' is not valid: it is a folder of the stack's"),
    "path-option": ('[app]\npath = "-x"\n', "[app] path '-x' is not valid"),
    "path-type": ("[app]\npath = 5\n", "[app] path 5 is not valid"),
    "settings-path": ('[app]\nsettings = "mysite/settings.py"\n', "[app] settings 'mysite/settings.py' is not valid: "
                                                                  "a dotted Python module name"),
    "settings-space": ('[app]\nsettings = "my site.settings"\n', "[app] settings 'my site.settings' is not valid"),
    "wsgi-no-attribute": ('[app]\nwsgi = "mysite.wsgi"\n', "[app] wsgi 'mysite.wsgi' is not valid: module:attribute"),
    "wsgi-newline": ('[app]\nwsgi = "mysite.wsgi:app\\n"\n', "[app] wsgi 'mysite.wsgi:app\\n' is not valid"),
    "python-float": ("[app]\npython = 3.12\n", '[app] python 3.12 is not valid: a Python version "3.N" from "3.10" '
                                               'to "3.14", as a string'),
    "python-old": ('[app]\npython = "3.9"\n', "[app] python '3.9' is not valid"),
    "python-new": ('[app]\npython = "3.15"\n', "[app] python '3.15' is not valid"),
    "python-patch": ('[app]\npython = "3.12.1"\n', "[app] python '3.12.1' is not valid"),
    "image-space": ('[app]\npython_image = "python:3.12 slim"\n', "[app] python_image 'python:3.12 slim' is not "
                                                                  "valid: an image reference"),
    "image-dollar": ('[app]\npython_image = "${X}"\n', "[app] python_image '${X}' is not valid"),
    "requirements-dotdot": ('[app]\nrequirements = "../requirements.txt"\n',
                            "[app] requirements '../requirements.txt' is not valid: a path relative to the repository"),
    "requirements-absolute": ('[app]\nrequirements = "/etc/requirements.txt"\n',
                              "[app] requirements '/etc/requirements.txt' is not valid"),
    "requirements-setup": ('[app]\nrequirements = "mysite/setup.py"\n', "[app] requirements 'mysite/setup.py' is not valid"),
    "requirements-pipfile": ('[app]\nrequirements = "Pipfile"\n', "[app] requirements 'Pipfile' is not valid"),
    "build-packages-string": ('[app]\nbuild_packages = "gcc"\n', "[app] build_packages 'gcc' is not valid: a list of "
                                                                 "Debian package names"),
    "build-packages-option": ('[app]\nbuild_packages = ["-y"]\n', "[app] build_packages entry '-y' is not valid"),
    "packages-shell": ('[app]\npackages = ["libpq5 && curl x"]\n', "[app] packages entry 'libpq5 && curl x' is not valid"),
    "env-not-a-table": ('[app]\nenv = "DB_HOST"\n', "[app] env 'DB_HOST' is not valid: a table of NAME = \"fact\""),
    "env-lowercase": ('[app.env]\ndb_host = "database1.host"\n', "[app.env] name 'db_host' is not valid"),
    "env-unknown-fact": ('[app.env]\nDB_HOST = "database1.address"\n',
                         "[app.env] DB_HOST = 'database1.address' is not valid: one of <database>.host, "),
    "env-unknown-database": ('[app.env]\nDB_HOST = "database9.host"\n',
                             "[app.env] DB_HOST = 'database9.host': no database named 'database9' in [[databases]] "
                             "(known: database1)"),
    "env-type": ("[app.env]\nDB_PORT = 5432\n", "[app.env] DB_PORT = 5432 is not valid"),
    "env-stack-variable": ('[app.env]\nDJANGO_SETTINGS_MODULE = "secret_key"\n',
                           "[app.env] DJANGO_SETTINGS_MODULE: the stack sets this variable itself"),
    "env-stack-prefix": ('[app.env]\nSTACK_APP_WSGI = "domains"\n', "[app.env] STACK_APP_WSGI: the stack sets"),
    "env-password-file": ('[app.env]\nDATABASE1_PASSWORD_FILE = "database1.password_file"\n',
                          "[app.env] DATABASE1_PASSWORD_FILE: the stack sets this variable itself"),
    "apps-string": ('[[databases]]\nname = "reports"\napps = "notes"\n',
                    "[[databases]] reports apps 'notes' is not valid: a list of Django app labels"),
    "apps-label": ('[[databases]]\nname = "reports"\napps = ["notes.models"]\n',
                   "[[databases]] reports apps entry 'notes.models' is not valid: a Django app label"),
    "apps-twice": ('[[databases]]\nname = "reports"\napps = ["notes"]\n[[databases]]\nname = "archive"\n'
                   'apps = ["notes"]\n', "[[databases]] app 'notes' is in both reports and archive"),
}


@pytest.mark.parametrize("text, message", BAD.values(), ids=list(BAD))
def test_a_bad_value_is_refused_in_one_line_naming_the_key(text, message):
    with pytest.raises(StackError) as refused:
        stack(text)
    assert str(refused.value).startswith("config/stack.toml: ") and "\n" not in str(refused.value)
    assert message in str(refused.value)


class TestEnvironment:
    def test_the_app_runs_the_stacks_settings_around_the_projects(self):
        environment = render.django_environment(stack())
        assert environment == {
            "DJANGO_SETTINGS_MODULE": "djangostack.settings", "STACK_APP_SETTINGS": "hello.settings.production",
            "STACK_APP_WSGI": "hello.wsgi:application", "DJANGO_DATABASES": "database1",
            "DJANGO_SECRET_KEY_FILE": "/run/secrets/django_secret_key",
            "DATABASE1_PASSWORD_FILE": "/run/secrets/database1_password"}

    def test_app_env_and_the_databases_apps_are_passed_on(self):
        environment = render.django_environment(stack(ADOPTED + '[[databases]]\nname = "reports"\napps = ["stats", '
                                                                '"notes"]\n'))
        assert environment["STACK_APP_SETTINGS"] == "mysite.settings"
        assert environment["STACK_APP_WSGI"] == "mysite.wsgi:application"
        assert environment["STACK_APP_ENV"] == ('{"DB_HOST":"database1.host","DB_PASSWORD_FILE":'
                                                '"database1.password_file","SECRET":"secret_key"}')
        assert environment["STACK_DATABASE_APPS"] == "stats:reports,notes:reports"
        assert environment["DJANGO_DATABASES"] == "database1,reports"

    def test_the_compose_file_and_the_clusters_stack_file_hold_it_as_yaml_strings(self):
        import yaml

        nodes = ('[hosts.node1]\naddress = "10.0.0.1"\ndirectory = "/srv/shop"\n'
                 '[clusters.swarm]\nmanager = "node1"\n')
        adopted = stack(ADOPTED + nodes)
        files = render.rendered(adopted)
        compose = yaml.safe_load(files[render.COMPOSE_FILE])["services"]["djangoapp"]
        swarm = yaml.safe_load(files[render.stack_file("swarm")])["services"]["djangoapp"]
        for service in (compose, swarm):
            assert json.loads(service["environment"]["STACK_APP_ENV"]) == dict(adopted.app.env)
            assert service["environment"]["DJANGO_SETTINGS_MODULE"] == "djangostack.settings"
        assert compose["build"]["args"]["PYTHON_IMAGE"] == "${PYTHON_IMAGE:-python:3.13-slim}"
        assert swarm["command"] == render.APP_COMMAND


class TestImage:
    def test_the_dockerfile_builds_the_project_named_by_app(self):
        dockerfile = render.rendered(stack(ADOPTED))[render.DOCKERFILE]
        assert "ARG PYTHON_IMAGE=python:3.13-slim\n" in dockerfile
        assert "COPY requirements/*.txt /src/requirements/\n" in dockerfile
        assert "RUN python /build/requirements.py /src/requirements/production.txt > /build/pinned.txt" in dockerfile
        assert "apt-get install -y --no-install-recommends build-essential libpq-dev \\\n" in dockerfile
        builder, runtime = dockerfile.split("\nFROM ${PYTHON_IMAGE}\n")
        assert "build-essential" not in runtime and "libpq5" in runtime and "libpq5" not in builder
        assert "WORKDIR /app/mysite\nCOPY mysite/ /app/mysite/\n" in runtime
        assert "COPY config/app/ /app/stack/\n" in runtime and "PYTHONPATH=/app/stack \\\n" in runtime
        assert "STACK_APP_SETTINGS=mysite.settings \\\n" in runtime
        assert "\nUSER app\n" in runtime
        assert dockerfile.endswith('\nCMD ["gunicorn", "--config", "/app/stack/djangostack/gunicorn_conf.py", '
                                   '"djangostack.wsgi:application"]\n')
        assert "hello" not in dockerfile

    def test_the_builder_refuses_another_python_in_one_line_naming_the_image_and_the_key(self, tmp_path):
        """The check the builder runs, run here against this interpreter with another version asked."""
        dockerfile = render.rendered(stack('[app]\npython = "3.10"\n'))[render.DOCKERFILE]
        check = next(line for line in dockerfile.splitlines() if line.startswith("RUN python -c "))
        script = re.fullmatch(r"RUN python -c '(.*)' \"\$PYTHON_IMAGE\"", check).group(1)
        import sys

        refused = subprocess.run([sys.executable, "-c", script, "python:3.10-slim"], capture_output=True, text=True)
        found = "%d.%d" % sys.version_info[:2]
        assert refused.returncode == 1
        assert refused.stderr == (f'[app] python = "3.10" but python:3.10-slim has Python {found}: set [app] '
                                  f'python_image (or PYTHON_IMAGE) to a Python 3.10 image\n')
        mine = render.rendered(stack(f'[app]\npython = "{found}"\n'))[render.DOCKERFILE]
        script = re.search(r"RUN python -c '(.*)' \"\$PYTHON_IMAGE\"", mine).group(1)
        assert subprocess.run([sys.executable, "-c", script, "x"]).returncode == 0

    def test_the_stacks_server_and_driver_go_in_only_when_the_project_lacks_them(self):
        """config/build/stack_packages.py on the real pin list: a group when nothing it
        provides imports, each dependency only when it does not import either."""
        sys.path.insert(0, "config/build")
        import stack_packages
        pinned = stack_packages.entries(Path("config/app/requirements.txt").read_text())
        chosen = lambda have: [line.split("==")[0] for line in stack_packages.missing(pinned, have.__contains__)]
        assert chosen(set()) == ["gunicorn", "packaging", "psycopg[binary]", "psycopg-binary", "typing-extensions"]
        assert chosen({"packaging", "typing_extensions"}) == ["gunicorn", "psycopg[binary]", "psycopg-binary"]
        assert chosen({"gunicorn", "psycopg2"}) == []
        assert chosen({"gunicorn", "psycopg"}) == []
        assert all("--hash=sha256:" in line for line in stack_packages.missing(pinned, lambda m: False))

    def test_the_script_asks_the_virtualenv_what_it_can_import(self, tmp_path):
        venv = tmp_path / "venv"
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
        done = subprocess.run([sys.executable, "config/build/stack_packages.py", str(venv / "bin/python"),
                               "config/app/requirements.txt"], capture_output=True, text=True, check=True)
        assert [line for line in done.stdout.splitlines() if not line.startswith(" ")][0].startswith("gunicorn==23.0.0")
        assert "psycopg[binary]==" in done.stdout and done.stdout.count("--hash=sha256:") > 10

    def test_the_stacks_packages_are_pinned_with_hashes(self):
        pins = Path("config/app/requirements.txt").read_text()
        assert "gunicorn==23.0.0" in pins and "psycopg[binary]==" in pins
        entries = [e for e in pins.replace("\\\n", " ").splitlines() if e and not e.startswith("#")]
        assert len(entries) == 5 and all(re.search(r"--hash=sha256:[0-9a-f]{64}", e) for e in entries)

    def test_the_build_context_holds_the_project_and_requirements_outside_it(self):
        ignore = render.rendered(stack(ADOPTED))[render.DOCKERIGNORE].splitlines()
        assert ignore[2:8] == ["*", "!config/build/requirements.py", "!config/build/stack_packages.py", "!config/app/",
                              "!mysite/", "!requirements/*.txt"]
        assert "mysite/db.sqlite3" in ignore and "mysite/.env" in ignore and "mysite/media" in ignore
        hello = render.rendered(stack())[render.DOCKERIGNORE].splitlines()
        assert "!hello/" in hello and not any(line.startswith("!hello/requirements") for line in hello)


class TestShipping:
    def test_a_release_ships_the_project_and_its_requirements_not_the_tooling(self, tmp_path):
        app = stack(ADOPTED).app
        for name in ["Dockerfile", ".dockerignore", "Pipfile", "Pipfile.lock", "config/stack.toml",
                     "mysite/manage.py", "mysite/db.sqlite3", "mysite/.env", "mysite/media/upload.png",
                     "requirements/production.txt", "requirements/base.txt", "requirements/notes.md",
                     "hello/manage.py"]:
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name).write_text(name)
        shipped = sorted(p.relative_to(tmp_path).as_posix() for p in shipping.shipped_files(tmp_path, app))
        assert shipped == [".dockerignore", "Dockerfile", "config/stack.toml", "mysite/manage.py",
                           "requirements/base.txt", "requirements/production.txt"]

    def test_rsync_includes_the_folders_above_a_requirements_file(self):
        host = loads(BASE + '[hosts.prod]\naddress = "203.0.113.10"\ndirectory = "/srv/shop"\n').hosts["prod"]
        argv = shipping.rsync("/src", host, "/srv/shop/releases/R", None, stack(ADOPTED).app)
        rules = [a for a in argv if a.startswith(("--include", "--exclude"))]
        assert rules.index("--include=/requirements/") < rules.index("--include=/requirements/*.txt")
        assert "--include=/mysite/***" in rules and "--exclude=/mysite/db.sqlite3" in rules
        assert "--include=/hello/***" not in rules and "--include=/Pipfile" not in rules
        assert rules[-1] == "--exclude=*"


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return copy_project(tmp_path_factory.mktemp("project"))


@pytest.mark.parametrize("old, new, message", [
    ('path = "hello"', 'path = "tasks"', "[app] path 'tasks' is not valid"),
    ('python = "3.11"', 'python = "3.9"', "[app] python '3.9' is not valid"),
    ('name = "database1"', 'name = "database1"\n[app.env]\nDB_HOST = "database7.host"',
     "no database named 'database7'"),
], ids=["stack-folder", "old-python", "unknown-database"])
def test_inv_render_refuses_a_bad_app_and_writes_nothing(tree, old, new, message):
    stack_file = tree / "config/stack.toml"
    committed = stack_file.read_text()
    assert committed.count(old) == 1
    stack_file.write_text(committed.replace(old, new))
    before = git_status(tree, ignored=True), {p: (tree / p).read_text() for p in render.rendered(loads(committed))}
    try:
        result = subprocess.run([*INV, "render"], cwd=tree, capture_output=True, text=True)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: ")
        assert message in lines[0], result.stderr
        assert (git_status(tree, ignored=True), {p: (tree / p).read_text() for p in before[1]}) == before
    finally:
        stack_file.write_text(committed)
