"""Plans: the commands the tasks run, as argv lists built from plain values.

Nothing here executes or takes a Context. Compose plans are the arguments that follow
`docker compose --project-name PROJECT` (`Runner.compose` prepends those: only the target
knows the project name). Compose v2 only: v1 (`docker-compose`) has no `up --wait` and has
been end-of-life since 2023.
"""
from __future__ import annotations

import shlex

from ..source.settings import DEFAULTS

APP = "djangoapp"
MANAGE = ["python", "manage.py"]


PROGRAM = ["docker", "compose"]


def compose_prefix(program: list[str], project: str) -> list[str]:
    return [*program, "--project-name", project]


def build(services=(), pull=False, no_cache=False) -> list[str]:
    return ["build", *(["--pull"] if pull else []), *(["--no-cache"] if no_cache else []), *services]


def up(services=(), build=True, wait=True, timeout=DEFAULTS["timeout"], no_deps=False,
       keep_orphans=False) -> list[str]:
    """KEEP_ORPHANS: leave the containers of services the file no longer has (a project's
    own front, serving until the shared front takes its ports)."""
    argv = ["up", "--detach", *([] if keep_orphans else ["--remove-orphans"])]
    argv += ["--build"] if build else ["--no-build"]
    if wait:
        argv += ["--wait", "--wait-timeout", str(timeout)]
    if no_deps:
        argv.append("--no-deps")
    return argv + list(services)


def create(services) -> list[str]:
    """SERVICES' containers made (or recreated when their definition changed), not started."""
    return ["up", "--no-start", "--no-build", "--no-deps", *services]


def down(volumes=False) -> list[str]:
    return ["down", "--remove-orphans", *(["--volumes"] if volumes else [])]


def ps(all_=False) -> list[str]:
    return ["ps", *(["--all"] if all_ else [])]


def running_services(project: str) -> list[str]:
    """The PROJECT's services with a running container (one-off ones aside), a line each per
    container: `docker ps`, a quarter of the CPU of `compose ps --services --status running`
    (the Compose plugin loads the project each time)."""
    return ["docker", "ps", "--filter", f"label=com.docker.compose.project={project}",
            "--filter", "label=com.docker.compose.oneoff=False", "--filter", "status=running",
            "--format", '{{.Label "com.docker.compose.service"}}']


def logs(services=(), follow=False, tail=200) -> list[str]:
    argv = ["logs", "--tail", str(tail)]
    if follow:
        argv.append("--follow")
    return argv + list(services)


def stop(services) -> list[str]:
    return ["stop", *services]


def rm(services) -> list[str]:
    return ["rm", "--force", "--stop", *services]


def exec_(service, command, tty=False, env_names=()) -> list[str]:
    """`exec` in a running SERVICE; ENV_NAMES are passed by name only (`-e NAME`), so that
    their values travel through the environment, never through argv."""
    argv = ["exec"]
    if not tty:
        argv.append("-T")
    for name in env_names:
        argv += ["-e", name]
    return argv + [service, *command]


def manage(args, tty=False, env_names=()) -> list[str]:
    return exec_(APP, [*MANAGE, *args], tty=tty, env_names=env_names)


def migrate(alias) -> list[str]:
    return manage(["migrate", "--noinput", "--database", alias])


def collectstatic() -> list[str]:
    return manage(["collectstatic", "--noinput", "--verbosity", "1"])


SUPERUSER_PASSWORD = "DJANGO_SUPERUSER_PASSWORD"


def with_secret_on_stdin(variable: str, argv) -> str:
    """Shell: ARGV run with VARIABLE set from the first line of standard input, so that the
    value is never in a command line (here, on a host, or in `docker inspect`)."""
    return f"IFS= read -r {variable}; export {variable}; exec {shlex.join(argv)}"


def createsuperuser(username=None, email=None, tty=False) -> list[str]:
    """Interactive on a terminal; with a username it runs unattended and Django reads the
    password from DJANGO_SUPERUSER_PASSWORD, which is passed by name."""
    if username is None:
        return manage(["createsuperuser"], tty=tty)
    args = ["createsuperuser", "--noinput", "--username", username]
    if email:
        args += ["--email", email]
    return manage(args, env_names=["DJANGO_SUPERUSER_PASSWORD"])


# Run in the app container: the published port may listen on a host's loopback only, and
# the app's image has Python but neither curl nor wget.
# Exits 0 on a 200; otherwise prints what Nginx answered (where a redirect sends) or why
# there was no answer, for the wait's message.
HEALTH_THROUGH_NGINX = (
    "import http.client, sys, urllib.parse\n"
    "u = urllib.parse.urlsplit(sys.argv[1])\n"
    "try:\n"
    "    c = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=5)\n"
    "    c.request('GET', u.path)\n"
    "    r = c.getresponse()\n"
    "except Exception as e:\n"
    "    sys.exit(print('no answer (%s)' % (e,)) or 1)\n"
    "if r.status != 200:\n"
    "    said = r.getheader('Location') if 300 <= r.status < 400 else r.read(200).decode('utf-8', 'replace')\n"
    "    print('HTTP %d %s%s' % (r.status, '\\u2192 ' if 300 <= r.status < 400 else '', ' '.join(str(said).split())))\n"
    "sys.exit(r.status != 200)\n"
)


def health_through_nginx() -> list[str]:
    """Exits 0 when /healthz answers 200 through Nginx, as seen from the app container."""
    return exec_(APP, ["python", "-c", HEALTH_THROUGH_NGINX, "http://nginx/healthz"])


def config_json() -> list[str]:
    """The compose file as Compose resolves it (variables and defaults substituted)."""
    return ["config", "--format", "json"]


def start(services) -> list[str]:
    return ["start", *services]


def psql_shell(db_name, tty=True) -> list[str]:
    return exec_(db_name, ["psql", "-U", db_name, "-d", db_name], tty=tty)


# Commands for the engine itself (not through compose).

def engine_version() -> list[str]:
    return ["docker", "version", "--format", "{{.Server.Version}}"]


def engine_info() -> list[str]:
    """The engine's facts (version, storage, cgroups, log driver, data root) as one JSON object."""
    return ["docker", "info", "--format", "{{json .}}"]


def free_space(path) -> list[str]:
    """The filesystem holding PATH, POSIX df (1024-byte blocks): its last line's 4th field is what is free."""
    return ["df", "-Pk", "--", str(path)]


def compose_version() -> list[str]:
    return [*PROGRAM, "version", "--short"]


def buildx_version() -> list[str]:
    return ["docker", "buildx", "version"]


def volume_sizes() -> list[str]:
    """Prints the engine's volumes with their sizes, as one JSON list."""
    return ["docker", "system", "df", "--verbose", "--format", "{{json .Volumes}}"]


def remove_network(name: str) -> list[str]:
    return ["docker", "network", "rm", name]


def volume_exists(name: str) -> list[str]:
    """Exits 0 when the engine has a volume NAME."""
    return ["docker", "volume", "inspect", "--format", "{{.Name}}", name]


def remove_volume(name: str) -> list[str]:
    return ["docker", "volume", "rm", name]
