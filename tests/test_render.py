"""Rendering from the source of truth: golden files, drift detection, and db.add/db.remove
editing config/stack.toml."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tasks.source import render
from tasks.source.stack import StackError, loads, with_database_added, with_database_removed
from testkit import INV
from tests.stacks import COMMITTED

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).resolve().parent / "golden"
BASE = COMMITTED


def stack_with(*extra):
    text = BASE
    for name in extra:
        text = with_database_added(text, name)
    return loads(text)


CASES = {
    "one-database": (),
    "two-databases": ("database2",),
    "three-databases": ("database2", "reports"),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
@pytest.mark.parametrize("path", [render.COMPOSE_FILE, render.NGINX_CONF, render.NGINX_MAIN_CONF, render.FRONT_CONF],
                         ids=["compose", "nginx", "nginx-main", "front"])
def test_golden(case, path):
    text = render.rendered(stack_with(*CASES[case]))[path]
    golden = GOLDEN / case / path.name
    if os.environ.get("UPDATE_GOLDEN"):
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text)
    assert text == golden.read_text()



@pytest.fixture
def fresh_environment(tmp_path, monkeypatch):
    """render's Jinja2 environment made again, with the system's temporary folder at TMP_PATH."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    render._environment.cache_clear()
    yield tmp_path / f"_jinja2-cache-{os.getuid()}"
    render._environment.cache_clear()


def test_the_compiled_templates_are_kept_for_the_next_call_and_render_the_same(fresh_environment):
    before = render.rendered(stack_with("database2"))
    kept = {path: path.stat().st_mtime_ns for path in fresh_environment.glob("stack-templates-*.cache")}
    assert kept and oct(fresh_environment.stat().st_mode & 0o777) == "0o700"
    render._environment.cache_clear()  # the next call, which loads them: none written again
    assert render.rendered(stack_with("database2")) == before
    assert {path: path.stat().st_mtime_ns for path in fresh_environment.glob("stack-templates-*.cache")} == kept


def test_a_cache_file_cut_short_is_compiled_again(fresh_environment):
    before = render.rendered(stack_with())
    for path in fresh_environment.glob("stack-templates-*.cache"):
        path.write_bytes(path.read_bytes()[:40])
    render._environment.cache_clear()
    assert render.rendered(stack_with()) == before


def test_a_cache_folder_pointing_elsewhere_is_not_used(fresh_environment):
    elsewhere = fresh_environment.parent / "elsewhere"
    elsewhere.mkdir()
    fresh_environment.symlink_to(elsewhere)  # made by someone else, to point at their files
    assert render._environment().bytecode_cache is None
    assert render.rendered(stack_with())[render.NGINX_CONF] == (GOLDEN / "one-database" / render.NGINX_CONF.name).read_text()
    assert not list(elsewhere.iterdir())

# The image of a project other than the example: every [app] key set.
ADOPTED_APP = {"path": "mysite", "settings": "mysite.settings.production", "wsgi": "mysite.wsgi:application",
               "python": "3.13", "python_image": "registry.example.com/python:3.13-slim-trixie",
               "requirements": "mysite/Pipfile.lock", "build_packages": ["build-essential", "libpq-dev"],
               "packages": ["libpq5"]}


def with_app(app: dict) -> str:
    import tomlkit

    document = tomlkit.parse(BASE)
    document["app"] = app
    return tomlkit.dumps(document)


@pytest.mark.parametrize("case, text", [("one-database", BASE), ("adopted-app", with_app(ADOPTED_APP))],
                         ids=["example", "adopted"])
@pytest.mark.parametrize("path", [render.DOCKERFILE, render.DOCKERIGNORE], ids=["dockerfile", "dockerignore"])
def test_golden_image(case, text, path):
    rendered = render.rendered(loads(text))[path]
    golden = GOLDEN / case / path.name
    if os.environ.get("UPDATE_GOLDEN"):
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(rendered)
    assert rendered == golden.read_text()


