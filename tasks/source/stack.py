"""The stack's source of truth (config/stack.toml): loading, validating and editing it.

Everything else (the compose file, the Nginx config, the env files, the commands the
tasks run) is derived from the `Stack` this module returns.
"""
from __future__ import annotations

import contextlib
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import StackError
from . import values
from .schedules import Schedule, parse_schedules, scheduler_process
from .processes import Process, parse_processes


ROOT = Path(__file__).resolve().parents[2]
STACK_FILE = Path("config/stack.toml")
# Secrets are files here, 0600 in a 0700 folder, git-ignored, one value each.
SECRETS_DIR = "config/secrets"
DJANGO_SECRET = "django_secret_key"
BACKUP_KEY = "backup_key"
# The restic repository's password, and the repository's credentials (KEY=VALUE lines, such
# as AWS_ACCESS_KEY_ID), kept by `inv backup.credentials`: files in SECRETS_DIR.
RESTIC_PASSWORD = "restic_password"
BACKUP_CREDENTIALS = "backup_repository.env"
# An sftp: repository's SSH key and the repository host's keys (`inv backup.ssh-key`).
BACKUP_SSH_KEY = "backup_ssh_key"
BACKUP_KNOWN_HOSTS = "backup_known_hosts"
# The apprise URLs, which usually hold a token: from [backups] notify, or set on the host
# alone by `inv backup.notify`.
BACKUP_NOTIFY = "backup_notify"
NOTIFY_FROM_STACK = "# from [backups] notify in config/stack.toml\n"
# The backup service's files that exist only once set up: the name in SECRETS_DIR, and the
# name the service reads in /run/secrets/backup (secrets-init copies those present).
BACKUP_OPTIONAL_SECRETS = ((BACKUP_CREDENTIALS, "repository.env"), (BACKUP_SSH_KEY, "ssh_key"),
                           (BACKUP_KNOWN_HOSTS, "known_hosts"), (BACKUP_NOTIFY, "notify"))
# The PostgreSQL role Django connects as: it owns its database and is not a superuser.
APP_ROLE = "app"
# The app image's user and group (Dockerfile): the static and media volumes are theirs.
APP_OWNER = "10001:10001"

# Services the stack defines itself, and names Django or Compose give a meaning to.
RESERVED_NAMES = frozenset({"djangoapp", "nginx", "front", "backup", "certbot", "secrets-init", "default", "postgres",
                            "template0", "template1"})
# PostgreSQL truncates identifiers at 63 bytes; leave room for the "_network"/"_volume"
# suffixes and the compose project prefix so that every derived name stays readable.
MAX_NAME_LENGTH = 30
NAME_PATTERN = values.DATABASE
# The PostgreSQL majors a database may run (`postgres = 17` in its [[databases]] entry), each
# from postgres:<major> (POSTGRES<major>_IMAGE overrides it; POSTGRES_IMAGE for 15, the
# stack's first). A major keeps its data in a volume of its own, so that an upgrade
# (`inv db.upgrade`) leaves the previous one whole.
POSTGRES_MAJORS = (15, 16, 17, 18)
FIRST_POSTGRES = 15


@dataclass(frozen=True)
class Database:
    name: str
    default: bool = False
    apps: tuple[str, ...] = ()  # Django app labels whose models live here (the stack's router)
    postgres: int = FIRST_POSTGRES  # the PostgreSQL major

    @property
    def alias(self) -> str:
        return "default" if self.default else self.name

    @property
    def network(self) -> str:
        return f"{self.name}_network"

    @property
    def volume(self) -> str:
        return self.volume_of(self.postgres)

    def volume_of(self, major: int) -> str:
        """The volume holding this database's data under MAJOR."""
        return f"{self.name}_volume" if major == FIRST_POSTGRES else f"{self.name}_pg{major}_volume"

    @property
    def image_variable(self) -> str:
        return postgres_image_variable(self.postgres)

    @property
    def image_default(self) -> str:
        return f"postgres:{self.postgres}"

    @property
    def data_mount(self) -> str:
        """Where the volume is mounted: the official image from 18 on keeps its data in
        /var/lib/postgresql/MAJOR/docker (PGDATA) and declares the volume one folder up."""
        return "/var/lib/postgresql" if self.postgres >= 18 else "/var/lib/postgresql/data"

    @property
    def secret_name(self) -> str:
        """The app role's password: a file in config/secrets/ and in the app's /run/secrets/."""
        return f"{self.name}_password"

    @property
    def secret_file(self) -> str:
        return f"{SECRETS_DIR}/{self.secret_name}"

    @property
    def legacy_env_file(self) -> str:
        """Where versions before secrets-as-files kept the password (an env file)."""
        return f"config/db/{self.name}.env"

    @property
    def password_variable(self) -> str:
        return f"{self.name.upper()}_PASSWORD"


# A service's kinds: the official image each one defaults to (its <KIND>_IMAGE environment
# variable overrides it in the rendered files), its port, the folder it keeps its data in
# and whether that is kept by default (a queue or an append-only log: yes; a cache: no).
SERVICE_KINDS = {
    "redis": ("redis:7.4", 6379, "/data", True),
    "valkey": ("valkey/valkey:8.0", 6379, "/data", True),
    "memcached": ("memcached:1.6", 11211, None, False),
    "rabbitmq": ("rabbitmq:3.13", 5672, "/var/lib/rabbitmq", True),
    "image": (None, None, None, False),
}
# The URL scheme the conventional variable uses, by kind; a service of kind "image" has none.
SERVICE_SCHEMES = {"redis": "redis", "valkey": "redis", "memcached": "memcache", "rabbitmq": "amqp"}
# The kinds whose server takes a password (the stack generates it: <name>_password).
AUTHENTICATED_KINDS = ("redis", "valkey", "rabbitmq")
SERVICE_KEYS = {"name", "kind", "image", "persistent", "port", "health", "data"}
# What a service name may not be besides a database's reserved names: another name the
# stack gives (a process, a network, a volume or a secret of its own would be taken over,
# or a variable the app reads: DATABASE_URL, CELERY_BROKER_URL).
SERVICE_RESERVED = frozenset({"scheduler", "static", "media", "acme", "restic", "database", "celery_broker"})
SERVICE_FACTS = ("url", "host", "port", "password", "password_file")


