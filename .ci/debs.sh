# Sourced by engine.sh and engine28.sh. deb_from SUITE PACKAGE ROOT: unpacks Debian SUITE's
# PACKAGE into ROOT (never installed) and appends "SUITE PACKAGE VERSION SHA256" to
# ROOT/SOURCES. The chain of trust is Debian's: the signed InRelease (gpgv, Debian's keyring)
# -> Packages.xz (its SHA-256 in the release file) -> the .deb (its SHA-256 in Packages).
deb_from() {
  # A mirror may be updating between two of the fetches (unstable, four times a day):
  # tried again a little later.
  local attempt
  for attempt in 1 2 3; do
    deb_from_once "$@" && return 0
    printf '[ci] fetching %s from Debian %s failed (attempt %s of 3)\n' "$2" "$1" "$attempt" >&2
    [ "$attempt" = 3 ] || sleep 10
  done
  return 1
}

deb_from_once() {
  local suite=$1 package=$2 root=$3 tmp base sum deb version status
  tmp="$(mktemp -d)"; base=http://deb.debian.org/debian
  curl -fsS --max-time 120 -o "$tmp/InRelease" "$base/dists/$suite/InRelease" &&
  gpgv --keyring /usr/share/keyrings/debian-archive-keyring.gpg --output "$tmp/Release" "$tmp/InRelease" 2>>/tmp/ci-engine.log &&
  curl -fsS --max-time 120 -o "$tmp/Packages.xz" "$base/dists/$suite/main/binary-amd64/Packages.xz" &&
  sum=$(awk '/^SHA256:/{s=1; next} /^[^ ]/{s=0} s && $3 == "main/binary-amd64/Packages.xz" {print $1}' "$tmp/Release") &&
  echo "$sum  $tmp/Packages.xz" | sha256sum --check --quiet &&
  # Into a file first: awk stops at the entry, which in a pipe would end xz by SIGPIPE (a
  # failure under pipefail, as .ci/run sets it).
  xz -dc "$tmp/Packages.xz" >"$tmp/Packages" &&
  awk -v p="Package: $package" '$0 == p {f=1} f && /^(Version|Filename|SHA256):/{print $2} f && /^$/{exit}' "$tmp/Packages" >"$tmp/entry" &&
  version=$(sed -n 1p "$tmp/entry") && deb=$(sed -n 2p "$tmp/entry") && sum=$(sed -n 3p "$tmp/entry") && [ -n "$deb" ] &&
  curl -fsS --max-time 300 -o "$tmp/package.deb" "$base/$deb" &&
  echo "$sum  $tmp/package.deb" | sha256sum --check --quiet &&
  mkdir -p "$root" && dpkg-deb -x "$tmp/package.deb" "$root" &&
  echo "$suite $package $version $sum" >>"$root/SOURCES"
  status=$?
  rm -rf "$tmp"
  return $status
}
