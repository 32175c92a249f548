"""A server deployed by the previous version, upgraded by this version's `inv deploy`.

The previous version kept the secrets in shared/config/*.env on the server and had Django
connect as the PostgreSQL superuser. The next deploy moves the secrets into
shared/config/secrets/ (linked whole into each release), gives the app its own role, and
serves the same rows under the same Django key.
"""
import json
import subprocess

import pytest

from testkit.projectcopy import GIT, copy_project
from testkit import INV

from .conftest import ROOT
from .test_upgrade import PREVIOUS

pytestmark = pytest.mark.e2e
PORT = 8080
PROJECT = "hello-e2e-upgraded"


def _previous_version(target):
    archive = subprocess.run(["git", "archive", "--format=tar", PREVIOUS], cwd=ROOT, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    subprocess.run([*GIT, "init", "-q"], cwd=target, check=True)
    subprocess.run([*GIT, "add", "-A"], cwd=target, check=True)
    subprocess.run([*GIT, "commit", "-qm", "previous"], cwd=target, check=True)
    return target


def _deploy(root):
    result = subprocess.run([*INV, "deploy", "--host", "old", "--ship-image"], cwd=root,
                            capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    return result


class OnServer:
    def __init__(self, server):
        self.server = server
        self.dir = server.dir / "srv" / "hello"

    def django(self, code):
        # The app container's number changes when a deploy starts a new one beside the old.
        app = self.server.docker("ps", "--quiet", "--filter", f"label=com.docker.compose.project={PROJECT}",
                                 "--filter", "label=com.docker.compose.service=djangoapp").stdout.split()[0]
        out = self.server.docker("exec", app, "python", "manage.py", "shell", "-c", code).stdout
        return out.strip().splitlines()[-1]

    def sql(self, sql):
        return self.server.docker("exec", f"{PROJECT}-database1-1", "psql", "-U", "database1", "-d", "database1",
                                  "-Atc", sql).stdout.strip()

    def inspect(self):
        ids = self.server.docker("ps", "--all", "--quiet", "--filter",
                                 f"label=com.docker.compose.project={PROJECT}").stdout.split()
        return self.server.docker("inspect", *ids).stdout

    def page(self):
        status, _, body = self.server.get(f"http://127.0.0.1:{PORT}/healthz")
        return status, json.loads(body)


@pytest.fixture(scope="module")
def upgraded(servers, tmp_path_factory):
    server = servers("upgraded")
    on = OnServer(server)
    entry = "\n" + server.hosts_entry("old", str(on.dir), http_port=PORT, project=PROJECT)
    old = _previous_version(tmp_path_factory.mktemp("previous"))
    with open(old / "config/stack.toml", "a") as handle:
        handle.write(entry)
    _deploy(old)
    on.django("from django.contrib.auth.models import User; from notes.models import Note; "
              "User.objects.create_user('ada', password='correct horse battery'); "
              "[Note.objects.create(text=f'note {i}') for i in range(25)]")
    env_file = (on.dir / "shared/config/django.env").read_text()
    before = {
        "superuser": on.sql("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"),
        "key": next(line.split("=", 1)[1] for line in env_file.splitlines() if line.startswith("DJANGO_SECRET_KEY=")),
        "inspect": on.inspect(),
        "release": (on.dir / "current").resolve().name,
    }
    new = copy_project(tmp_path_factory.mktemp("next"))
    with open(new / "config/stack.toml", "a") as handle:
        handle.write(entry)
    result = _deploy(new)
    yield on, before, result


def test_the_previous_release_ran_as_superuser_with_secrets_in_the_environment(upgraded):
    _, before, _ = upgraded
    assert before["superuser"] == "t"
    assert before["key"] in before["inspect"]


def test_the_upgraded_server_serves_the_same_rows_and_users(upgraded):
    on, before, _ = upgraded
    assert (on.dir / "current").resolve().name != before["release"]
    assert on.page() == (200, {"status": "ok"})
    assert on.django("from notes.models import Note; print(Note.objects.count())") == "25"
    assert on.django("from django.contrib.auth import authenticate; "
                     "print(authenticate(username='ada', password='correct horse battery') is not None)") == "True"


def test_the_app_connects_as_its_own_role(upgraded):
    on, _, _ = upgraded
    role = on.django("from django.db import connection; c = connection.cursor(); "
                     "c.execute('SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user'); "
                     "print(c.fetchone())")
    assert role == "('app', False)"
    assert on.sql("SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace "
                  "AND relowner <> 'app'::regrole") == "0"
    assert on.sql("SELECT rolpassword IS NULL FROM pg_authid WHERE rolname = 'database1'") == "t"


def test_the_secrets_moved_to_files_in_shared_and_the_key_was_kept(upgraded):
    on, before, _ = upgraded
    secrets = on.dir / "shared/config/secrets"
    assert oct(secrets.stat().st_mode & 0o777) == "0o700"
    values = {path.name: path.read_text().strip() for path in secrets.iterdir()}
    assert all(oct(path.stat().st_mode & 0o777) == "0o600" for path in secrets.iterdir())
    assert values["django_secret_key"] == before["key"]
    assert "DJANGO_SECRET_KEY" not in (on.dir / "shared/config/django.env").read_text()
    assert not (on.dir / "shared/config/db/database1.env").exists()
    # The release reaches them through its link; docker inspect shows none of them.
    assert (on.dir / "current/config/secrets").resolve() == secrets.resolve()
    inspect = on.inspect()
    for name, value in values.items():
        assert value not in inspect, f"docker inspect shows {name}"