@dataclass(frozen=True)
class Service:
    """A server from an image the app reaches ([[services]] in config/stack.toml): a broker
    or cache, on its own network, never published."""
    name: str
    kind: str                            # redis | valkey | memcached | rabbitmq | image
    image: str
    port: int
    persistent: bool
    health: tuple[str, ...] = ()         # kind "image": the healthcheck test, ["CMD", ...]
    data: str | None = None              # the folder its volume is mounted on when persistent

    @property
    def network(self) -> str:
        return f"{self.name}_network"

    @property
    def volume(self) -> str:
        return f"{self.name}_volume"

    @property
    def secret_name(self) -> str | None:
        """Its password's file in config/secrets/ and /run/secrets/, or None: no auth."""
        return f"{self.name}_password" if self.kind in AUTHENTICATED_KINDS else None

    @property
    def secret_file(self) -> str | None:
        return f"{SECRETS_DIR}/{self.secret_name}" if self.secret_name else None

    @property
    def url_variable(self) -> str:
        return f"{self.name.upper()}_URL"

    @property
    def scheme(self) -> str | None:
        return SERVICE_SCHEMES.get(self.kind)

    @property
    def image_variable(self) -> str | None:
        """The environment variable that overrides the image (REDIS_IMAGE), or None."""
        return f"{self.kind.upper()}_IMAGE" if self.kind != "image" else None

    @property
    def image_expression(self) -> str:
        """The image as the rendered files name it: ${REDIS_IMAGE:-redis:7.4}."""
        return f"${{{self.image_variable}:-{self.image}}}" if self.image_variable else self.image


def validate_service_name(name, databases=(), services=()) -> None:
    """Raise StackError unless NAME can be a service's compose service, network, volume,
    secret and variable prefix, and is not the name of a database or another service."""
    shown = repr(name)
    if not isinstance(name, str):
        raise StackError(f"service name {shown} is not valid: a string of lowercase letters, digits and underscores")
    if not name:
        raise StackError("a service name cannot be empty")
    if len(name) > MAX_NAME_LENGTH:
        raise StackError(f"service name {shown} is too long ({len(name)} characters; at most {MAX_NAME_LENGTH})")
    if not NAME_PATTERN.fullmatch(name):
        raise StackError(f"invalid service name {shown}: use lowercase letters, digits and underscores, "
                         "starting with a letter (for example redis)")
    if name in RESERVED_NAMES or name in SERVICE_RESERVED or any(name == f"{db}_database" for db in databases):
        raise StackError(f"service name {shown} is reserved (the stack names something of its own so); pick another")
    if name in databases:
        raise StackError(f"service name {shown} is the name of a database in {STACK_FILE}; pick another")
    if name in services:
        raise StackError(f"service {shown} already exists in {STACK_FILE}")


def parse_service(entry, index: int, databases=(), services=()) -> Service:
    """One [[services]] entry, each value checked by its grammar."""
    entry = values.table(entry, f"[[services]] entry {index + 1}", 'a table with name = "..." and kind = "..."')
    name = entry.get("name", "")
    validate_service_name(name, databases, services)
    where = f"[[services]] {name}"
    unknown = set(entry) - SERVICE_KEYS
    if unknown:
        raise StackError(f"{where}: unknown setting(s) {_names(unknown)} (known: {', '.join(sorted(SERVICE_KEYS))})")
    if "kind" not in entry:
        raise StackError(f"{where} needs kind (one of {', '.join(SERVICE_KINDS)})")
    kind = values.choice(entry["kind"], tuple(SERVICE_KINDS), f"{where} kind")
    image, port, data, persistent = SERVICE_KINDS[kind]
    if kind == "image":
        for key in ("image", "port", "health"):
            if key not in entry:
                raise StackError(f'{where} needs {key} (kind = "image" has no defaults)')
    else:
        for key in ("port", "health", "data"):
            if key in entry:
                raise StackError(f'{where}: {key} is for kind = "image" (a {kind} service has its own)')
    health = entry.get("health", [])
    if kind == "image" and (not isinstance(health, list) or len(health) < 2 or health[0] not in ("CMD", "CMD-SHELL")
                            or not all(isinstance(word, str) and word for word in health)):
        raise StackError(f'{where} health {health!r} is not valid: a list of strings starting with "CMD" or '
                         f'"CMD-SHELL", such as ["CMD", "redis-cli", "ping"]')
    persistent = values.flag(entry.get("persistent", persistent), f"{where} persistent")
    data = values.directory(entry["data"], f"{where} data") if "data" in entry else data
    if persistent and data is None:
        raise StackError(f"{where}: persistent = true needs data (the folder its volume is mounted on)"
                         if kind == "image" else f"{where}: a {kind} service keeps no data; drop persistent")
    return Service(name=name, kind=kind,
                   image=values.image(entry.get("image", image), f"{where} image"),
                   port=values.port(entry.get("port", port), f"{where} port"),
                   persistent=persistent, health=tuple(health), data=data)


def parse_services(entries, databases) -> tuple[Service, ...]:
    """[[services]], in their order."""
    if not isinstance(entries, list):
        raise StackError(f"services {entries!r} is not valid: [[services]] tables, each with name and kind")
    names = tuple(db.name for db in databases)
    services = []
    for index, entry in enumerate(entries):
        services.append(parse_service(entry, index, names, tuple(s.name for s in services)))
    return tuple(services)


# Folders of the stack's own: the project's folder is never one of them.
STACK_FOLDERS = frozenset({"config", "tasks", "tests", "testkit", "docs", "backups", "bench", ".ci"})
# What [app.env] may map a project's variable to: a fact of one database, or of the stack.
DATABASE_FACTS = ("host", "port", "name", "user", "password", "password_file", "url")
STACK_FACTS = ("secret_key", "secret_key_file", "allowed_hosts", "domains", "https")
# Variables the stack sets itself, which [app.env] may not take over.
STACK_VARIABLES = frozenset({"DJANGO_SETTINGS_MODULE", "DJANGO_DATABASES", "DJANGO_SECRET_KEY_FILE", "PATH",
                             "PYTHONPATH", "HOME"})

LOCAL_STATE = ("db.sqlite3", "staticfiles/", "media/", ".env", ".venv/")


