"""The release ledger, as data: what each release on a host records (releases/NAME/release.json)
and how the migrations a database has applied are read.

A release records its git commit, its image id, when and by whom it was deployed, and, per
database, the migrations applied once its release phase ran: everything its code knows. A
rollback compares that with what each database has applied now (procedures/ledger.py).
"""
from __future__ import annotations

import json
import shlex

from ..source.stack import APP_ROLE
from .release import SERVED

LEDGER = "release.json"
MIGRATIONS_SQL = "SELECT app || '.' || name FROM django_migrations ORDER BY id"


def entry(release: str, commit: str, image: str, deployed_at: str, deployed_by: str,
          migrations: dict[str, list[str]]) -> str:
    return json.dumps({"release": release, "commit": commit, "image": image, "deployed_at": deployed_at,
                       "deployed_by": deployed_by, "migrations": migrations}, indent=2, sort_keys=True) + "\n"


def parse(text: str) -> dict | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def applied_migrations(db) -> list[str]:
    """Compose: the migrations DB has applied, one `app.name` a line, read over the
    container's socket as the app's role: django_migrations is the app's to shape (a view,
    a column type with its own operators), and whatever a query of it runs must run with
    the app's rights, not the superuser's."""
    return ["exec", "-T", db.name, *read_migrations(db.name)]


def read_migrations(database: str) -> list[str]:
    """psql, in DATABASE's container, printing MIGRATIONS_SQL's rows as the app's role."""
    return ["psql", "--username", APP_ROLE, "--dbname", database, "--no-psqlrc", "--tuples-only", "--no-align",
            "--command", MIGRATIONS_SQL]


def read_all(directory) -> str:
    """Shell: for each release directory, a `== NAME SERVED?` line, then its ledger (if any)."""
    d = shlex.quote(f"{directory}/releases")
    return (f"cd {d} 2>/dev/null || exit 0; for r in *; do test -d \"$r\" || continue; "
            f"s=no; test -e \"$r/{SERVED}\" && s=yes; echo \"== $r $s\"; cat \"$r/{LEDGER}\" 2>/dev/null; echo; done")


def split_all(text: str) -> list[tuple[str, bool, dict | None]]:
    """(release, served, ledger or None) from what `read_all` printed, oldest first."""
    found, name, served, body = [], None, False, []
    for line in text.splitlines() + ["== "]:
        if line.startswith("== "):
            if name:
                found.append((name, served, parse("\n".join(body)) if "".join(body).strip() else None))
            parts = line[3:].split()
            name, served, body = (parts[0], parts[1:] == ["yes"], []) if parts else (None, False, [])
        else:
            body.append(line)
    return sorted(found)


def ahead(applied: dict[str, list[str]], known: dict[str, list[str]]) -> dict[str, list[str]]:
    """Per database, the migrations APPLIED there that KNOWN (a release's code) lacks."""
    extra = {}
    for db, names in applied.items():
        unknown = [name for name in names if name not in set(known.get(db, []))]
        if unknown:
            extra[db] = unknown
    return extra
