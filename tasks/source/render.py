"""Rendering the generated files from the source of truth through the Jinja2 templates.

`rendered(stack)` is pure: it returns {path: text} and writes nothing. The tasks compare it
with the tree (`inv render --check`) or write it (`inv render`, `inv db.add`).
"""
from __future__ import annotations

import functools
import hashlib
import json
import pickle
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from .schedules import SCHEDULER, schedules_variable
from .stack import ALIAS_SUFFIX, APP_ROLE, BACKUP_NOTIFY, BACKUP_OPTIONAL_SECRETS, DJANGO_SECRET, RESTIC_PASSWORD, ROOT, SECRETS_DIR, Site, Stack

TEMPLATES = ROOT / "config" / "templates"
COMPOSE_FILE = Path("docker-compose.yml")
DOCKERFILE = Path("Dockerfile")
DOCKERIGNORE = Path(".dockerignore")
NGINX_CONF = Path("config/nginx/default.conf")
NGINX_MAIN_CONF = Path("config/nginx/nginx.conf")
FRONT_CONF = Path("config/nginx/front.conf")
DJANGO_ENV = Path("config/django.env")
DJANGO_SECRET_FILE = Path(SECRETS_DIR) / DJANGO_SECRET
# Connections per Nginx worker, and the open files that takes (a proxied request holds two).
# The files stay under 20,000: a container cannot raise its limit above the engine's own,
# and engines started with a low one exist (systemd's docker.service has no such limit).
NGINX_CONNECTIONS = 8192
NGINX_FILES = 2 * NGINX_CONNECTIONS + 1024
# What the app's containers run: the stack's Gunicorn settings and its WSGI entry in front of
# the project's (config/app/djangostack/), the image's CMD and the Swarm service's command.
APP_COMMAND = ["gunicorn", "--config", "/app/stack/djangostack/gunicorn_conf.py", "djangostack.wsgi:application"]
# The app's health check, run in its container every HEALTH_INTERVAL for as long as it runs: an HTTP/1.0
# GET of /healthz over bash's /dev/tcp (a few milliseconds of CPU, where starting Python costs
# about fifty times that: on a small server of several projects, a steady load of its own).
# Its one line of output says why it failed (`inv` shows it when a container stays unhealthy).
# An image without bash (any `python_image` may be chosen) asks with Python instead.
APP_HEALTH_TEST = [
    "CMD-SHELL",
    "command -v bash >/dev/null && exec bash -c '"
    "{ exec 3<>/dev/tcp/127.0.0.1/8000; } 2>/dev/null || { echo \"nothing answers on 127.0.0.1:8000\"; exit 1; }; "
    "printf \"GET /healthz HTTP/1.0\\r\\nHost: 127.0.0.1:8000\\r\\n\\r\\n\" >&3; "
    "read -r -t 4 _ code _ <&3 || { echo \"GET /healthz: no answer within 4 s\"; exit 1; }; "
    "[ \"$code\" = 200 ] || { echo \"GET /healthz answered $code\"; exit 1; }'"
    " || exec python -c \"import sys, urllib.request; sys.exit(urllib.request.urlopen("
    "'http://127.0.0.1:8000/healthz', timeout=4).status != 200)\"",
]
# How often a host's engine runs each container's health test (the app, databases, services,
# processes) once started. The tasks never wait for this verdict: they run the container's own
# test as soon as it starts and at each poll (procedures/rollout.py), as `inv doctor` does for
# one still `starting`. So the engine's ticks only watch a running stack, where every 3 s cost
# about a tenth of a CI run's CPU and, on a small server of three projects, three checks a second
# (each an exec, and for the app a request and a database connection). Docker's default is 30 s;
# 10 s keeps a plain `docker compose up` waiting little for a database's first verdict (engine
# 20.10 has no faster `start_interval`). A cluster's keeps 3 s: Swarm's rolling updates wait on it.
HEALTH_INTERVAL = "10s"
CLUSTER_HEALTH_INTERVAL = "3s"
# What the examples show where the real files hold a generated secret.
PLACEHOLDER = "<generated-by-inv>"


