#!/bin/sh
# The official memcached image's entrypoint: options alone mean `memcached` with them.
set -e
if [ "${1#-}" != "$1" ]; then
  set -- memcached "$@"
fi
exec "$@"