@dataclass(frozen=True)
class App:
    """The Django project the stack serves ([app] in config/stack.toml); without [app], the
    example, hello. The Dockerfile, the .dockerignore, what a release ships and the app's
    environment are rendered from it."""
    path: str = "hello"                                  # the project's folder (it holds manage.py)
    settings: str = "hello.settings.production"          # the project's settings module
    wsgi: str = "hello.wsgi:application"                 # what the stack serves, module:attribute
    python: str = "3.11"
    python_image: str | None = None                      # else python:<python>-slim
    requirements: str = "hello/requirements.txt"         # pinned: requirements*.txt, Pipfile.lock or uv.lock
    build_packages: tuple[str, ...] = ()                 # Debian packages of the builder stage alone
    packages: tuple[str, ...] = ()                       # Debian packages of the running image
    env: tuple[tuple[str, str], ...] = ()                # (NAME, fact) of [app.env], in order

    @property
    def image(self) -> str:
        """The base image (the PYTHON_IMAGE environment variable still overrides it)."""
        return self.python_image or f"python:{self.python}-slim"

    @property
    def build_inputs(self) -> tuple[str, ...]:
        """What the builder stage copies to turn the requirements into a pip list: the file,
        the Pipfile beside a Pipfile.lock, the pyproject.toml beside a uv.lock (if any: the
        `[l]` lets COPY find none), every list of a requirements/ folder (one may include
        another with -r)."""
        folder, _, name = self.requirements.rpartition("/")
        beside = f"{folder}/" if folder else ""
        if name == "Pipfile.lock":
            return (f"{beside}Pipfile", self.requirements)
        if name == "uv.lock":
            return (self.requirements, f"{beside}pyproject.tom[l]")
        if folder.rpartition("/")[2] == "requirements":
            return (f"{beside}*.txt",)
        return (self.requirements,)

    @property
    def local_state(self) -> tuple[str, ...]:
        """What a checkout of the project holds besides its code (a laptop's database, its
        collected files, its virtualenv and .env): never in the image nor in a release."""
        return tuple(f"{self.path}/{name}" for name in LOCAL_STATE)

    @property
    def requirements_outside(self) -> bool:
        """The requirements are not in the project's folder: they ship and build on their own."""
        return not self.requirements.startswith(f"{self.path}/")


def parse_app(entry, databases, services=()) -> App:
    """[app], each value checked by its grammar; absent keys keep the example's values."""
    unknown = set(entry) - APP_KEYS
    if unknown:
        raise StackError(f"[app]: unknown setting(s) {_names(unknown)} (known: {', '.join(sorted(APP_KEYS))})")
    default = App()
    given = {key: entry.get(key, getattr(default, key)) for key in ("path", "settings", "wsgi", "python",
                                                                       "requirements")}
    return App(
        path=values.folder(given["path"], "[app] path", STACK_FOLDERS),
        settings=values.module(given["settings"], "[app] settings"),
        wsgi=values.python_callable(given["wsgi"], "[app] wsgi"),
        python=values.python_version(given["python"], "[app] python"),
        python_image=values.image(entry["python_image"], "[app] python_image") if "python_image" in entry else None,
        requirements=values.requirements_file(given["requirements"], "[app] requirements"),
        build_packages=values.debian_packages(entry.get("build_packages", []), "[app] build_packages"),
        packages=values.debian_packages(entry.get("packages", []), "[app] packages"),
        env=parse_app_env(entry.get("env", {}), databases, services),
    )


def parse_app_env(entry, databases, services=()) -> tuple[tuple[str, str], ...]:
    """[app.env]: NAME = FACT, a variable the project reads set from a fact of the stack."""
    names = [db.name for db in databases]
    by_name = {service.name: service for service in services}
    facts = [*(f"<database>.{fact}" for fact in DATABASE_FACTS), *(f"<service>.{fact}" for fact in SERVICE_FACTS),
             *STACK_FACTS]
    taken = STACK_VARIABLES | {f"{db.password_variable}_FILE" for db in databases}
    values.table(entry, "[app] env", 'a table of NAME = "fact", such as DB_HOST = "database1.host"')
    mapped = []
    for name, fact in entry.items():
        values.text(name, values.ENV_NAME, "[app.env] name", "an environment variable name: uppercase letters, "
                                                             "digits and '_', not starting with a digit")
        if name in taken or name.startswith("STACK_"):
            raise StackError(f"[app.env] {name}: the stack sets this variable itself; map another name")
        where = f"[app.env] {name}"
        if not isinstance(fact, str):
            raise StackError(f"{where} = {fact!r} is not valid: one of {', '.join(facts)}")
        database, dot, attribute = fact.rpartition(".")
        if dot and database in by_name and attribute in SERVICE_FACTS:
            service = by_name[database]
            if (attribute.startswith("password") and service.secret_name is None) or (
                    attribute == "url" and service.scheme is None):
                raise StackError(f"{where} = {fact!r}: service {database!r} ({service.kind}) has no "
                                 f"{attribute.replace('_', ' ')}")
        elif dot and attribute in DATABASE_FACTS:
            if database not in names:
                raise StackError(f"{where} = {fact!r}: no database named {database!r} in [[databases]] "
                                 f"(known: {', '.join(names)})" + (f"; nor a service in [[services]] (known: "
                                                                   f"{', '.join(by_name)})" if by_name else ""))
        elif fact not in STACK_FACTS:
            raise StackError(f"{where} = {fact!r} is not valid: one of {', '.join(facts)}")
        mapped.append((name, fact))
    return tuple(mapped)


# Let's Encrypt's ACME directories, by the word a host's acme_server may use instead.
ACME_SERVERS = {
    "production": "https://acme-v02.api.letsencrypt.org/directory",
    "staging": "https://acme-staging-v02.api.letsencrypt.org/directory",
}
TLS_MODES = ("acme", "files", "off")
# Who owns the server's ports 80 and 443: the project's own front, or the server's front
# that every project deployed there with front = "shared" sits behind (tasks/plans/server_front.py).
FRONTS = ("own", "shared")
SHARED_FRONT_DIRECTORY = "/srv/stackfront"
# Behind the shared front, a project's Nginx answers on its front network to <domain> +
# ALIAS_SUFFIX: ".internal" is reserved for private use and never resolves on the internet.
ALIAS_SUFFIX = ".site.internal"


