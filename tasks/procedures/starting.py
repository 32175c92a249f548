"""Starting the stack, or moving it to new code, without dropping a request.

In order: the databases (left alone when their definition did not change), their app
role, the app's secrets, the release phase (migrations and static files, in a one-off
container of the new image, while the old app still serves), then the rollout
(procedures/rollout.py: a new app container beside the old, Nginx reloaded, the old one
drained).

The app connects as a role that owns its database and is not a superuser
(plans/secrets.provision_sql); that role must exist, with the password the app has,
before the app can become healthy. Making it is idempotent, so every start also moves a
stack made by an earlier version (the app connected as the superuser) onto it.
"""
from __future__ import annotations

import json

from ..errors import TaskError
from ..execution.runner import Runner
from ..plans import backups as backup_plans
from ..plans import compose, diagnosis
from ..plans import ledger
from ..plans import rollout as rollout_plans
from ..plans import secrets as secret_plans
from ..source import settings
from ..source.stack import BACKUP_NOTIFY, NOTIFY_FROM_STACK
from .building import build_app
from .django import migrate_failed
from .rollout import roll_out, wait_containers_healthy


def provision_databases(r: Runner, databases=None) -> None:
    for db in databases or r.stack.databases:
        r.run(secret_plans.provision(r.compose_argv([]), db), stdin_text=secret_plans.provision_sql(db),
              hide=True, what=f"giving {db.name} its app role")


def start_healthy(r: Runner, names: list[str], timeout: float, what: str) -> None:
    """The services NAMES started (their dependencies not) and healthy by their own health
    tests, run as soon as they start: not `up --wait`, which waits for the engine's verdict,
    up to a whole health interval (render.HEALTH_INTERVAL) after they are ready."""
    r.compose(compose.up(names, build=False, wait=False, no_deps=True), what=f"starting {what}")
    found = [line.split() for line in r.probe(rollout_plans.service_containers(r.project)).stdout.splitlines()]
    ids = [fields[0] for fields in found if len(fields) == 2 and fields[1] in names]
    r.require(len(ids) == len(names), f"expected a container for each of {', '.join(names)}, found {len(ids)}")
    wait_containers_healthy(r, ids, timeout, what)


def start_databases(r: Runner, timeout: float) -> None:
    """The databases and the services ([[services]]) started and healthy, before the
    release phase: migrations and the new app find them up."""
    from .pg_upgrade import refuse_moved_data  # it starts databases itself

    refuse_moved_data(r)
    services = [service.name for service in r.stack.services]
    names = [db.name for db in r.stack.databases] + services
    start_healthy(r, names, timeout, "the databases" + (" and services" if services else ""))
    provision_databases(r)
    r.compose(rollout_plans.run_once("secrets-init"), what="giving the app its secrets", hide=True)


def release_phase(r: Runner, migrate: bool = True, static: bool = True) -> None:
    """Migrations (each database in turn) and static files, in one one-off container of the
    image about to serve. Migrations must keep working with the code that still serves
    (docs/deploying.md); the hashed names of collectstatic let the old and the new files
    live side by side."""
    databases = list(r.stack.databases) if migrate else []
    steps = [["migrate", "--noinput", "--database", db.alias] for db in databases]
    steps += [["collectstatic", "--noinput", "--verbosity", "0"]] if static else []
    if not steps:
        return
    for db in databases:
        r.say(f"migrating {db.name} (alias {db.alias})")
    result = r.compose(rollout_plans.release_phase(steps), what="the release phase", check=False)
    if result.ok:
        return
    failed = rollout_plans.failed_step(result.stderr, len(steps))
    if failed is not None and failed < len(databases):
        probe = rollout_plans.run_once(compose.APP, diagnosis.settings_databases())
        raise migrate_failed(r, databases[failed], result, probe)
    what = "collectstatic" if failed is not None else f"the release phase ({', '.join(dict.fromkeys(s[0] for s in steps))})"
    raise TaskError(f"{what} failed (exit status {result.exited})")


def start_stack(r: Runner, build: bool = True, timeout=None, what: str = "starting the stack",
                migrate: bool = True, static: bool = True) -> None:
    """The stack of R's directory serves its code (see the module's docstring)."""
    timeout = settings.DEFAULTS["timeout"] if timeout is None else timeout
    if build:
        build_app(r, "building the app image")
    start_databases(r, timeout)
    release_phase(r, migrate, static)
    r.say(what)
    roll_out(r, timeout)
    start_backups(r)


def start_backups(r: Runner) -> None:
    """The backup service ([backups] in config/stack.toml) built and waiting for its
    schedule; a local repository's folder made first, owned by the service's user."""
    backups = r.stack.backups
    if backups is None:
        return
    expected = {}
    for db in r.stack.databases:
        result = r.compose(ledger.applied_migrations(db), hide=True, check=False)
        expected[db.name] = sorted(result.stdout.split()) if result.ok else []
    backup_settings(r, expected)
    if backups.local_repository:
        r.compose(["build", backup_plans.SERVICE], what="building the backup image")
        r.run(backup_plans.own_repository(f"{r.project}-backup:latest", backups.repository),
              what=f"making the repository folder {backups.repository}")
    r.compose(backup_plans.start(), what="starting the backup service")


def backup_settings(r: Runner, expected: dict | None) -> None:
    """The files the backup service reads beside its secrets, in R's config folder: what
    the running code has migrated each database to, EXPECTED (None: left as it is), which
    the drill checks a restored snapshot against as `manage.py migrate --check` would (it
    has no app code to run); the notify URLs [backups] names."""
    backups = r.stack.backups
    folder = r.target.config_dir / backup_plans.EXPECTED
    r.shell(backup_plans.expectations_folder(folder), what="making the backup service's expectations folder")
    if expected is not None or not r.exists(folder / "migrations.json"):
        r.write(folder / "migrations.json", json.dumps(expected or {}) + "\n", mode=0o644)
    # [backups] notify is the source of truth when set; `inv backup.notify` otherwise. A
    # file of secrets-init's, not the service's environment: URLs hold tokens. A first line
    # says which wrote it, so that URLs dropped from config/stack.toml stop being used.
    notify = r.target.config_dir / "secrets" / BACKUP_NOTIFY
    if backups.notify:
        r.write(notify, NOTIFY_FROM_STACK + "\n".join(backups.notify) + "\n", mode=0o600)
    else:
        r.shell(backup_plans.forget_notify_from_stack(notify), what="removing the notify URLs [backups] no longer names")
