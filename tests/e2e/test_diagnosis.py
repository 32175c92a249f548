"""Failures a user can act on, on a real engine, in a copy of the project with a compose
project of its own: a new app container whose health URL redirects is given up on at once
with what it answered; one that never answers is waited for, and its health checks and log
lines are printed before it is removed; `inv db.add NAME --up` whose migrate fails leaves
every file as it was while the site keeps serving. The lines each gave are printed
(`pytest -s`)."""
import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import Stack, free_port
from testkit.projectcopy import copy_project

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("diagnosis")]
PROJECT = "hello-e2e-diagnosis"

# A health test that asks a page of the project, and the project sending plain HTTP to
# HTTPS (its SECURE_SSL_REDIRECT, as a project that forces HTTPS does): the engine's check
# follows the redirect and fails, and the probe sees the 301 itself.
REDIRECTING = """\
services:
  djangoapp:
    environment:
      DJANGO_HTTPS: "true"
    healthcheck:
      test: ["CMD", "python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/admin/', timeout=4).status != 200)"]
"""

# An app that takes its time to start (it loads something large) and never listens within
# the timeout: the wait is not cut short, and what it logged is shown.
SLOW = """\
services:
  djangoapp:
    command: ["python", "-c", "import time; print('loading a large model', flush=True); time.sleep(600)"]
"""

# A migration the new database cannot apply: it needs a superuser (the app's role is not).
NEEDS_SUPERUSER = """\
from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("notes", "0003_tick_task_id_and_scheduled")]
    operations = [migrations.RunSQL("CREATE EXTENSION IF NOT EXISTS pg_stat_statements", migrations.RunSQL.noop)]
"""


@pytest.fixture(scope="module")
def s(tmp_path_factory):
    stack = Stack(PROJECT, free_port(0), root=copy_project(tmp_path_factory.mktemp("diagnosis")))
    stack.purge()
    stack.inv("up")
    yield stack
    stack.purge()


def error_line(result):
    lines = [line for line in result.stderr.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and result.stderr.strip().endswith(lines[0]), result.stderr
    print(f"\n[failure] {lines[0]}")
    return lines[0]


def app_containers(s):
    out = s.docker("ps", "--all", "--format", "{{.Names}}", "--filter", f"label=com.docker.compose.project={PROJECT}",
                   "--filter", "label=com.docker.compose.service=djangoapp").stdout
    return sorted(out.split())


def serves(s):
    return s.get("/")[0] == 200 and s.health()[0] == 200


@pytest.fixture
def override(s):
    path = s.root / "docker-compose.override.yml"

    def write(text):
        path.write_text(text)

    yield write
    path.unlink(missing_ok=True)


def test_a_health_url_that_redirects_is_given_up_on_at_once_with_its_answer(s, override):
    before = app_containers(s)
    override(REDIRECTING)
    started = time.monotonic()
    result = s.inv("up", "--timeout", "400", check=False)
    waited = time.monotonic() - started
    assert result.returncode == 1, result.stdout
    line = error_line(result)
    new = result.stdout.split("starting a new app container", 1)[-1]
    assert "http://127.0.0.1:8000/admin/ on the new app container " in line
    assert "answered 301 → https://127.0.0.1:8000/admin/ 3 times in a row: the project sends it to HTTPS" in line
    assert line.endswith(f"it was removed and {before[0]} still serves")
    assert waited < 120, waited  # not the 400 s timeout
    # The line first, then what tells more: the answer, the engine's checks, the log lines.
    out = result.stdout
    head = out.index(line.removeprefix("error: ").split("; it was removed")[0])
    assert head < out.index("  health URL: http://127.0.0.1:8000/admin/ answered 301 → https://127.0.0.1:8000/admin/")
    assert "log lines:" in new and "-djangoapp-2: " in new
    print(out[head:])
    assert app_containers(s) == before and serves(s)


def test_an_app_that_never_answers_is_waited_for_and_shows_its_checks_and_log(s, override):
    before = app_containers(s)
    override(SLOW)
    started = time.monotonic()
    # Long enough for two of the engine's checks (every 10 s), short of the 30 s start period.
    result = s.inv("up", "--timeout", "25", check=False)
    waited = time.monotonic() - started
    assert result.returncode == 1, result.stdout
    line = error_line(result)
    assert "did not become healthy within 25s (last: " in line and " is starting); " in line
    assert "http://127.0.0.1:8000/healthz gave no answer ([Errno 111] Connection refused)" in line
    assert waited >= 25
    out = result.stdout
    assert "  health check (exit 1): nothing answers on 127.0.0.1:8000" in out
    assert "its last 1 log lines:" in out and ": loading a large model" in out
    print(out[out.index("did not become healthy"):])
    assert app_containers(s) == before and serves(s)


def snapshot(root: Path):
    secrets = root / "config/secrets"
    return {"config/stack.toml": (root / "config/stack.toml").read_bytes(),
            "docker-compose.yml": (root / "docker-compose.yml").read_bytes(),
            **{f"config/secrets/{p.name}": (p.read_bytes(), p.stat().st_mode) for p in sorted(secrets.iterdir())}}


def test_db_add_up_whose_migrate_fails_leaves_every_file_as_it_was(s):
    (s.root / "hello/notes/migrations/0004_needs_superuser.py").write_text(NEEDS_SUPERUSER)
    s.inv("build")  # the image the release phase runs; the app serving keeps its own
    before = snapshot(s.root)
    serving = app_containers(s)
    result = s.inv("db.add", "database2", "--up", check=False)
    assert result.returncode == 1, result.stdout
    line = error_line(result)
    # On database2, where the project's router sends the notes app (on database1 were
    # its migrations to go everywhere: the add fails the same way).
    assert re.match(r"error: migrate on database[12] failed \(exit status 1: \S+: permission denied to create "
                    r"extension", line), line  # PostgreSQL's own word: the app's role may not create it
    assert re.search(r"settings gave DATABASES\['(database2|default)'\] = postgresql \((database[12]) on \2:5432\)",
                     line), line
    assert line.endswith("database database2 was not added: put back config/stack.toml, docker-compose.yml; "
                         "deleted the new config/secrets/database2_password; removed its container and new volume")
    assert snapshot(s.root) == before
    assert subprocess.run(["git", "status", "--porcelain"], cwd=s.root, capture_output=True, text=True,
                          check=True).stdout == "?? hello/notes/migrations/0004_needs_superuser.py\n"
    assert f"{PROJECT}_database2_volume" not in s.docker("volume", "ls", "--quiet").stdout.split()
    assert "database2" not in s.compose("ps", "--all", "--services").stdout.split()
    assert app_containers(s) == serving and serves(s)
    # What the failed add left is nothing a second add trips on: without the migration, it works.
    (s.root / "hello/notes/migrations/0004_needs_superuser.py").unlink()
    s.inv("build")
    assert "Database database2 is up and migrated." in s.inv("db.add", "database2", "--up").stdout
