"""config/app/djangostack: the stack's Django glue around projects it does not edit.

The projects are made here by the tooling's own Django (`django-admin startproject` and
`startapp`), in the styles real projects use, and run in subprocesses with the environment
the stack gives the app container: DJANGO_SETTINGS_MODULE=djangostack.settings, the glue on
PYTHONPATH, the project's folder the working directory, the secrets as files. No PostgreSQL
runs here: the stack's databases point at a port nothing listens on, which is /healthz's
error path; its ok path runs on the project's own SQLite outside the stack.
"""
import contextlib
import json
import os
import signal
import re
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GLUE = ROOT / "config" / "app"
HELLO = ROOT / "hello"
DJANGO_ADMIN = Path(sys.executable).parent / "django-admin"

sys.path.insert(0, str(GLUE))
from djangostack import env as stackenv  # noqa: E402

KEY = secrets.token_urlsafe(50)
# Characters a URL must quote, so that a project parsing DATABASE_URL gets them back intact.
PASSWORDS = {"database1": "p@ss:w/rd%?#1-" + secrets.token_hex(8), "database2": "s p@ce/2-" + secrets.token_hex(8)}

# Prints the settings named on the command line as Django sees them, as JSON.
DUMP = """
import json, sys
import django
django.setup()
from django.conf import settings
print(json.dumps({name: getattr(settings, name) for name in sys.argv[1:]}, default=str))
"""

# WSGI requests to djangostack.wsgi:application (path and headers each), answered as JSON:
# status, headers, body and the database connections left open.
REQUESTS = """
import json, sys
from djangostack.wsgi import application
from django.db import connections
from django.test import RequestFactory
answers = []
for path, headers in json.loads(sys.argv[1]):
    seen = {}
    body = b"".join(application(RequestFactory().get(path, **headers).environ,
                                lambda status, headers: seen.update(status=status, headers=dict(headers))))
    answers.append({**seen, "body": body.decode(),
                    "open_connections": [alias for alias in connections if connections[alias].connection is not None]})
print(json.dumps(answers))
"""


def run(project, args, env, check=True):
    result = subprocess.run([sys.executable, *args], cwd=project, env=env, capture_output=True,
                            text=True, timeout=60)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def settings_of(project, env, *names):
    return json.loads(run(project, ["-c", DUMP, *names], env).stdout)


def requests(project, env, *asked):
    """The answers to ASKED, (path, headers) each, in one process."""
    return json.loads(run(project, ["-c", REQUESTS, json.dumps(asked)], env).stdout)


def request(project, env, path, **headers):
    return requests(project, env, (path, headers))[0]


def last_line(result):
    return result.stderr.strip().splitlines()[-1]


def closed_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return str(sock.getsockname()[1])


def write_secrets(folder):
    folder.mkdir(exist_ok=True)
    for name, value in (("django_secret_key", KEY), *((f"{db}_password", p) for db, p in PASSWORDS.items())):
        (folder / name).write_text(value + "\n")
        (folder / name).chmod(0o600)
    return folder


def stack_env(tmp_path, settings, wsgi, databases=("database1", "database2"), reachable=False, **extra):
    """The app container's environment (as render.django_environment and config/django.env
    give it): the secrets only as paths. REACHABLE points the databases at a closed port."""
    folder = write_secrets(tmp_path / "secrets")
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(GLUE), "PYTHONDONTWRITEBYTECODE": "1",
           "DJANGO_SETTINGS_MODULE": "djangostack.settings",
           "STACK_APP_SETTINGS": settings, "STACK_APP_WSGI": wsgi,
           "DJANGO_DATABASES": ",".join(databases),
           "DJANGO_SECRET_KEY_FILE": str(folder / "django_secret_key"),
           **{f"{db.upper()}_PASSWORD_FILE": str(folder / f"{db}_password") for db in databases},
           "DJANGO_ALLOWED_HOSTS": "localhost,127.0.0.1",
           "DJANGO_CSRF_TRUSTED_ORIGINS": "http://localhost:8000",
           "DJANGO_HTTPS": "false",
           "DJANGO_STATIC_ROOT": "/srv/static", "DJANGO_MEDIA_ROOT": "/srv/media"}
    if reachable:
        port = closed_port()
        for db in databases:
            env.update({f"{db.upper()}_HOST": "127.0.0.1", f"{db.upper()}_PORT": port})
    return {**env, **extra}


def outside_env(settings, wsgi, **extra):
    """The glue with no stack around it (no DJANGO_DATABASES): the project as it is."""
    return {"PATH": os.environ["PATH"], "PYTHONPATH": str(GLUE), "PYTHONDONTWRITEBYTECODE": "1",
            "DJANGO_SETTINGS_MODULE": "djangostack.settings",
            "STACK_APP_SETTINGS": settings, "STACK_APP_WSGI": wsgi, **extra}


# --- the projects, made by Django's own commands ---------------------------------------

def startproject(parent, name):
    folder = parent / name
    folder.mkdir()
    subprocess.run([str(DJANGO_ADMIN), "startproject", name, str(folder)], check=True, capture_output=True)
    return folder


def startapp(project, label):
    """An app with a model, its admin and a static file, listed in INSTALLED_APPS."""
    subprocess.run([sys.executable, "manage.py", "startapp", label], cwd=project, check=True,
                   capture_output=True, env={"PATH": os.environ["PATH"], "PYTHONDONTWRITEBYTECODE": "1"})
    with (project / label / "models.py").open("a") as models:
        models.write("\n\nclass Item(models.Model):\n    name = models.CharField(max_length=100)\n")
    (project / label / "admin.py").write_text("from django.contrib import admin\n\nfrom .models import Item\n\n"
                                              "admin.site.register(Item)\n")
    (project / label / "static" / label).mkdir(parents=True)
    (project / label / "static" / label / "site.css").write_text("body { color: #333; }\n")
    settings = next(project.glob("*/settings.py"))
    settings.write_text(settings.read_text().replace("'django.contrib.staticfiles',\n",
                                                     f"'django.contrib.staticfiles',\n    '{label}',\n"))


def substitute(path, pattern, replacement):
    text, count = re.subn(pattern, replacement, path.read_text(), flags=re.MULTILINE | re.DOTALL)
    assert count == 1, pattern
    path.write_text(text)


# The 12-factor style: every setting from the conventional variables, a tiny DATABASE_URL
# parser of its own (falling back to SQLite, as many do), a secret key that must be there.
TWELVE_FACTOR_DATABASES = '''def _database(url):
    if not url:
        print("DATABASE_URL is not set: falling back to SQLite", file=sys.stderr)
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": BASE_DIR / "db.sqlite3"}
    parts = urlsplit(url)
    return {"ENGINE": "django.db.backends.postgresql", "NAME": unquote(parts.path[1:]),
            "USER": unquote(parts.username), "PASSWORD": unquote(parts.password),
            "HOST": parts.hostname, "PORT": str(parts.port)}


DATABASES = {"default": _database(os.environ.get("DATABASE_URL"))}
'''

