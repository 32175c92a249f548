#!/bin/bash
# The official valkey image's entrypoint, for the stand-in: options or a *.conf alone mean
# `valkey-server` with them; started as root, the server owns its working directory (/data) and
# runs as the user valkey. The official binary is built with protected mode off (a container
# is reached from other containers); Debian's is not, so it is turned off here unless the
# arguments or the configuration file name it.
set -eo pipefail
server=valkey-server
if [ "${1#-}" != "$1" ] || [ "${1%.conf}" != "$1" ]; then
  set -- "$server" "$@"
fi
if [ "$1" = "$server" ] && [ "$(id -u)" = 0 ]; then
  find . \! -user valkey -exec chown valkey '{}' +
  exec setpriv --reuid=valkey --regid=valkey --init-groups "$BASH_SOURCE" "$@"
fi
if [ "$1" = "$server" ] && ! printf '%s\n' "$@" | grep -q -- 'protected-mode' &&
   ! { [ "${2%.conf}" != "${2:-}" ] && grep -qs '^[[:space:]]*protected-mode' "$2"; }; then
  set -- "$@" --protected-mode no
fi
[ "$(umask)" != 0022 ] || umask 0077
exec "$@"