@dataclass(frozen=True)
class Site:
    """How the stack faces its visitors where it runs: the names it answers to, where it
    listens, and who terminates TLS. Without domains: plain HTTP on 127.0.0.1 (`inv up`)."""
    domains: tuple[str, ...] = ()
    tls: str = "off"                       # acme | files | off
    bind: str = "127.0.0.1"
    http_port: int = 8000
    https_port: int = 443
    acme_email: str | None = None
    acme_server: str = ACME_SERVERS["production"]
    acme_ca_bundle: str | None = None      # a file here: the root the ACME server's TLS chains to
    certificate: str | None = None         # files on the host (tls = "files")
    certificate_key: str | None = None
    trusted_proxies: tuple[str, ...] = ()  # tls = "off": whose X-Forwarded-* are believed
    hsts_max_age: int = 300
    hsts_include_subdomains: bool = False
    hsts_preload: bool = False
    front: str = "own"                     # own | shared
    front_directory: str = SHARED_FRONT_DIRECTORY  # the server front's folder (front = "shared")

    @property
    def shared(self) -> bool:
        """Behind the server's shared front: no front of its own, no published port."""
        return self.front == "shared"

    @property
    def https(self) -> bool:
        """Nginx terminates TLS itself."""
        return self.tls in ("acme", "files")

    @property
    def secure(self) -> bool:
        """Visitors come over HTTPS: to Nginx, or to a trusted proxy in front of it."""
        return self.https or bool(self.trusted_proxies)


@dataclass(frozen=True)
class Host:
    """A server the stack is deployed to (config/stack.toml, [hosts.NAME])."""
    name: str
    address: str
    directory: str
    user: str | None = None
    port: int = 22
    identity_file: str | None = None
    known_hosts: str = "~/.ssh/known_hosts"
    http_port: int | None = None
    project: str | None = None
    site: Site | None = None


# A restore drill's schedule, by name; or a cron expression of its own.
DRILLS = {"daily": "30 4 * * *", "weekly": "30 4 * * 0", "monthly": "30 4 1 * *"}
KEEP_PERIODS = ("hourly", "daily", "weekly", "monthly", "yearly")


@dataclass(frozen=True)
class Backups:
    """Scheduled backups into a restic repository ([backups] in config/stack.toml): run by
    the stack's `backup` service on SCHEDULE (cron, the host's timezone)."""
    schedule: str
    repository: str
    keep: tuple[tuple[str, int], ...] = (("daily", 7), ("weekly", 4), ("monthly", 6))
    drill: str = DRILLS["weekly"]              # a cron expression, or "" for none
    notify: tuple[str, ...] = ()

    @property
    def local_repository(self) -> bool:
        """A path on the host (bind-mounted into the service), not a remote repository."""
        return self.repository.startswith("/")

    @property
    def sftp_host(self) -> str | None:
        """The SSH server of an sftp:[user@]host:/path repository, else None."""
        if not self.repository.startswith("sftp:"):
            return None
        return self.repository[len("sftp:"):].split(":", 1)[0].rpartition("@")[2]


def parse_backups(entry) -> Backups:
    if not isinstance(entry, dict):
        raise StackError("[backups] must be a table")
    unknown = set(entry) - {"schedule", "repository", "keep", "drill", "notify"}
    if unknown:
        raise StackError(f"[backups]: unknown setting(s) {_names(unknown)} (credentials never go here)")
    for key in ("schedule", "repository"):
        if key not in entry:
            raise StackError(f"[backups] needs {key}")
    keep = entry.get("keep", dict(Backups.keep))
    if not isinstance(keep, dict) or not keep or set(keep) - set(KEEP_PERIODS):
        raise StackError(f"[backups] keep must be a table of {', '.join(KEEP_PERIODS)} counts")
    drill = entry.get("drill", "weekly")
    if not isinstance(drill, str):
        raise StackError(f"[backups] drill {drill!r} is not valid: daily, weekly, monthly, off or five cron fields")
    return Backups(
        schedule=values.cron(entry["schedule"], "[backups] schedule"),
        repository=values.repository(entry["repository"], "[backups] repository"),
        keep=tuple((period, values.whole(keep[period], f"[backups] keep.{period}", 1, 10000))
                   for period in KEEP_PERIODS if period in keep),
        drill="" if drill == "off" else DRILLS.get(drill) or values.cron(drill, "[backups] drill (daily, weekly, "
                                                                              "monthly, off or cron fields)"),
        notify=values.notify_urls(entry["notify"], "[backups] notify") if "notify" in entry else (),
    )


# How the engine keeps a container's output: json-file (the engine's default format, what
# log shippers read) or local (compressed); both rotate, and `docker logs` reads both.
LOG_DRIVERS = ("json-file", "local")
LOG_KEYS = {"driver", "max_size", "max_file"}


@dataclass(frozen=True)
class Logs:
    """Every container's log, bounded ([logs] in config/stack.toml): at most MAX_FILE files of
    MAX_SIZE each, so that a server left running for months never fills its disk with logs."""
    driver: str = "json-file"
    max_size: str = "10m"
    max_file: int = 3

    @property
    def options(self) -> dict[str, str]:
        """The driver's options, as `docker run --log-opt` and a compose file's `logging` take them."""
        return {"max-size": self.max_size, "max-file": str(self.max_file)}


def parse_logs(entry) -> Logs:
    unknown = set(entry) - LOG_KEYS
    if unknown:
        raise StackError(f"[logs]: unknown setting(s) {_names(unknown)} (known: {', '.join(sorted(LOG_KEYS))})")
    return Logs(driver=values.choice(entry.get("driver", Logs.driver), LOG_DRIVERS, "[logs] driver"),
                max_size=values.log_size(entry.get("max_size", Logs.max_size), "[logs] max_size"),
                max_file=values.whole(entry.get("max_file", Logs.max_file), "[logs] max_file", 1, 100))


# How a cluster's services are reached: through Swarm's routing mesh and virtual IPs (a
# normal kernel's default), or without IPVS (DNS round robin, ports bound on each node).
ENDPOINT_MODES = ("vip", "dnsrr")
PUBLISH_MODES = ("ingress", "host")