# A project reading names of its own (mapped by [app.env]), the key falling back to an
# ephemeral one, and a wsgi.py that sets DJANGO_SETTINGS_MODULE outright.
NAMED_DATABASES = '''def _password():
    with open(os.environ["DB_PASSWORD_FILE"]) as handle:
        return handle.read().strip()


DATABASES = {"default": {"ENGINE": "django.db.backends.postgresql", "HOST": os.environ["DB_HOST"],
                         "PORT": os.environ["DB_PORT"], "NAME": os.environ["DB_NAME"],
                         "USER": os.environ["DB_USER"], "PASSWORD": _password()}}
'''
NAMED_KEY = '''SECRET_KEY = os.environ.get("SECRET_KEY")
if not SECRET_KEY:
    print("Generating ephemeral SECRET_KEY", file=sys.stderr)
    from django.core.management.utils import get_random_secret_key
    SECRET_KEY = get_random_secret_key()'''
NAMED_ENV = {"DB_HOST": "database1.host", "DB_PORT": "database1.port", "DB_NAME": "database1.name",
             "DB_USER": "database1.user", "DB_PASSWORD_FILE": "database1.password_file"}


@pytest.fixture(scope="module")
def projects(tmp_path_factory):
    parent = tmp_path_factory.mktemp("projects")
    plain = startproject(parent, "plain")
    startapp(plain, "shop")

    twelve = startproject(parent, "twelve")
    startapp(twelve, "shop")
    settings = twelve / "twelve" / "settings.py"
    substitute(settings, r"^from pathlib import Path$",
               "import os\nimport sys\nfrom pathlib import Path\nfrom urllib.parse import unquote, urlsplit")
    substitute(settings, r"^SECRET_KEY = .*?$", 'SECRET_KEY = os.environ["DJANGO_SECRET_KEY"]')
    substitute(settings, r"^DEBUG = True$", 'DEBUG = os.environ.get("DJANGO_DEBUG") == "1"')
    substitute(settings, r"^ALLOWED_HOSTS = \[\]$", 'ALLOWED_HOSTS = os.environ.get("DJANGO_ALLOWED_HOSTS", "").split(",")')
    substitute(settings, r"^DATABASES = \{.*?^\}\n", TWELVE_FACTOR_DATABASES)
    with settings.open("a") as handle:
        handle.write("\nSECURE_SSL_REDIRECT = True\n")

    named = startproject(parent, "named")
    settings = named / "named" / "settings.py"
    substitute(settings, r"^from pathlib import Path$", "import os\nimport sys\nfrom pathlib import Path")
    substitute(settings, r"^SECRET_KEY = .*?$", NAMED_KEY)
    substitute(settings, r"^DATABASES = \{.*?^\}\n", NAMED_DATABASES)
    substitute(named / "named" / "wsgi.py", r"^os.environ.setdefault\('DJANGO_SETTINGS_MODULE', 'named.settings'\)$",
               'os.environ["DJANGO_SETTINGS_MODULE"] = "named.settings"')
    return {"plain": plain, "twelve": twelve, "named": named}


def plain_env(tmp_path, **extra):
    return stack_env(tmp_path, "plain.settings", "plain.wsgi:application", **extra)


def twelve_env(tmp_path, **extra):
    return stack_env(tmp_path, "twelve.settings", "twelve.wsgi:application", databases=("database1",), **extra)


def named_env(tmp_path, **extra):
    return stack_env(tmp_path, "named.settings", "named.wsgi:application", databases=("database1",),
                     STACK_APP_ENV=json.dumps(NAMED_ENV), **extra)


def hello_env(tmp_path, **extra):
    return stack_env(tmp_path, "hello.settings.production", "hello.wsgi:application", **extra)


STACK_DATABASE = {"ENGINE": "django.db.backends.postgresql", "HOST": "database1", "PORT": "5432",
                  "NAME": "database1", "USER": "app", "PASSWORD": PASSWORDS["database1"]}


def database(settings_dict):
    return {name: settings_dict[name] for name in STACK_DATABASE}


# --- the variables derived from the secret files ---------------------------------------

class TestConventionalVariables:
    def environ(self, tmp_path, **extra):
        env = stack_env(tmp_path, "plain.settings", "plain.wsgi:application", **extra)
        env["DJANGO_SITE_DOMAINS"] = "example.com,www.example.com"
        return env

    def test_urls_quote_the_password_and_every_database_has_one(self, tmp_path):
        found = stackenv.conventional_variables(self.environ(tmp_path))
        quoted = {db: re.sub(r"[^A-Za-z0-9_.~-]", lambda m: "%%%02X" % ord(m[0]), p) for db, p in PASSWORDS.items()}
        assert found["DATABASE_URL"] == f"postgres://app:{quoted['database1']}@database1:5432/database1"
        assert found["DATABASE1_DATABASE_URL"] == found["DATABASE_URL"]
        assert found["DATABASE2_DATABASE_URL"] == f"postgres://app:{quoted['database2']}@database2:5432/database2"

    def test_the_secret_key_and_the_hosts_under_both_names(self, tmp_path):
        found = stackenv.conventional_variables(self.environ(tmp_path))
        assert found["DJANGO_SECRET_KEY"] == found["SECRET_KEY"] == KEY
        assert found["DJANGO_ALLOWED_HOSTS"] == found["ALLOWED_HOSTS"] == "localhost,127.0.0.1,example.com,www.example.com"

    def test_app_env_names_every_fact_of_the_stack(self, tmp_path):
        mapping = {"DB_HOST": "database2.host", "DB_PORT": "database2.port", "DB_NAME": "database2.name",
                   "DB_USER": "database2.user", "DB_PASSWORD": "database2.password",
                   "DB_PASSWORD_FILE": "database2.password_file", "MAIN_DB": "database1.url",
                   "KEY": "secret_key", "KEY_FILE": "secret_key_file", "HOSTS": "allowed_hosts",
                   "DOMAINS": "domains", "USE_HTTPS": "https"}
        environ = self.environ(tmp_path, STACK_APP_ENV=json.dumps(mapping), DATABASE2_HOST="db.internal")
        found = stackenv.conventional_variables(environ)
        assert {name: found[name] for name in mapping} == {
            "DB_HOST": "db.internal", "DB_PORT": "5432", "DB_NAME": "database2", "DB_USER": "app",
            "DB_PASSWORD": PASSWORDS["database2"], "DB_PASSWORD_FILE": str(tmp_path / "secrets/database2_password"),
            "MAIN_DB": found["DATABASE_URL"], "KEY": KEY, "KEY_FILE": str(tmp_path / "secrets/django_secret_key"),
            "HOSTS": "localhost,127.0.0.1,example.com,www.example.com", "DOMAINS": "example.com,www.example.com",
            "USE_HTTPS": "false"}

    def test_outside_the_stack_there_is_nothing_to_derive(self):
        assert stackenv.conventional_variables({"PATH": "/usr/bin"}) == {}

    @pytest.mark.parametrize("mapping, message", [
        ('{"DB_HOST": "database3.host"}', "STACK_APP_ENV: DB_HOST = 'database3.host': 'database3' is not one of the stack's databases (DJANGO_DATABASES='database1,database2')"),
        ('{"DB_HOST": "database1.hostname"}', "STACK_APP_ENV: DB_HOST = 'database1.hostname' is not a fact of the stack: use secret_key, secret_key_file, allowed_hosts, domains, https or <database>.host|port|name|user|password|password_file|url"),
        ('{"DB_HOST": "hosts"}', "STACK_APP_ENV: DB_HOST = 'hosts' is not a fact of the stack"),
        ('{"db_host": "database1.host"}', "STACK_APP_ENV: 'db_host' is not a variable name (A-Z, 0-9, _)"),
        ('{"DB_PORT": 5432}', 'STACK_APP_ENV is not a JSON object of NAME: "FACT" ([app.env] in config/stack.toml)'),
        ('["DB_HOST"]', 'STACK_APP_ENV is not a JSON object of NAME: "FACT"'),
        ("DB_HOST=database1.host", "STACK_APP_ENV is not JSON: Expecting value: line 1 column 1 (char 0)"),
    ], ids=["unknown-database", "unknown-database-fact", "unknown-fact", "lower-case-name", "not-a-string", "not-an-object", "not-json"])
    def test_a_bad_mapping_is_refused_in_one_line(self, tmp_path, mapping, message):
        from django.core.exceptions import ImproperlyConfigured

        with pytest.raises(ImproperlyConfigured) as raised:
            stackenv.conventional_variables(self.environ(tmp_path, STACK_APP_ENV=mapping))
        assert str(raised.value).startswith(message) and "\n" not in str(raised.value)

    def test_a_password_file_fact_needs_a_password_file(self, tmp_path):
        from django.core.exceptions import ImproperlyConfigured

        environ = self.environ(tmp_path, STACK_APP_ENV='{"DB_PASSWORD_FILE": "database2.password_file"}')
        environ["DATABASE2_PASSWORD"] = environ.pop("DATABASE2_PASSWORD_FILE") and "from-the-environment"
        with pytest.raises(ImproperlyConfigured, match=r"^STACK_APP_ENV: DB_PASSWORD_FILE = 'database2.password_file': DATABASE2_PASSWORD_FILE is not set$"):
            stackenv.conventional_variables(environ)

    @pytest.mark.parametrize("variable, message", [
        ("DJANGO_SECRET_KEY_FILE", "DJANGO_SECRET_KEY_FILE='{missing}' cannot be read: No such file or directory"),
        ("DATABASE2_PASSWORD_FILE", "DATABASE2_PASSWORD_FILE='{missing}' cannot be read: No such file or directory"),
    ], ids=["secret-key", "database-password"])
    def test_a_missing_secret_file_is_named(self, tmp_path, variable, message):
        from django.core.exceptions import ImproperlyConfigured

        missing = str(tmp_path / "nowhere")
        with pytest.raises(ImproperlyConfigured) as raised:
            stackenv.conventional_variables(self.environ(tmp_path, **{variable: missing}))
        assert str(raised.value) == message.format(missing=missing)


