"""Django settings read only from the environment (run in a subprocess, as in the container)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

MANAGE = Path(__file__).resolve().parent.parent / "hello" / "manage.py"
REAL_KEY = "k3y-" + "x7Qp9vR2mT5wZ8bN4cF6hJ1kL3sD0gA" * 2
BASE_ENV = {"PATH": os.environ["PATH"], "DJANGO_ALLOWED_HOSTS": "example.com"}


def manage(*args, **env):
    result = subprocess.run([sys.executable, str(MANAGE), *args], env={**BASE_ENV, **env},
                            capture_output=True, text=True, timeout=60)
    return result.returncode, result.stdout + result.stderr


def production(**env):
    return {"DJANGO_SETTINGS_MODULE": "hello.settings.production", **env}


class TestProduction:
    def test_refuses_to_start_without_a_secret_key(self):
        code, out = manage("check", **production())
        assert code != 0
        assert "DJANGO_SECRET_KEY is not set" in out

    @pytest.mark.parametrize("key", ["django-insecure-" + "a1" * 30, "short-key", "a" * 60], ids=["insecure-prefix", "short", "few-characters"])
    def test_refuses_a_weak_secret_key(self, key):
        code, out = manage("check", **production(DJANGO_SECRET_KEY=key))
        assert code != 0
        assert "not a real secret key" in out

    def test_passes_check_deploy_when_served_over_https(self):
        code, out = manage("check", "--deploy", "--fail-level", "WARNING",
                           **production(DJANGO_SECRET_KEY=REAL_KEY, DJANGO_HTTPS="true"))
        assert code == 0, out
        assert "no issues" in out

    def test_tls_settings_follow_the_environment_rather_than_being_silenced(self):
        code, out = manage("check", "--deploy", "--fail-level", "WARNING",
                           **production(DJANGO_SECRET_KEY=REAL_KEY, DJANGO_HTTPS="false"))
        assert code != 0
        assert "security.W012" in out and "security.W008" in out

    def test_refuses_empty_allowed_hosts(self):
        code, out = manage("check", **production(DJANGO_SECRET_KEY=REAL_KEY, DJANGO_ALLOWED_HOSTS=""))
        assert code != 0 and "DJANGO_ALLOWED_HOSTS is empty" in out


class TestDatabases:
    def test_without_configuration_it_uses_sqlite(self, tmp_path):
        code, out = manage("shell", "-c", "from django.conf import settings; print(settings.DATABASES['default']['ENGINE'])",
                           DJANGO_SQLITE_PATH=str(tmp_path / "db.sqlite3"))
        assert code == 0, out
        assert out.strip().endswith("django.db.backends.sqlite3")

    def test_databases_come_from_the_stack(self):
        from importlib import import_module

        sys.path.insert(0, str(MANAGE.parent))
        try:
            env = import_module("hello.settings.env")
        finally:
            sys.path.remove(str(MANAGE.parent))
        dbs = env.postgres_databases({"DJANGO_DATABASES": "database1,database2",
                                      "DATABASE1_PASSWORD": "p1", "DATABASE2_PASSWORD": "p2"})
        assert list(dbs) == ["default", "database2"]
        assert dbs["default"]["HOST"] == "database1" and dbs["default"]["PASSWORD"] == "p1"
        assert dbs["database2"]["NAME"] == "database2" and dbs["database2"]["USER"] == "app"
        with pytest.raises(ValueError, match="DATABASE2_PASSWORD_FILE is not set"):
            env.postgres_databases({"DJANGO_DATABASES": "database1,database2", "DATABASE1_PASSWORD": "p1"})


def test_dev_runserver_settings_need_nothing(tmp_path):
    code, out = manage("check", DJANGO_SQLITE_PATH=str(tmp_path / "db.sqlite3"))
    assert code == 0, out
