"""Plans of a rollout without downtime: the app's new container starts beside the old one,
Nginx is pointed at it by a reload, and the old one drains (procedures/rollout.py runs them).

Nginx finds the app it sends requests to in /etc/nginx/live/app.conf (the nginx_live
volume): `set $djangoapp http://CONTAINER:8000;`. A reload starts new workers that read it
and tells the old ones to finish what they serve and stop accepting: from that moment no
new request reaches the old container, and the ones in flight complete there.
"""
from __future__ import annotations

import json
import re
import shlex

from . import compose
from .site import CERTIFICATE_CONF

LIVE_FILE = "/etc/nginx/live/app.conf"
NGINX_DIR = "/etc/nginx/hello"
NGINX_MAIN = f"{NGINX_DIR}/nginx.conf"
FRONT_MAIN = f"{NGINX_DIR}/front.conf"
# What Compose names containers: PROJECT-SERVICE-N (letters, digits, _ . -).
CONTAINER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
# The exit status of the switch script when Nginx refuses the new configuration.
REFUSED = 3
# Files of config/nginx/ that the Nginx containers read.
NGINX_FILES = ("nginx.conf", "default.conf", "front.conf")


def service_ids(project: str, service: str) -> list[str]:
    """The ids of every container of PROJECT's SERVICE, running or not, but for one-off ones:
    `compose ps` lists those too, and a `docker compose run djangoapp ...` of the user's
    (or a producer's) must never count as a container the rollout replaces."""
    return ["docker", "ps", "--all", "--quiet", "--filter", f"label=com.docker.compose.project={project}",
            "--filter", f"label=com.docker.compose.service={service}",
            "--filter", "label=com.docker.compose.oneoff=False"]


def app_ids(project: str) -> list[str]:
    """The ids of every container of the app service, running or not (one-off ones aside)."""
    return service_ids(project, compose.APP)


def describe(ids) -> list[str]:
    """One line per container: name, state, health."""
    template = "{{.Name}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}"
    return ["docker", "inspect", "--format", template, *ids]


def service_containers(project: str) -> list[str]:
    """The PROJECT's containers, running or not, but for one-off ones (`compose run`): a
    line each, its id and its service."""
    return ["docker", "ps", "--all", "--filter", f"label=com.docker.compose.project={project}",
            "--filter", "label=com.docker.compose.oneoff=False",
            "--format", '{{.ID}} {{.Label "com.docker.compose.service"}}']


def health_tests(ids) -> list[str]:
    """One line per container: name, state, health status and its health test as JSON
    (null when it has none), tab-separated."""
    template = ("{{.Name}}\t{{.State.Status}}\t{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}"
                "\t{{json .Config.Healthcheck}}")
    return ["docker", "inspect", "--format", template, *ids]


def service_states(ids) -> list[str]:
    """One line per container: its compose service, state, health status (none when it
    has no health test), name and health test as JSON, tab-separated."""
    template = ('{{index .Config.Labels "com.docker.compose.service"}}\t{{.State.Status}}'
                "\t{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}"
                "\t{{.Name}}\t{{json .Config.Healthcheck}}")
    return ["docker", "inspect", "--format", template, *ids]


def run_health_test(container: str, healthcheck) -> list[str] | None:
    """The container's own health test (compose's `healthcheck.test`) as a `docker exec`,
    or None when it has none: what the engine runs at each tick, run when we choose."""
    test = (healthcheck or {}).get("Test") or []
    if not CONTAINER_NAME.fullmatch(container):
        raise ValueError(f"not a container name: {container!r}")
    if len(test) >= 2 and test[0] == "CMD":
        return ["docker", "exec", container, *test[1:]]
    if len(test) == 2 and test[0] == "CMD-SHELL":
        return ["docker", "exec", container, "/bin/sh", "-c", test[1]]
    return None


