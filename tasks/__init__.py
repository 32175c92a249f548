"""Tasks that run the hello stack (Django + Gunicorn + Nginx + PostgreSQL on Docker Compose).

`inv --list` shows them all; `inv --help TASK` shows a task's flags and their defaults.
"""
from invoke import Collection

from . import app, backup, benchmarks, db, deploy, doctor, lifecycle, volume
from .stdin import ChunkedLocal

ns = Collection(
    lifecycle.build,
    lifecycle.up,
    lifecycle.down,
    lifecycle.ps,
    lifecycle.logs,
    lifecycle.render_,
    app.migrate,
    app.createsuperuser,
    app.static,
    app.manage,
    doctor.doctor,
    db.ns,
    volume.ns,
    backup.ns,
    deploy.ns,
    deploy.rollback,
    benchmarks.bench,
)
# Piped input at the speed of the pipe, not 100 bytes a second (see tasks/stdin.py).
ns.configure({"runners": {"local": ChunkedLocal}})
