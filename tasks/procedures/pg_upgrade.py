"""Moving a database to a newer PostgreSQL major (`inv db.upgrade NAME --to 17`), and back
(`--rollback`); plans in tasks/plans/pg_upgrade.py.

The steps, under the project lock: the new major started in a new volume (its initdb
before the hold, which it would lengthen), writes held (new sessions read only: the app
serves reads throughout), a dump by the old major, the dump restored there as the app's role, every table's row count and the applied migrations
compared, then the switch (config/stack.toml says the new major, the database's container
is recreated on the new volume). A failure or Ctrl-C at any step runs the one undo: the
files put back, the old container started again on its volume, the new server and the
volume this run made removed, writes allowed again. The old volume is never written to
after the hold: it stays as the safety copy `--rollback` goes back to.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import TaskError, reason
from ..execution.interrupts import held_interrupts
from ..execution.runner import Runner
from ..execution.targets import LocalTarget
from ..plans import archives, compose
from ..plans import pg_upgrade as plans
from ..source import render
from ..source.stack import STACK_FILE, loads, read_text, with_database_major
from .adding import put_back, save, write_stack_change
from .dumps import dump_database
from .serving import wait_until_served
from .starting import start_backups, start_databases, start_healthy


@dataclass
class Upgrade:
    r: Runner
    name: str
    to: int
    timeout: float
    new_text: str = ""
    dump: Path | None = None
    held_at: float | None = None        # when writes were held (monotonic)
    made_volume: bool = False
    saved: dict = field(default_factory=dict)
    marked: bool = False                # the old volume says its data moved
    switched: Runner | None = None      # the runner of the new stack, once its files are written
    outage: float | None = None
    rows: int = 0
    tables: int = 0

    @property
    def db(self):
        return self.r.stack.database(self.name)

    @property
    def new_volume(self) -> str:
        return f"{self.r.project}_{self.db.volume_of(self.to)}"

    def old_sql(self, sql: str) -> list[str]:
        return plans.superuser_sql(archives.in_compose_service(self.r.compose_argv([]), self.db.name), self.db, sql)

    def new_sql(self, sql: str) -> list[str]:
        return plans.superuser_sql(plans.in_server(self.r.project, self.db), self.db, sql)


def running_major(r: Runner, db) -> int | None:
    version = r.probe(r.compose_argv(compose.exec_(db.name, ["postgres", "--version"])))
    major = archives.major_version(version.stdout) if version.ok else None
    return int(major) if major and major.isdigit() else None


def check(u: Upgrade) -> None:
    """What must hold before anything changes: the server up on the configured major, the
    new volume not there yet (an earlier upgrade, rolled back, left it)."""
    u.r.require_running(u.db.name)
    why = plans.refusal(u.db, running_major(u.r, u.db), u.to)
    if why:
        raise TaskError(why)
    u.r.require(not u.r.probe(compose.volume_exists(u.new_volume)).ok,
                f"the volume {u.new_volume} exists (an earlier upgrade, rolled back?): it holds that upgrade's "
                f"data; delete it with `docker volume rm {u.new_volume}`{u.r.target.on} to upgrade again")


def hold_writes(u: Upgrade) -> None:
    u.r.run(u.old_sql(plans.hold_writes_sql(u.db)), hide=True, what=f"holding writes to {u.db.name}")
    u.held_at = time.monotonic()
    u.r.say(f"writes to {u.db.name} held from now on; reads are served")


def dump(u: Upgrade) -> None:
    u.dump = dump_database(u.r, u.db, compressed=False)


def start_new(u: Upgrade) -> None:
    u.r.run(plans.create_volume(u.r.project, u.db.volume_of(u.to)), hide=True, what=f"creating {u.new_volume}")
    u.made_volume = True
    u.r.run(plans.start_server(u.r.project, u.db, u.to, u.r.target.config_dir), hide=True,
            what=f"starting PostgreSQL {u.to} in {u.new_volume}")
    ready = plans.server_ready(u.r.project, u.db)
    u.r.wait_until(f"PostgreSQL {u.to} in {u.new_volume}",
                   lambda: None if u.r.probe(ready).ok else "not ready", u.timeout, failure="did not start")


def restore(u: Upgrade) -> None:
    u.r.run(archives.pipeline(plans.restore(plans.in_server(u.r.project, u.db), u.db), input=str(u.dump)),
            what=f"pg_restore into PostgreSQL {u.to} as the app role")


def compare(u: Upgrade) -> None:
    old, new = (plans.counts(u.r.run(sql(plans.COUNT_ROWS_SQL), hide=True, what="counting rows").stdout)
                for sql in (u.old_sql, u.new_sql))
    differ = plans.differences(old, new)
    u.r.require(not differ, f"the new server's rows differ: {'; '.join(differ)}")
    migrations = [u.r.run(sql(plans.MIGRATIONS_SQL), hide=True, what="reading the migrations").stdout
                  for sql in (u.old_sql, u.new_sql)]
    u.r.require(migrations[0] == migrations[1], "the new server's django_migrations differ from the old one's")
    u.tables, u.rows = len(old), sum(old.values())
    u.r.report(f"compared {u.tables} tables, {u.rows} rows, and the migrations: the same on PostgreSQL {u.to}")


def switch(u: Upgrade) -> None:
    u.r.run(plans.remove_server(u.r.project, u.db), hide=True, what="stopping the new server")
    u.r.compose(plans.mark_moved(u.db, u.to), hide=True, what=f"marking {u.r.project}_{u.db.volume} as moved")
    u.marked = True
    u.switched = write_major(u.r, u.new_text, u.saved)
    start_databases(u.switched, u.timeout)
    u.outage = time.monotonic() - u.held_at
    start_backups(u.switched)  # its pg_dump is the newest major's
    wait_until_served(u.switched, u.timeout)


STEPS = tuple(zip(plans.UPGRADE_STEPS, (start_new, hold_writes, dump, restore, compare, switch)))


def write_major(r: Runner, new_text: str, saved: dict) -> Runner:
    """config/stack.toml and the files made from it here, and on a host its live release's
    copies (rendered for its site), for NEW_TEXT; SAVED gets each as it was first."""
    new_stack = loads(new_text)
    local = r.here()
    saved.update(save(local.root, [STACK_FILE, *render.rendered(local.stack), *render.rendered(new_stack)]))
    new_local = write_stack_change(local, new_text)
    if isinstance(r.target, LocalTarget):
        return new_local
    for path, text in {STACK_FILE: new_text,
                       **render.site_files(new_stack, r.target.site, r.target.backup_place)}.items():
        r.write(r.root / path, text, mode=0o644)
    return r.with_stack(new_stack)


def undo(u: Upgrade, step: str, exc: BaseException) -> TaskError:
    """The one way back from a failed or interrupted upgrade; the error to raise."""
    done = []
    with held_interrupts():
        if u.switched is not None:
            put_back(u.r.here().root, u.saved)
            put_back_on_host(u)
            u.r.compose(compose.up([u.db.name], build=False, wait=False, no_deps=True),
                        check=False, what=f"starting {u.db.name} again")  # start_databases waits below
        if u.marked:
            u.r.compose(plans.unmark_moved(u.db), check=False, hide=True)
        if u.switched is not None:
            start_databases(u.r, u.timeout)
            done.append(f"{u.db.name} runs on {u.r.project}_{u.db.volume} again")
        u.r.run(plans.remove_server(u.r.project, u.db), check=False, hide=True)
        if u.made_volume:
            u.r.run(compose.remove_volume(u.new_volume), check=False, hide=True)
            done.append(f"removed {u.new_volume}")
        if u.held_at is not None:
            u.r.run(u.old_sql(plans.release_writes_sql(u.db)), check=False, hide=True)
            done.append("writes allowed again")
    code = 130 if isinstance(exc, KeyboardInterrupt) else 1
    return TaskError(f"upgrade of {u.db.name} to PostgreSQL {u.to} failed while {step} ({reason(exc)}); "
                     f"{'; '.join(done) or 'nothing was changed'}", code)


def put_back_on_host(u: Upgrade) -> None:
    if isinstance(u.r.target, LocalTarget):
        return
    for path, text in {STACK_FILE: read_text(u.r.here().root),
                       **render.site_files(u.r.stack, u.r.target.site, u.r.target.backup_place)}.items():
        u.r.write(u.r.root / path, text, mode=0o644)


def refuse_moved_data(r: Runner) -> None:
    """Before the databases start: none may start on a volume its data moved away from (a
    stack file without the upgrade), nor on a new empty one while its data waits in an
    older major's (a stack file with an upgrade this place has not made yet). Read only
    where a database has volumes of two majors, or none of its own major's."""
    for db in r.stack.databases:
        present = plans.majors_present(r.project, db, r.probe(plans.database_volumes(r.project, db)).stdout.split())
        if present <= {db.postgres}:
            continue
        older = sorted(major for major in present if major < db.postgres)
        if db.postgres not in present:
            if older:
                raise TaskError(plans.not_moved_yet(db, older[-1], r.project, r.target.host_flag))
            continue
        moved = r.compose_probe(plans.read_moved(db)).stdout.strip()
        if moved:
            raise TaskError(plans.moved_away(db, moved, r.project, r.target.host_flag))


