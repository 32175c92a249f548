"""Plans for the stack's secrets and database roles, as data: the shell that moves secrets
out of the env files of earlier versions, and the SQL that gives each database its app role.

Both run on every `inv up` and deploy and are idempotent, so a stack made by any earlier
version is brought in line by its next start, and a new one gets the same result.
"""
from __future__ import annotations

from ..source.stack import APP_ROLE, DJANGO_SECRET, SECRETS_DIR
from .archives import SUPERUSER_SEARCH_PATH, quote_ident
from .shell import quote as _q


def _move_value(env_file: str, variable: str, secret_file: str, same=()) -> str:
    """Shell that copies VARIABLE's value out of ENV_FILE into SECRET_FILE (0600, made in
    one step, never over an existing file), then drops its line, and those of the variables
    SAME that held the same value, from ENV_FILE, and removes ENV_FILE once it sets nothing
    else. The value stays in a shell variable and files only."""
    e, s = _q(env_file), _q(secret_file)
    drop = "\\|".join((variable, *same))
    return (
        f"if [ -f {e} ] && grep -q '^{variable}=' {e}; then "
        f"if [ ! -e {s} ]; then "
        f"v=$(sed -n 's/^{variable}=//p' {e} | tail -n 1); "
        # A value Compose's env-file reader took with quotes around it.
        "v=${v#\\\"}; v=${v%\\\"}; v=${v#\\'}; v=${v%\\'}; "
        f"[ -n \"$v\" ] || {{ echo '{env_file} sets {variable} to nothing' >&2; exit 1; }}; "
        f"t={s}.$$.tmp; printf '%s\\n' \"$v\" > \"$t\" && ln \"$t\" {s}; rm -f \"$t\"; "
        "fi; "
        f"t={e}.$$.tmp; grep -v '^\\({drop}\\)=' {e} > \"$t\" || true; chmod 600 \"$t\"; mv -f \"$t\" {e}; "
        f"grep -q '^[A-Za-z_][A-Za-z0-9_]*=' {e} || rm -f {e}; "
        "fi"
    )


def move_legacy_secrets(base, databases) -> str:
    """One script, run in BASE (a checkout, or a host's shared/), that moves every secret an
    earlier version kept in an env file into its own file under config/secrets/: the Django
    key out of config/django.env (the rest of that file stays), each app password out of
    config/db/NAME.env (removed then: it held nothing else). The values are kept, so
    sessions and the databases' passwords carry over."""
    b = _q(base)
    steps = [f"cd {b}", "umask 077", f"mkdir -p -m 700 {SECRETS_DIR}", f"chmod 700 {SECRETS_DIR}",
             _move_value("config/django.env", "DJANGO_SECRET_KEY", f"{SECRETS_DIR}/{DJANGO_SECRET}")]
    for db in databases:
        steps.append(_move_value(db.legacy_env_file, db.password_variable, db.secret_file, ("POSTGRES_PASSWORD",)))
    return "set -e\n" + "\n".join(steps) + "\n"


def provision_sql(db) -> str:
    """SQL, run by the superuser in DB's container through psql, that makes APP_ROLE the
    unprivileged owner of DB's database and everything the app made in it, sets its password
    from the secret file mounted there (psql reads it: the value is never in an argument),
    and takes the superuser's password away (the tasks reach it through the socket).

    Stacks made before this had the app connect as the superuser, which owns every table:
    the ownership moves to APP_ROLE here, rows and Django users untouched."""
    # The superuser is named after its database (POSTGRES_USER).
    role, database = quote_ident(APP_ROLE), quote_ident(db.name)
    secret = f"/run/secrets/{db.secret_name}"
    return "\n".join([
        r"\set ON_ERROR_STOP on",
        # Never echo a statement that carries the password into the server's log.
        "SET log_statement = 'none';",
        "SET log_min_error_statement = 'panic';",
        # Names resolve in pg_catalog alone: no function or operator the app's role made in
        # its schema is called with the superuser's rights (each session: before and after \connect).
        f"{SUPERUSER_SEARCH_PATH};",
        f"SELECT 'CREATE ROLE {role}' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{APP_ROLE}') \\gexec",
        f"\\set app_password `cat {secret}`",
        f"ALTER ROLE {role} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS "
        "PASSWORD :'app_password';",
        r"\unset app_password",
        f"ALTER ROLE {database} PASSWORD NULL;",
        f"ALTER DATABASE {database} OWNER TO {role};",
        f"\\connect {database}",
        f"{SUPERUSER_SEARCH_PATH};",
        f"ALTER SCHEMA public OWNER TO {role};",
        *_give_app_what_the_superuser_made(),
        "",
    ])


def _give_app_what_the_superuser_made() -> list[str]:
    """Tables, views and sequences the superuser made go to APP_ROLE (a sequence that belongs
    to a table column moves with its table)."""
    owned = f"relowner <> '{APP_ROLE}'::regrole AND relnamespace = 'public'::regnamespace"
    return [
        "DO $$ DECLARE r record; BEGIN",
        f"  FOR r IN SELECT oid::regclass AS name, relkind FROM pg_class WHERE {owned} AND relkind IN ('r', 'p', 'v', 'm', 'f') LOOP",
        f"    EXECUTE format('ALTER %s %s OWNER TO {APP_ROLE}', CASE r.relkind WHEN 'v' THEN 'VIEW' "
        "WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END, r.name);",
        "  END LOOP;",
        f"  FOR r IN SELECT oid::regclass AS name FROM pg_class WHERE {owned} AND relkind = 'S' LOOP",
        f"    EXECUTE format('ALTER SEQUENCE %s OWNER TO {APP_ROLE}', r.name);",
        "  END LOOP;",
        "END $$;",
    ]


def provision(project_compose: list[str], db) -> list[str]:
    """psql as the superuser in DB's container, reading provision_sql on standard input."""
    return [*project_compose, "exec", "-T", db.name, "psql", "--username", db.name, "--dbname", db.name,
            "--quiet", "--no-psqlrc"]
