"""Tasks that run the hello stack (Django + Gunicorn + Nginx + PostgreSQL on Docker Compose).

`inv --list` shows them all; `inv --help TASK` shows a task's flags and their defaults.

The package in layers, each importing only from the ones below it:
  the task modules here   entry points: flags in, a plan to the runner, a report out
  procedures/             what several tasks do (serving, volume copies, dumps, releases)
  execution/              the runner, the targets (here or a host), SSH, piped input
  plans/                  commands and shell as data, built from plain values
  source/                 config/stack.toml, the resolved settings, the rendered files
"""
import sys

from invoke import Collection

from . import adopt, app, backup, benchmarks, certs, db, deploy, doctor, lifecycle, processes, schedule, server, service, swarm, venv, volume
from .execution.stdin import ChunkedLocal
from .source.settings import DEFAULTS

# Each command a task runs is echoed before it starts, and its output then comes straight from
# the command: unless every line is flushed, a pipe (CI, `| tee`) gets the echo after the
# output it announces, or only when the task ends.
if hasattr(sys.stdout, "reconfigure"):
    sys.stdout.reconfigure(line_buffering=True)

ns = Collection(
    lifecycle.build,
    lifecycle.up,
    lifecycle.down,
    lifecycle.ps,
    lifecycle.logs,
    processes.scale,
    lifecycle.render_,
    adopt.init,
    app.migrate,
    app.createsuperuser,
    app.static,
    app.manage,
    doctor.doctor,
    db.ns,
    service.ns,
    volume.ns,
    backup.archive_ns,
    backup.ns,
    schedule.ns,
    deploy.ns,
    deploy.rollback,
    deploy.releases,
    certs.ns,
    server.ns,
    swarm.ns,
    benchmarks.bench,
    venv.venv,
)
# Piped input at the speed of the pipe, not 100 bytes a second (see execution/stdin.py);
# the tasks' defaults, which invoke.yaml or INVOKE_STACK_* may change (source/settings.py).
ns.configure({"runners": {"local": ChunkedLocal}, "stack": dict(DEFAULTS)})