class TestDatabaseApps:
    def test_apps_go_to_their_database_by_django_alias(self):
        environ = {"DJANGO_DATABASES": "database1,database2", "STACK_DATABASE_APPS": "shop:database2,blog:database1"}
        assert stackenv.database_apps(environ) == {"shop": "database2", "blog": "default"}
        assert stackenv.database_apps({"DJANGO_DATABASES": "database1"}) == {}

    @pytest.mark.parametrize("apps, message", [
        ("shop:database9", "STACK_DATABASE_APPS: 'shop:database9' names a database the stack does not have (DJANGO_DATABASES='database1,database2')"),
        ("shop", "STACK_DATABASE_APPS: 'shop' is not label:database"),
        ("shop:database1,shop:database2", "STACK_DATABASE_APPS: app 'shop' is given two databases"),
        ("my-app:database1", "STACK_DATABASE_APPS: 'my-app:database1' is not label:database"),
    ], ids=["unknown-database", "no-database", "two-databases", "bad-label"])
    def test_bad_routes_are_refused_in_one_line(self, apps, message):
        from django.core.exceptions import ImproperlyConfigured

        with pytest.raises(ImproperlyConfigured) as raised:
            stackenv.database_apps({"DJANGO_DATABASES": "database1,database2", "STACK_DATABASE_APPS": apps})
        assert str(raised.value) == message


# --- settings: a project made by startproject, untouched --------------------------------

class TestPlainProject:
    def test_the_stack_decides_databases_key_hosts_folders_and_https(self, projects, tmp_path):
        env = plain_env(tmp_path, DJANGO_SITE_DOMAINS="example.com", DJANGO_HTTPS="true")
        found = settings_of(projects["plain"], env, "DATABASES", "SECRET_KEY", "ALLOWED_HOSTS", "CSRF_TRUSTED_ORIGINS",
                            "DEBUG", "STATIC_URL", "STATIC_ROOT", "MEDIA_URL", "MEDIA_ROOT", "DATABASE_ROUTERS",
                            "SECURE_PROXY_SSL_HEADER", "SECURE_SSL_REDIRECT", "SESSION_COOKIE_SECURE",
                            "CSRF_COOKIE_SECURE", "SECURE_HSTS_SECONDS", "SECURE_HSTS_INCLUDE_SUBDOMAINS",
                            "SECURE_HSTS_PRELOAD", "INSTALLED_APPS", "ROOT_URLCONF")
        assert list(found["DATABASES"]) == ["default", "database2"]
        assert database(found["DATABASES"]["default"]) == STACK_DATABASE
        assert database(found["DATABASES"]["database2"]) == {**STACK_DATABASE, "HOST": "database2", "NAME": "database2",
                                                               "PASSWORD": PASSWORDS["database2"]}
        assert found["DATABASES"]["default"]["CONN_MAX_AGE"] == 60 and found["DATABASES"]["default"]["CONN_HEALTH_CHECKS"] is True
        assert found["DATABASES"]["default"]["OPTIONS"] == {"connect_timeout": 3}
        assert found["SECRET_KEY"] == KEY
        assert found["ALLOWED_HOSTS"] == ["localhost", "127.0.0.1", "example.com"]
        assert found["CSRF_TRUSTED_ORIGINS"] == ["http://localhost:8000", "https://example.com"]
        assert found["DEBUG"] is False  # startproject's DEBUG = True
        assert (found["STATIC_URL"], found["STATIC_ROOT"], found["MEDIA_URL"], found["MEDIA_ROOT"]) == (
            "/static/", "/srv/static", "/media/", "/srv/media")
        assert found["DATABASE_ROUTERS"] == ["djangostack.routers.StackRouter"]
        assert found["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_PROTO", "https"]
        assert [found[name] for name in ("SECURE_SSL_REDIRECT", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE",
                                         "SECURE_HSTS_SECONDS", "SECURE_HSTS_INCLUDE_SUBDOMAINS",
                                         "SECURE_HSTS_PRELOAD")] == [True, True, True, 31536000, True, True]
        assert "shop" in found["INSTALLED_APPS"] and found["ROOT_URLCONF"] == "plain.urls"  # the project's own

    def test_passes_check_deploy_served_over_https_with_domains(self, projects, tmp_path):
        env = plain_env(tmp_path, DJANGO_SITE_DOMAINS="example.com", DJANGO_HTTPS="true")
        result = run(projects["plain"], ["manage.py", "check", "--deploy", "--fail-level", "WARNING"], env, check=False)
        assert result.returncode == 0, result.stderr
        assert "no issues (0 silenced)" in result.stdout

    def test_a_domain_without_subdomains_or_preload_is_told_to_check_deploy(self, projects, tmp_path):
        env = plain_env(tmp_path, DJANGO_SITE_DOMAINS="example.com", DJANGO_HTTPS="true",
                        DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS="false", DJANGO_SECURE_HSTS_PRELOAD="false")
        assert settings_of(projects["plain"], env, "SILENCED_SYSTEM_CHECKS") == {
            "SILENCED_SYSTEM_CHECKS": ["security.W005", "security.W021"]}
        result = run(projects["plain"], ["manage.py", "check", "--deploy", "--fail-level", "WARNING"], env, check=False)
        assert result.returncode == 0 and "no issues (2 silenced)" in result.stdout, result.stderr

    def test_plain_http_follows_the_environment_rather_than_being_silenced(self, projects, tmp_path):
        result = run(projects["plain"], ["manage.py", "check", "--deploy", "--fail-level", "WARNING"],
                     plain_env(tmp_path), check=False)
        assert result.returncode != 0
        assert "security.W008" in result.stderr and "security.W012" in result.stderr

    def test_outside_the_stack_the_project_keeps_its_own_settings(self, projects):
        env = outside_env("plain.settings", "plain.wsgi:application")
        found = settings_of(projects["plain"], env, "DATABASES", "SECRET_KEY", "DEBUG", "ALLOWED_HOSTS", "DATABASE_ROUTERS")
        assert found["DATABASES"]["default"]["ENGINE"] == "django.db.backends.sqlite3"
        assert found["SECRET_KEY"].startswith("django-insecure-") and found["DEBUG"] is True
        assert found["ALLOWED_HOSTS"] == [] and found["DATABASE_ROUTERS"] == []

    def test_the_stack_router_sends_listed_apps_to_their_database_and_migrates_each_there(self, projects, tmp_path):
        code = """
import django
django.setup()
from django.apps import apps
from django.db import router
item, user = apps.get_model("shop", "Item"), apps.get_model("auth", "User")
print(router.db_for_read(item), router.db_for_write(item), router.db_for_write(user))
print(*(f"{db}:{label}" for db in ("default", "database2") for label in ("shop", "auth", "contenttypes")
        if router.allow_migrate(db, label)))
print(router.allow_relation(item(), user()), router.allow_relation(user(), user()))
"""
        routed = run(projects["plain"], ["-c", code], plain_env(tmp_path, STACK_DATABASE_APPS="shop:database2"))
        assert routed.stdout.splitlines() == ["database2 database2 default",
                                              "default:auth default:contenttypes database2:shop", "False True"]
        unrouted = run(projects["plain"], ["-c", code], plain_env(tmp_path))
        assert unrouted.stdout.splitlines() == ["default default default",
                                                "default:shop default:auth default:contenttypes", "True True"]

    def test_secret_values_are_never_in_the_environment_given_nor_in_argv(self, projects, tmp_path):
        env = plain_env(tmp_path)
        code = """
import json, os
import django
django.setup()
print(json.dumps({"argv": open("/proc/self/cmdline").read(), "given": open("/proc/self/environ").read(),
                  "url": os.environ["DATABASE_URL"], "key": os.environ["DJANGO_SECRET_KEY"]}))
"""
        found = json.loads(run(projects["plain"], ["-c", code], env).stdout)
        values = [KEY, *PASSWORDS.values()]
        assert not any(value in text for value in values for text in (found["argv"], found["given"], json.dumps(env)))
        assert found["key"] == KEY and PASSWORDS["database1"] not in found["url"]  # quoted, and there


