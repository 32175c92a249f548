"""`inv certs --host NAME`, `inv certs.renew --host NAME`: the certificate a host's front
serves (tls = "acme" or "files" in config/stack.toml; see procedures/site.py)."""
from __future__ import annotations

from invoke import Collection

from .cli import stack_task
from .procedures import site


@stack_task(hosts="one", help={"host": "The host whose certificate to show."})
def show(r):
    """Show the certificate a host's site serves.

    Its names, issuer, serial and days left."""
    fine, line = site.describe(site.certificate(r)) if r.target.site.https else \
        (True, f"{r.target.name} serves no certificate (tls = \"{r.target.site.tls}\")")
    r.report(line if fine else f"warning: {line}")


@stack_task(hosts="one", help={
    "host": "The host whose certificate to renew.",
    "force": "Renew even if it is not due (certbot renews by itself within 30 days of the end; default: off).",
})
def renew(r, force=False):
    """Renew a host's site certificate now.

    certbot renews by itself when it is due, keeping the key. With the project's own front,
    this renewal makes a new key, in a new file, which the front reads once reloaded: idle
    keep-alive connections are closed then, once, and no TLS handshake fails. Behind the
    server's shared front (front = "shared") the key is kept and nothing reloads: the new
    certificate is served from the next handshake on."""
    site.renew(r, force)


ns = Collection("certs")
ns.add_task(show, default=True)
ns.add_task(renew)