def _quiet_bytecode_cache():
    import jinja2

    class QuietBytecodeCache(jinja2.FileSystemBytecodeCache):
        """A cache that is only ever a shortcut: a file it cannot read or write (a full or
        read-only /tmp, a cleaner removing the folder, a file cut short) means compiling."""

        def load_bytecode(self, bucket):
            try:
                super().load_bytecode(bucket)
            except (OSError, EOFError, ValueError, TypeError, pickle.UnpicklingError):
                bucket.reset()

        def dump_bytecode(self, bucket):
            try:
                super().dump_bytecode(bucket)
            except OSError:
                pass

    return QuietBytecodeCache


@functools.cache
def _environment():
    """One for the process: a template is compiled once however many sites are rendered
    (a deploy renders each host's; Jinja2 still reloads a template whose file changed)."""
    import jinja2  # imported on use: tasks that render nothing start faster without it

    options = dict(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)
    # Compiling the templates was a third of an `inv` call's CPU (0.25 s of 0.77, cProfile of
    # `inv render --check`). Jinja2's cache keeps the compiled code in a folder of the user's
    # own (made 0700, refused if anyone else owns it: then each call compiles, as before),
    # taken only for a template of the same source compiled by the same Jinja2, same options.
    tag = hashlib.sha256(repr((jinja2.__version__, sorted(options.items()))).encode()).hexdigest()[:12]
    try:
        cache = _quiet_bytecode_cache()(pattern=f"stack-templates-{tag}-%s.cache")
    except (RuntimeError, OSError):
        cache = None
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), bytecode_cache=cache, **options)
    # JSON as a YAML flow value, as written: Jinja's tojson writes <, >, & and ' as \u escapes
    # (for HTML), unreadable in a shell command.
    env.filters["json"] = lambda value: json.dumps(value, ensure_ascii=False)
    # ${VERSION_<key>}: the reference to a secret's or config's version in a stack file.
    env.filters["version"] = lambda key: "${" + version_variable(key) + "}"
    env.globals.update(health_interval=HEALTH_INTERVAL, cluster_health_interval=CLUSTER_HEALTH_INTERVAL)
    return env


def version_variable(key: str) -> str:
    """The ${...} of a cluster's stack file that names the version of its secret or config
    KEY (a digest of its file, set by the deploy): a shell variable's name."""
    return "VERSION_" + re.sub(r"[^A-Za-z0-9_]", "_", key)


def _render(env, template: str, **values) -> str:
    return env.get_template(template).render(**values)


def _django_env(env, stack: Stack) -> str:
    return _render(env, "django.env.j2", http_port=stack.http_port)


def django_environment(stack: Stack) -> dict[str, str]:
    """What the app's processes get in their environment wherever they run (the compose
    file, the stack file, a Swarm job): the stack's settings overlay and the project's modules
    it wraps ([app]), the databases and where each secret is; the values themselves come
    from the files."""
    app = stack.app
    routed = ",".join(f"{label}:{db.name}" for db in stack.databases for label in db.apps)
    return {"DJANGO_SETTINGS_MODULE": "djangostack.settings",
            "STACK_APP_SETTINGS": app.settings,
            "STACK_APP_WSGI": app.wsgi,
            **({"STACK_APP_ENV": json.dumps(dict(app.env), separators=(",", ":"))} if app.env else {}),
            **({"STACK_DATABASE_APPS": routed} if routed else {}),
            **({"STACK_SCHEDULES": schedules_variable(stack.schedules)} if stack.schedules else {}),
            "DJANGO_DATABASES": ",".join(db.name for db in stack.databases),
            "DJANGO_SECRET_KEY_FILE": f"/run/secrets/{DJANGO_SECRET}",
            **{f"{db.password_variable}_FILE": f"/run/secrets/{db.secret_name}" for db in stack.databases},
            **({"STACK_SERVICES": stack_services(stack)} if stack.services else {})}