# --- settings: projects that read the conventional variables, or names of their own ------

class TestTwelveFactorProject:
    def test_without_the_overlay_the_stack_environment_fails_it(self, projects, tmp_path):
        # What the stack gave before: files only; the project reads DJANGO_SECRET_KEY.
        env = twelve_env(tmp_path, DJANGO_SETTINGS_MODULE="twelve.settings")
        result = run(projects["twelve"], ["manage.py", "check"], env, check=False)
        assert result.returncode != 0 and last_line(result) == "KeyError: 'DJANGO_SECRET_KEY'"

    def test_its_own_variables_carry_the_stacks_values(self, projects, tmp_path):
        code = """
import json
import django
django.setup()
import twelve.settings as own
print(json.dumps({"databases": own.DATABASES, "key": own.SECRET_KEY, "hosts": own.ALLOWED_HOSTS}, default=str))
"""
        result = run(projects["twelve"], ["-c", code], twelve_env(tmp_path, DJANGO_SITE_DOMAINS="example.com"))
        own = json.loads(result.stdout)
        assert database(own["databases"]["default"]) == STACK_DATABASE  # parsed by the project from DATABASE_URL
        assert own["key"] == KEY and own["hosts"] == ["localhost", "127.0.0.1", "example.com"]
        assert "SQLite" not in result.stderr and "ephemeral" not in result.stderr

    def test_https_false_wins_over_the_projects_forced_redirect(self, projects, tmp_path):
        plain_http = twelve_env(tmp_path, reachable=True)
        assert settings_of(projects["twelve"], plain_http, "SECURE_SSL_REDIRECT") == {"SECURE_SSL_REDIRECT": False}
        page = request(projects["twelve"], plain_http, "/", HTTP_HOST="localhost")
        assert page["status"] == "404 Not Found"  # the project's own answer: startproject has no page at /
        served_over_https = twelve_env(tmp_path, reachable=True, DJANGO_HTTPS="true")
        redirected, behind_tls = requests(projects["twelve"], served_over_https, ("/", {"HTTP_HOST": "localhost"}),
                                          ("/", {"HTTP_HOST": "localhost", "HTTP_X_FORWARDED_PROTO": "https"}))
        assert redirected["status"] == "301 Moved Permanently" and redirected["headers"]["Location"] == "https://localhost/"
        assert behind_tls["status"] == "404 Not Found"

    def test_the_admin_is_served_by_the_projects_application(self, projects, tmp_path):
        page = request(projects["twelve"], twelve_env(tmp_path, reachable=True), "/admin/login/", HTTP_HOST="localhost")
        assert page["status"] == "200 OK" and "Django administration" in page["body"]
        assert "/static/admin/css/" in page["body"]


class TestProjectWithNamesOfItsOwn:
    def test_app_env_gives_its_names_the_stacks_values(self, projects, tmp_path):
        code = """
import json
import django
django.setup()
import named.settings as own
print(json.dumps(own.DATABASES["default"]))
"""
        result = run(projects["named"], ["-c", code], named_env(tmp_path))
        assert database(json.loads(result.stdout)) == STACK_DATABASE
        assert "ephemeral" not in result.stderr  # it read SECRET_KEY

    def test_its_wsgi_setting_its_own_settings_module_changes_nothing(self, projects, tmp_path):
        code = """
import os
from djangostack.wsgi import application
from django.conf import settings
print(os.environ["DJANGO_SETTINGS_MODULE"], settings.SECRET_KEY == os.environ["DJANGO_SECRET_KEY"], settings.STATIC_ROOT)
"""
        result = run(projects["named"], ["-c", code], named_env(tmp_path))
        assert result.stdout.split() == ["djangostack.settings", "True", "/srv/static"]


# --- /healthz in front of the project's application ---------------------------------------

