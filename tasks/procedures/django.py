"""Django's manage.py steps that several tasks run in the app container."""
from __future__ import annotations

import re

from ..errors import TaskError, last_line
from ..execution.runner import Runner
from ..plans import compose, diagnosis


def migrate_all(r: Runner, database=None) -> None:
    """Migrate DATABASE, or every database one after the other (Django migrates one
    database per command)."""
    targets = [r.stack.database(database)] if database else list(r.stack.databases)
    r.require_running(compose.APP)
    for db in targets:
        migrate(r, db, compose.migrate(db.alias), compose.exec_(compose.APP, diagnosis.settings_databases()))


def migrate(r: Runner, db, plan, probe) -> None:
    """The migrate PLAN (compose arguments) of DB. When it fails, the error says which
    database the settings produced for DB's alias, read by PROBE (compose arguments, in a
    container of the same image): a project that ignored the stack's databases fell back
    to SQLite, or has no such alias, and its migrate's own error does not say so."""
    r.say(f"migrating {db.name} (alias {db.alias})")
    result = r.compose(plan, what=f"migrate on {db.name}", check=False)
    if result.failed:
        raise migrate_failed(r, db, result, probe)


def migrate_failed(r: Runner, db, result, probe) -> TaskError:
    """The error of DB's migrate that failed with RESULT, with what the settings gave for it."""
    said = r.compose_probe(probe)
    settings_gave = diagnosis.databases_line(
        diagnosis.parse_databases(said.stdout), db.alias, db.name,
        last_line(said.stderr, f"exit status {said.exited}" if said.failed else "it printed nothing"))
    why = error_line(result.stderr)
    return TaskError(f"migrate on {db.name} failed (exit status {result.exited}{': ' + why if why else ''}); "
                     f"{settings_gave}")


# A Python exception's last line, `package.module.Name: message` (PostgreSQL's HINT or
# DETAIL lines come after it, and say less).
_EXCEPTION = re.compile(r"^[A-Za-z_][\w.]*: \S")


def error_line(stderr: str) -> str:
    """The line of a failed manage.py command's output that says why: its exception."""
    lines = [line.strip() for line in (stderr or "").splitlines() if line.strip()]
    found = [line for line in lines if _EXCEPTION.match(line)]
    return found[-1] if found else last_line(stderr, "")


def collect_static(r: Runner) -> None:
    r.compose(compose.collectstatic(), what="collectstatic")
