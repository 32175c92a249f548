"""What the stack tells the app, read from the environment and the secret files it names.

The stack puts no secret value in the environment (`docker inspect` would show it): a secret
NAME is a file whose path NAME_FILE gives. The readers here turn those into values, and
`stack_variables` into the names projects commonly read (DATABASE_URL, DJANGO_SECRET_KEY,
REDIS_URL, CELERY_BROKER_URL, ...) and the names `[app.env]` in config/stack.toml maps to
facts of the stack (STACK_APP_ENV). Every error is one line naming the variable or the file.
"""
import json
import os
import re
from dataclasses import dataclass
from urllib.parse import quote

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
_ALIAS = re.compile(r"^[a-z][a-z0-9_]*$")
_VARIABLE = re.compile(r"^[A-Z_][A-Z0-9_]*$")
_LABEL = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DATABASE_FACTS = ("host", "port", "name", "user", "password", "password_file", "url")
_STACK_FACTS = ("secret_key", "secret_key_file", "allowed_hosts", "domains", "https")
_SERVICE_FACTS = ("url", "host", "port", "password", "password_file")
# The user the stack's RabbitMQ services make for the app (its default_user).
_RABBITMQ_USER = "app"
_SERVICE_KINDS = ("redis", "valkey", "memcached", "rabbitmq", "image")


def env_secret(name, environ=None):
    """A secret from the file NAME_FILE names, else from NAME itself (for running outside
    the stack); "" when neither is set."""
    environ = os.environ if environ is None else environ
    path = environ.get(f"{name}_FILE")
    if path:
        try:
            with open(path, encoding="utf-8") as handle:
                return handle.read().strip()
        except OSError as exc:
            raise ImproperlyConfigured(f"{name}_FILE={path!r} cannot be read: {exc.strerror}") from None
    return environ.get(name, "")


def env_bool(name, default=False, environ=None):
    environ = os.environ if environ is None else environ
    raw = environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean; use true or false")


def env_int(name, default, environ=None):
    environ = os.environ if environ is None else environ
    raw = environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not an integer") from None


def env_list(name, default=(), environ=None):
    environ = os.environ if environ is None else environ
    raw = environ.get(name)
    if raw is None:
        return list(default)
    return [item.strip() for item in raw.split(",") if item.strip()]


def unique(items):
    """ITEMS in their order, each once."""
    return list(dict.fromkeys(items))


@dataclass(frozen=True)
class Database:
    """One of the stack's PostgreSQL databases, as the app reaches it."""
    name: str           # the stack's name (database1): its compose service and database
    alias: str          # Django's: `default` for the stack's first database
    host: str
    port: str
    db: str
    user: str
    password: str
    password_file: str  # "" when the password came from NAME_PASSWORD (outside the stack)

    @property
    def url(self):
        return (f"postgres://{quote(self.user, safe='')}:{quote(self.password, safe='')}"
                f"@{self.host}:{self.port}/{quote(self.db, safe='')}")

    def settings(self, conn_max_age):
        return {
            "ENGINE": "django.db.backends.postgresql",
            "HOST": self.host,
            "PORT": self.port,
            "NAME": self.db,
            "USER": self.user,
            "PASSWORD": self.password,
            "CONN_MAX_AGE": conn_max_age,
            "CONN_HEALTH_CHECKS": True,
            "OPTIONS": {"connect_timeout": 3},
        }


def stack_databases(environ=None):
    """The databases DJANGO_DATABASES lists (comma-separated; [] when unset), in its order.

    Each database NAME is a PostgreSQL server reachable at host NAME (its compose service)
    with database NAME, user `app` (the role that owns it; not a superuser) and the password
    in the file NAME_PASSWORD_FILE names (or NAME_PASSWORD). NAME_HOST, NAME_PORT, NAME_DB
    and NAME_USER override the conventions.
    """
    environ = os.environ if environ is None else environ
    names = env_list("DJANGO_DATABASES", environ=environ)
    databases = []
    for index, name in enumerate(names):
        if not _ALIAS.match(name):
            raise ImproperlyConfigured(f"DJANGO_DATABASES: {name!r} is not a valid database name")
        prefix = name.upper()
        password = env_secret(f"{prefix}_PASSWORD", environ)
        if not password:
            raise ImproperlyConfigured(
                f"{prefix}_PASSWORD_FILE is not set: the app needs the password of database "
                f"{name!r} (it lives in config/secrets/{name}_password)")
        databases.append(Database(
            name=name, alias="default" if index == 0 else name,
            host=environ.get(f"{prefix}_HOST", name), port=environ.get(f"{prefix}_PORT", "5432"),
            db=environ.get(f"{prefix}_DB", name), user=environ.get(f"{prefix}_USER", "app"),
            password=password, password_file=environ.get(f"{prefix}_PASSWORD_FILE", "")))
    return databases


