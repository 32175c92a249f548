# The postgres image runs this once, when it initialises a new data directory (as the
# postgres user, with POSTGRES_PASSWORD holding what POSTGRES_PASSWORD_FILE names): it makes
# the role the app connects as, owner of the database and not a superuser, so that a new
# stack serves with plain `docker compose up` too. `inv up` and deploys make the same role on
# every start (tasks/plans/secrets.py), which also moves a stack made before it existed.
psql -v ON_ERROR_STOP=1 --no-psqlrc --quiet --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<'SQL'
\getenv password POSTGRES_PASSWORD
\getenv database POSTGRES_DB
\getenv superuser POSTGRES_USER
CREATE ROLE app WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD :'password';
ALTER DATABASE :"database" OWNER TO app;
ALTER SCHEMA public OWNER TO app;
-- The tasks reach the superuser through the socket; nothing needs its password.
ALTER ROLE :"superuser" PASSWORD NULL;
SQL
