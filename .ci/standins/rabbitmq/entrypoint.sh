#!/bin/bash
# The official rabbitmq image's entrypoint, for the stand-in: started as root, a rabbitmq*
# command runs as the user rabbitmq, and the server owns its data folder to it first.
set -eu
if [[ "$1" == rabbitmq* ]] && [ "$(id -u)" = 0 ]; then
  if [ "$1" = rabbitmq-server ]; then
    find /var/lib/rabbitmq \! -user rabbitmq -exec chown rabbitmq '{}' +
  fi
  exec setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups "$BASH_SOURCE" "$@"
fi
# Long host names when the short and the long differ, as the official image decides.
if [ -z "${RABBITMQ_USE_LONGNAME:-}" ] && [ "$(hostname)" != "$(hostname -s)" ]; then
  export RABBITMQ_USE_LONGNAME=true
fi
exec "$@"