def would_recreate() -> list[str]:
    """Compose, as a dry run: what `up` would do to the app; its answer (on standard error)
    says Running when the container there matches the compose file and the image (the
    config-hash label alone would miss a rebuilt image under the same tag)."""
    return ["--dry-run", "up", "--detach", "--no-deps", "--no-build", compose.APP]


def up_to_date(dry_run_output: str) -> bool:
    return "Running" in dry_run_output and "Creat" not in dry_run_output and "Recreat" not in dry_run_output


def image_id(image: str) -> list[str]:
    return ["docker", "image", "inspect", "--format", "{{.Id}}", image]


def scale_up(count: int) -> list[str]:
    """Compose: COUNT app containers, the ones there untouched: one new beside the old."""
    return ["up", "--detach", "--no-deps", "--no-recreate", "--no-build", "--scale", f"{compose.APP}={count}",
            compose.APP]


def run_once(service: str, command=()) -> list[str]:
    """Compose: SERVICE's command (or COMMAND) in a one-off container, removed afterwards."""
    return ["run", "--rm", "--no-deps", "-T", service, *command]


# What the release phase's container says on standard error when one of its steps fails.
STEP_FAILED = re.compile(r"^release step (\d+) failed$", re.MULTILINE)


# The release phase's steps in one Django: `manage.py shell --command` runs this, STEPS set
# first. Each step runs as `manage.py STEP` would (execute_from_command_line: its arguments
# parsed, the system checks run, a CommandError printed as manage.py prints it, its exit
# status); anything else raised is printed as Python would. A failure is followed by
# `release step N failed`.
RELEASE_SCRIPT = """
import sys, traceback
from django.core.management import execute_from_command_line
for n, step in enumerate(STEPS, 1):
    try:
        execute_from_command_line(["manage.py", *step])
        status = 0
    except SystemExit as exc:
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
        status = 0 if exc.code is None else exc.code if isinstance(exc.code, int) else 1
    except BaseException as exc:
        traceback.print_exc()
        status = 130 if isinstance(exc, KeyboardInterrupt) else 1
    sys.stdout.flush()
    if status:
        print(f"release step {n} failed", file=sys.stderr, flush=True)
        sys.exit(status)
"""


def release_phase(steps) -> list[str]:
    """Compose: the manage.py STEPS (each a list of its arguments), one after the other in one
    one-off container of the new image and in one Python process: Django starts once, not
    once a step (each start costs about as much CPU as the container's). The first step that
    fails ends it with manage.py's exit status, after `release step N failed` (N from 1) on
    standard error; a single step runs as `manage.py STEP` itself."""
    if len(steps) == 1:
        return run_once(compose.APP, [*compose.MANAGE, *steps[0]])
    script = f"STEPS = {json.dumps([list(map(str, step)) for step in steps])}\n{RELEASE_SCRIPT}"
    return run_once(compose.APP, [*compose.MANAGE, "shell", "--verbosity", "0", "--command", script])


def failed_step(stderr: str, steps: int) -> int | None:
    """Which of the release phase's STEPS (counted from 0) failed, from its container's
    standard error; None when it does not say (the container did not run, or was killed)."""
    if steps == 1:
        return 0
    said = [int(n) for n in STEP_FAILED.findall(stderr or "")]
    return said[-1] - 1 if said and 1 <= said[-1] <= steps else None


def stop(ids) -> list[str]:
    """Stop with the containers' own grace period: Gunicorn finishes what is in flight."""
    return ["docker", "stop", *ids]


def remove(ids) -> list[str]:
    return ["docker", "rm", "--force", *ids]


def logs(container: str, tail: int = 20) -> list[str]:
    return ["docker", "logs", "--tail", str(tail), container]


def live_conf(container: str) -> str:
    if not CONTAINER_NAME.fullmatch(container):
        raise ValueError(f"not a container name: {container!r}")
    return f"set $djangoapp http://{container}:8000;\n"