@dataclass(frozen=True)
class Cluster:
    """Hosts run as one Docker Swarm ([clusters.NAME] in config/stack.toml): the app's
    replicas spread over them, each database pinned to the node that holds its volume."""
    name: str
    manager: str                                # a [hosts] name
    workers: tuple[str, ...]
    replicas: int = 2
    placement: tuple[tuple[str, str], ...] = ()  # (database, node), every database
    endpoint_mode: str = "vip"
    publish_mode: str = "ingress"

    @property
    def nodes(self) -> tuple[str, ...]:
        return (self.manager, *self.workers)


CLUSTER_KEYS = {"manager", "workers", "replicas", "databases", "endpoint_mode", "publish_mode"}


def parse_cluster(name: str, entry, hosts: dict, databases) -> Cluster:
    where = f"[clusters.{name}]"
    if not isinstance(entry, dict):
        raise StackError(f"{where} must be a table")
    unknown = set(entry) - CLUSTER_KEYS
    if unknown:
        raise StackError(f"{where}: unknown setting(s) {_names(unknown)}")
    values.host_name(name, "cluster name")
    manager, workers = entry.get("manager"), entry.get("workers", [])
    if not isinstance(workers, list):
        raise StackError(f"{where} workers must be a list of [hosts] names")
    for node in (manager, *workers):
        if not isinstance(node, str) or node not in hosts:
            raise StackError(f"{where}: {node!r} is not a [hosts] name (known: {', '.join(sorted(hosts)) or 'none'})")
    if len({manager, *workers}) != 1 + len(workers):
        raise StackError(f"{where}: a host is named twice")
    pinned = entry.get("databases", {})
    if not isinstance(pinned, dict) or set(pinned) - {db.name for db in databases}:
        raise StackError(f"{where} databases must map database names to the node holding each")
    for db, node in pinned.items():
        if node not in (manager, *workers):
            raise StackError(f"{where}: database {db} is pinned to {node!r}, which is not one of its nodes")
    for key, allowed in (("endpoint_mode", ENDPOINT_MODES), ("publish_mode", PUBLISH_MODES)):
        values.choice(entry.get(key, allowed[0]), allowed, f"{where} {key}")
    return Cluster(
        name=name, manager=manager, workers=tuple(workers),
        replicas=values.whole(entry.get("replicas", 2), f"{where} replicas", 1, 100),
        placement=tuple((db.name, pinned.get(db.name, manager)) for db in databases),
        endpoint_mode=entry.get("endpoint_mode", "vip"), publish_mode=entry.get("publish_mode", "ingress"))


# Swarm's limits on the names of what a cluster's stack makes: a secret or config at most 64
# characters, a service (a one-off job too) at most 63, a DNS label. `docker stack deploy`
# meets them only as it creates each one, its networks made already.
SWARM_SECRET_LIMIT, SWARM_SERVICE_LIMIT = 64, 63
# Stand-ins of full length for the digest that names each version of a secret or config
# (plans/swarm.py versions_script: 12 characters) and the release tag in a one-off job's
# name (procedures/cluster_release.py release_jobs: 8).
DIGEST, TAG = "#" * 12, "#" * 8


def swarm_names(project: str, databases, backups: bool, services=()) -> list[tuple[str | None, str, str, int]]:
    """(the database or service it belongs to, or None; kind, name, Swarm's limit) of every
    secret, config and service that the stack of a cluster whose project is PROJECT makes
    (config/templates/docker-stack.yml.j2), digests and tags as DIGEST and TAG."""
    secrets = [DJANGO_SECRET, *(db.secret_name for db in databases)]
    names = [(None, "config", f"{project}_{name}_{DIGEST}", SWARM_SECRET_LIMIT)
             for name in ("nginx_main", "nginx_site", "app_role")]
    names += [(None, "service", f"{project}_{name}", SWARM_SERVICE_LIMIT) for name in ("djangoapp", "nginx")]
    names += [(None, "job", f"{project}-static-{TAG}", SWARM_SERVICE_LIMIT)]
    names += [(db, "secret", f"{project}_{name}_{DIGEST}", SWARM_SECRET_LIMIT)
              for db, name in zip((None, *(db.name for db in databases)), secrets)]
    for db in databases:
        names += [(db.name, "service", f"{project}_{db.name}", SWARM_SERVICE_LIMIT),
                  (db.name, "job", f"{project}-migrate-{db.name}-{TAG}", SWARM_SERVICE_LIMIT)]
    if backups:
        names += [(None, "service", f"{project}_backup", SWARM_SERVICE_LIMIT),
                  (None, "secret", f"{project}_backup_{RESTIC_PASSWORD}_{DIGEST}", SWARM_SECRET_LIMIT)]
        names += [(None, "secret", f"{project}_{source}_{DIGEST}", SWARM_SECRET_LIMIT)
                  for source, _ in BACKUP_OPTIONAL_SECRETS]
        names += [(db.name, "secret", f"{project}_backup_{db.secret_name}_{DIGEST}", SWARM_SECRET_LIMIT)
                  for db in databases]
    for service in services:
        names += [(service.name, "service", f"{project}_{service.name}", SWARM_SERVICE_LIMIT)]
        if service.secret_name:
            names += [(service.name, "secret", f"{project}_{service.secret_name}_{DIGEST}", SWARM_SECRET_LIMIT)]
    return names


def check_swarm_names(cluster: str, project: str, databases, backups: bool, services=()) -> None:
    """Refuse, before anything is deployed, a database (or project) name that would make a
    Swarm name longer than Swarm takes: its own names are what a user sees in `docker
    secret ls`, so they are not shortened behind the user's back."""
    too_long = [(len(name) - limit, db, kind, name, limit)
                for db, kind, name, limit in swarm_names(project, databases, backups, services) if len(name) > limit]
    if not too_long:
        return
    # The project's own names first: no database name is short enough while they are too long.
    over, db, kind, name, limit = max([n for n in too_long if n[1] is None] or too_long)
    shown = name.replace(DIGEST, "<digest>").replace(TAG, "<tag>")
    if db is not None:
        what = "service" if db in {service.name for service in services} else "database"
        raise StackError(f"[clusters.{cluster}]: {what} name {db!r} is too long for Swarm: the {kind} {shown} would "
                         f"have {len(name)} characters (at most {limit}); use at most {len(db) - over} characters "
                         f"for it with project {project!r}" + (" and [backups]" if backups else ""))
    raise StackError(f"[clusters.{cluster}]: project name {project!r} is too long for Swarm: the {kind} {shown} "
                     f"would have {len(name)} characters (at most {limit})")