@dataclass(frozen=True)
class Service:
    """One of the stack's [[services]] (a broker or cache), as the app reaches it."""
    name: str
    kind: str           # redis | valkey | memcached | rabbitmq | image
    host: str
    port: str
    password: str       # "" for a service without one
    password_file: str  # "" likewise

    @property
    def url(self):
        """Its URL the conventional way, or "" for a service of another image (no scheme)."""
        password = quote(self.password, safe="")
        if self.kind in ("redis", "valkey"):
            return f"redis://:{password}@{self.host}:{self.port}/0"
        if self.kind == "rabbitmq":
            return f"amqp://{_RABBITMQ_USER}:{password}@{self.host}:{self.port}//"
        if self.kind == "memcached":
            return f"memcache://{self.host}:{self.port}"
        return ""

    @property
    def url_variable(self):
        return f"{self.name.upper()}_URL"


def stack_services(environ=None):
    """The services STACK_SERVICES lists (JSON from config/stack.toml; [] when unset), their
    passwords read from the files it names."""
    environ = os.environ if environ is None else environ
    raw = environ.get("STACK_SERVICES", "").strip()
    if not raw:
        return []
    try:
        entries = json.loads(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"STACK_SERVICES is not JSON: {exc}") from None
    shape = ('STACK_SERVICES is not a JSON list of {"name", "kind", "host", "port", "password_file"} '
             "([[services]] in config/stack.toml)")
    if not isinstance(entries, list):
        raise ImproperlyConfigured(shape)
    services = []
    for entry in entries:
        if (not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not _ALIAS.match(entry["name"])
                or entry.get("kind") not in _SERVICE_KINDS or not isinstance(entry.get("host"), str)
                or isinstance(entry.get("port"), bool) or not isinstance(entry.get("port"), int)
                or not isinstance(entry.get("password_file"), (str, type(None)))):
            raise ImproperlyConfigured(f"{shape}: {json.dumps(entry)} is not")
        path = entry["password_file"] or ""
        password = ""
        if path:
            try:
                with open(path, encoding="utf-8") as handle:
                    password = handle.read().strip()
            except OSError as exc:
                raise ImproperlyConfigured(f"STACK_SERVICES: the password file of {entry['name']} ({path!r}) cannot "
                                           f"be read: {exc.strerror}") from None
        services.append(Service(name=entry["name"], kind=entry["kind"], host=entry["host"],
                                port=str(entry["port"]), password=password, password_file=path))
    return services


def broker_url(services):
    """Celery's broker: the first RabbitMQ service, else the first Redis or Valkey; "" for none."""
    for kinds in (("rabbitmq",), ("redis", "valkey")):
        for service in services:
            if service.kind in kinds:
                return service.url
    return ""


def postgres_databases(environ=None):
    """Django's DATABASES for the stack's databases (`default` first), or None without any."""
    databases = stack_databases(environ)
    if not databases:
        return None
    conn_max_age = env_int("DJANGO_CONN_MAX_AGE", 60, environ)
    return {db.alias: db.settings(conn_max_age) for db in databases}


def https(environ=None):
    return env_bool("DJANGO_HTTPS", True, environ)


def site_domains(environ=None):
    return env_list("DJANGO_SITE_DOMAINS", environ=environ)


def allowed_hosts(environ=None):
    """The names the site answers to: DJANGO_ALLOWED_HOSTS and the host's domains."""
    return unique(env_list("DJANGO_ALLOWED_HOSTS", environ=environ) + site_domains(environ))


def require_real_secret_key(key):
    # The same bar as Django's security.W009, so that a key accepted here also passes
    # `check --deploy`.
    if not key:
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY is not set: the stack passes it as the file DJANGO_SECRET_KEY_FILE "
            "names (config/secrets/django_secret_key, which `inv up` creates)")
    if key.startswith("django-insecure") or len(key) < 50 or len(set(key)) < 5:
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY is not a real secret key: use at least 50 random characters "
            "(python -c 'import secrets; print(secrets.token_urlsafe(50))')")


def database_apps(environ=None):
    """STACK_DATABASE_APPS ("label:database,...", from `apps` of [[databases]] in
    config/stack.toml) as {app label: Django alias}; {} when unset."""
    environ = os.environ if environ is None else environ
    aliases = {db: "default" if index == 0 else db
               for index, db in enumerate(env_list("DJANGO_DATABASES", environ=environ))}
    routes = {}
    for item in env_list("STACK_DATABASE_APPS", environ=environ):
        label, colon, database = (part.strip() for part in item.partition(":"))
        if not colon or not _LABEL.match(label) or not database:
            raise ImproperlyConfigured(f"STACK_DATABASE_APPS: {item!r} is not label:database")
        if database not in aliases:
            raise ImproperlyConfigured(
                f"STACK_DATABASE_APPS: {item!r} names a database the stack does not have "
                f"(DJANGO_DATABASES={','.join(aliases)!r})")
        if routes.get(label, aliases[database]) != aliases[database]:
            raise ImproperlyConfigured(f"STACK_DATABASE_APPS: app {label!r} is given two databases")
        routes[label] = aliases[database]
    return routes