def stack_services(stack: Stack) -> str:
    """The [[services]] as the app's djangostack.env reads them (STACK_SERVICES): JSON, each
    service's name, kind, host, port and password file (null: no password)."""
    return json.dumps([{"name": s.name, "kind": s.kind, "host": s.name, "port": s.port,
                        "password_file": f"/run/secrets/{s.secret_name}" if s.secret_name else None}
                       for s in stack.services], separators=(",", ":"))


def app_secrets(stack: Stack) -> list[str]:
    """The secrets the app reads, by file name in config/secrets/ and /run/secrets/."""
    return [DJANGO_SECRET, *(db.secret_name for db in stack.databases),
            *(service.secret_name for service in stack.services if service.secret_name)]


def backup_secrets(stack: Stack) -> list[str]:
    """The secrets the backup service reads: the repository's password and each database's
    app password (it dumps as the app role)."""
    return [RESTIC_PASSWORD, *(db.secret_name for db in stack.databases)] if stack.backups else []


@dataclass(frozen=True)
class BackupPlace:
    """Who the scheduled backups of one place are: IDENTITY (restic's --host for its
    snapshots: PROJECT@PLACE) and HOSTNAME (the backup container's, which restic writes in
    its locks), so that the hosts and clusters of a project may share one repository."""
    identity: str
    hostname: str

    @classmethod
    def of(cls, project: str, place: str) -> "BackupPlace":
        identity = f"{project}@{place}"
        # At most 64 characters, one per identity: a host name may hold what a host name may not.
        return cls(identity, f"backup-{hashlib.sha256(identity.encode()).hexdigest()[:20]}")


# A checkout's stack (`inv up`), named by its compose project when Compose reads the file.
LOCAL_BACKUP_PLACE = BackupPlace("${COMPOSE_PROJECT_NAME}@local", "${COMPOSE_PROJECT_NAME}-backup")


def cluster_backup_place(stack: Stack, cluster) -> BackupPlace:
    manager = stack.hosts.get(cluster.manager)
    return BackupPlace.of((manager.project if manager else None) or stack.project, f"cluster.{cluster.name}")


def local_site(stack: Stack) -> Site:
    """The site of a checkout (`inv up`): plain HTTP on 127.0.0.1, no domains."""
    return Site(http_port=stack.http_port)


# The generated files that depend on where the stack runs (its Site): a deploy renders them
# again for the host's entry in config/stack.toml and writes them into the release.
SITE_FILES = (COMPOSE_FILE, FRONT_CONF)


def rendered(stack: Stack, site: Site | None = None, place: BackupPlace = LOCAL_BACKUP_PLACE) -> dict[Path, str]:
    """Every generated file, by path relative to the project root: for a checkout (the
    committed files) or, given SITE and PLACE, for a host."""
    env = _environment()
    site = site or local_site(stack)
    values = {
        "project": stack.project,
        "site": site,
        "http_port": site.http_port,
        "client_max_body_size": stack.client_max_body_size,
        "databases": stack.databases,
        "services": stack.services,
        "app_secrets": app_secrets(stack),
        "django_environment": django_environment(stack),
        "backups": stack.backups,
        "backup_secrets": backup_secrets(stack),
        "backup_database": stack.newest_database,
        "backup_optional_secrets": BACKUP_OPTIONAL_SECRETS,
        "app_role": APP_ROLE,
        "nginx_connections": NGINX_CONNECTIONS,
        "nginx_files": NGINX_FILES,
        "cluster": None,
        "backup_place": place,
        "app": stack.app,
        "app_command": APP_COMMAND,
        "app_health_test": APP_HEALTH_TEST,
        "schedules": stack.schedules,
        "scheduler": SCHEDULER,
        "backup_notify": BACKUP_NOTIFY,
        "processes": stack.all_processes,
        "services": stack.services,
        "logs": stack.logs,
        "alias_suffix": ALIAS_SUFFIX,
    }
    files = {
        DOCKERFILE: _render(env, "Dockerfile.j2", **values),
        DOCKERIGNORE: _render(env, "dockerignore.j2", **values),
        COMPOSE_FILE: _render(env, "docker-compose.yml.j2", **values),
        NGINX_CONF: _render(env, "nginx.conf.j2", **values),
        NGINX_MAIN_CONF: _render(env, "nginx-main.conf.j2", **values),
        FRONT_CONF: _render(env, "front.conf.j2", **values),
        Path(f"{DJANGO_ENV}.example"): _django_env(env, stack),
    }
    for cluster in stack.clusters.values():
        # A cluster's Nginx faces the clients (no front): its own site configuration.
        at = {**values, "cluster": cluster, "http_port": stack.http_port,
              "backup_place": cluster_backup_place(stack, cluster)}
        files[stack_file(cluster.name)] = _render(env, "docker-stack.yml.j2", **at)
        files[cluster_nginx_conf(cluster.name)] = _render(env, "nginx.conf.j2", **at)
    return files


