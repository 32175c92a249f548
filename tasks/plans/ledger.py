"""The release ledger, as data: what each release on a host records (releases/NAME/release.json)
and how the migrations a database has applied are read.

A release records its git commit, its image id, when and by whom it was deployed, and, per
database, the migrations applied once its release phase ran: everything its code knows. A
rollback compares that with what each database has applied now (procedures/ledger.py).
"""
from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass

from ..source.stack import APP_ROLE
from ..source.values import DATABASE
from .release import SERVED

LEDGER = "release.json"
MIGRATIONS_SQL = "SELECT app || '.' || name FROM django_migrations ORDER BY id"


def entry(release: str, commit: str, image: str, deployed_at: str, deployed_by: str,
          migrations: dict[str, list[str]]) -> str:
    return json.dumps({"release": release, "commit": commit, "image": image, "deployed_at": deployed_at,
                       "deployed_by": deployed_by, "migrations": migrations}, indent=2, sort_keys=True) + "\n"


# What `entry` writes, and what each field may hold. The text fields are shown by `inv
# releases`: one printable line, so that an edited file cannot garble the terminal.
TEXT_FIELDS = ("release", "commit", "image", "deployed_at", "deployed_by")
LINE = re.compile(r"[^\x00-\x1f\x7f-\x9f]{0,200}")
# A migration as the databases print it (MIGRATIONS_SQL): app.name.
MIGRATION = re.compile(r"[^\s.]+\.\S+")


@dataclass(frozen=True)
class Invalid:
    """A ledger that is not what `entry` writes (edited by hand, cut short, another
    release's): WHY, in a few words. Nothing in it is trusted: its release's migrations are
    unknown, as for a release without a ledger."""
    why: str


def _kind(value) -> str:
    """VALUE's JSON type, for a message."""
    for kind, name in ((bool, "true/false"), (str, "a string"), ((int, float), "a number"), (list, "a list"),
                       (dict, "an object")):
        if isinstance(value, kind):
            return name
    return "null"


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def problem(value, release: str | None = None) -> str | None:
    """What is wrong with VALUE as the ledger of RELEASE (any release when None), or None."""
    if not isinstance(value, dict):
        return f"{_kind(value)}, not an object"
    missing = [key for key in (*TEXT_FIELDS, "migrations") if key not in value]
    if missing:
        return f"no {', '.join(missing)}"
    for key in TEXT_FIELDS:
        if not isinstance(value[key], str) or LINE.fullmatch(value[key]) is None:
            return f"{key} is {_kind(value[key]) if not isinstance(value[key], str) else _shown(value[key])}, " \
                   "not a line of text"
    if release is not None and value["release"] != release:
        return f"it is the ledger of {_shown(value['release'])}"
    migrations = value["migrations"]
    if not isinstance(migrations, dict):
        return f"migrations is {_kind(migrations)}, not an object of databases"
    for db, names in migrations.items():
        if DATABASE.fullmatch(db) is None:
            return f"migrations names {_shown(db)}, not a database"
        if not isinstance(names, list):
            return f"the migrations of {db} are {_kind(names)}, not a list"
        for name in names:
            if not isinstance(name, str) or MIGRATION.fullmatch(name) is None:
                return f"the migrations of {db} hold {_shown(name)}, not an app.name"
    return None


def parse(text: str, release: str | None = None) -> dict | Invalid:
    """The ledger in TEXT, every field checked (and that it is RELEASE's, when given)."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return Invalid("not JSON")
    why = problem(value, release)
    return value if why is None else Invalid(why)


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
    """Shell: for each release directory, a `== NAME SERVED?` line, then its ledger (if any),
    each of its lines after a `|`: whatever a ledger holds, it cannot pass for a release."""
    d = shlex.quote(f"{directory}/releases")
    return (f"cd {d} 2>/dev/null || exit 0; for r in *; do test -d \"$r\" || continue; "
            f"s=no; test -e \"$r/{SERVED}\" && s=yes; echo \"== $r $s\"; "
            f"sed 's/^/|/' \"$r/{LEDGER}\" 2>/dev/null; echo; done")


def split_all(text: str) -> list[tuple[str, bool, dict | Invalid | None]]:
    """(release, served, its ledger, Invalid, or None without one) from what `read_all`
    printed, oldest first."""
    found, name, served, body = [], None, False, []
    for line in text.splitlines() + ["== "]:
        if line.startswith("== "):
            if name:
                found.append((name, served, parse("\n".join(body), name) if "".join(body).strip() else None))
            parts = line[3:].split()
            name, served, body = (parts[0], parts[1:] == ["yes"], []) if parts else (None, False, [])
        elif line.startswith("|"):
            body.append(line[1:])
    return sorted(found, key=lambda release: release[:2])


def ahead(applied: dict[str, list[str]], known: dict[str, list[str]]) -> dict[str, list[str]]:
    """Per database, the migrations APPLIED there that KNOWN (a release's code) lacks."""
    extra = {}
    for db, names in applied.items():
        unknown = [name for name in names if name not in set(known.get(db, []))]
        if unknown:
            extra[db] = unknown
    return extra
