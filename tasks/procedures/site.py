"""The site's face to the public: the front's configuration and ports, and its certificate
(plans in tasks/plans/site.py; the certificate work itself is config/tls/certs.py, run in
the certbot service's container).

A deploy runs `secure` before any traffic moves to the new release: the front takes the
host's ports and configuration, a certificate is in place (a self-signed placeholder first,
so that HTTPS answers from the start), then the real one is obtained. Behind the server's
shared front (front = "shared", procedures/server_front.py), the project's certificate is
published into the front's folder, its domains claimed and its network joined instead; the
shared front is never reloaded, so renewals there keep the key. When the ACME server
refuses, the deploy stops there with one line naming the domain and the error, and the
release already serving keeps serving (the undo puts its front configuration back).
"""
from __future__ import annotations

from pathlib import Path

from ..errors import TaskError, last_line
from ..execution.runner import Runner
from ..plans import compose
from ..plans import site as plans
from . import server_front
from .rollout import ensure_front, install_nginx_files, refresh_front


def install_tls_files(r: Runner) -> None:
    """config/tls/ and the ACME server's CA bundle (acme_ca_bundle, a file here) where the
    certbot container mounts them from."""
    site = r.target.site
    bundle = None
    if site.acme_ca_bundle:
        path = Path(site.acme_ca_bundle).expanduser()
        try:
            bundle = path.read_text()
        except OSError as exc:
            raise TaskError(f"acme_ca_bundle {path} cannot be read: {exc.strerror}") from None
        if "-----BEGIN CERTIFICATE-----" not in bundle:
            raise TaskError(f"acme_ca_bundle {path} holds no PEM certificate")
    r.shell(plans.install_tls_files(r.root / "config" / "tls", r.target.config_dir / "tls", bundle),
            stdin_text=bundle, what="installing the certificate tools")


def certs(r: Runner, argv: list[str], what: str):
    """Run a certs.py command; a refusal (the ACME server's, or of the user's files) is the
    one line it printed."""
    result = r.compose(argv, check=False, hide=True)
    if result.failed:
        why = last_line(result.stderr, f"exit status {result.exited}")
        raise TaskError(why if result.exited == plans.REFUSED else f"{what} failed: {why}")
    return result


def secure(r: Runner, timeout: float) -> None:
    """The front on the host's ports with the host's configuration, and its certificate."""
    site = r.target.site
    if site.https:
        install_tls_files(r)
        if site.tls == "files":
            certs(r, plans.install_files(site), "installing the certificate")
        else:
            certs(r, plans.placeholder(), "making a placeholder certificate")
    if site.shared:
        certs(r, plans.publish(), "publishing the certificate to the shared front")
    install_nginx_files(r)
    if not site.shared:
        server_front.move_off(r)  # a project back from the shared front takes its ports
    ensure_front(r, timeout)
    if site.shared:
        server_front.join(r)
    refresh_front(r)
    if site.tls == "acme":
        r.say(f"asking {site.acme_server} for a certificate for {', '.join(site.domains)}")
        result = certs(r, plans.obtain(), "obtaining the certificate")
        for line in result.stdout.strip().splitlines()[-1:]:
            r.say(line)
        refresh_front(r)  # a new certificate has a new key: the front reloads to read its file
        # Renewal, twice a day; recreated only when its definition changed.
        r.compose(compose.up([plans.SERVICE], build=False, wait=False, no_deps=True), what="starting certbot")
    if site.https:
        show_certificate(r)


def certificate(r: Runner) -> dict:
    """The installed certificate, as certs.py shows it ({} where the site has none)."""
    if not r.target.site.https:
        return {}
    result = r.compose(plans.show(), check=False, hide=True)
    return plans.parse_show(result.stdout) if result.ok else {}


def describe(found: dict) -> tuple[bool, str]:
    """(fine, one line) about a certificate certs.py showed."""
    if not found.get("installed"):
        return False, "no certificate installed yet"
    days = int(found.get("days_left", 0))
    line = (f"certificate for {', '.join(found.get('names', []))} from {found.get('issuer', '?')}, "
            f"serial {found.get('serial', '?')}, {days} day(s) left")
    if found.get("placeholder"):
        return False, f"{line}: a self-signed placeholder (no certificate obtained yet)"
    if days < plans.WARN_DAYS:
        return False, f"{line}: renew it (under {plans.WARN_DAYS} days)"
    return True, line


def show_certificate(r: Runner) -> None:
    fine, line = describe(certificate(r))
    r.say(line if fine else f"warning: {line}")


def renew(r: Runner, force: bool) -> None:
    site = r.target.site
    if site.tls != "acme":
        raise TaskError(f"{r.target.name} does not use ACME (tls = \"{site.tls}\"): nothing to renew")
    result = certs(r, plans.renew(force, same_key=site.shared), "renewing the certificate")
    for line in result.stdout.strip().splitlines()[-2:]:
        r.say(line)
    refresh_front(r)  # its own front: a new key, in a new file, read once reloaded (the shared front: none)
    show_certificate(r)
