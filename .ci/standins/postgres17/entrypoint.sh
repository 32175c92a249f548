#!/bin/bash
# The official postgres image's entrypoint interface, for the stand-in:
# - POSTGRES_PASSWORD, POSTGRES_USER (postgres), POSTGRES_DB (the user's name) and
#   POSTGRES_INITDB_ARGS, each also from a file named by the same variable with _FILE (read
#   as root: the file may be root's alone); POSTGRES_INITDB_WALDIR; POSTGRES_HOST_AUTH_METHOD
#   (by default the server's password_encryption) for connections from other hosts;
# - a new cluster on first start, with the image's locale (LANG: UTF8, en_US.utf8) unless
#   POSTGRES_INITDB_ARGS says otherwise; the files of /docker-entrypoint-initdb.d run once,
#   against POSTGRES_DB, on a server that listens on its socket only (*.sh executable: run;
#   *.sh otherwise: sourced; *.sql, *.sql.gz, *.sql.xz, *.sql.zst: fed to psql);
# - the server, or any other command, as the postgres user (999) when started as root.
set -Eeo pipefail

# VAR from VAR or from the file VAR_FILE names (not both), else DEFAULT; exported.
from_env_or_file() {
  local var="$1" file_var="$1_FILE" value="${2:-}"
  if [ -n "${!var:-}" ] && [ -n "${!file_var:-}" ]; then
    echo "error: both $var and $file_var are set (but are exclusive)" >&2
    exit 1
  fi
  if [ -n "${!var:-}" ]; then
    value="${!var}"
  elif [ -n "${!file_var:-}" ]; then
    value="$(<"${!file_var}")"
  fi
  export "$var=$value"
  unset "$file_var"
}

# psql on the socket, as the superuser, stopping at the first error; ARGS appended.
run_sql() {
  local argv=(psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password --no-psqlrc)
  [ -z "$POSTGRES_DB" ] || argv+=(--dbname "$POSTGRES_DB")
  PGHOST= PGHOSTADDR= "${argv[@]}" "$@"
}

run_init_files() {
  local f
  for f in /docker-entrypoint-initdb.d/*; do
    [ -e "$f" ] || continue
    case "$f" in
      *.sh)
        if [ -x "$f" ]; then echo "$0: running $f"; "$f"; else echo "$0: sourcing $f"; . "$f"; fi ;;
      *.sql) echo "$0: running $f"; run_sql -f "$f" ;;
      *.sql.gz) echo "$0: running $f"; gzip -dc "$f" | run_sql ;;
      *.sql.xz) echo "$0: running $f"; xz -dc "$f" | run_sql ;;
      *.sql.zst) echo "$0: running $f"; zstd -dc "$f" | run_sql ;;
      *) echo "$0: ignoring $f" ;;
    esac
  done
}

init_cluster() {  # init_cluster POSTGRES_ARGS...
  if [ -z "$POSTGRES_PASSWORD" ] && [ "$POSTGRES_HOST_AUTH_METHOD" != trust ]; then
    echo "error: the database is uninitialised and POSTGRES_PASSWORD (or POSTGRES_PASSWORD_FILE) is not set" >&2
    exit 1
  fi
  ls /docker-entrypoint-initdb.d/ >/dev/null  # readable, before a cluster is half made
  local initdb_args=()
  [ -z "${POSTGRES_INITDB_WALDIR:-}" ] || initdb_args+=(--waldir "$POSTGRES_INITDB_WALDIR")
  # POSTGRES_INITDB_ARGS is shell words (quotes allowed), as the official image reads it.
  eval "initdb_args+=($POSTGRES_INITDB_ARGS)"
  # The password never in argv; the newline: initdb refuses an empty file.
  initdb --username="$POSTGRES_USER" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") "${initdb_args[@]}"
  local server=("$@")
  [ "${server[0]:-}" != postgres ] || server=("${server[@]:1}")
  : "${POSTGRES_HOST_AUTH_METHOD:=$(postgres -C password_encryption "${server[@]}")}"
  printf '\nhost all all all %s\n' "$POSTGRES_HOST_AUTH_METHOD" >>"$PGDATA/pg_hba.conf"

  export PGPASSWORD="${PGPASSWORD:-$POSTGRES_PASSWORD}"
  PGUSER="${PGUSER:-$POSTGRES_USER}" pg_ctl -D "$PGDATA" -w start \
    -o "$(printf '%q ' "${server[@]}" -c listen_addresses= -p "${PGPORT:-5432}")"
  local exists
  exists="$(POSTGRES_DB= run_sql --dbname postgres --set db="$POSTGRES_DB" --tuples-only \
    <<<"SELECT 1 FROM pg_database WHERE datname = :'db';")"
  [ -n "$exists" ] || POSTGRES_DB= run_sql --dbname postgres --set db="$POSTGRES_DB" <<<'CREATE DATABASE :"db";'
  run_init_files
  PGUSER="${PGUSER:-postgres}" pg_ctl -D "$PGDATA" -m fast -w stop
  unset PGPASSWORD
  echo "PostgreSQL init process complete; ready for start up."
}

[ "${1:0:1}" != - ] || set -- postgres "$@"
wants_help=
for arg; do
  case "$arg" in -'?'|--help|--describe-config|-V|--version) wants_help=1 ;; esac
done
if [ "$1" = postgres ] && [ -z "$wants_help" ]; then
  from_env_or_file POSTGRES_PASSWORD
  from_env_or_file POSTGRES_USER postgres
  from_env_or_file POSTGRES_DB "$POSTGRES_USER"
  from_env_or_file POSTGRES_INITDB_ARGS
  : "${POSTGRES_HOST_AUTH_METHOD:=}"

  mkdir -p "$PGDATA"
  chmod 00700 "$PGDATA" || :
  mkdir -p /var/run/postgresql || :
  chmod 03775 /var/run/postgresql || :
  if [ -n "${POSTGRES_INITDB_WALDIR:-}" ]; then
    mkdir -p "$POSTGRES_INITDB_WALDIR"
    [ "$(id -u)" != 0 ] || find "$POSTGRES_INITDB_WALDIR" \! -user postgres -exec chown postgres '{}' +
    chmod 700 "$POSTGRES_INITDB_WALDIR"
  fi
  if [ "$(id -u)" = 0 ]; then
    find "$PGDATA" /var/run/postgresql \! -user postgres -exec chown postgres '{}' +
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$BASH_SOURCE" "$@"
  fi

  if [ -s "$PGDATA/PG_VERSION" ]; then
    echo "PostgreSQL Database directory appears to contain a database; Skipping initialization"
  else
    init_cluster "$@"
  fi
fi
exec "$@"