class TestHealth:
    def test_every_database_is_probed_and_a_failure_is_503_before_hosts_and_redirects(self, projects, tmp_path):
        env = plain_env(tmp_path, reachable=True, DJANGO_HTTPS="true")
        # A host the site does not allow, plain HTTP on an HTTPS site, no trailing slash:
        # none of them stands in the way.
        answer = request(projects["plain"], env, "/healthz", HTTP_HOST="127.0.0.1:8000")
        assert answer["status"] == "503 Service Unavailable"
        assert json.loads(answer["body"]) == {"status": "error", "databases": {
            "database1": "error: OperationalError", "database2": "error: OperationalError"}}
        assert answer["headers"]["Content-Type"] == "application/json"
        assert answer["headers"]["Cache-Control"] == "max-age=0, no-cache, no-store, must-revalidate, private"
        assert answer["open_connections"] == []

    def test_asked_through_nginx_it_names_no_database(self, projects, tmp_path):
        answer = request(projects["plain"], plain_env(tmp_path, reachable=True), "/healthz",
                         HTTP_HOST="example.com", HTTP_X_REAL_IP="203.0.113.9")
        assert answer["status"] == "503 Service Unavailable" and json.loads(answer["body"]) == {"status": "error"}

    def test_a_reachable_database_is_ok_and_its_connection_is_not_kept_past_its_age(self, projects, tmp_path):
        env = outside_env("plain.settings", "plain.wsgi:application")
        answer = request(projects["plain"], env, "/healthz")
        assert answer["status"] == "200 OK"
        assert json.loads(answer["body"]) == {"status": "ok", "databases": {"default": "ok"}}
        assert "no-store" in answer["headers"]["Cache-Control"]
        assert answer["open_connections"] == []  # CONN_MAX_AGE = 0: closed after the probe

    def test_every_other_path_is_the_projects_own(self, projects, tmp_path):
        answers = requests(projects["plain"], plain_env(tmp_path, reachable=True), ("/healthz/", {"HTTP_HOST": "localhost"}),
                           ("/admin", {"HTTP_HOST": "localhost"}), ("/", {"HTTP_HOST": "evil.example"}))
        assert [answer["status"] for answer in answers] == ["404 Not Found", "301 Moved Permanently", "400 Bad Request"]


# --- hello, the example, through the overlay ----------------------------------------------

class TestHello:
    def test_passes_check_deploy_served_over_https_with_domains(self, tmp_path):
        env = hello_env(tmp_path, DJANGO_SITE_DOMAINS="example.com", DJANGO_HTTPS="true")
        result = run(HELLO, ["manage.py", "check", "--deploy", "--fail-level", "WARNING"], env, check=False)
        assert result.returncode == 0, result.stderr
        assert "no issues (0 silenced)" in result.stdout

    def test_hsts_decisions_per_host_are_silenced_not_warned(self, tmp_path):
        env = hello_env(tmp_path, DJANGO_SITE_DOMAINS="example.com", DJANGO_HTTPS="true",
                        DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS="false")
        result = run(HELLO, ["manage.py", "check", "--deploy", "--fail-level", "WARNING"], env, check=False)
        assert result.returncode == 0 and "no issues (1 silenced)" in result.stdout, result.stderr

    def test_plain_http_follows_the_environment(self, tmp_path):
        result = run(HELLO, ["manage.py", "check", "--deploy", "--fail-level", "WARNING"], hello_env(tmp_path), check=False)
        assert result.returncode != 0 and "security.W012" in result.stderr and "security.W008" in result.stderr

    def test_keeps_its_own_router_and_storages_and_gets_the_stacks_databases(self, tmp_path):
        found = settings_of(HELLO, hello_env(tmp_path), "DATABASE_ROUTERS", "DATABASES", "STORAGES", "MIDDLEWARE", "SECRET_KEY")
        assert found["DATABASE_ROUTERS"] == ["hello.routers.AppDatabaseRouter"]
        assert database(found["DATABASES"]["default"]) == STACK_DATABASE and list(found["DATABASES"]) == ["default", "database2"]
        assert found["STORAGES"]["staticfiles"]["BACKEND"].endswith("ManifestStaticFilesStorage")
        assert found["SECRET_KEY"] == KEY
        assert not any("health" in middleware.lower() for middleware in found["MIDDLEWARE"])  # the stack answers /healthz

    def test_healthz_names_both_databases(self, tmp_path):
        answer = request(HELLO, hello_env(tmp_path, reachable=True), "/healthz", HTTP_HOST="127.0.0.1:8000")
        assert answer["status"] == "503 Service Unavailable"
        assert json.loads(answer["body"])["databases"] == {"database1": "error: OperationalError",
                                                           "database2": "error: OperationalError"}

    @pytest.mark.parametrize("key, message", [
        ("django-insecure-" + "a1" * 30, "DJANGO_SECRET_KEY is not a real secret key: use at least 50 random characters"),
        ("short-key", "DJANGO_SECRET_KEY is not a real secret key"),
        ("a" * 60, "DJANGO_SECRET_KEY is not a real secret key"),
        ("", "DJANGO_SECRET_KEY is not set: the stack passes it as the file DJANGO_SECRET_KEY_FILE names"),
    ], ids=["insecure-prefix", "short", "few-characters", "empty"])
    def test_refuses_a_weak_secret_key_in_one_line(self, tmp_path, key, message):
        env = hello_env(tmp_path)
        Path(env["DJANGO_SECRET_KEY_FILE"]).write_text(key)
        result = run(HELLO, ["manage.py", "check"], env, check=False)
        assert result.returncode != 0 and message in last_line(result)


# --- the stack's processes ([[processes]]): their command behind djangostack.run ---------

# What a process's command sees: the variables named on the command line, as JSON.
SHOW_ENV = "import json, os, sys; print(json.dumps({name: os.environ.get(name) for name in sys.argv[1:]}))"


