"""Starting the stack: the databases first, then their app role, then everything else.

The app connects as a role that owns its database and is not a superuser
(plans/secrets.provision_sql); that role must exist, with the password the app has,
before the app can become healthy. Making it is idempotent, so every start also moves a
stack made by an earlier version (the app connected as the superuser) onto it.
"""
from __future__ import annotations

from ..execution.runner import Runner
from ..plans import compose
from ..plans import secrets as secret_plans


def provision_databases(r: Runner, databases=None) -> None:
    for db in databases or r.stack.databases:
        r.run(secret_plans.provision(r.compose_argv([]), db), stdin_text=secret_plans.provision_sql(db),
              hide=True, what=f"giving {db.name} its app role")


def start_stack(r: Runner, build: bool = True, timeout=None, what: str = "starting the stack") -> None:
    """`compose up --wait` in two steps, with the databases' roles made in between."""
    timeout = 180 if timeout is None else timeout
    names = [db.name for db in r.stack.databases]
    r.compose(compose.up(names, build=False, timeout=timeout), what="starting the databases")
    provision_databases(r)
    r.compose(compose.up(build=build, timeout=timeout), what=what)
