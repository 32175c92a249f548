"""Plans for the site's certificate (procedures/site.py runs them): the one-off runs of
config/tls/certs.py in the certbot service's container, and reading what it prints.

The certificate lives in the `certs` volume as one file per key (chain and key), which the
front reads at each TLS handshake: a renewal with the same key is a rename there, never a
reload; a new key is a new file, named in CERTIFICATE_CONF, which the front reads when it
reloads (config/tls/certs.py says why).
"""
from __future__ import annotations

import json
import shlex

from ..source.stack import Site

SERVICE = "certbot"
SCRIPT = "/etc/hello/tls/certs.py"
# Files of config/tls/ that the certbot container reads (from STACK_CONFIG_DIR/tls).
TLS_FILES = ("certs.py",)
CA_BUNDLE = "acme-ca.pem"
# In the front's container: the map naming the certificate file it serves.
CERTIFICATE_CONF = "/etc/hello/certs/site.conf"
# The exit status of certs.py when the ACME server or the user's files are refused.
REFUSED = 2
# `inv doctor` warns when the certificate ends sooner than this.
WARN_DAYS = 14
# Where a one-off container sees the user's files (tls = "files").
FILES_IN = {"certificate": "/in/certificate.pem", "certificate_key": "/in/certificate_key.pem"}


def certs(command, *, volumes=()) -> list[str]:
    """Compose: certs.py COMMAND in a one-off container of the certbot service (its
    networks and volumes), removed afterwards; VOLUMES are extra `HOST:CONTAINER:ro` mounts."""
    argv = ["run", "--rm", "--no-deps", "-T", "--entrypoint", "python3"]
    for mount in volumes:
        argv += ["--volume", mount]
    return argv + [SERVICE, SCRIPT, *command]


def placeholder() -> list[str]:
    return certs(["placeholder"])


def obtain() -> list[str]:
    return certs(["obtain"])


def renew(force: bool = False, same_key: bool = False) -> list[str]:
    """SAME_KEY: behind the shared front, which is never reloaded to read a new key's file."""
    return certs(["renew", *(["--force"] if force else []), *(["--same-key"] if same_key else [])])


def publish() -> list[str]:
    """The installed certificate where the shared front reads it (front = "shared")."""
    return certs(["publish"])


def install_files(site: Site) -> list[str]:
    """Compose: check the user's certificate and key (paths on the host) and install them."""
    return certs(["install-files"], volumes=[f"{site.certificate}:{FILES_IN['certificate']}:ro",
                                            f"{site.certificate_key}:{FILES_IN['certificate_key']}:ro"])


def show() -> list[str]:
    return certs(["show"])


def parse_show(stdout: str) -> dict:
    """What `show` printed (its last line): installed, names, issuer, serial, not_after, days_left."""
    lines = [line for line in stdout.splitlines() if line.strip().startswith("{")]
    try:
        found = json.loads(lines[-1]) if lines else {}
    except json.JSONDecodeError:
        found = {}
    return found if isinstance(found, dict) else {}


def install_tls_files(source, target, ca_bundle: str | None) -> str:
    """Shell on the target: config/tls's files into TARGET (by rename, only when changed),
    and the ACME server's CA bundle as acme-ca.pem from standard input when CA_BUNDLE is
    given, else removed (a host that stopped naming one trusts the public roots again)."""
    s, t = shlex.quote(str(source)), shlex.quote(str(target))
    parts = [f"set -e; mkdir -p {t}"]
    for name in TLS_FILES:
        n = shlex.quote(name)
        parts.append(f"if ! cmp -s {s}/{n} {t}/{n}; then cp {s}/{n} {t}/.{name}.new && chmod 644 {t}/.{name}.new "
                     f"&& mv -f {t}/.{name}.new {t}/{n}; fi")
    bundle = shlex.quote(CA_BUNDLE)
    if ca_bundle:
        parts.append(f"cat > {t}/.{CA_BUNDLE}.new && chmod 644 {t}/.{CA_BUNDLE}.new && mv -f {t}/.{CA_BUNDLE}.new {t}/{bundle}")
    else:
        parts.append(f"rm -f {t}/{bundle}")
    return "\n".join(parts) + "\n"
