# Sourced by .ci/run after engine.sh. A second Docker Engine for the test hosts: Debian
# unstable's docker.io 28 and containerd 2 (they need glibc 2.34; Debian 12 has 2.36) with
# Debian 12's runc 1.1 (unstable's needs glibc 2.38) and tini-static as docker-init, unpacked
# into a private folder, never installed: the main engine and /etc stay as they are. Exports
# ENGINE28_BIN, the folder holding dockerd, containerd, containerd-shim-runc-v2, runc,
# docker-proxy and docker-init; testkit/testhost.py starts a test host's engine from there.
# Idempotent: a complete folder is kept and reused. Also runs alone: `bash .ci/engine28.sh`.
engine28_cache="${ENGINE28_CACHE:-/var/cache/hello-ci/engine28}"
engine28_log=/tmp/ci-engine.log
engine28_tools=(dockerd containerd containerd-shim-runc-v2 runc docker-proxy docker-init)

# shellcheck source=.ci/debs.sh
source "$(dirname "${BASH_SOURCE[0]}")/debs.sh"

engine28_complete() {
  local tool
  for tool in "${engine28_tools[@]}"; do [ -x "$engine28_cache/bin/$tool" ] || return 1; done
  "$engine28_cache/bin/dockerd" --version >/dev/null 2>&1
}

install_engine28() {
  local root tool
  root="$(mktemp -d)"
  deb_from sid docker.io "$root" && deb_from sid containerd "$root" &&
  deb_from bookworm runc "$root" && deb_from bookworm tini "$root" || { rm -rf "$root"; return 1; }
  # Unstable moves on: a docker.io other than 28 (or containerd other than 2) is a change of
  # what CI proves, to be made on purpose, not picked up on a fresh machine.
  grep -q '^sid docker.io 28\.' "$root/SOURCES" && grep -q '^sid containerd 2\.' "$root/SOURCES" ||
    { printf '[ci] unstable no longer has docker.io 28 / containerd 2: %s\n' "$(tr '\n' ';' <"$root/SOURCES")" >&2; rm -rf "$root"; return 1; }
  mkdir -p "$root/bin"
  for tool in dockerd docker-proxy; do ln -s ../usr/sbin/$tool "$root/bin/$tool"; done
  for tool in containerd containerd-shim-runc-v2; do ln -s ../usr/bin/$tool "$root/bin/$tool"; done
  ln -s ../usr/sbin/runc "$root/bin/runc"
  ln -s ../usr/bin/tini-static "$root/bin/docker-init"
  rm -rf "$engine28_cache" && mkdir -p "$(dirname "$engine28_cache")" && mv "$root" "$engine28_cache" &&
    chmod 0755 "$engine28_cache"
}

if ! engine28_complete; then
  printf '[ci] fetching Docker Engine 28 for test hosts (Debian unstable docker.io + containerd, bookworm runc)\n' >&2
  install_engine28 && engine28_complete ||
    { printf '[ci] fetching Docker Engine 28 failed (see %s)\n' /tmp/ci-engine.log >&2; exit 1; }
fi
export ENGINE28_BIN="$engine28_cache/bin"
printf '[ci] engine 28 for test hosts: %s (%s)\n' "$ENGINE28_BIN" "$(awk '{print $2, $3}' "$engine28_cache/SOURCES" | paste -sd, -)" >&2
