"""Bring your own Django project: projects nobody here wrote, made at test time by Django's
own `django-admin startproject` and `startapp`, adopted with `inv init` and run by every
task (up, createsuperuser, db.add, volume archives, a deploy to a real test host and a
rollback), their files byte-identical afterwards: zero edits to the user's code."""
import hashlib
import http.cookiejar
import json
import os
import re
import subprocess
import sys
import textwrap
import tomllib
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.conftest import Stack, free_port
from testkit import INV
from testkit.livestate import is_live
from testkit.projectcopy import copy_project

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("adopt")]
# The 12-factor project and the fast suite after adoption: side by side with the shop.
BESIDE = pytest.mark.xdist_group("adopt-more")
DJANGO = "5.2.19"
PYTHON313_IMAGE = os.environ.get("PYTHON313_IMAGE", "python:3.13-slim")


def django_admin(*args, cwd):
    subprocess.run([sys.executable, "-m", "django", *args], cwd=cwd, check=True, capture_output=True)


def write(path: Path, text: str):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())


def make_shop(where: Path) -> Path:
    """What a user has: `startproject shop`, `startapp catalog` with a model, its admin, a
    static file, a page; settings as startproject wrote them, SQLite and all, with the app
    added; requirements pinned as `pip freeze` writes them."""
    where.mkdir(parents=True)
    django_admin("startproject", "shop", cwd=where)
    root = where / "shop"
    django_admin("startapp", "catalog", cwd=root)
    settings = root / "shop/settings.py"
    settings.write_text(re.sub(r"""(['"])django.contrib.staticfiles\1,""", r"\g<0>\n    'catalog',", settings.read_text()))
    write(root / "catalog/models.py", """
        from django.db import models


        class Product(models.Model):
            name = models.CharField(max_length=100)

            def __str__(self):
                return self.name
        """)
    write(root / "catalog/admin.py", """
        from django.contrib import admin

        from .models import Product

        admin.site.register(Product)
        """)
    write(root / "catalog/views.py", """
        from django.http import HttpResponse
        from django.templatetags.static import static

        from .models import Product


        def index(request):
            names = ", ".join(p.name for p in Product.objects.all()) or "nothing yet"
            return HttpResponse(f'<link rel="stylesheet" href="{static("catalog/shop.css")}">Shop v1: {names}')
        """)
    write(root / "catalog/static/catalog/shop.css", "body { font-family: serif; }\n")
    urls = root / "shop/urls.py"
    urls.write_text(urls.read_text().replace("from django.urls import path", "from django.urls import path\n\nfrom catalog.views import index")
                    .replace("path('admin/', admin.site.urls),", "path('admin/', admin.site.urls),\n    path('', index),")
                    .replace('path("admin/", admin.site.urls),', 'path("admin/", admin.site.urls),\n    path("", index),'))
    subprocess.run([sys.executable, "manage.py", "makemigrations", "catalog"], cwd=root, check=True, capture_output=True)
    (root / "db.sqlite3").unlink(missing_ok=True)
    # django-dotenv's module is `dotenv`, as python-dotenv's is (the tooling's): the two in
    # one virtualenv break manage.py.
    manage = root / "manage.py"
    manage.write_text(manage.read_text().replace("def main():\n", "def main():\n    import dotenv\n    dotenv.read_dotenv()\n"))
    write(root / "requirements.txt", f"""
        asgiref==3.13.0
        Django=={DJANGO}
        django-dotenv==1.4.2
        sqlparse==0.6.1
        """)
    return root


def fingerprint(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and "__pycache__" not in p.parts}