@dataclass(frozen=True)
class Stack:
    project: str
    http_port: int
    client_max_body_size: str
    databases: tuple[Database, ...]
    hosts: dict = field(default_factory=dict)
    groups: dict = field(default_factory=dict)
    backups: Backups | None = None
    clusters: dict = field(default_factory=dict)
    app: App = App()
    schedules: tuple[Schedule, ...] = ()
    services: tuple[Service, ...] = ()
    processes: tuple[Process, ...] = ()
    logs: Logs = Logs()

    @property
    def all_processes(self) -> tuple[Process, ...]:
        """The [[processes]], and the scheduler when there are [[schedules]]."""
        if not self.schedules:
            return self.processes
        return (*self.processes, scheduler_process(self.schedules))

    @property
    def newest_database(self) -> Database:
        """A database of the newest PostgreSQL major: the backup service's image is its image
        (pg_dump reads servers of its major and older)."""
        return max(self.databases, key=lambda db: db.postgres)

    def database(self, name: str) -> Database:
        """The database called NAME, or whose Django alias is NAME (`default`)."""
        for db in self.databases:
            if name in (db.name, db.alias):
                return db
        known = ", ".join(db.name for db in self.databases)
        raise StackError(f"no database named {name!r} in {STACK_FILE} (known: {known})")

    def service(self, name: str) -> Service:
        """The service called NAME ([[services]])."""
        for service in self.services:
            if service.name == name:
                return service
        known = ", ".join(service.name for service in self.services) or "none yet"
        raise StackError(f"no service named {name!r} in {STACK_FILE} (known: {known})")

    def resolve_hosts(self, spec: str) -> list[Host]:
        """Hosts named by SPEC: a host, a group from [groups], or a comma-separated mix."""
        hosts: list[Host] = []
        for word in (w.strip() for w in spec.split(",")):
            if not word:
                continue
            names = self.groups.get(word, [word])
            for name in names:
                if name not in self.hosts:
                    known = ", ".join(sorted(self.hosts) + sorted(self.groups)) or "none yet"
                    raise StackError(f"unknown host {name!r}: add [hosts.{name}] to {STACK_FILE} (known: {known})")
                if self.hosts[name] not in hosts:
                    hosts.append(self.hosts[name])
        if not hosts:
            raise StackError("--host needs a host or group name")
        return hosts

    def cluster(self, name: str) -> Cluster:
        if name not in self.clusters:
            known = ", ".join(sorted(self.clusters)) or "none yet"
            raise StackError(f"unknown cluster {name!r}: add [clusters.{name}] to {STACK_FILE} (known: {known})")
        return self.clusters[name]

    @property
    def volumes(self) -> tuple[str, ...]:
        return (tuple(db.volume for db in self.databases) + ("static_volume", "media_volume")
                + tuple(service.volume for service in self.services if service.persistent))


def postgres_image_variable(major: int) -> str:
    """The environment variable naming the image of MAJOR (POSTGRES_IMAGE for the first)."""
    return "POSTGRES_IMAGE" if major == FIRST_POSTGRES else f"POSTGRES{major}_IMAGE"