# The workers serving now; after `nginx -s reload` each one either exits or renames itself
# "worker process is shutting down" once it no longer accepts connections.
_WORKERS = ("for p in /proc/[0-9]*; do c=$(tr '\\0' ' ' < $p/cmdline 2>/dev/null); "
            "case \"$c\" in 'nginx: worker process '|'nginx: worker process') echo ${p#/proc/};; esac; done")


def reload_script(main: str, wait_seconds: int = 30) -> str:
    """sh, in an Nginx container: test MAIN, reload, and return only once every worker that
    served before has stopped accepting (REFUSED when the test fails, nothing reloaded)."""
    q = shlex.quote(main)
    return (
        f"nginx -t -q -c {q} || exit {REFUSED}\n"
        f"before=$({_WORKERS})\n"
        f"nginx -s reload -c {q}\n"
        f"i=0; while [ $i -lt {wait_seconds * 10} ]; do\n"
        "  left=0; for p in $before; do c=$(tr '\\0' ' ' < /proc/$p/cmdline 2>/dev/null); "
        "case \"$c\" in 'nginx: worker process '|'nginx: worker process') left=1;; esac; done\n"
        "  [ $left = 0 ] && exit 0; sleep 0.1; i=$((i + 1))\n"
        "done\n"
        "echo 'the old workers still accept connections' >&2; exit 1\n"
    )


def switch_script(main: str) -> str:
    """sh, in the Nginx container: the live file from standard input (the previous one kept),
    then test and reload; a refused configuration puts the previous file back."""
    live, q = shlex.quote(LIVE_FILE), shlex.quote(main)
    return (
        f"set -u; cd /etc/nginx/live; cat > .app.conf.new\n"
        f"if [ -e app.conf ]; then cp -p app.conf .app.conf.previous; else rm -f .app.conf.previous; fi\n"
        f"mv -f .app.conf.new {live}\n"
        f"if ! nginx -t -q -c {q}; then\n"
        f"  if [ -e .app.conf.previous ]; then mv -f .app.conf.previous {live}; else rm -f {live}; fi\n"
        f"  exit {REFUSED}\n"
        "fi\n"
        + reload_script(main).split("\n", 1)[1]
    )


# What the front reads at a reload only: its configuration, and the map that names the
# certificate file (a new key is a new file: procedures/site.py).
FRONT_SUM = f"cat {FRONT_MAIN} {CERTIFICATE_CONF} 2>/dev/null | sha256sum"


def front_sum_check() -> str:
    """sh, in the front container: exits 0 when front.conf and the certificate's map are what it loaded."""
    return f"{FRONT_SUM} | cmp -s - /run/front.sha256"


def front_reload() -> str:
    return f"{FRONT_SUM} > /run/front.sha256 && " + reload_script(FRONT_MAIN)


def install_files(source, target, names=NGINX_FILES) -> str:
    """Shell on the target: copy NAMES from SOURCE into TARGET (each by rename), keeping the
    files there as .NAME.previous for `restore_files`; prints the names that changed."""
    s, t = shlex.quote(str(source)), shlex.quote(str(target))
    parts = [f"set -e; mkdir -p {t}"]
    for name in names:
        n = shlex.quote(name)
        # Every failure stops the script (set -e does not reach into `a && b` lists).
        parts.append(f"if ! cmp -s {s}/{n} {t}/{n}; then "
                     f"if [ -e {t}/{n} ]; then cp -p {t}/{n} {t}/.{name}.previous || exit 1; "
                     f"else rm -f {t}/.{name}.previous; fi; "
                     f"cp {s}/{n} {t}/.{name}.new || exit 1; chmod 644 {t}/.{name}.new || exit 1; "
                     f"mv -f {t}/.{name}.new {t}/{n} || exit 1; echo {n}; fi")
    return "\n".join(parts) + "\n"


def restore_files(target, names) -> str:
    """Put back what `install_files` replaced."""
    t = shlex.quote(str(target))
    return "\n".join(f"if [ -e {t}/.{n}.previous ]; then mv -f {t}/.{n}.previous {t}/{n}; fi" for n in names) + "\n"
