"""Django's manage.py steps that several tasks run in the app container."""
from __future__ import annotations

from ..execution.runner import Runner
from ..plans import compose


def migrate_all(r: Runner, database=None) -> None:
    """Migrate DATABASE, or every database one after the other (Django migrates one
    database per command)."""
    targets = [r.stack.database(database)] if database else list(r.stack.databases)
    r.require_running(compose.APP)
    for db in targets:
        r.say(f"migrating {db.name} (alias {db.alias})")
        r.compose(compose.migrate(db.alias), what=f"migrate on {db.name}")


def collect_static(r: Runner) -> None:
    r.compose(compose.collectstatic(), what="collectstatic")