def upgrade(r: Runner, name: str, to, timeout: float) -> None:
    """NAME on PostgreSQL TO (see the module's docstring); refused in one line, before
    anything changes, when TO is not a newer major."""
    db = r.stack.database(name)
    why = plans.refusal(db, None, to)
    if why:
        raise TaskError(why)
    u = Upgrade(r, name, int(to), timeout)
    u.new_text = with_database_major(read_text(r.here().root), db.name, u.to)
    check(u)
    started, took = time.monotonic(), []
    for step, run in STEPS:
        began = time.monotonic()
        try:
            run(u)
        except (Exception, KeyboardInterrupt) as exc:
            raise undo(u, step, exc) from None
        took.append(f"{step} {time.monotonic() - began:.1f}s")
    r.report("; ".join(took))
    r.report(f"{db.name} upgraded to PostgreSQL {u.to} in {time.monotonic() - started:.1f}s "
             f"(writes refused for {u.outage:.1f}s; {u.tables} tables, {u.rows} rows compared); "
             f"the old data stays in {r.project}_{db.volume}: `inv db.upgrade {db.name} --rollback"
             f"{r.target.host_flag}` goes back to it")


def rollback(r: Runner, name: str, timeout: float) -> None:
    """NAME back on the newest older major whose volume an upgrade kept; writes made since
    the upgrade stay in the newer volume, which is kept."""
    db = r.stack.database(name)
    kept = [(major, f"{r.project}_{volume}") for major, volume in plans.older_volumes(db)
            if r.probe(compose.volume_exists(f"{r.project}_{volume}")).ok]
    if not kept:
        raise TaskError(f"{db.name} is on PostgreSQL {db.postgres} and no volume of an older major is left: "
                        f"nothing to roll back to")
    major, volume = kept[0]
    new_text = with_database_major(read_text(r.here().root), db.name, major)
    back = write_major(r, new_text, {})
    old = back.stack.database(name)
    # Its writes were held at the upgrade: allowed again before anything (the app role's
    # provisioning among them) writes.
    start_healthy(back, [old.name], timeout, f"{old.name} on {volume}")
    back.run(plans.superuser_sql(archives.in_compose_service(back.compose_argv([]), old.name), old,
                                 plans.release_writes_sql(old)), hide=True, what=f"allowing writes to {old.name}")
    back.compose(plans.unmark_moved(old), hide=True, what=f"unmarking {volume}")
    start_databases(back, timeout)
    wait_until_served(back, timeout)
    back.report(f"{db.name} is back on PostgreSQL {major} ({volume}); what was written on {db.postgres} since the "
                f"upgrade stays in {r.project}_{db.volume}")
