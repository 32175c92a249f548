"""Logical dumps of a running database (pg_dump custom format), and loading one all or
nothing: into a fresh database first, then swapped in by renaming."""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from ..execution.runner import Runner
from ..plans import archives, compose
from ..source.stack import APP_ROLE
from .backup_files import backup_dir, fresh_name, publish, sha256, temporary_name
from .locks import volume_lock


def dump_database(r: Runner, db, compressed: bool = True) -> Path:
    r.require_running(db.name)
    directory = backup_dir(r)
    with volume_lock(r, f"{r.project}_{db.volume}"):
        settle_loads(r, db, archives.in_compose_service(r.compose_argv([]), db.name))
        final = fresh_name(r, directory, db.name, ".dump")
        return _dump_database(r, db, final, compressed)


def _dump_database(r: Runner, db, final, compressed: bool = True) -> Path:
    tmp = temporary_name(final)
    r.say(f"dumping {db.name} -> {final}")
    in_db = archives.in_compose_service(r.compose_argv([]), db.name)
    try:
        version = r.probe(r.compose_argv(compose.exec_(db.name, ["postgres", "--version"])))
        r.run(archives.pipeline(archives.pg_dump(in_db, db.name, compressed), output=str(tmp)),
              what=f"pg_dump of {db.name}")
        publish(r, tmp, final,
                kind="dump", project=r.project, subject=db.name, database=db.name, archive=final.name,
                dump_format="pg_dump custom", sha256=sha256(r, tmp), size_bytes=r.size(tmp),
                postgres_major=archives.major_version(version.stdout),
                created=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    except BaseException:
        r.remove(tmp)
        raise
    return final


def load_database(r: Runner, db, dump_file) -> None:
    """Restore a dump into a fresh database, all or nothing, then swap it in for DB."""
    r.require_running(db.name)
    with volume_lock(r, f"{r.project}_{db.volume}"):
        load_into(r, db, archives.in_compose_service(r.compose_argv([]), db.name), dump_file)


def load_into(r: Runner, db, in_db: list[str], dump_file, anywhere: bool = False) -> None:
    """DUMP_FILE (on R's host) loaded into a fresh database of DB's server (IN_DB runs a
    command in its container; ANYWHERE: from wherever the session starts, as on a node of a
    cluster), then swapped in for DB; nothing changed if it does not load."""
    when = archives.stamp().lower()
    fresh, retired = f"{db.name}__load_{when}", f"{db.name}__old_{when}"

    def sql(statement: str):
        return archives.run_sql(in_db, db.name, statement)

    settle_loads(r, db, in_db, anywhere)
    r.run(sql(f"CREATE DATABASE {archives.quote_ident(fresh)} OWNER {archives.quote_ident(APP_ROLE)}"),
          what=f"creating {fresh}", anywhere=anywhere)
    try:
        r.run(archives.pipeline(archives.pg_restore(in_db, fresh, APP_ROLE), input=str(dump_file)),
              what=f"pg_restore into {fresh} as {APP_ROLE}", anywhere=anywhere)
    except BaseException:
        r.run(sql(f"DROP DATABASE IF EXISTS {archives.quote_ident(fresh)}"), check=False, anywhere=anywhere)
        r.say(f"nothing changed in {db.name}: the dump did not load")
        raise
    r.run(sql(archives.swap_databases_sql(db.name, fresh, retired)), what=f"swapping {fresh} in for {db.name}",
          anywhere=anywhere)
    r.run(sql(f"DROP DATABASE {archives.quote_ident(retired)}"), check=False,
          what=f"dropping the previous {db.name}", anywhere=anywhere)
    r.report(f"loaded {dump_file.name} into {db.name}")


def loads_left(r: Runner, db, in_db: list[str], anywhere: bool = False) -> list[str] | None:
    """DB and the databases a load of it made, by name (None: the server did not answer)."""
    result = r.probe(archives.run_sql(in_db, db.name, archives.loads_of_sql(db.name)), anywhere=anywhere)
    return result.stdout.split() if result.ok else None


def settle_interrupted_loads(r: Runner) -> None:
    """What killed loads left in the running database servers, settled before the stack
    starts on them (a live database renamed away would fail the app's health check): looked
    for first, then settled under the database's volume lock (settle_loads looks again)."""
    running = r.running_services()
    for db in r.stack.databases:
        if db.name not in running:
            continue
        in_db = archives.in_compose_service(r.compose_argv([]), db.name)
        if archives.settle_loads(db.name, loads_left(r, db, in_db) or [db.name]):
            with volume_lock(r, f"{r.project}_{db.volume}"):
                settle_loads(r, db, in_db)


def settle_loads(r: Runner, db, in_db: list[str], anywhere: bool = False) -> None:
    """What a killed load of DB left (archives.settle_loads), settled; under DB's volume
    lock, so that no load running now is taken for one."""
    for _, what, statements in archives.settle_loads(db.name, loads_left(r, db, in_db, anywhere) or [db.name]):
        r.say(what)
        for statement in statements:
            r.run(archives.run_sql(in_db, db.name, statement), hide=True, anywhere=anywhere, what=what)
