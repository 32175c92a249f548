"""The site's certificate, inside the certbot container (compose service `certbot`).

The front reads the certificate chain and its key from one file, mode 0640, group 101
(Nginx's workers), at each TLS handshake: once for the certificate, and again for the key.
A file replaced between the two reads with another key pairs a certificate with a key not
its own, and the handshake fails. So a file holds one key for ever: its name is the key's
(site-KEYID.pem), a renewal with the same key replaces it by rename (either read finds a
pair), and a new key goes to a new file, which the front's configuration names in site.conf
(its map of certificates): the front takes it at its next reload (`inv certs.renew` and
deploys reload it), while the handshakes before the reload read the old file, untouched.
Renewals made here, which cannot reload the front, keep the key (certbot's --reuse-key);
those made by `inv` take a new one. site.pem, the one file of earlier versions, is still
written for the front of a release before this one (a rollback). Every way a certificate
arrives goes through `install`:

  placeholder        a self-signed certificate for SITE_DOMAINS, if there is none yet, so
                     that the front can serve HTTPS before the first real one exists
  obtain             certbot's webroot challenge for SITE_DOMAINS at ACME_SERVER; on failure,
                     one line naming the domain and the ACME error, exit status 2
  renew [--force]    certbot's renewal of the certificate, now
  renew-loop         renew twice a day, for ever (the service's command)
  deploy-hook        what certbot runs after each new certificate: install it
  install-files      the user's own certificate (tls = "files"), mounted at /in/
  show               the installed certificate as JSON (names, issuer, serial, expiry):
                     the key never leaves the container
  publish            the installed certificate into PUBLISHED, for the server's shared front

Behind the server's shared front (front = "shared"), PUBLISHED is mounted: every install
also writes the file there (site.pem, by rename), which the shared front reads at each
handshake and never reloads for. There a renewal keeps the key (`renew --same-key`), so
that the two reads of one handshake always find a certificate and its own key.

Python, not shell: certbot's image has it, with the `cryptography` package this needs.
"""
import datetime
import hashlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import time

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

CERTS = "/etc/hello/certs"
SITE_CONF = f"{CERTS}/site.conf"
LEGACY_PEM = f"{CERTS}/site.pem"
PUBLISHED = "/etc/hello/published"
NGINX_GID = 101  # the nginx group of the official image (and of the test stand-in)
LINEAGE = "site"
LIVE = f"/etc/letsencrypt/live/{LINEAGE}"
RENEWAL_CONF = f"/etc/letsencrypt/renewal/{LINEAGE}.conf"
WEBROOT = "/var/www/acme"
CA_BUNDLE = "/etc/hello/tls/acme-ca.pem"
PLACEHOLDER_ISSUER = "hello placeholder"
DEPLOY_HOOK = "python3 /etc/hello/tls/certs.py deploy-hook"
RENEW_EVERY = 12 * 3600
# What certbot says when another certbot holds its folders, and how long one waits for it
# (a renewal's challenge takes seconds; a slow ACME server, a minute).
BUSY = "Another instance of Certbot is already running"
BUSY_WAIT, BUSY_PAUSE = 300, 2


def fail(message, status=2):
    print(message, file=sys.stderr)
    sys.exit(status)


def domains():
    names = [n for n in os.environ.get("SITE_DOMAINS", "").split(",") if n]
    if not names:
        fail("SITE_DOMAINS is empty: the site has no domains", 1)
    return names