class Browser:
    """A user's browser on the site: cookies, CSRF token, redirects not followed."""

    class _NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    def __init__(self, url):
        self.url = url
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()),
                                                  self._NoRedirect)

    def open(self, path, data=None):
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        request = urllib.request.Request(self.url + path, data=body, headers={"Referer": self.url + path})
        try:
            with self.opener.open(request, timeout=15) as response:
                return response.status, dict(response.headers), response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read().decode()

    def log_in(self, username, password):
        _, _, page = self.open("/admin/login/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
        return self.open("/admin/login/?next=/admin/", {"csrfmiddlewaretoken": token, "username": username,
                                                         "password": password, "next": "/admin/"})


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    source = make_shop(tmp_path_factory.mktemp("user") / "src")
    before = fingerprint(source)
    root = copy_project(tmp_path_factory.mktemp("repo"))
    s = Stack("shop-e2e", free_port(0), root=root)
    s.source, s.before = source, before
    s.purge()
    yield s
    s.purge()


def test_init_finds_the_project_and_says_what_it_found(shop):
    result = shop.inv("init", str(shop.source))
    out = result.stdout + result.stderr
    for found in ("shop.settings", "shop.wsgi:application", "shop/requirements.txt"):
        assert found in out, out
    app = tomllib.loads((shop.root / "config/stack.toml").read_text())["app"]
    assert (app["path"], app["settings"], app["wsgi"]) == ("shop", "shop.settings", "shop.wsgi:application")
    assert app["requirements"] == "shop/requirements.txt"
    assert (shop.root / "shop/manage.py").read_bytes() == (shop.source / "manage.py").read_bytes()
    assert "/app/shop" in (shop.root / "Dockerfile").read_text()
    # Run again: nothing changed, nothing refused.
    again = shop.inv("init", str(shop.source))
    assert again.returncode == 0


def test_up_serves_the_page_its_static_files_and_the_admin(shop):
    shop.inv("up", timeout=900)
    status, _, page = shop.get("/")
    assert status == 200 and b"Shop v1: nothing yet" in page, page[:300]
    css = re.search(rb'href="(/static/catalog/shop\.[0-9a-f]*\.?css|/static/catalog/shop\.css)"', page)
    assert css and shop.get(css.group(1).decode())[0] == 200, page[:300]
    _, _, login = shop.get("/admin/login/")
    admin_css = next(part for part in login.decode().split('"') if part.endswith(".css"))
    assert shop.get(admin_css)[0] == 200
    # The stack answers /healthz for a project that has none, naming its database inside.
    assert shop.health_inside() == (200, {"status": "ok", "databases": {"database1": "ok"}})
    # Django's settings are the stack's: PostgreSQL, not the project's SQLite.
    engine = shop.inv("manage", "--", "shell", "-c",
                      "from django.db import connection; print(connection.vendor, connection.settings_dict['NAME'])")
    assert "postgresql database1" in engine.stdout


def test_createsuperuser_and_log_in_to_the_admin(shop):
    shop.inv("createsuperuser", "--username", "owner", "--email", "owner@shop.test",
             env={"DJANGO_SUPERUSER_PASSWORD": "a-long-shop-password-1"})
    browser = Browser(shop.url)
    status, headers, _ = browser.log_in("owner", "a-long-shop-password-1")
    assert status == 302 and headers["Location"] == "/admin/", (status, headers)
    status, _, page = browser.open("/admin/catalog/product/")
    assert status == 200 and "Select product to change" in page


def test_no_secret_is_in_the_containers_configuration(shop):
    secret = (shop.root / "config/secrets/django_secret_key").read_text().strip()
    password = (shop.root / "config/secrets/database1_password").read_text().strip()
    inspect = shop.docker("inspect", *shop.containers()).stdout
    assert secret not in inspect and password not in inspect and "DATABASE_URL" not in inspect


def test_a_second_database_is_added_and_checked(shop):
    shop.inv("db.add", "database2", "--up", timeout=900)
    status, body = shop.health_inside()
    assert status == 200 and body["databases"] == {"database1": "ok", "database2": "ok"}
    assert shop.get("/")[0] == 200


def test_the_media_volume_is_archived_and_restored(shop):
    shop.compose("exec", "-T", "djangoapp", "sh", "-c", "echo uploaded > /srv/media/upload.txt")
    shop.inv("volume.archive", "--volume", "media_volume")
    shop.compose("exec", "-T", "djangoapp", "rm", "/srv/media/upload.txt")
    archive = sorted((shop.root / "backups").glob("shop-e2e_media_volume_2*.tar.*.json"))[-1].with_suffix("")
    shop.inv("volume.restore", str(archive), "--yes")
    status, _, body = shop.get("/media/upload.txt")
    assert status == 200 and body == b"uploaded\n"


def test_deploy_to_a_host_and_roll_back(shop, servers):
    host = servers("shop")
    port = 8080
    with open(shop.root / "config/stack.toml", "a") as handle:
        handle.write("\n" + host.hosts_entry("prod", str(host.dir / "srv" / "shop"), http_port=port,
                                             project="shop-e2e-prod"))
    shop.inv("deploy", "--host", "prod", timeout=1200)
    status, _, page = host.get(f"http://127.0.0.1:{port}/")
    assert status == 200 and b"Shop v1" in page
    # The user goes on working on the adopted copy: a code change, deployed, then rolled back.
    views = shop.root / "shop/catalog/views.py"
    views.write_text(views.read_text().replace("Shop v1", "Shop v2"))
    shop.inv("deploy", "--host", "prod", timeout=1200)
    assert b"Shop v2" in host.get(f"http://127.0.0.1:{port}/")[2]
    shop.inv("rollback", "--host", "prod", timeout=600)
    assert b"Shop v1" in host.get(f"http://127.0.0.1:{port}/")[2]


def test_without_docker_the_project_runs_in_a_virtualenv_of_its_own(shop):
    # In the tooling's virtualenv, python-dotenv's `dotenv` shadows the project's.
    clash = subprocess.run([sys.executable, "shop/manage.py", "check"], cwd=shop.root, capture_output=True, text=True)
    assert "has no attribute 'read_dotenv'" in clash.stderr
    shop.inv("venv", timeout=600)
    done = subprocess.run([".venv-app/bin/python", "shop/manage.py", "check"], cwd=shop.root, capture_output=True,
                          text=True)
    assert done.returncode == 0 and "System check identified no issues" in done.stdout, done.stderr


def test_the_users_files_are_byte_identical(shop):
    assert fingerprint(shop.source) == shop.before


# -- a 12-factor project on Python 3.13, with an sdist that needs a compiler --------------

def make_twelve(where: Path) -> Path:
    """Settings in the 12-factor style: everything from the environment, nothing defaulted
    that matters (a KeyError without DJANGO_SECRET_KEY), the database from DATABASE_URL
    through dj-database-url, HTTPS forced; uWSGI (an sdist: it needs a compiler) in the
    requirements; Python 3.13 named by .python-version."""
    where.mkdir(parents=True)
    django_admin("startproject", "twelve", cwd=where)
    root = where / "twelve"
    settings = root / "twelve/settings.py"
    text = settings.read_text()
    text = re.sub(r"SECRET_KEY = .*", 'SECRET_KEY = os.environ["DJANGO_SECRET_KEY"]', text)
    text = re.sub(r"DEBUG = .*", 'DEBUG = os.environ.get("DJANGO_DEBUG") == "1"', text)
    text = re.sub(r"ALLOWED_HOSTS = .*", 'ALLOWED_HOSTS = os.environ["DJANGO_ALLOWED_HOSTS"].split(",")', text)
    text = re.sub(r"DATABASES = \{.*?\n\}\n", 'DATABASES = {"default": dj_database_url.config(default="sqlite:///db.sqlite3")}\n',
                  text, flags=re.S)
    text = text.replace("from pathlib import Path", "import os\nfrom pathlib import Path\n\nimport dj_database_url")
    text += "\nSECURE_SSL_REDIRECT = True\nSECURE_PROXY_SSL_HEADER = ('HTTP_X_FORWARDED_PROTO', 'https')\n"
    settings.write_text(text)
    write(root / "requirements.txt", f"""
        asgiref==3.13.0
        dj-database-url==2.3.0
        Django=={DJANGO}
        sqlparse==0.6.1
        typing_extensions==4.16.0
        uWSGI==2.0.31
        """)
    (root / ".python-version").write_text("3.13\n")
    return root


@pytest.fixture(scope="module")
def twelve(tmp_path_factory):
    source = make_twelve(tmp_path_factory.mktemp("user") / "src")
    before = fingerprint(source)
    root = copy_project(tmp_path_factory.mktemp("repo"))
    s = Stack("twelve-e2e", free_port(0), root=root)
    s.env["PYTHON_IMAGE"] = PYTHON313_IMAGE
    s.source, s.before = source, before
    s.purge()
    yield s
    s.purge()


@BESIDE
def test_a_12_factor_project_on_python_3_13_is_served_with_zero_edits(twelve):
    found = twelve.inv("init", str(twelve.source))
    app = tomllib.loads((twelve.root / "config/stack.toml").read_text())["app"]
    assert app["python"] == "3.13" and "build-essential" in app["build_packages"], found.stdout
    twelve.inv("up", timeout=1200)
    status, headers, page = twelve.get("/")
    # startproject's page (DEBUG off: a 404 of Django's own), served, not redirected to HTTPS.
    assert status == 404 and "Location" not in headers, (status, headers)
    assert twelve.health()[0] == 200
    version = twelve.compose("exec", "-T", "djangoapp", "python", "-c", "import sys; print(sys.version_info[:2])")
    assert version.stdout.strip() == "(3, 13)"
    # uWSGI was compiled in the builder; the running image has no compiler.
    assert twelve.compose("exec", "-T", "djangoapp", "uwsgi", "--version").returncode == 0
    assert twelve.compose("exec", "-T", "djangoapp", "sh", "-c", "command -v gcc cc", check=False).returncode != 0
    # The project's own variables came from the secret files, in the process alone.
    check = ("import os; from django.db import connection; "
             "print(connection.vendor, len(os.environ['DJANGO_SECRET_KEY']) >= 50)")
    assert "postgresql True" in twelve.inv("manage", "--", "shell", "-c", check).stdout
    inspect = twelve.docker("inspect", *twelve.containers()).stdout
    assert "DATABASE_URL" not in inspect
    assert fingerprint(twelve.source) == twelve.before


@BESIDE
def test_an_sdist_without_build_packages_fails_the_build_in_one_line_naming_the_key(twelve):
    stack_toml = twelve.root / "config/stack.toml"
    saved = stack_toml.read_text()
    try:
        stack_toml.write_text(re.sub(r"build_packages = \[[^\]]*\]", "build_packages = []", saved))
        twelve.inv("render")
        result = twelve.inv("build", check=False, timeout=900)
        assert result.returncode != 0
        assert "[app] build_packages" in result.stderr, result.stderr[-2000:]
    finally:
        stack_toml.write_text(saved)
        twelve.inv("render")


@BESIDE
def test_a_python_the_image_does_not_have_is_refused_in_one_line(twelve):
    result = twelve.inv("build", check=False, timeout=600, env={"PYTHON_IMAGE": os.environ.get("PYTHON_IMAGE", "python:3.11-slim")})
    assert result.returncode != 0
    assert '[app] python = "3.13"' in result.stderr and "3.11" in result.stderr, result.stderr[-2000:]


@BESIDE
def test_a_base_image_nobody_has_is_named_in_one_line_with_its_key(twelve):
    stack_toml = twelve.root / "config/stack.toml"
    saved = stack_toml.read_text()
    try:
        stack_toml.write_text(saved.replace('python = "3.13"', 'python = "3.13"\npython_image = "local/no-such-python:3.13"'))
        twelve.inv("render")
        result = twelve.inv("build", check=False, timeout=600, env={"PYTHON_IMAGE": ""})
        assert result.returncode != 0
        assert ("the base image local/no-such-python:3.13 could not be had (no registry answers, or no such tag): "
                'it comes from [app] python_image = "local/no-such-python:3.13"') in result.stderr, result.stderr[-2000:]
    finally:
        stack_toml.write_text(saved)
        twelve.inv("render")


@BESIDE
def test_the_fast_tests_stay_green_after_a_project_is_adopted(tmp_path):
    """The repository's own fast tests, where another project is the app. Those that read what
    `inv init` rewrites carry the live_state mark (testkit/livestate.py fails any that does so
    unmarked) and run again here; the others cannot tell the difference. `inv init` rewrites
    nothing the guard does not watch, so the mark stays true as init grows."""
    source = make_shop(tmp_path / "user")
    root = copy_project(tmp_path / "repo")

    def state():
        return {name: digest for name, digest in fingerprint(root).items() if not name.startswith(".git/")}

    before = state()
    subprocess.run([*INV, "init", str(source)], cwd=root, check=True, capture_output=True)
    after = state()
    assert 'path = "shop"' in (root / "config/stack.toml").read_text()
    rewritten = {name for name in before.keys() | after.keys() if before.get(name) != after.get(name)}
    assert "config/stack.toml" in rewritten and any(name.startswith("shop/") for name in rewritten), rewritten
    assert not {name for name in rewritten if not name.startswith("shop/") and not is_live(name)}, rewritten
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "live_state and not e2e", "-n", "0",
                           "-p", "no:cacheprovider"], cwd=root, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:]
    # Every marked test passed: none skipped (nothing here lacks what they need).
    assert re.fullmatch(r"\d+ passed, \d+ deselected in [\d.]+s(?: \(.*\))?", done.stdout.strip().splitlines()[-1]), \
        done.stdout[-3000:]