def _mapping(environ):
    raw = environ.get("STACK_APP_ENV", "").strip()
    if not raw:
        return {}
    try:
        mapping = json.loads(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"STACK_APP_ENV is not JSON: {exc}") from None
    if not isinstance(mapping, dict) or not all(isinstance(f, str) for f in mapping.values()):
        raise ImproperlyConfigured('STACK_APP_ENV is not a JSON object of NAME: "FACT" ([app.env] in config/stack.toml)')
    return mapping


def _fact(variable, fact, environ, databases, services=()):
    """The value of FACT ([app.env] in config/stack.toml) for the variable VARIABLE."""
    where = f"STACK_APP_ENV: {variable} = {fact!r}"
    if fact in _STACK_FACTS:
        if fact == "secret_key_file":
            value = environ.get("DJANGO_SECRET_KEY_FILE", "")
        elif fact == "secret_key":
            value = env_secret("DJANGO_SECRET_KEY", environ)
        elif fact == "https":
            return "true" if https(environ) else "false"
        else:
            return ",".join(allowed_hosts(environ) if fact == "allowed_hosts" else site_domains(environ))
        if not value:
            raise ImproperlyConfigured(f"{where}: DJANGO_SECRET_KEY_FILE is not set")
        return value
    name, _, attribute = fact.partition(".")
    service = next((service for service in services if service.name == name), None)
    if service is not None and attribute in _SERVICE_FACTS:
        value = {"url": service.url, "host": service.host, "port": service.port, "password": service.password,
                 "password_file": service.password_file}[attribute]
        if not value:
            raise ImproperlyConfigured(f"{where}: service {name!r} ({service.kind}) has no {attribute.replace('_', ' ')}")
        return value
    if attribute not in _DATABASE_FACTS:
        raise ImproperlyConfigured(
            f"{where} is not a fact of the stack: use {', '.join(_STACK_FACTS)} or "
            f"<database>.{'|'.join(_DATABASE_FACTS)} or <service>.{'|'.join(_SERVICE_FACTS)}")
    database = next((db for db in databases if db.name == name), None)
    if database is None:
        raise ImproperlyConfigured(
            f"{where}: {name!r} is not one of the stack's databases "
            f"(DJANGO_DATABASES={','.join(db.name for db in databases)!r})"
            + (f" nor of its services ({','.join(s.name for s in services)})" if services else ""))
    if attribute == "password_file" and not database.password_file:
        raise ImproperlyConfigured(f"{where}: {name.upper()}_PASSWORD_FILE is not set")
    return {"host": database.host, "port": database.port, "name": database.db, "user": database.user,
            "password": database.password, "password_file": database.password_file,
            "url": database.url}[attribute]


def stack_variables(environ=None):
    """The variables a project conventionally reads, from what the stack passes: DATABASE_URL
    (the first database) and NAME_DATABASE_URL for each, DJANGO_SECRET_KEY and SECRET_KEY,
    DJANGO_ALLOWED_HOSTS and ALLOWED_HOSTS, NAME_URL for each service (REDIS_URL) and
    CELERY_BROKER_URL (unless ENVIRON sets it: the project's own broker), then every name
    STACK_APP_ENV maps to a fact. Only what the stack knows is there; the caller puts them in
    its own process's environment (never the container's, which `docker inspect` shows)."""
    environ = os.environ if environ is None else environ
    databases = stack_databases(environ)
    services = stack_services(environ)
    variables = {}
    if databases:
        variables["DATABASE_URL"] = databases[0].url
    for db in databases:
        variables[f"{db.name.upper()}_DATABASE_URL"] = db.url
    key = env_secret("DJANGO_SECRET_KEY", environ)
    if key:
        variables["DJANGO_SECRET_KEY"] = variables["SECRET_KEY"] = key
    hosts = allowed_hosts(environ)
    if hosts:
        variables["DJANGO_ALLOWED_HOSTS"] = variables["ALLOWED_HOSTS"] = ",".join(hosts)
    for service in services:
        if service.url:
            variables[service.url_variable] = service.url
    broker = broker_url(services)
    if broker and not environ.get("CELERY_BROKER_URL"):
        variables["CELERY_BROKER_URL"] = broker
    for variable, fact in _mapping(environ).items():
        if not _VARIABLE.match(variable):
            raise ImproperlyConfigured(f"STACK_APP_ENV: {variable!r} is not a variable name (A-Z, 0-9, _)")
        variables[variable] = _fact(variable, fact, environ, databases, services)
    return variables


# The name the settings of earlier versions (and projects' own code) call it by.
conventional_variables = stack_variables