def load(pem_bytes):
    """(certificates, key) from PEM text holding a chain and, maybe, a key. (Block by block:
    Debian 12's cryptography, 38, has no load_pem_x509_certificates.)"""
    certificates = [x509.load_pem_x509_certificate(block) for block in
                    re.findall(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", pem_bytes, re.S)]
    match = re.search(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----.+?-----END [A-Z ]*PRIVATE KEY-----", pem_bytes, re.S)
    key = serialization.load_pem_private_key(match.group(0), password=None) if match else None
    return certificates, key


def expires(certificate):
    """The end of validity, aware of UTC (not_valid_after_utc is cryptography 42's)."""
    when = getattr(certificate, "not_valid_after_utc", None)
    return when or certificate.not_valid_after.replace(tzinfo=datetime.timezone.utc)


def names_of(certificate):
    try:
        return certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        return []


def covers(patterns, name):
    for pattern in patterns:
        if pattern == name or (pattern.startswith("*.") and name.count(".") == pattern.count(".")
                               and name.split(".", 1)[1] == pattern[2:]):
            return True
    return False


def public(key):
    return key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def key_id(key):
    return hashlib.sha256(public(key)).hexdigest()[:16]


def served():
    """The file site.conf names (the front serves it), or None."""
    try:
        with open(SITE_CONF) as conf:
            match = re.search(r"^\s*default\s+(\S+);", conf.read(), re.M)
            return match.group(1) if match else None
    except FileNotFoundError:
        return None


def write(path, body, mode):
    """BODY into PATH by rename, readable by Nginx's group; False when it is there already."""
    try:
        with open(path, "rb") as current:
            if current.read() == body:
                return False
    except FileNotFoundError:
        pass
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.write(fd, body)
        os.fchown(fd, 0, NGINX_GID)
        os.fchmod(fd, mode)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return True


def install(chain_pem, key_pem, where):
    """Check that KEY belongs to the first certificate of CHAIN and that it is valid now,
    then put both into the file of that key, by rename, and name it in SITE_CONF (nothing is
    written when they are there already)."""
    certificates, _ = load(chain_pem)
    _, key = load(key_pem)
    if not certificates:
        fail(f"{where}: no certificate found")
    if key is None:
        fail(f"{where}: no private key found (or it is encrypted)")
    if public(key) != certificates[0].public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo):
        fail(f"{where}: the private key does not belong to the certificate")
    now = datetime.datetime.now(datetime.timezone.utc)
    if expires(certificates[0]) <= now:
        fail(f"{where}: the certificate expired on {expires(certificates[0]):%Y-%m-%d}")
    body = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates)
    body += key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption())
    path, before = f"{CERTS}/site-{key_id(key)}.pem", served()
    changed = write(path, body, 0o640)
    write(LEGACY_PEM, body, 0o640)
    publish(body)
    if path != before:
        # The file the front reads until its reload stays; older ones go.
        for name in os.listdir(CERTS):
            if re.fullmatch(r"site-[0-9a-f]{16}\.pem", name) and f"{CERTS}/{name}" not in (path, before):
                os.remove(f"{CERTS}/{name}")
        write(SITE_CONF, f"# The front's certificate, written by certs.py.\ndefault {path};\n".encode(), 0o644)
    if not changed and path == before:
        return False
    print(f"installed the certificate for {', '.join(names_of(certificates[0]))} "
          f"(serial {certificates[0].serial_number:x}, until {expires(certificates[0]):%Y-%m-%d})"
          + ("" if path == before or before is None else ", with a new key: served once the front reloads"))
    return True


def publish(body=None):
    """BODY (else the installed certificate's file) into PUBLISHED by rename, when the
    shared front reads it from there."""
    if not os.path.isdir(PUBLISHED):
        return
    if body is None:
        try:
            with open(served() or LEGACY_PEM, "rb") as handle:
                body = handle.read()
        except FileNotFoundError:
            fail("no certificate installed yet: nothing to publish")
    write(f"{PUBLISHED}/site.pem", body, 0o640)


def placeholder():
    if served():
        return
    if os.path.exists(LEGACY_PEM):  # the one file of an earlier version: into its key's file
        with open(LEGACY_PEM, "rb") as legacy:
            body = legacy.read()
        certificates, key = load(body)
        if certificates and key and expires(certificates[0]) > datetime.datetime.now(datetime.timezone.utc):
            install(body, body, LEGACY_PEM)
            return
    names = domains()
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0]),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, PLACEHOLDER_ISSUER)])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=30))
                   .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
                   .sign(key, hashes.SHA256()))
    install(certificate.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()), "the placeholder")


def certbot(args):
    """Run certbot with ARGS; (exit status, everything it printed). Certbot runs one at a time
    on its folders and refuses to start beside another (BUSY): the service's renew-loop, which
    renews at its start, and a one-off run of a deploy or `inv certs.renew` meet there. The
    one that came second waits for the other, BUSY_WAIT seconds at most."""
    env = dict(os.environ)
    if os.path.getsize(CA_BUNDLE) if os.path.exists(CA_BUNDLE) else 0:
        env["REQUESTS_CA_BUNDLE"] = CA_BUNDLE  # a private ACME CA (acme_ca_bundle)
    deadline = time.monotonic() + BUSY_WAIT
    while True:
        result = subprocess.run(["certbot", *args, "--non-interactive"], env=env, capture_output=True, text=True)
        output = result.stdout + result.stderr
        if result.returncode == 0 or BUSY not in output or time.monotonic() > deadline:
            return result.returncode, output
        time.sleep(BUSY_PAUSE)


def acme_error(output):
    """One line naming the domain and the ACME error, out of certbot's output."""
    problems = []
    domain = kind = None
    for line in output.splitlines():
        line = line.strip()
        if line.startswith("Domain:"):
            domain = line.split(":", 1)[1].strip()
        elif line.startswith("Type:"):
            kind = line.split(":", 1)[1].strip()
        elif line.startswith("Detail:") and domain:
            problems.append(f"{domain}: {kind + ': ' if kind else ''}{line.split(':', 1)[1].strip()}")
            domain = kind = None
    if problems:
        return "; ".join(problems)
    lines = [line.strip() for line in output.splitlines() if line.strip() and not line.startswith("Saving debug log")
             and "Ask for help" not in line and "See the logfile" not in line and "certbot.eff.org" not in line]
    for index, line in enumerate(lines):
        if line.startswith("An unexpected error occurred:") and index + 1 < len(lines):
            return lines[index + 1]
    return lines[-1] if lines else "certbot said nothing"


