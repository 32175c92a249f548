"""The README, followed on a real engine: up, serve through Nginx, keep data, down."""
import re
import socket

import pytest

from tests.e2e.conftest import once_the_engine_says

pytestmark = pytest.mark.e2e


def test_dry_run_runs_nothing(stack):
    result = stack.inv("up", "--dry")
    assert "[dry] docker compose --project-name hello-e2e up --detach" in result.stdout
    assert stack.containers() == []
    assert stack.volumes() == set()


def test_up_serves_the_page_through_nginx(stack):
    result = stack.inv("up")
    assert f"The stack is up at {stack.url}/" in result.stdout
    assert "Bake" not in result.stdout + result.stderr  # compose builds through buildx, no warning
    # The app image is named after the compose project: two projects on one engine never share it.
    assert stack.docker("image", "inspect", f"{stack.project}-djangoapp:latest", check=False).returncode == 0
    status, headers, body = stack.get("/")
    assert status == 200
    assert headers["Server"].startswith("nginx")
    assert b"Hello from Django" in body


def test_admin_css_is_served_by_nginx_from_the_static_volume(stack):
    status, _, page = stack.get("/admin/login/")
    assert status == 200
    css = re.search(rb'href="(/static/admin/css/base\.[0-9a-f]+\.css)"', page).group(1).decode()
    status, headers, body = stack.get(css, {"Accept-Encoding": "gzip"})
    assert status == 200
    assert headers["Content-Type"] == "text/css"
    assert "immutable" in headers["Cache-Control"]  # set by Nginx's /static/ location only
    assert headers.get("Content-Encoding") == "gzip"
    listed = stack.docker("compose", "--project-name", stack.project, "exec", "-T", "nginx",
                          "ls", "/srv/static/admin/css/").stdout
    assert css.rsplit("/", 1)[1] in listed


def test_healthz_reports_database1_ok(stack):
    # Through Nginx, the public front, it names no database; inside the stack it does.
    assert stack.health() == (200, {"status": "ok"})
    assert stack.health_inside() == (200, {"status": "ok", "databases": {"database1": "ok"}})


def test_ps_and_logs(stack):
    ps = once_the_engine_says(lambda: stack.inv("ps").stdout, lambda out: "(healthy)" in out)
    for service in ("djangoapp", "nginx", "database1"):
        assert service in ps
    assert "(healthy)" in ps
    assert "Booting worker" in stack.inv("logs", "--service", "djangoapp", "--tail", "50").stdout
    # Nginx logs every request (Gunicorn's own access log is off unless GUNICORN_ACCESS_LOG=-).
    stack.get("/?logged")
    assert "GET /?logged" in stack.inv("logs", "--service", "nginx", "--tail", "50").stdout


def test_superuser_survives_down_and_up(stack):
    stack.inv("createsuperuser", "--username", "admin", "--email", "admin@example.com",
              env={"DJANGO_SUPERUSER_PASSWORD": "e2e-Admin-pass-1"})
    stack.inv("down")
    assert stack.volumes() >= {"database1_volume", "static_volume", "media_volume"}
    assert stack.containers() == []
    stack.inv("up", "--no-build")
    check = ("from django.contrib.auth import authenticate; "
             "print('found', authenticate(username='admin', password='e2e-Admin-pass-1').is_superuser)")
    assert "found True" in stack.inv("manage", "--", "shell", "-c", check).stdout


def test_migrate_is_idempotent(stack):
    out = stack.inv("migrate").stdout
    assert "No migrations to apply." in out


def test_the_database_is_utf8_with_the_official_images_locale_and_owner(stack):
    # What the official postgres image gives (CI runs a stand-in of it): a data folder of one
    # starts on the other, and text compares, cases and counts as it will in production.
    def psql(*args):
        return stack.compose("exec", "-T", "database1", "psql", "-U", "database1", "-d", "database1",
                             "-v", "ON_ERROR_STOP=1", "-qAt", *args, check=False)
    facts = psql("-c", "SELECT current_setting('server_encoding'), datcollate, datctype, upper('é') = upper('É') "
                       "FROM pg_database WHERE datname = current_database()")
    assert facts.stdout.strip() == "UTF8|en_US.utf8|en_US.utf8|t", facts.stdout + facts.stderr
    five = psql("-c", "CREATE TEMPORARY TABLE names (name varchar(5))", "-c", "INSERT INTO names VALUES ('ééééé')",
                "-c", "SELECT length(name), octet_length(name) FROM names")
    assert (five.returncode, five.stdout.strip()) == (0, "5|10"), five.stderr
    owner = stack.compose("exec", "-T", "database1", "sh", "-c",
                          'stat -c %u:%g "$PGDATA"; id -u postgres; echo "$PG_MAJOR"').stdout.split()
    assert owner == ["999:999", "999", "15"]


def test_a_busy_port_is_refused_before_anything_starts(stack):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = stack.inv("up", check=False, env={"COMPOSE_PROJECT_NAME": "hello-e2e-busy", "HTTP_PORT": str(port)})
    assert result.returncode != 0
    assert f"error: port {port} on 127.0.0.1 is in use by another program" in result.stderr
    assert stack.docker("ps", "-aq", "--filter", "label=com.docker.compose.project=hello-e2e-busy").stdout == ""


def test_no_engine_is_one_line_and_non_zero(stack):
    result = stack.inv("ps", check=False, env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"})
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no Docker engine is reachable")


def test_down_with_volumes_needs_yes(stack):
    result = stack.inv("down", "--volumes", check=False)
    assert result.returncode != 0 and "add --yes" in result.stderr
    assert "database1_volume" in stack.volumes()
