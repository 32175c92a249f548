"""Plans for moving a database to a newer PostgreSQL major (`inv db.upgrade`), as data: what
is refused, the server of the new major beside the running one, the SQL that holds writes,
the row counts compared, and the names of the steps.

Each major keeps its data in a volume of its own (Database.volume_of): the new major is
loaded into a new volume from a dump made by the old one, and the old volume stays as it
was at the switch, the safety copy `--rollback` goes back to.
"""
from __future__ import annotations

from ..source.stack import APP_ROLE, POSTGRES_MAJORS, Database, postgres_image_variable
from .archives import SUPERUSER_SEARCH_PATH, quote_ident

# A throwaway server of the new major: found again (and removed) by this label.
SERVER_LABEL = "hello.pg-upgrade"


def refusal(db: Database, running: int | None, to) -> str | None:
    """Why upgrading DB (whose server runs major RUNNING; None: not read) to TO is refused,
    in one line, or None."""
    if isinstance(to, bool) or not isinstance(to, int) and not (isinstance(to, str) and to.isdigit()):
        return f"--to {to!r} is not a PostgreSQL major: one of {', '.join(map(str, POSTGRES_MAJORS))}"
    to = int(to)
    if to not in POSTGRES_MAJORS:
        return f"--to {to} is not a major the stack runs: one of {', '.join(map(str, POSTGRES_MAJORS))}"
    if running is not None and running != db.postgres:
        return (f"{db.name} runs PostgreSQL {running} but config/stack.toml says {db.postgres}: "
                f"set postgres = {running} for it and run `inv render` first")
    if to < db.postgres:
        return (f"{db.name} is on PostgreSQL {db.postgres}: a downgrade to {to} is refused "
                f"(`inv db.upgrade {db.name} --rollback` goes back to the volume an upgrade kept)")
    if to == db.postgres:
        return f"{db.name} is already on PostgreSQL {to}: nothing to do"
    return None


def server_name(project: str, db: Database) -> str:
    return f"{project}-{db.name}-pg-upgrade"


def create_volume(project: str, volume: str) -> list[str]:
    """VOLUME made with the labels Compose gives its own, so that the stack adopts it as its
    volume of that name (no "created outside Compose" warning)."""
    return ["docker", "volume", "create", "--label", f"com.docker.compose.project={project}",
            "--label", f"com.docker.compose.volume={volume}", f"{project}_{volume}"]


def start_server(project: str, db: Database, to: int, config_dir) -> list[str]:
    """The new major's server in its new volume, made as the stack's database service makes
    it (the same superuser, database, password file and app role script), with no network:
    the dump reaches it through `docker exec`. Its image is the one the compose file will
    name: the variable from the environment, else from the stack's .env (a host's release
    has one), else the official image."""
    new = Database(db.name, db.default, db.apps, to)
    secret = f"/run/secrets/{db.secret_name}"
    variable = postgres_image_variable(to)
    pick = (f'image="${{{variable}:-}}"; [ -n "$image" ] || [ ! -f .env ] || '
            f'image="$(sed -n "s/^{variable}=//p" .env | tail -n 1)"; exec "$@" "${{image:-postgres:{to}}}"')
    return ["bash", "-c", pick, "start", "docker", "run", "--detach", "--name", server_name(project, db), "--label", f"{SERVER_LABEL}={project}",
            "--pull", "never", "--network", "none",
            "--env", f"POSTGRES_DB={db.name}", "--env", f"POSTGRES_USER={db.name}",
            "--env", f"POSTGRES_PASSWORD_FILE={secret}",
            "--mount", f"type=bind,source={config_dir}/secrets/{db.secret_name},target={secret},readonly",
            "--mount", f"type=bind,source={config_dir}/db/app-role.sh,"
                       f"target=/docker-entrypoint-initdb.d/app-role.sh,readonly",
            "--volume", f"{project}_{new.volume}:{new.data_mount}"]


def in_server(project: str, db: Database) -> list[str]:
    return ["docker", "exec", "-i", server_name(project, db)]


def server_ready(project: str, db: Database) -> list[str]:
    """Answers once the new server serves on TCP: the image's first start runs a server on
    its socket alone while it initialises, then stops it."""
    return [*in_server(project, db), "pg_isready", "-h", "127.0.0.1", "-U", db.name, "-d", db.name]


def remove_server(project: str, db: Database) -> list[str]:
    return ["docker", "rm", "--force", "--volumes", server_name(project, db)]