# The server's shared front, by path in its folder (tasks/plans/server_front.py).
STACKFRONT_FILES = {Path("compose.yml"): "stackfront.yml.j2", Path("conf/nginx.conf"): "stackfront.conf.j2"}


def stackfront_files(values: dict) -> dict[Path, str]:
    """The shared front's files, by path in its folder, from server_front.values(...): the
    same for any set of projects it routes to."""
    env = _environment()
    return {path: _render(env, template, **values) for path, template in STACKFRONT_FILES.items()}


def stack_file(cluster: str) -> Path:
    """The stack file of CLUSTER, for `docker stack deploy`."""
    return Path(f"docker-stack.{cluster}.yml")


def cluster_nginx_conf(cluster: str) -> Path:
    return Path(f"config/nginx/cluster-{cluster}.conf")


def site_files(stack: Stack, site: Site, place: BackupPlace = LOCAL_BACKUP_PLACE) -> dict[Path, str]:
    """The files of SITE_FILES rendered for SITE, at PLACE."""
    files = rendered(stack, site, place)
    # Behind the shared front, the project's Nginx answers the ACME challenges and adds HSTS
    # and the security headers (its own front would): its configuration is the host's too.
    return {path: files[path] for path in (*SITE_FILES, *((NGINX_CONF,) if site.shared else ()))}


def drift(stack: Stack, root: Path = ROOT) -> list[Path]:
    """The generated files whose content in the tree differs from a fresh rendering."""
    stale = []
    for path, text in rendered(stack).items():
        try:
            current = (root / path).read_text(encoding="utf-8")
        except FileNotFoundError:
            current = None
        if current != text:
            stale.append(path)
    return stale


def stale_examples(root: Path, known: set[Path]) -> list[Path]:
    """Database env examples left behind by versions that kept passwords in env files."""
    return sorted(p.relative_to(root) for p in (root / "config/db").glob("*.env.example")
                  if p.relative_to(root) not in known)


def secret_files(stack: Stack, token: str | None = None) -> dict[Path, str]:
    """The git-ignored files made per machine: the app's settings (config/django.env) and
    one file per secret in config/secrets/, each a fresh value from `secrets`; with TOKEN,
    TOKEN where the value goes instead, for a host to fill in itself."""
    def secret(nbytes: int) -> str:
        return (token if token is not None else secrets.token_urlsafe(nbytes)) + "\n"

    files = {DJANGO_ENV: _django_env(_environment(), stack), DJANGO_SECRET_FILE: secret(50)}
    for db in stack.databases:
        files[Path(db.secret_file)] = secret(32)
    for service in stack.services:
        if service.secret_file:
            files[Path(service.secret_file)] = secret(32)
    if stack.backups:
        files[Path(SECRETS_DIR) / RESTIC_PASSWORD] = secret(32)
    return files

