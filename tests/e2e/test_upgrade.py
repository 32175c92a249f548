"""A stack made by the previous version, upgraded in place by the next `inv up`.

The previous version kept the secrets in env files (shown by `docker inspect`) and had
Django connect as the PostgreSQL superuser. After `inv up` with this version the same
volumes serve: every row and Django user is kept, the app's role owns its database and is
not a superuser, the secrets are files, and the Django key is the one it was.
"""
import json
import subprocess
from pathlib import Path

import pytest

from testkit.projectcopy import copy_project

from .conftest import PROJECT, ROOT, Stack, free_port

pytestmark = pytest.mark.e2e

# The last commit before secrets became files and the app got its own role.
PREVIOUS = "3b31f30"
# Files the previous version generated per machine (git-ignored), carried into the upgrade.
LOCAL_FILES = ["config/django.env", "config/db/database1.env"]


def _previous_version(target: Path) -> Path:
    archive = subprocess.run(["git", "archive", "--format=tar", PREVIOUS], cwd=ROOT, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return target


def _django(s: Stack, code: str) -> str:
    out = s.compose("exec", "-T", "djangoapp", "python", "manage.py", "shell", "-c", code).stdout.strip()
    return out.splitlines()[-1] if out else out  # after what the shell says of its own imports


def _sql(s: Stack, sql: str) -> str:
    return s.compose("exec", "-T", "database1", "psql", "-U", "database1", "-d", "database1", "-Atc", sql).stdout.strip()


@pytest.fixture(scope="module")
def upgraded(tmp_path_factory):
    port = free_port(0)
    old = Stack(f"{PROJECT}-upgrade", port, root=_previous_version(tmp_path_factory.mktemp("previous")))
    old.purge()
    try:
        old.inv("up")
        _django(old, "from django.contrib.auth.models import User; from notes.models import Note; "
                     "User.objects.create_user('ada', password='correct horse battery'); "
                     "[Note.objects.create(text=f'note {i}') for i in range(25)]")
        before = {
            "notes": _django(old, "from notes.models import Note; print(Note.objects.count())"),
            "superuser": _sql(old, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"),
            "inspect": old.docker("inspect", *old.containers()).stdout,
        }
        env_key = next(line.split("=", 1)[1] for line in (old.root / "config/django.env").read_text().splitlines()
                       if line.startswith("DJANGO_SECRET_KEY="))
        new = Stack(old.project, port, root=copy_project(tmp_path_factory.mktemp("upgraded")))
        for name in LOCAL_FILES:
            (new.root / name).parent.mkdir(parents=True, exist_ok=True)
            (new.root / name).write_bytes((old.root / name).read_bytes())
            (new.root / name).chmod(0o600)
        result = new.inv("up")
        yield new, before, env_key, result
    finally:
        old.purge()


def test_the_previous_version_ran_as_superuser_with_secrets_in_the_environment(upgraded):
    # What the upgrade changes, seen on the stack before it.
    _, before, env_key, _ = upgraded
    assert before["superuser"] == "t"
    assert env_key in before["inspect"]
    assert before["notes"] == "25"


def test_rows_and_users_are_kept(upgraded):
    new, _, _, _ = upgraded
    assert _django(new, "from notes.models import Note; print(Note.objects.count())") == "25"
    assert _django(new, "from django.contrib.auth import authenticate; "
                        "print(authenticate(username='ada', password='correct horse battery') is not None)") == "True"
    assert new.health() == (200, {"status": "ok"})


def test_the_app_connects_as_an_owner_that_is_not_a_superuser(upgraded):
    new, _, _, _ = upgraded
    role = _django(new, "from django.db import connection; c = connection.cursor(); "
                        "c.execute('SELECT current_user, rolsuper, rolcreaterole, rolcreatedb FROM pg_roles "
                        "WHERE rolname = current_user'); print(c.fetchone())")
    assert role == "('app', False, False, False)"
    assert _sql(new, "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'database1'") == "app"
    # Every table the superuser owned before is the app's now.
    assert _sql(new, "SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace "
                     "AND relowner <> 'app'::regrole") == "0"
    # The superuser has no password left: only the tasks reach it, through the socket.
    assert _sql(new, "SELECT rolpassword IS NULL FROM pg_authid WHERE rolname = 'database1'") == "t"


def test_the_app_role_cannot_run_programs(upgraded):
    new, _, _, _ = upgraded
    said = _django(new, "from django.db import connection\n"
                        "try:\n    connection.cursor().execute(\"COPY (SELECT 1) TO PROGRAM 'id'\")\n"
                        "    print('ran')\nexcept Exception as exc:\n    print(str(exc).splitlines()[0])")
    assert said.startswith(("permission denied", "must be superuser")), said


def test_secrets_are_files_and_docker_inspect_shows_none(upgraded):
    new, _, env_key, _ = upgraded
    secrets_dir = new.root / "config/secrets"
    assert oct(secrets_dir.stat().st_mode & 0o777) == "0o700"
    values = {}
    for path in secrets_dir.iterdir():
        assert oct(path.stat().st_mode & 0o777) == "0o600", path
        values[path.name] = path.read_text().strip()
    # The key carried over (sessions survive), and left the env file.
    assert values["django_secret_key"] == env_key
    assert "DJANGO_SECRET_KEY" not in (new.root / "config/django.env").read_text()
    assert not (new.root / "config/db/database1.env").exists()
    inspect = new.docker("inspect", *new.containers()).stdout
    for name, value in values.items():
        assert value not in inspect, f"docker inspect shows {name}"
    env = {item.split("=", 1)[0] for c in json.loads(inspect) for item in c["Config"]["Env"] or []}
    assert "DJANGO_SECRET_KEY" not in env and "DATABASE1_PASSWORD" not in env and "POSTGRES_PASSWORD" not in env
    # Inside, the app alone reads them.
    listing = new.compose("exec", "-T", "djangoapp", "ls", "-ln", "/run/secrets").stdout
    assert "-r-------- 1 10001 10001" in listing and "django_secret_key" in listing


def test_a_second_up_changes_nothing(upgraded):
    new, _, _, _ = upgraded
    new.inv("up")
    assert _django(new, "from notes.models import Note; print(Note.objects.count())") == "25"
    assert not (new.root / "config/db/database1.env").exists()