def hold_writes_sql(db: Database) -> str:
    """New sessions of DB read only, and the open ones ended so that the app's next ones are:
    reads are served during the copy, writes refused (and none lost)."""
    q, lit = quote_ident(db.name), db.name.replace("'", "''")
    return (f"ALTER DATABASE {q} SET default_transaction_read_only = on; "
            f"SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            f"WHERE datname = '{lit}' AND pid <> pg_backend_pid()")


def release_writes_sql(db: Database) -> str:
    return f"ALTER DATABASE {quote_ident(db.name)} RESET default_transaction_read_only"


# Every table's rows, counted as a superuser whose names resolve in pg_catalog alone: a line
# `schema.table count` each, in order.
COUNT_ROWS_SQL = (
    "SELECT format('%s.%s %s', n.nspname, c.relname, "
    "(xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM %I.%I', n.nspname, c.relname), "
    "false, true, '')))[1]::text) "
    "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
    "AND n.nspname NOT LIKE 'pg\\_toast%' ORDER BY 1")
MIGRATIONS_SQL = ("SELECT CASE WHEN to_regclass('public.django_migrations') IS NULL THEN '' ELSE "
                  "query_to_xml('SELECT app, name FROM public.django_migrations ORDER BY app, name', false, true, '')::text "
                  "END")


def counts(output: str) -> dict[str, int]:
    """COUNT_ROWS_SQL's answer as {table: rows}."""
    found = {}
    for line in output.splitlines():
        table, _, rows = line.rpartition(" ")
        if table:
            found[table] = int(rows)
    return found


def differences(old: dict[str, int], new: dict[str, int]) -> list[str]:
    """What differs between the row counts of the two servers, a phrase each."""
    found = []
    for table in sorted(old.keys() | new.keys()):
        if table not in new:
            found.append(f"{table} is missing")
        elif table not in old:
            found.append(f"{table} is new")
        elif old[table] != new[table]:
            found.append(f"{table} has {new[table]} rows, not {old[table]}")
    return found


def restore(in_new: list[str], db: Database) -> list[str]:
    """pg_restore as the app's role (never a superuser: whatever the dump holds runs with
    the app's rights), all or nothing."""
    return [*in_new, "pg_restore", "--username", APP_ROLE, "--dbname", db.name,
            "--no-owner", "--no-privileges", "--exit-on-error", "--single-transaction"]


def superuser_sql(in_db: list[str], db: Database, sql: str) -> list[str]:
    """SQL as DB's superuser, names resolved in pg_catalog alone, its session writable even
    while the database's writes are held (a -c each: a transaction each)."""
    return [*in_db, "psql", "--username", db.name, "--dbname", db.name, "-v", "ON_ERROR_STOP=1", "-Atq",
            "-c", SUPERUSER_SEARCH_PATH, "-c", "SET default_transaction_read_only = off", "-c", sql]


def older_volumes(db: Database) -> list[tuple[int, str]]:
    """The majors below DB's, newest first, with the volume each keeps its data in: where
    `--rollback` looks for the one an upgrade kept."""
    return [(major, db.volume_of(major)) for major in sorted(POSTGRES_MAJORS, reverse=True) if major < db.postgres]


# Left at the old volume's root by the switch: the new major's number. A start that would
# serve the old volume again (a stack file without the new major, another checkout's
# deploy) is refused while it is there; `--rollback` removes it.
MOVED = ".moved-to-postgres"


def moved_marker(db: Database) -> str:
    return f"{db.data_mount}/{MOVED}"


def mark_moved(db: Database, to: int) -> list[str]:
    """Run in DB's container (compose exec): the marker written."""
    return ["exec", "-T", db.name, "sh", "-c", 'echo "$1" > "$2"', "mark", str(to), moved_marker(db)]


def read_moved(db: Database) -> list[str]:
    """Compose arguments that print the marker of DB's volume (nothing when there is none),
    from a one-off container of its service: it need not run."""
    return ["run", "--rm", "--no-deps", "-T", "--entrypoint", "sh", db.name, "-c",
            f'cat "{moved_marker(db)}" 2>/dev/null || true']


def unmark_moved(db: Database) -> list[str]:
    return ["exec", "-T", db.name, "rm", "-f", moved_marker(db)]


def database_volumes(project: str, db: Database) -> list[str]:
    return ["docker", "volume", "ls", "--quiet", "--filter", f"name=^{project}_{db.name}_"]


def majors_present(project: str, db: Database, names) -> set[int]:
    """The majors whose volume of DB is among NAMES (docker volume ls)."""
    names = set(names)
    return {major for major in POSTGRES_MAJORS if f"{project}_{db.volume_of(major)}" in names}


def not_moved_yet(db: Database, older: int, project: str, host_flag: str) -> str:
    return (f"{db.name}'s data is in {project}_{db.volume_of(older)} (PostgreSQL {older}) but config/stack.toml says "
            f"postgres = {db.postgres}: move it with `inv db.upgrade {db.name} --to {db.postgres}{host_flag}` "
            f"(set postgres = {older} for it until then); nothing was started")


def moved_away(db: Database, moved: str, project: str, host_flag: str) -> str:
    return (f"{db.name}'s data moved to PostgreSQL {moved} ({project}_{db.name}_pg{moved}_volume) but config/stack.toml "
            f"says postgres = {db.postgres}: set postgres = {moved} for it (or go back with "
            f"`inv db.upgrade {db.name} --rollback{host_flag}`); nothing was started")


UPGRADE_STEPS = ("starting the new major", "holding writes", "dumping with the old major",
                 "restoring as the app role", "comparing the rows", "switching to the new volume")