class TestRun:
    def runs(self, project, env, *argv):
        return run(project, ["-m", "djangostack.run", *argv], env, check=False)

    def test_the_command_gets_the_apps_conventional_variables(self, projects, tmp_path):
        result = self.runs(projects["twelve"], twelve_env(tmp_path), sys.executable, "-c", SHOW_ENV, "DATABASE_URL",
                           "DJANGO_SECRET_KEY", "DJANGO_ALLOWED_HOSTS")
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == {
            "DATABASE_URL": stackenv.conventional_variables(twelve_env(tmp_path))["DATABASE_URL"],
            "DJANGO_SECRET_KEY": KEY, "DJANGO_ALLOWED_HOSTS": "localhost,127.0.0.1"}

    def test_a_variable_already_set_keeps_its_value(self, projects, tmp_path):
        env = twelve_env(tmp_path, DATABASE_URL="postgres://elsewhere/db")
        result = self.runs(projects["twelve"], env, sys.executable, "-c", SHOW_ENV, "DATABASE_URL")
        assert json.loads(result.stdout) == {"DATABASE_URL": "postgres://elsewhere/db"}

    def test_the_command_replaces_it_and_gets_its_signals(self, projects, tmp_path):
        # The stop signal reaches the command itself: it is the process the engine started.
        code = "import os, signal, sys, time; signal.signal(signal.SIGTERM, lambda *_: sys.exit(7)); print(os.getpid(), flush=True); time.sleep(30)"
        process = subprocess.Popen([sys.executable, "-m", "djangostack.run", sys.executable, "-c", code],
                                   cwd=projects["twelve"], env=twelve_env(tmp_path), stdout=subprocess.PIPE, text=True)
        try:
            assert int(process.stdout.readline()) == process.pid
            process.terminate()
            assert process.wait(timeout=30) == 7
        finally:
            process.kill()

    def test_a_celery_worker_with_health_celery_touches_its_heartbeat_file_and_gets_its_signals(self, projects, tmp_path):
        """health = "celery": the worker runs in this process (Celery's own command line), and
        its readiness and event heartbeats (every 2 s) touch the file its health test reads."""
        (tmp_path / "jobsapp.py").write_text("from celery import Celery\napp = Celery('jobsapp', broker='memory://')\n")
        beat = tmp_path / "heartbeat"
        env = twelve_env(tmp_path, STACK_CELERY_HEARTBEAT=str(beat))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (env.get("PYTHONPATH"), str(tmp_path))))
        process = subprocess.Popen([sys.executable, "-m", "djangostack.run", "celery", "-A", "jobsapp", "worker",
                                    "--pool", "solo", "--loglevel", "INFO"], cwd=projects["twelve"], env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 60
            while not beat.exists() and time.monotonic() < deadline and process.poll() is None:
                time.sleep(0.2)
            assert beat.exists(), process.stderr.read() if process.poll() is not None else "no heartbeat in 60 s"
            first = beat.stat().st_mtime_ns
            deadline = time.monotonic() + 10
            while beat.stat().st_mtime_ns == first and time.monotonic() < deadline:
                time.sleep(0.2)
            assert beat.stat().st_mtime_ns > first  # touched again: the heartbeats go on
            # SIGHUP restarts the worker (Celery re-execs its own argv, this module's file): its
            # heartbeats go on.
            process.send_signal(signal.SIGHUP)
            cmdline = Path(f"/proc/{process.pid}/cmdline")
            deadline = time.monotonic() + 60
            while b"celery_worker.py" not in cmdline.read_bytes() and time.monotonic() < deadline:
                time.sleep(0.2)
            beat.unlink()
            while not beat.exists() and time.monotonic() < deadline and process.poll() is None:
                time.sleep(0.2)
            assert beat.exists() and process.poll() is None
            # The worker is this process: the stop signal reaches it, and it shuts down warm.
            process.terminate()
            assert process.wait(timeout=30) == 0
            assert process.stderr.read().count(" ready.") == 2
        finally:
            process.kill()

    def test_health_celery_on_another_program_says_so_and_runs_it(self, projects, tmp_path):
        env = twelve_env(tmp_path, STACK_CELERY_HEARTBEAT=str(tmp_path / "heartbeat"))
        result = run(projects["twelve"], ["-m", "djangostack.run", "true"], env, check=False)
        assert result.returncode == 0 and result.stderr == (
            "djangostack.run: health = \"celery\" is for a Celery worker (celery ... worker); 'true' touches no "
            "heartbeat\n")

    def test_a_management_command_runs_with_the_stacks_settings(self, projects, tmp_path):
        result = self.runs(projects["plain"], plain_env(tmp_path), sys.executable, "manage.py", "diffsettings",
                           "--output", "unified")
        assert result.returncode == 0, result.stderr
        assert "+ CELERY_TASK_ACKS_LATE = True" in result.stdout

    def test_secret_values_are_not_in_its_argv(self, projects, tmp_path):
        result = self.runs(projects["twelve"], twelve_env(tmp_path), sys.executable, "-c",
                           "print(open('/proc/self/cmdline').read())")
        assert KEY not in result.stdout and PASSWORDS["database1"] not in result.stdout

    @pytest.mark.parametrize("argv, status, message", [
        ((), 2, "usage: python -m djangostack.run COMMAND [ARGUMENT...]"),
        (("no-such-program-here", "x"), 127, "djangostack.run: cannot run 'no-such-program-here': No such file or directory"),
    ], ids=["no-command", "no-such-program"])
    def test_a_wrong_command_is_said_in_one_line(self, projects, tmp_path, argv, status, message):
        result = self.runs(projects["twelve"], twelve_env(tmp_path), *argv)
        assert (result.returncode, result.stderr) == (status, message + "\n")

    def test_a_missing_secret_is_said_in_one_line_before_the_command_runs(self, projects, tmp_path):
        env = twelve_env(tmp_path, DJANGO_SECRET_KEY_FILE=str(tmp_path / "gone"))
        result = self.runs(projects["twelve"], env, "touch", str(tmp_path / "ran"))
        assert result.returncode == 1 and result.stderr.startswith("djangostack.run: ") and result.stderr.count("\n") == 1
        assert not (tmp_path / "ran").exists()


class TestCeleryDefaults:
    NAMES = ("CELERY_TASK_ACKS_LATE", "CELERY_TASK_REJECT_ON_WORKER_LOST", "CELERY_WORKER_PREFETCH_MULTIPLIER",
             "CELERY_WORKER_POOL", "CELERY_BROKER_TRANSPORT_OPTIONS")

    def test_a_project_that_sets_none_gets_them(self, projects, tmp_path):
        assert settings_of(projects["plain"], plain_env(tmp_path), *self.NAMES) == {
            "CELERY_TASK_ACKS_LATE": True, "CELERY_TASK_REJECT_ON_WORKER_LOST": True,
            "CELERY_WORKER_PREFETCH_MULTIPLIER": 1, "CELERY_WORKER_POOL": "djangostack.prefork:TaskPool",
            "CELERY_BROKER_TRANSPORT_OPTIONS": {"visibility_timeout": 300, "unacked_restore_throttle": 1}}

    def test_a_projects_own_choice_wins(self, tmp_path):
        project = startproject(tmp_path, "chosen")
        with (project / "chosen" / "settings.py").open("a") as settings:
            settings.write("\nCELERY_TASK_ACKS_LATE = False\nCELERY_BROKER_TRANSPORT_OPTIONS = {'visibility_timeout': 60}\n")
        env = stack_env(tmp_path, "chosen.settings", "chosen.wsgi:application")
        found = settings_of(project, env, *self.NAMES)
        assert found["CELERY_TASK_ACKS_LATE"] is False and found["CELERY_BROKER_TRANSPORT_OPTIONS"] == {"visibility_timeout": 60}
        assert found["CELERY_WORKER_PREFETCH_MULTIPLIER"] == 1

    def test_the_visibility_timeout_is_the_environments_and_checked(self, projects, tmp_path):
        found = settings_of(projects["plain"], plain_env(tmp_path, STACK_CELERY_VISIBILITY_TIMEOUT="15"), *self.NAMES)
        assert found["CELERY_BROKER_TRANSPORT_OPTIONS"] == {"visibility_timeout": 15, "unacked_restore_throttle": 1}
        result = run(projects["plain"], ["manage.py", "check"], plain_env(tmp_path, STACK_CELERY_VISIBILITY_TIMEOUT="0"),
                     check=False)
        assert last_line(result) == ("django.core.exceptions.ImproperlyConfigured: STACK_CELERY_VISIBILITY_TIMEOUT=0 "
                                     "must be a positive number of seconds")

    @pytest.mark.parametrize("broker, transport", [
        ("redis://:secret@redis:6379/0", "djangostack.broker:Transport"),
        ("rediss://:secret@redis:6380/0", "djangostack.broker:Transport"),
        ("amqp://app:secret@broker:5672//", None),
        ("", None),
    ], ids=["redis", "redis-tls", "rabbitmq", "no-broker"])
    def test_a_redis_broker_gets_the_transport_that_takes_a_job_in_one_step(self, projects, tmp_path, broker, transport):
        code = ("import django; django.setup(); from django.conf import settings; "
                "print(getattr(settings, 'CELERY_BROKER_TRANSPORT', None))")
        result = run(projects["plain"], ["-c", code], plain_env(tmp_path, CELERY_BROKER_URL=broker))
        assert result.stdout == f"{transport}\n"

    @pytest.mark.parametrize("prelude, transport, said", [
        ("import sys; sys.modules['kombu'] = None", None, ""),
        ("from kombu.transport import redis; del redis.Channel._brpop_read", None,
         "kombu's own is used, and a worker killed while taking a job may lose it"),
    ], ids=["no-kombu", "a-kombu-it-does-not-fit"])
    def test_without_a_kombu_it_fits_kombus_own_transport_stays(self, projects, tmp_path, prelude, transport, said):
        code = (f"{prelude}; import django; django.setup(); from django.conf import settings; "
                "print(getattr(settings, 'CELERY_BROKER_TRANSPORT', None))")
        result = run(projects["plain"], ["-c", code], plain_env(tmp_path, CELERY_BROKER_URL="redis://redis:6379/0"))
        assert result.stdout == f"{transport}\n"
        assert said in result.stderr and ("_brpop_read" in result.stderr) == bool(said)

    def test_a_projects_own_transport_wins(self, tmp_path):
        project = startproject(tmp_path, "chosen")
        with (project / "chosen" / "settings.py").open("a") as settings:
            settings.write("\nCELERY_BROKER_TRANSPORT = 'redis'\n")
        env = stack_env(tmp_path, "chosen.settings", "chosen.wsgi:application", CELERY_BROKER_URL="redis://redis:6379/0")
        assert settings_of(project, env, "CELERY_BROKER_TRANSPORT") == {"CELERY_BROKER_TRANSPORT": "redis"}

    def test_outside_the_stack_nothing_is_added(self, projects):
        code = "import django; django.setup(); from django.conf import settings; print(hasattr(settings, 'CELERY_TASK_ACKS_LATE'))"
        result = run(projects["plain"], ["-c", code], outside_env("plain.settings", "plain.wsgi:application"))
        assert result.stdout == "False\n"


def append_line(path):
    with open(path, "a") as handle:
        handle.write("ran\n")


class TestWarmShutdown:
    def test_a_job_its_child_has_run_is_acknowledged_not_handed_back(self, tmp_path):
        """djangostack.prefork: at a warm shutdown (the worker's Pool.close, Consumer.on_close's
        flush, then the pool's stop), a job already written to a child process, which the child
        has run, gets its result callback (the late ack). Celery's own pool drops it from its
        cache at the flush: the ack is never sent, the channel's close hands the job back and
        another worker runs it again (seen in the e2e rollback: one job run twice)."""
        from celery import Celery
        from kombu.asynchronous import Hub, set_event_loop

        from djangostack.prefork import TaskPool

        hub = Hub()
        set_event_loop(hub)
        pool = TaskPool(limit=1, threads=False, putlocks=False, initargs=(Celery("t"), "t@host"))
        out, acked = tmp_path / "ran", []
        try:
            pool.start()
            pool.register_with_event_loop(hub)
            deadline = time.monotonic() + 20
            while not pool._pool._fileno_to_inq and time.monotonic() < deadline:
                hub.run_once()
            job = pool._pool.apply_async(append_line, (str(out),), callback=acked.append)
            while (job._write_to is None or pool._pool._active_writers) and time.monotonic() < deadline:
                hub.run_once()
            # The child runs it; its "accepted" and its result wait unread, as when SIGTERM comes.
            while not out.exists() and time.monotonic() < deadline:
                time.sleep(0.01)
            assert not job._accepted, "the parent read the child's answer first: the race was not set up"
            pool.close()
            pool.flush()
            pool.stop()
        finally:
            hub.close()
            set_event_loop(None)
        assert out.read_text() == "ran\n" and len(acked) == 1


# --- what the stack gives wrong, in one line ---------------------------------------------

class TestErrors:
    @pytest.mark.parametrize("change, message", [
        ({"STACK_APP_SETTINGS": ""}, "STACK_APP_SETTINGS is not set: it names the project's settings module ([app] settings in config/stack.toml)"),
        ({"STACK_APP_SETTINGS": "plain.production"}, "STACK_APP_SETTINGS='plain.production' cannot be imported (No module named 'plain.production'): check [app] settings in config/stack.toml"),
        ({"STACK_APP_SETTINGS": "mysite.settings"}, "STACK_APP_SETTINGS='mysite.settings' cannot be imported (No module named 'mysite')"),
        ({"DATABASE2_PASSWORD_FILE": ""}, "DATABASE2_PASSWORD_FILE is not set: the app needs the password of database 'database2'"),
        ({"DJANGO_ALLOWED_HOSTS": ""}, "DJANGO_ALLOWED_HOSTS is empty: list the host names the site answers to"),
        ({"DJANGO_HTTPS": "maybe"}, "DJANGO_HTTPS='maybe' is not a boolean; use true or false"),
        ({"STACK_DATABASE_APPS": "shop:database3"}, "STACK_DATABASE_APPS: 'shop:database3' names a database the stack does not have"),
        ({"STACK_APP_ENV": '{"DB_HOST": "database3.host"}'}, "STACK_APP_ENV: DB_HOST = 'database3.host': 'database3' is not one of the stack's databases"),
    ], ids=["no-settings", "no-such-settings", "no-such-package", "no-password", "no-hosts", "bad-boolean", "bad-route", "bad-mapping"])
    def test_settings(self, projects, tmp_path, change, message):
        result = run(projects["plain"], ["manage.py", "check"], plain_env(tmp_path, **change), check=False)
        assert result.returncode != 0 and message in last_line(result)
        assert last_line(result).startswith("django.core.exceptions.ImproperlyConfigured: ")

    def test_a_package_the_project_lacks_is_the_projects_own_error(self, projects, tmp_path):
        broken = startproject(tmp_path, "broken")
        with (broken / "broken" / "settings.py").open("a") as settings:
            settings.write("\nimport environ  # django-environ, not installed\n")
        env = stack_env(tmp_path, "broken.settings", "broken.wsgi:application")
        result = run(broken, ["manage.py", "check"], env, check=False)
        assert last_line(result) == "ModuleNotFoundError: No module named 'environ'"

    @pytest.mark.parametrize("wsgi, message", [
        ("", "STACK_APP_WSGI is not set: it names the project's WSGI application, module:attribute ([app] wsgi in config/stack.toml)"),
        ("plain.wsgi.application", "STACK_APP_WSGI='plain.wsgi.application' is not module:attribute (like mysite.wsgi:application; [app] wsgi in config/stack.toml)"),
        ("plain.asgi2:application", "STACK_APP_WSGI='plain.asgi2:application' cannot be imported (No module named 'plain.asgi2'): check [app] wsgi in config/stack.toml"),
        ("plain.wsgi:app", "STACK_APP_WSGI='plain.wsgi:app': plain.wsgi has no 'app'"),
    ], ids=["unset", "no-attribute", "no-module", "no-such-attribute"])
    def test_wsgi(self, projects, tmp_path, wsgi, message):
        result = run(projects["plain"], ["-c", "import djangostack.wsgi"], plain_env(tmp_path, STACK_APP_WSGI=wsgi), check=False)
        assert result.returncode != 0 and last_line(result) == f"django.core.exceptions.ImproperlyConfigured: {message}"


# --- the server the image runs, with the stack's configuration -------------------------

@contextlib.contextmanager
def gunicorn(project, env, log, app="djangostack.wsgi:application"):
    """Gunicorn with the image's configuration serving APP in PROJECT, its log at LOG:
    (process, port) once /healthz answers."""
    port = closed_port()
    with log.open("w") as stderr:
        server = subprocess.Popen([str(Path(sys.executable).parent / "gunicorn"), "--config",
                                   str(GLUE / "djangostack" / "gunicorn_conf.py"), app],
                                  cwd=project, env={**env, "GUNICORN_BIND": f"127.0.0.1:{port}"},
                                  stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and server.poll() is None:
            try:
                fetch(port, "/healthz")
                break
            except OSError:
                time.sleep(0.2)
        else:
            raise AssertionError(f"gunicorn did not answer: {log.read_text()}")
        yield server, port
    finally:
        server.terminate()
        server.wait(timeout=60)


def children(pid):
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def cpu_seconds(pid):
    """User and system CPU seconds PID has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class TestGunicorn:
    def test_serves_a_project_through_the_glue_with_no_secret_in_its_processes(self, projects, tmp_path):
        env = twelve_env(tmp_path, reachable=True, GUNICORN_WORKERS="2")
        with gunicorn(projects["twelve"], env, tmp_path / "gunicorn.log") as (server, port):
            health = fetch(port, "/healthz")
            page = fetch(port, "/admin/login/", Host="localhost")
            workers = children(server.pid)
            processes = [server.pid, *workers]
            seen = b"".join(Path(f"/proc/{pid}/{part}").read_bytes() for pid in processes for part in ("cmdline", "environ"))
        assert health[0] == 503 and json.loads(health[1]) == {"status": "error", "databases": {"database1": "error: OperationalError"}}
        assert page[0] == 200 and "Django administration" in page[1]
        assert workers  # each worker's environment checked too
        assert not any(value.encode() in seen for value in (KEY, *PASSWORDS.values()))

    @pytest.mark.parametrize("preload", ["1", "0"])
    def test_the_workers_are_forked_from_a_master_that_loaded_the_project_once(self, projects, tmp_path, preload):
        """Preloaded (the default), the CPU of importing Django and the project is the
        master's alone; GUNICORN_PRELOAD=0 spends it again in every worker."""
        env = twelve_env(tmp_path, reachable=True, GUNICORN_WORKERS="3",
                         **({"GUNICORN_PRELOAD": preload} if preload == "0" else {}))
        with gunicorn(projects["twelve"], env, tmp_path / "gunicorn.log") as (server, port):
            deadline = time.monotonic() + 60
            while len(workers := children(server.pid)) < 3 and time.monotonic() < deadline:
                time.sleep(0.2)
            # Not preloaded, a worker loads the project as it boots: wait until each has (or
            # the deadline), so that a worker still importing is not taken for a light one.
            while preload == "0" and time.monotonic() < deadline and \
                    min(map(cpu_seconds, workers)) <= cpu_seconds(server.pid):
                time.sleep(0.2)
            fetch(port, "/healthz")
            master, each = cpu_seconds(server.pid), [cpu_seconds(pid) for pid in workers]
        assert len(each) == 3
        if preload == "1":
            # Measured: the master 0.34 CPU-s, the workers 0.01 at most.
            assert max(each) * 2 < master, (master, each)
        else:
            assert min(each) > master, (master, each)

    def test_a_bare_wsgi_application_is_served_preloaded_too(self, tmp_path):
        """The same configuration serves an application without Django (the bench's ceiling):
        nothing to close before a fork, no settings asked for."""
        (tmp_path / "bare.py").write_text(
            "def application(environ, start_response):\n"
            "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
            "    return [b'bare']\n")
        env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(GLUE), "GUNICORN_WORKERS": "2"}
        with gunicorn(tmp_path, env, tmp_path / "gunicorn.log", app="bare:application") as (server, port):
            deadline = time.monotonic() + 30
            while len(children(server.pid)) < 2 and server.poll() is None and time.monotonic() < deadline:
                time.sleep(0.2)
            assert fetch(port, "/") == (200, "bare")
            assert server.poll() is None and len(children(server.pid)) == 2, (tmp_path / "gunicorn.log").read_text()

    def test_a_stop_while_the_project_loads_ends_it_at_once_as_pid_1(self, tmp_path):
        """In its container Gunicorn is PID 1, for which the kernel drops a signal without a
        handler: before Gunicorn installs its own (after loading the project), a stop must not
        be lost, or the engine waits out the stop grace period (40 s) and kills it."""
        (tmp_path / "slow.py").write_text(
            "import pathlib, time\npathlib.Path('loading').touch()\ntime.sleep(30)\n"
            "def application(environ, start_response):\n    start_response('200 OK', [])\n    return [b'']\n")
        env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(GLUE), "GUNICORN_WORKERS": "1",
               "GUNICORN_BIND": f"127.0.0.1:{closed_port()}"}
        # A PID namespace of its own (as a container has), Gunicorn its PID 1.
        server = subprocess.Popen(["unshare", "--pid", "--fork", "--kill-child", str(Path(sys.executable).parent / "gunicorn"),
                                   "--config", str(GLUE / "djangostack" / "gunicorn_conf.py"), "slow:application"],
                                  cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 30
            while not (tmp_path / "loading").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            (pid1,) = children(server.pid)
            assert Path(f"/proc/{pid1}/status").read_text().split("NSpid:")[1].split("\n")[0].split()[-1] == "1"
            stopped = time.monotonic()
            os.kill(pid1, signal.SIGTERM)
            server.wait(timeout=10)  # 30 s left of its loading: lost, the stop would wait for them
            assert time.monotonic() - stopped < 5
        finally:
            server.kill()
            server.wait()

    def test_a_reload_keeps_the_handlers_of_the_running_master(self):
        """SIGHUP makes a running master read its configuration again: the handlers it
        installed (a graceful stop) must stay, only Python's own are replaced."""
        code = ("import runpy, signal\n"
                "conf = {conf!r}\n"
                "runpy.run_path(conf)\n"
                "first = signal.getsignal(signal.SIGTERM)\n"
                "assert first.__name__ == '_stop_while_loading', first\n"
                "graceful = lambda *_: None\n"
                "signal.signal(signal.SIGTERM, graceful)\n"
                "runpy.run_path(conf)\n"
                "assert signal.getsignal(signal.SIGTERM) is graceful\n"
                "print('kept')\n").format(conf=str(GLUE / "djangostack" / "gunicorn_conf.py"))
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                                env={"PATH": os.environ["PATH"]})
        assert result.stdout == "kept\n", result.stderr

    def test_a_preload_switch_other_than_0_or_1_stops_gunicorn_with_its_name(self, projects, tmp_path):
        env = twelve_env(tmp_path, reachable=True, GUNICORN_PRELOAD="yes")
        result = subprocess.run([str(Path(sys.executable).parent / "gunicorn"), "--config",
                                 str(GLUE / "djangostack" / "gunicorn_conf.py"), "djangostack.wsgi:application"],
                                cwd=projects["twelve"], env=env, capture_output=True, text=True, timeout=60)
        assert result.returncode != 0 and "GUNICORN_PRELOAD='yes': 1 (on) or 0 (off)" in result.stderr, result.stderr


def fetch(port, path, **headers):
    """(status, body) of a GET to the server on 127.0.0.1:PORT."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never a proxy the shell names
    try:
        with direct.open(request, timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as answer:
        return answer.code, answer.read().decode()
