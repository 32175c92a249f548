"""Typed readers for environment variables, and the database list the stack passes in."""
import os
import re

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name, default=""):
    return os.environ.get(name, default)


def env_secret(name, environ=None):
    """A secret from the file NAME_FILE names (how the stack passes secrets: files under
    /run/secrets, never environment values `docker inspect` would show), else from NAME
    itself (for running outside the stack); "" when neither is set."""
    environ = os.environ if environ is None else environ
    path = environ.get(f"{name}_FILE")
    if path:
        try:
            with open(path, encoding="utf-8") as handle:
                return handle.read().strip()
        except OSError as exc:
            raise ValueError(f"{name}_FILE={path!r} cannot be read: {exc.strerror}") from None
    return environ.get(name, "")


def env_bool(name, default=False):
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{name}={raw!r} is not a boolean; use true or false")


def env_int(name, default):
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not an integer") from None


def env_list(name, default=()):
    raw = os.environ.get(name)
    if raw is None:
        return list(default)
    return [item.strip() for item in raw.split(",") if item.strip()]


_ALIAS = re.compile(r"^[a-z][a-z0-9_]*$")


def postgres_databases(environ=None):
    """Build Django's DATABASES from DJANGO_DATABASES, or return None when it is unset.

    DJANGO_DATABASES is the comma-separated list of the stack's databases; the first one is
    Django's `default` alias, the others keep their own name as alias. Each database NAME is
    a PostgreSQL server reachable at host NAME (its compose service) with database NAME,
    user `app` (the role that owns it; not a superuser) and the password in the file
    NAME_PASSWORD_FILE names (or NAME_PASSWORD). NAME_HOST, NAME_PORT, NAME_DB and NAME_USER
    override the conventions.
    """
    environ = os.environ if environ is None else environ
    names = [n.strip() for n in environ.get("DJANGO_DATABASES", "").split(",") if n.strip()]
    if not names:
        return None
    databases = {}
    for index, name in enumerate(names):
        if not _ALIAS.match(name):
            raise ValueError(f"DJANGO_DATABASES: {name!r} is not a valid database name")
        prefix = name.upper()
        password = env_secret(f"{prefix}_PASSWORD", environ)
        if not password:
            raise ValueError(
                f"{prefix}_PASSWORD_FILE is not set: the app needs the password of database "
                f"{name!r} (it lives in config/secrets/{name}_password)"
            )
        databases["default" if index == 0 else name] = {
            "ENGINE": "django.db.backends.postgresql",
            "HOST": environ.get(f"{prefix}_HOST", name),
            "PORT": environ.get(f"{prefix}_PORT", "5432"),
            "NAME": environ.get(f"{prefix}_DB", name),
            "USER": environ.get(f"{prefix}_USER", "app"),
            "PASSWORD": password,
            "CONN_MAX_AGE": int(environ.get("DJANGO_CONN_MAX_AGE", "60")),
            "CONN_HEALTH_CHECKS": True,
            "OPTIONS": {"connect_timeout": 3},
        }
    return databases