@pytest.mark.live_state
def test_committed_files_match_the_source_of_truth():
    """What CI checks with `inv render --check`."""
    result = subprocess.run([*INV, "render", "--check"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.live_state
def test_render_check_detects_drift(tmp_path):
    tree = tmp_path / "tree"
    shutil.copytree(ROOT, tree, ignore=shutil.ignore_patterns(".git", "__pycache__", ".pytest_cache"))
    compose_file = tree / "docker-compose.yml"
    compose_file.write_text(compose_file.read_text().replace("restart: unless-stopped", "restart: always", 1))
    result = subprocess.run([*INV, "render", "--check"], cwd=tree,
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert "out of date: docker-compose.yml" in result.stdout
    assert "error: generated files differ" in result.stderr
    subprocess.run([*INV, "render"], cwd=tree, check=True, capture_output=True)
    assert compose_file.read_text() == (ROOT / "docker-compose.yml").read_text()


def test_every_generated_file_says_so_in_its_first_line():
    for path, text in render.rendered(stack_with("database2")).items():
        if path.suffix in (".yml", ".conf") or path in (render.DOCKERFILE, render.DOCKERIGNORE):
            first = text.splitlines()[0]
            assert first.startswith("# Generated by `inv render` from config/stack.toml"), path


def test_a_second_database_is_isolated_in_the_compose_file():
    text = render.rendered(stack_with("database2"))[render.COMPOSE_FILE]

    assert "  \"database2\":\n    image: ${POSTGRES_IMAGE:-postgres:15}" in text
    assert ("      - database2_volume:/var/lib/postgresql/data\n"
            "      - ${STACK_CONFIG_DIR:-./config}/db/app-role.sh:/docker-entrypoint-initdb.d/app-role.sh:ro\n"
            "    networks:\n      - database2_network\n") in text
    assert "  database2_password:\n    file: ${STACK_CONFIG_DIR:-./config}/secrets/database2_password\n" in text
    assert 'DJANGO_DATABASES: "database1,database2"' in text
    assert "5432:" not in text  # no database port published
    nginx_block = text.split("  nginx:\n", 1)[1].split("\n\n", 1)[0]
    assert "database" not in nginx_block.split("networks:", 1)[1]


def test_the_front_alone_publishes_the_port_and_nginx_is_reloaded_in_place():
    compose = yaml.safe_load(render.rendered(stack_with("database2"))[render.COMPOSE_FILE])
    services = compose["services"]
    published = {name for name, service in services.items() if service.get("ports")}
    assert published == {"front"}
    assert services["front"]["ports"] == ["127.0.0.1:${HTTP_PORT:-8000}:80"]
    assert services["front"]["networks"] == ["front_network"]  # it reaches Nginx alone
    assert services["nginx"]["networks"] == ["nginx_network", "front_network"]
    assert services["nginx"]["command"] == ["nginx", "-c", "/etc/nginx/hello/nginx.conf", "-g", "daemon off;"]
    # The configuration is a mounted folder (a file replaced by rename reaches the container)
    # from STACK_CONFIG_DIR; the live app container's name is in a volume of its own.
    assert services["nginx"]["volumes"][:2] == ["${STACK_CONFIG_DIR:-./config}/nginx:/etc/nginx/hello:ro",
                                                "nginx_live:/etc/nginx/live"]
    assert services["front"]["volumes"] == ["${STACK_CONFIG_DIR:-./config}/nginx:/etc/nginx/hello:ro"]
    assert "nginx_live" in compose["volumes"]
    assert services["secrets-init"]["volumes"][0] == "${STACK_CONFIG_DIR:-./config}/secrets:/in:ro"
    assert services["djangoapp"]["stop_grace_period"] == "40s"  # Gunicorn finishes what is in flight
    mounts = [v for service in services.values() for v in service.get("volumes", []) if v.startswith((".", "/"))]
    assert mounts == []  # every bind mount goes through STACK_CONFIG_DIR


def test_nginx_reads_the_live_app_and_trusts_the_front_for_the_client_address():
    files = render.rendered(stack_with())
    server = files[render.NGINX_CONF]
    assert "    include /etc/nginx/live/*.conf;\n" in server
    assert "    set_real_ip_from 0.0.0.0/0;\n    real_ip_header X-Real-IP;\n" in server
    assert "        proxy_set_header X-Forwarded-For $http_x_forwarded_for;\n" in server
    assert "    include /etc/nginx/hello/default.conf;\n" in files[render.NGINX_MAIN_CONF]
    assert "conf.d" not in files[render.NGINX_MAIN_CONF].replace("conf.d is not read", "")
    front = files[render.FRONT_CONF]
    assert "        set $nginx http://nginx:80;\n" in front and "            proxy_pass $nginx;\n" in front
    assert "            proxy_set_header Connection close;\n" in front


class TestEditingTheSourceOfTruth:
    def test_add_keeps_comments_and_order(self):
        text = with_database_added(BASE, "database2")
        assert text.startswith(BASE)  # the user's file is kept as it was, the entry appended
        assert [db.name for db in loads(text).databases] == ["database1", "database2"]
        assert loads(text).database("database2").alias == "database2"
        assert loads(text).database("default").name == "database1"

    def test_remove_restores_the_file(self):
        assert with_database_removed(with_database_added(BASE, "database2"), "database2") == BASE

    def test_the_default_database_cannot_be_removed(self):
        with pytest.raises(StackError, match="default database"):
            with_database_removed(BASE, "database1")

    def test_unknown_database_cannot_be_removed(self):
        with pytest.raises(StackError, match="no database named 'nope'"):
            with_database_removed(BASE, "nope")



class TestAppHealthTest:
    """The app's health check as its container runs it (`sh -c`), against a real HTTP server
    on its port: 200 from /healthz is healthy; another status, or nothing listening, is not."""

    @pytest.fixture
    def answer(self):
        import http.server
        import threading

        class Handler(http.server.BaseHTTPRequestHandler):
            status = 200
            asked = []

            def do_GET(self):
                Handler.asked.append((self.path, self.headers["Host"], self.request_version))
                self.send_response(Handler.status if self.path == "/healthz" else 404)
                self.end_headers()

            def log_message(self, *args):
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        yield Handler, server.server_address[1]
        server.shutdown()
        server.server_close()

    @staticmethod
    def check(port, path=None):
        """The check's exit status, the container's port 8000 being PORT here (PATH: where
        bash is looked for)."""
        script = render.APP_HEALTH_TEST[1].replace("127.0.0.1/8000", f"127.0.0.1/{port}").replace(
            "127.0.0.1:8000/", f"127.0.0.1:{port}/").replace("exec python ", f"exec {sys.executable} ")
        done = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, timeout=30,
                              env={"PATH": path or os.environ["PATH"]})
        TestAppHealthTest.said = (done.stdout + done.stderr).strip()
        return done.returncode

    def test_with_bash_a_200_from_healthz_is_healthy_and_another_status_is_not(self, answer):
        handler, port = answer
        assert render.APP_HEALTH_TEST[0] == "CMD-SHELL"
        assert self.check(port) == 0
        # HTTP/1.0, Host as before (the stack's WSGI entry answers /healthz ahead of Django).
        assert handler.asked == [("/healthz", "127.0.0.1:8000", "HTTP/1.0")]
        handler.status = 503
        # One line that says why: what `inv` prints of the last checks of an unhealthy container.
        assert self.check(port) == 1 and self.said == "GET /healthz answered 503"

    def test_without_bash_python_asks(self, answer, tmp_path):
        handler, port = answer
        assert self.check(port, path=str(tmp_path)) == 0  # a PATH where no bash is
        assert handler.asked == [("/healthz", f"127.0.0.1:{port}", "HTTP/1.1")]  # urllib's request
        handler.status = 503
        assert self.check(port, path=str(tmp_path)) == 1

    def test_nothing_listening_is_unhealthy(self):
        import socket
        with socket.socket() as bound:
            bound.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
            assert self.check(bound.getsockname()[1]) == 1
            assert self.said == "nothing answers on 127.0.0.1:8000"