def install_live():
    with open(f"{LIVE}/fullchain.pem", "rb") as chain, open(f"{LIVE}/privkey.pem", "rb") as key:
        install(chain.read(), key.read(), LIVE)


def renewal_server():
    try:
        with open(RENEWAL_CONF) as conf:
            match = re.search(r"^server\s*=\s*(\S+)", conf.read(), re.M)
            return match.group(1) if match else None
    except FileNotFoundError:
        return None


def obtain():
    names, server = domains(), os.environ.get("ACME_SERVER", "")
    args = ["certonly", "--webroot", "-w", WEBROOT, "--cert-name", LINEAGE, "--server", server, "--agree-tos",
            "--keep-until-expiring", "--reuse-key", "--deploy-hook", DEPLOY_HOOK]
    email = os.environ.get("ACME_EMAIL")
    args += ["--email", email] if email else ["--register-unsafely-without-email"]
    previous = renewal_server()
    if previous and previous != server:
        args.append("--force-renewal")  # from another CA (staging to production): a new one now
    for name in names:
        args += ["-d", name]
    status, output = certbot(args)
    if status != 0:
        fail(f"the certificate for {', '.join(names)} was refused: {acme_error(output)} (ACME server {server})")
    install_live()


def renew(force=False, same_key=False):
    # Run by `inv certs.renew`, which reloads the front afterwards: a new key each time
    # (--new-key), kept by the renewals of renew-loop (--reuse-key); SAME_KEY behind the
    # shared front, which is never reloaded. Asked for now: without a terminal, certbot
    # would first wait a random 0-8 minutes (renew-loop spreads its own).
    args = ["renew", "--cert-name", LINEAGE, *([] if same_key else ["--new-key"]), "--reuse-key",
            "--no-random-sleep-on-renew", "--deploy-hook", DEPLOY_HOOK]
    if force:
        args.append("--force-renewal")
    status, output = certbot(args)
    if status != 0:
        fail(f"renewing the certificate failed: {acme_error(output)}")
    print(output.strip().splitlines()[-1] if output.strip() else "renewed")


def renew_loop():
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    # Spread the renewals of many sites over time, as certbot's own timer does.
    time.sleep(random.uniform(0, 60))
    while True:
        if os.path.exists(RENEWAL_CONF):
            # The same key: this container cannot reload the front (see the top of this file).
            status, output = certbot(["renew", "--cert-name", LINEAGE, "--reuse-key", "--deploy-hook", DEPLOY_HOOK])
            print(output.strip().splitlines()[-1] if status == 0 and output.strip() else
                  f"renewing the certificate failed: {acme_error(output)}", flush=True)
        time.sleep(RENEW_EVERY + random.uniform(0, 3600))


def deploy_hook():
    lineage = os.environ.get("RENEWED_LINEAGE", LIVE)
    with open(f"{lineage}/fullchain.pem", "rb") as chain, open(f"{lineage}/privkey.pem", "rb") as key:
        install(chain.read(), key.read(), lineage)


def install_files():
    with open("/in/certificate.pem", "rb") as chain, open("/in/certificate_key.pem", "rb") as key:
        chain_pem, key_pem = chain.read(), key.read()
    certificates, _ = load(chain_pem)
    if certificates:
        missing = [n for n in domains() if not covers(names_of(certificates[0]), n)]
        if missing:
            fail(f"the certificate (certificate in config/stack.toml) does not cover {', '.join(missing)}")
    install(chain_pem, key_pem, "the certificate in config/stack.toml")


def show():
    try:
        with open(served() or LEGACY_PEM, "rb") as handle:
            certificates, _ = load(handle.read())
    except FileNotFoundError:
        print(json.dumps({"installed": False}))
        return
    first = certificates[0]
    now = datetime.datetime.now(datetime.timezone.utc)
    issuer = first.issuer.get_attributes_for_oid(NameOID.ORGANIZATION_NAME) or \
        first.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)
    print(json.dumps({
        "installed": True,
        "names": names_of(first),
        "issuer": issuer[0].value if issuer else first.issuer.rfc4514_string(),
        "serial": f"{first.serial_number:x}",
        "not_after": expires(first).isoformat(),
        "days_left": (expires(first) - now).days,
        "placeholder": first.issuer == first.subject and PLACEHOLDER_ISSUER in first.issuer.rfc4514_string(),
    }))


COMMANDS = {"placeholder": placeholder, "obtain": obtain, "renew-loop": renew_loop, "deploy-hook": deploy_hook,
            "install-files": install_files, "show": show, "publish": publish}

if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "renew" and set(sys.argv[2:]) <= {"--force", "--same-key"}:
        renew(force="--force" in sys.argv[2:], same_key="--same-key" in sys.argv[2:])
    elif len(sys.argv) == 2 and sys.argv[1] in COMMANDS:
        COMMANDS[sys.argv[1]]()
    else:
        fail(f"usage: certs.py {{{'|'.join(['renew [--force] [--same-key]', *COMMANDS])}}}", 1)
