"""Tasks that run the hello stack (Django + Gunicorn + Nginx + PostgreSQL on Docker Compose).

`inv --list` shows them all; `inv --help TASK` shows a task's flags and their defaults.
"""
from invoke import Collection

from . import app, backup, db, deploy, doctor, lifecycle, volume

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
)