def postgres_major(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value not in POSTGRES_MAJORS:
        raise StackError(f"{what} {value!r} is not valid: a PostgreSQL major, one of "
                         f"{', '.join(map(str, POSTGRES_MAJORS))}")
    return value


def validate_database_name(name: str, existing: tuple[str, ...] = ()) -> None:
    """Raise StackError unless NAME can be a compose service, network prefix, PostgreSQL
    database and Django alias, and is not already taken."""
    shown = repr(name)
    if not isinstance(name, str):
        raise StackError(f"database name {shown} is not valid: a string of lowercase letters, digits and underscores")
    if not name:
        raise StackError("a database name cannot be empty")
    if len(name) > MAX_NAME_LENGTH:
        raise StackError(f"database name {shown} is too long ({len(name)} characters; at most {MAX_NAME_LENGTH})")
    if not NAME_PATTERN.fullmatch(name):
        raise StackError(
            f"invalid database name {shown}: use lowercase letters, digits and underscores, "
            "starting with a letter (for example database2)"
        )
    if name in RESERVED_NAMES:
        raise StackError(f"database name {shown} is reserved (it names a service or a Django/PostgreSQL built-in); pick another")
    if name in existing:
        raise StackError(f"database {shown} already exists in {STACK_FILE}")


def _names(keys) -> str:
    """KEYS for a one-line message: a plain name as it is, any other (a space, a line break,
    nothing at all) quoted."""
    return ", ".join(k if re.fullmatch(r"[A-Za-z0-9_.-]+", k) else repr(k) for k in sorted(keys))


# The document's tables besides [project] and [[databases]], with what each holds.
TABLES = {"hosts": "a table of [hosts.NAME] tables", "groups": "a table of lists of [hosts] names",
          "clusters": "a table of [clusters.NAME] tables", "backups": "a table (schedule, repository, ...)",
          "app": "a table (path, settings, wsgi, python, requirements, ...)",
          "logs": "a table (driver, max_size, max_file)"}


TOP_KEYS = {"project", "databases", "hosts", "groups", "clusters", "backups", "app", "processes", "schedules", "services",
            "logs"}
PROJECT_KEYS = {"name", "http_port", "client_max_body_size"}
DATABASE_KEYS = {"name", "apps", "postgres"}
APP_KEYS = {"path", "settings", "wsgi", "python", "python_image", "requirements", "build_packages", "packages", "env"}


@contextlib.contextmanager
def _in(source: str):
    """A StackError raised inside names the file it comes from."""
    try:
        yield
    except StackError as exc:
        raise StackError(f"{source}: {exc}") from None


def _refuse_unknown_keys(data: dict, project: dict, entries: list) -> None:
    # A misspelt table ([backup] for [backups]) would otherwise turn a feature off unsaid.
    for where, keys, known in (("", data, TOP_KEYS), ("[project]", project, PROJECT_KEYS),
                               *(("[[databases]]", e, DATABASE_KEYS) for e in entries if isinstance(e, dict))):
        unknown = sorted(set(keys) - known)
        if unknown:
            raise StackError(f"{where + ': ' if where else ''}unknown setting(s) {_names(unknown)} "
                             f"(known: {', '.join(sorted(known))})")


def _parse_databases(entries: list) -> tuple[Database, ...]:
    if not entries:
        raise StackError("at least one [[databases]] entry is needed")
    databases, placed = [], {}
    for index, entry in enumerate(entries):
        db_name = values.table(entry, f"[[databases]] entry {index + 1}", 'a table with name = "..."').get("name", "")
        validate_database_name(db_name, tuple(db.name for db in databases))
        apps = entry.get("apps", [])
        if not isinstance(apps, list):
            raise StackError(f"[[databases]] {db_name} apps {apps!r} is not valid: a list of Django app labels, "
                             f"such as [\"notes\"]")
        for label in apps:
            values.text(label, values.APP_LABEL, f"[[databases]] {db_name} apps entry",
                        "a Django app label: letters, digits and '_', not starting with a digit")
            if label in placed:
                raise StackError(f"[[databases]] app {label!r} is in both {placed[label]} and {db_name}: "
                                 f"an app's models live in one database")
            placed[label] = db_name
        major = postgres_major(entry.get("postgres", FIRST_POSTGRES), f"[[databases]] {db_name} postgres")
        databases.append(Database(name=db_name, default=index == 0, apps=tuple(apps), postgres=major))
    return tuple(databases)


def _parse_groups(groups: dict, hosts: dict) -> dict:
    parsed = {}
    for group, members in groups.items():
        values.host_name(group, "group name")
        if not isinstance(members, list) or not all(isinstance(m, str) and m in hosts for m in members):
            raise StackError(f"group {group!r} must list names of [hosts.*] entries")
        parsed[group] = list(members)
    return parsed


def parse(data: dict, source: str = str(STACK_FILE)) -> Stack:
    """Build a validated Stack from the parsed TOML document."""
    project = data.get("project")
    if not isinstance(project, dict) or "name" not in project:
        raise StackError(f"{source}: [project] needs name = \"...\" (the compose project name)" if
                         isinstance(project, dict) else f"{source}: project {project!r} is not valid: a [project] table")
    name, entries = project["name"], data.get("databases", [])
    if not isinstance(entries, list):
        raise StackError(f"{source}: databases {entries!r} is not valid: [[databases]] tables, each with name = \"...\"")
    with _in(source):
        _refuse_unknown_keys(data, project, entries)
        for key, hint in TABLES.items():
            values.table(data.get(key, {}), key, hint)
        values.project(name)
        http_port = values.port(project.get("http_port", 8000), "http_port")
        body = values.body_size(project.get("client_max_body_size", "20m"))
        databases = _parse_databases(entries)
        services = parse_services(data.get("services", []), databases)
    hosts = {host_name: _parse_host(host_name, entry, source, http_port)
             for host_name, entry in data.get("hosts", {}).items()}
    with _in(source):
        groups = _parse_groups(data.get("groups", {}), hosts)
        backups = parse_backups(data["backups"]) if "backups" in data else None
        app = parse_app(data["app"], databases, services) if "app" in data else App()
        processes = parse_processes(data.get("processes", []), services, databases)
        clusters = {cluster: parse_cluster(cluster, entry, hosts, databases)
                    for cluster, entry in data.get("clusters", {}).items()}
        for cluster in clusters.values():
            check_swarm_names(cluster.name, hosts[cluster.manager].project or name, databases, backups is not None,
                              services)
        schedules = parse_schedules(data.get("schedules", []))
        logs = parse_logs(data.get("logs", {}))
    return Stack(project=name, http_port=http_port, client_max_body_size=body, databases=databases,
                 hosts=hosts, groups=groups, backups=backups, clusters=clusters, app=app, services=services,
                 processes=processes, schedules=schedules, logs=logs)


HOST_KEYS = {"address", "user", "port", "identity_file", "known_hosts", "directory", "http_port", "project"}
SITE_KEYS = {"domains", "tls", "bind", "https_port", "acme_email", "acme_server", "acme_ca_bundle", "certificate",
             "certificate_key", "trusted_proxies", "hsts_max_age", "hsts_include_subdomains", "hsts_preload",
             "front", "front_directory"}


def parse_site(entry: dict, project_http_port: int) -> Site:
    """The site of a [hosts.NAME] entry; each rule a user may break is said in one line."""
    names = values.domains(entry["domains"]) if "domains" in entry else ()
    tls = values.choice(entry.get("tls", "acme" if names else "off"), TLS_MODES, "tls")
    if tls != "off" and not names:
        raise StackError(f'tls = "{tls}" needs domains (the names the certificate is for)')
    for key, mode in (("acme_email", "acme"), ("acme_server", "acme"), ("acme_ca_bundle", "acme"),
                      ("certificate", "files"), ("certificate_key", "files"), ("trusted_proxies", "off")):
        if key in entry and tls != mode:
            raise StackError(f'{key} is for tls = "{mode}" (this host has tls = "{tls}")')
    if tls == "files" and not ("certificate" in entry and "certificate_key" in entry):
        raise StackError('tls = "files" needs certificate and certificate_key (paths on the host)')
    server = entry.get("acme_server", "production")
    if not isinstance(server, str):
        values.acme_url(server, "acme_server")  # refused: says what it takes
    site = Site(
        domains=names,
        tls=tls,
        bind=values.ip_address(entry["bind"], "bind") if "bind" in entry else "0.0.0.0" if names else "127.0.0.1",
        http_port=values.port(entry["http_port"], "http_port") if "http_port" in entry
        else 80 if names else project_http_port,
        https_port=values.port(entry.get("https_port", 443), "https_port"),
        acme_email=values.email(entry["acme_email"], "acme_email") if "acme_email" in entry else None,
        acme_server=ACME_SERVERS.get(server) or values.acme_url(server, "acme_server"),
        acme_ca_bundle=values.local_file(entry["acme_ca_bundle"], "acme_ca_bundle") if "acme_ca_bundle" in entry else None,
        certificate=values.directory(entry["certificate"], "certificate") if "certificate" in entry else None,
        certificate_key=values.directory(entry["certificate_key"], "certificate_key") if "certificate_key" in entry else None,
        trusted_proxies=values.networks(entry["trusted_proxies"], "trusted_proxies") if "trusted_proxies" in entry else (),
        hsts_max_age=values.whole(entry.get("hsts_max_age", 300), "hsts_max_age", 0, 63072000),
        hsts_include_subdomains=values.flag(entry.get("hsts_include_subdomains", False), "hsts_include_subdomains"),
        hsts_preload=values.flag(entry.get("hsts_preload", False), "hsts_preload"),
        front=values.choice(entry.get("front", "own"), FRONTS, "front"),
        front_directory=values.directory(entry["front_directory"], "front_directory")
        if "front_directory" in entry else SHARED_FRONT_DIRECTORY,
    )
    if site.https and site.http_port == site.https_port:
        raise StackError(f"http_port and https_port are both {site.http_port}")
    if site.shared and not site.https:
        raise StackError('front = "shared" needs domains and tls = "acme" or "files" (the shared front '
                         'serves every name over HTTPS)')
    if "front_directory" in entry and not site.shared:
        raise StackError('front_directory is for front = "shared" (this host has front = "own")')
    return site


def _parse_host(name: str, entry, source: str, project_http_port: int = 8000) -> Host:
    where = f"{source}: [hosts.{name}]"
    if not isinstance(entry, dict):
        raise StackError(f"{where} must be a table")
    unknown = set(entry) - HOST_KEYS - SITE_KEYS
    if unknown:
        raise StackError(f"{where}: unknown setting(s) {_names(unknown)} (secrets never go here)")
    for key in ("address", "directory"):
        if not entry.get(key):
            raise StackError(f"{where} needs {key}")
    try:
        values.host_name(name)
        host = Host(
            name=name,
            address=values.address(entry["address"], "address"),
            directory=values.directory(entry["directory"], "directory"),
            user=values.user(entry["user"], "user") if "user" in entry else None,
            port=values.port(entry.get("port", 22), "port"),
            identity_file=values.local_file(entry["identity_file"], "identity_file") if "identity_file" in entry else None,
            known_hosts=values.local_file(entry.get("known_hosts", "~/.ssh/known_hosts"), "known_hosts"),
            http_port=values.port(entry["http_port"], "http_port") if "http_port" in entry else None,
            project=values.project(entry["project"]) if "project" in entry else None,
            site=parse_site(entry, project_http_port))
    except StackError as exc:
        raise StackError(f"{where}: {exc}") from None
    return host


def loads(text: str) -> Stack:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise StackError(f"{STACK_FILE} is not valid TOML: {exc}") from None
    return parse(data, str(STACK_FILE))


def read_text(root: Path = ROOT) -> str:
    try:
        return (root / STACK_FILE).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise StackError(f"{root / STACK_FILE} is missing: it is the stack's source of truth (restore it from git)") from None


def load(root: Path = ROOT) -> Stack:
    return loads(read_text(root))


def with_database_added(text: str, name: str) -> str:
    """Return the stack file's text with database NAME appended, comments kept."""
    import tomlkit  # edits keep the user's comments and layout; only needed here

    doc = tomlkit.parse(text)
    existing = tuple(entry.get("name") for entry in doc.get("databases", []))
    validate_database_name(name, existing)
    return _appended(doc, "databases", name=name)


def with_database_removed(text: str, name: str) -> str:
    """Return the stack file's text without database NAME; the default one cannot go."""
    import tomlkit

    doc = tomlkit.parse(text)
    entries = doc.get("databases", [])
    names = [entry.get("name") for entry in entries]
    if name not in names:
        raise StackError(f"no database named {name!r} in {STACK_FILE} (known: {', '.join(names)})")
    if names.index(name) == 0:
        raise StackError(f"{name!r} is the default database (Django's `default` alias); it cannot be removed")
    del entries[names.index(name)]
    return tomlkit.dumps(doc)


def with_database_major(text: str, name: str, major: int) -> str:
    """Return the stack file's text with database NAME on PostgreSQL MAJOR, comments kept
    (the key is left out for the first major, as a stack that never upgraded has it)."""
    import tomlkit

    doc = tomlkit.parse(text)
    entries = doc.get("databases", [])
    names = [entry.get("name") for entry in entries]
    if name not in names:
        raise StackError(f"no database named {name!r} in {STACK_FILE} (known: {', '.join(names)})")
    entry = entries[names.index(name)]
    if major == FIRST_POSTGRES:
        entry.pop("postgres", None)
    else:
        entry["postgres"] = postgres_major(major, "postgres")
    return tomlkit.dumps(doc)


def with_service_added(text: str, name: str, kind: str) -> str:
    """Return the stack file's text with service NAME of KIND appended, comments kept."""
    import tomlkit

    doc = tomlkit.parse(text)
    databases = tuple(entry.get("name") for entry in doc.get("databases", []))
    services = tuple(entry.get("name") for entry in doc.get("services", []))
    validate_service_name(name, databases, services)
    if kind == "image" or kind not in SERVICE_KINDS:
        known = ", ".join(k for k in SERVICE_KINDS if k != "image")
        raise StackError(f"service kind {kind!r} cannot be added so: one of {known} (a service from another image "
                         f"is written in {STACK_FILE} by hand, with image, port and health)")
    return _appended(doc, "services", name=name, kind=kind)


def _appended(doc, array: str, **fields) -> str:
    """DOC's text with a [[ARRAY]] table of FIELDS appended (the array made if missing)."""
    import tomlkit

    table = tomlkit.table()
    for key, value in fields.items():
        table.add(key, value)
    if array not in doc:
        doc.add(array, tomlkit.aot())
    doc[array].append(table)
    return tomlkit.dumps(doc)


def with_service_removed(text: str, name: str) -> str:
    """Return the stack file's text without service NAME."""
    import tomlkit

    doc = tomlkit.parse(text)
    entries = doc.get("services", [])
    names = [entry.get("name") for entry in entries]
    if name not in names:
        raise StackError(f"no service named {name!r} in {STACK_FILE} (known: {', '.join(names) or 'none yet'})")
    del entries[names.index(name)]
    if not len(entries):
        del doc["services"]
    return tomlkit.dumps(doc)
