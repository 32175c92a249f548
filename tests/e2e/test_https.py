"""A public HTTPS site from `inv deploy`: a test host whose domains resolve (in Let's
Encrypt's test CA, Pebble, running on this machine: testkit/acme.py) to its address; this
machine's root namespace plays the public, and trusts Pebble's root only.

- tls = "acme": the certificate comes from Pebble through certbot; HTTPS with HTTP/2, a
  301 from HTTP, HSTS and the security headers once, /healthz, the admin login (CSRF, secure
  cookies), `check --deploy` clean, `inv doctor` naming the certificate; forced renewals
  serve a new certificate with a new key and no TLS handshake fails meanwhile; a domain that does not resolve, or
  an ACME server that does not answer, fails the deploy in one line and the release that
  served keeps serving.
"""
import datetime
import json
import os
import re
import ssl
import subprocess
from pathlib import Path

import pytest

from testkit.acme import Pebble
from testkit.load import Handshakes
from testkit.projectcopy import copy_project
from testkit import INV

from .conftest import BASE_IMAGES, CERTBOT_IMAGE, once_the_engine_says

ARTIFACTS = Path("/tmp/hello-e2e-artifacts")

pytestmark = pytest.mark.e2e
DOMAINS = ["hello.test", "www.hello.test"]


class Site:
    def __init__(self, server, root, ca, roots):
        self.server, self.root, self.ca, self.roots = server, root, ca, roots
        self.dir = server.dir / "srv" / "hello"

    def inv(self, *args, check=True, env=None):
        result = subprocess.run([*INV, *args], cwd=self.root, capture_output=True, text=True, timeout=900,
                                stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})})
        if check and result.returncode != 0:
            raise AssertionError(f"inv {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
        return result

    def curl(self, url, *args, name=DOMAINS[0]):
        """curl from the public (this machine), NAME resolving to the host, trusting Pebble's root only."""
        return subprocess.run(["curl", "--silent", "--show-error", "--max-time", "20", "--cacert", str(self.roots),
                               "--resolve", f"{name}:443:{self.server.address}",
                               "--resolve", f"{name}:80:{self.server.address}", *args, url],
                              capture_output=True, text=True, timeout=60)

    def serial(self):
        """The serial of the certificate the site serves now (a new TLS handshake)."""
        return self.served()[0]

    def served(self):
        """(serial, public key) of the certificate the site serves now (a new TLS handshake)."""
        context = ssl.create_default_context(cafile=str(self.roots))
        import socket

        with socket.create_connection((self.server.address, 443), timeout=10) as sock:
            with context.wrap_socket(sock, server_hostname=DOMAINS[0]) as tls:
                der = tls.getpeercert(binary_form=True)
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        certificate = x509.load_der_x509_certificate(der)
        return certificate.serial_number, certificate.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)

    def certbot(self, script, *args):
        """Python SCRIPT in the host's running certbot container (as its service runs it)."""
        found = self.server.docker("ps", "--quiet", "--filter", "label=com.docker.compose.service=certbot").stdout.split()
        assert len(found) == 1, found
        return self.server.docker("exec", found[0], "python3", "-c", script, *args, timeout=300)

    def current(self):
        return (self.dir / "current").resolve().name

    def configure(self, **site):
        """The host's entry in config/stack.toml, with these site settings and DOMAINS."""
        stack = self.root / "config/stack.toml"
        if not hasattr(self, "stack_toml"):
            self.stack_toml = stack.read_text()
        stack.write_text(self.stack_toml + "\n" + self.server.hosts_entry(
            "web", str(self.dir), domains=DOMAINS, **site))
        self.inv("render")

    def inside(self, *argv):
        """ARGV in the host's network namespace (its own address is not a trusted proxy)."""
        return subprocess.run(["nsenter", f"--net={self.server.netns}", *argv], capture_output=True, text=True,
                              timeout=60)


@pytest.fixture(scope="module")
def site(servers, tmp_path_factory):
    server = servers("https", images=(*BASE_IMAGES, CERTBOT_IMAGE))
    with Pebble(addresses=[server.gateway]) as ca:
        for name in DOMAINS:
            ca.add_a(name, server.address)
        work = tmp_path_factory.mktemp("https")
        roots = ca.write_roots(work / "pebble-roots.pem")
        root = copy_project(work / "project")
        s = Site(server, root, ca, roots)
        s.configure(acme_email="ops@hello.test", acme_server=ca.directory_url(server.gateway),
                    acme_ca_bundle=str(ca.ca_bundle))
        # The host's settings before the first deploy (which keeps an existing file): the
        # test-only views on.
        shared = s.dir / "shared" / "config"
        shared.mkdir(parents=True, mode=0o700)
        (shared / "django.env").write_text((root / "config/django.env.example").read_text() + "DJANGO_TEST_VIEWS=true\n")
        (shared / "django.env").chmod(0o600)
        s.deployed = s.inv("deploy", "--host", "web")
        yield s


def test_the_site_answers_https_with_http2_under_a_certificate_from_the_ca(site):
    result = site.curl(f"https://{DOMAINS[0]}/", "--http2", "--include", "--write-out", "\n%{http_version} %{http_code}")
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip().endswith("2 200"), result.stdout[-300:]
    assert "Hello from Django" in result.stdout
    headers = result.stdout.lower()
    assert headers.count("strict-transport-security: max-age=300") == 1
    assert headers.count("x-content-type-options: nosniff") == 1
    assert headers.count("x-frame-options: deny") == 1
    www = site.curl(f"https://{DOMAINS[1]}/", "--write-out", "%{http_code}", "--output", "/dev/null", name=DOMAINS[1])
    assert www.stdout == "200", www.stderr
    assert "certificate for hello.test, www.hello.test from Pebble" in site.deployed.stdout, site.deployed.stdout


def test_http_redirects_to_https_and_healthz_answers(site):
    result = site.curl(f"http://{DOMAINS[0]}/admin/?x=1", "--write-out", "%{http_code} %{redirect_url}",
                       "--output", "/dev/null")
    assert result.stdout == f"301 https://{DOMAINS[0]}/admin/?x=1", result.stdout
    # Another Host is sent to the site's own name, never to itself.
    other = site.curl(f"http://{DOMAINS[0]}/", "--header", "Host: evil.example", "--write-out", "%{redirect_url}",
                      "--output", "/dev/null")
    assert other.stdout == f"https://{DOMAINS[0]}/", other.stdout
    health = site.curl(f"https://{DOMAINS[0]}/healthz", "--write-out", " %{http_code}")
    assert health.stdout.endswith(" 200"), health.stdout
    # Another name gets neither /healthz nor the files: a 400, as Django gives it for the pages.
    for path in ("/healthz", "/static/admin/css/base.css"):
        foreign = site.curl(f"https://{DOMAINS[0]}{path}", "--header", "Host: evil.example", "--write-out", "%{http_code}",
                            "--output", "/dev/null")
        assert foreign.stdout == "400", (path, foreign.stdout)
    assert site.curl(f"https://{DOMAINS[0]}/static/admin/css/base.css", "--write-out", "%{http_code}",
                     "--output", "/dev/null").stdout == "200"


def test_the_admin_login_works_over_https_with_secure_cookies(site, tmp_path):
    site.inv("createsuperuser", "--host", "web", "--username", "admin", "--email", "admin@hello.test",
             env={"DJANGO_SUPERUSER_PASSWORD": "a-long-test-password-1"})
    jar, url = tmp_path / "cookies", f"https://{DOMAINS[0]}/admin/login/"
    page = site.curl(url, "--cookie-jar", str(jar), "--include")
    assert page.returncode == 0, page.stderr
    assert re.search(r"set-cookie: csrftoken=[^\n]*; secure", page.stdout, re.I), page.stdout[:800]
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.stdout).group(1)
    login = site.curl(url, "--cookie", str(jar), "--cookie-jar", str(jar), "--include", "--referer", url,
                      "--data-urlencode", f"csrfmiddlewaretoken={token}", "--data-urlencode", "username=admin",
                      "--data-urlencode", "password=a-long-test-password-1", "--data-urlencode", "next=/admin/")
    assert re.search(r"^HTTP/\S+ 302", login.stdout, re.M), login.stdout[:800]
    assert re.search(r"set-cookie: sessionid=[^\n]*; secure", login.stdout, re.I), login.stdout[:800]
    admin = site.curl(f"https://{DOMAINS[0]}/admin/", "--cookie", str(jar))
    assert "Site administration" in admin.stdout


def test_a_real_browser_loads_the_admin_login_over_https(site, tmp_path):
    """Headless Chromium, trusting Pebble's root (its own NSS database), the domain mapped to
    the host: the page renders (no certificate interstitial), and a screenshot is kept."""
    home = tmp_path / "home"
    nssdb = home / ".pki" / "nssdb"
    nssdb.mkdir(parents=True)
    subprocess.run(["certutil", "-d", f"sql:{nssdb}", "-N", "--empty-password"], check=True, capture_output=True)
    subprocess.run(["certutil", "-d", f"sql:{nssdb}", "-A", "-t", "C,,", "-n", "pebble-root", "-i", str(site.roots)],
                   check=True, capture_output=True)
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "admin-login-https.png"
    shot.unlink(missing_ok=True)
    browser = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               f"--host-resolver-rules=MAP {DOMAINS[0]} {site.server.address}", "--window-size=1280,900"]
    env = {**os.environ, "HOME": str(home)}
    url = f"https://{DOMAINS[0]}/admin/login/"
    for _ in range(3):  # a loaded CI machine has seen headless Chromium give up on its first load
        dom = subprocess.run([*browser, "--dump-dom", url], capture_output=True, text=True, env=env, timeout=120)
        if "Django administration" in dom.stdout:
            break
    assert "Django administration" in dom.stdout and 'name="password"' in dom.stdout, dom.stdout[:500] + dom.stderr[-2000:]
    for _ in range(3):  # other tests make and remove network interfaces: ERR_NETWORK_CHANGED
        taken = subprocess.run([*browser, f"--screenshot={shot}", url], capture_output=True, text=True, env=env,
                               timeout=120)
        if shot.exists():
            break
    assert shot.exists() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", taken.stderr[-2000:]
    assert shot.stat().st_size > 10_000  # a rendered page, not a blank one
    print(f"screenshot: {shot}")


def test_check_deploy_is_clean_and_doctor_names_the_certificate(site):
    check = site.inv("manage", "--host", "web", "--", "check", "--deploy", "--fail-level", "WARNING")
    assert "System check identified no issues" in check.stdout, check.stdout
    # What an interrupted backup transfer leaves in the host's backups folder: named, with
    # its size, age and the command that removes it.
    backups = site.dir / "shared" / "backups"
    backups.mkdir(exist_ok=True)
    leftover = backups / ".hello_media_volume_20261205T101500Z.tar.zst.tmp"
    leftover.write_bytes(b"\0" * 4096)
    try:
        found = site.inv("doctor", "--host", "web", check=False)
    finally:
        leftover.unlink()
    assert found.returncode == 1, found.stdout
    assert re.search(rf"FAIL {re.escape(str(leftover))} on web \(4\.0 KiB, last written \d+ min \d+ s ago\): left by "
                     r"an interrupted backup or transfer", found.stdout), found.stdout
    assert f"`rm -f -- {leftover}`" in found.stdout, found.stdout
    doctor = site.inv("doctor", "--host", "web").stdout
    assert "no unfinished file in" in doctor, doctor
    assert re.search(r"ok +certificate for hello\.test, www\.hello\.test from Pebble Intermediate CA \w+, serial \w+, \d+ day\(s\) left",
                     doctor), doctor


# What certbot runs after each renewal (its deploy hook, certs.py deploy-hook), over the two
# newest certificates it issued (two keys), one after the other for SECONDS: the
# installations of years of renewals, in seconds, while the handshakes run.
REINSTALL = r"""
import importlib.util, os, re, sys, tempfile, time
spec = importlib.util.spec_from_file_location("certs", "/etc/hello/tls/certs.py")
certs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(certs)
archive = "/etc/letsencrypt/archive/site"
versions = sorted(int(v) for v in re.findall(r"privkey(\d+)\.pem", " ".join(os.listdir(archive))))[-2:]
lineages = []
for version in versions:
    lineage = tempfile.mkdtemp()
    for kind in ("fullchain", "privkey"):
        os.symlink(f"{archive}/{kind}{version}.pem", f"{lineage}/{kind}.pem")
    lineages.append(lineage)
sys.stdout = open(os.devnull, "w")
deadline, n = time.time() + float(sys.argv[1]), 0
while time.time() < deadline:
    os.environ["RENEWED_LINEAGE"] = lineages[n % 2]
    certs.deploy_hook()
    n += 1
os.environ["RENEWED_LINEAGE"] = lineages[-1]  # the newest last, as certbot left it
certs.deploy_hook()
print(n + 1, file=sys.__stdout__)
"""


def test_forced_renewals_with_a_new_key_fail_no_handshake(site):
    """Each forced renewal brings a new key, and no TLS handshake made meanwhile fails (a
    certificate read with the other certificate's key would: "key values mismatch"). The
    load is bounded (200 new connections a second, one in ten with a request), not flat out."""
    before = site.served()
    with Handshakes("127.0.0.1", 443, DOMAINS[0], ["nsenter", f"--net={site.server.netns}"], rate=200,
                    path="/healthz", limit=900) as seen:
        site.inv("certs.renew", "--host", "web", "--force")
        middle = site.served()
        reinstalled = site.certbot(REINSTALL, "8")
        result = site.inv("certs.renew", "--host", "web", "--force")
    print(f"renewals: {seen.summary()}; the deploy hook ran {reinstalled.stdout.strip()} times")
    after = site.served()
    assert before[1] != middle[1] and middle[1] != after[1] and before[1] != after[1]  # a new key each time
    assert before[0] != middle[0] != after[0], result.stdout
    assert seen.handshakes > 1000 and seen.requests > 100 and seen.failed == 0, seen.summary()
    assert f"{after[0]:x}" in site.inv("certs", "--host", "web").stdout


def test_a_domain_that_does_not_resolve_fails_the_deploy_in_one_line_and_the_site_keeps_serving(site):
    live, serial = site.current(), site.serial()
    stack = site.root / "config/stack.toml"
    text = stack.read_text()
    stack.write_text(text.replace(json.dumps(DOMAINS), json.dumps([*DOMAINS, "nowhere.hello.test"])))
    try:
        result = site.inv("deploy", "--host", "web", check=False)
    finally:
        stack.write_text(text)
    assert result.returncode == 1
    error = result.stderr.strip().splitlines()[-1]
    assert "nowhere.hello.test" in error and "could not resolve" in error, result.stderr
    assert site.current() == live and site.serial() == serial
    page = site.curl(f"https://{DOMAINS[0]}/", "--write-out", "%{http_code}", "--output", "/dev/null")
    assert page.stdout == "200"


def test_an_acme_server_that_does_not_answer_fails_the_deploy_in_one_line(site):
    live = site.current()
    stack = site.root / "config/stack.toml"
    text = stack.read_text()
    dead = f"https://{site.server.gateway}:9/dir"
    stack.write_text(text.replace(site.ca.directory_url(site.server.gateway), dead))
    try:
        result = site.inv("deploy", "--host", "web", check=False)
    finally:
        stack.write_text(text)
    assert result.returncode == 1
    error = result.stderr.strip().splitlines()[-1]
    assert "hello.test" in error and dead in error, result.stderr
    assert site.current() == live
    page = site.curl(f"https://{DOMAINS[0]}/", "--write-out", "%{http_code}", "--output", "/dev/null")
    assert page.stdout == "200"


def own_certificate(directory: Path):
    """A CA of the test's own and a certificate it signed for DOMAINS: (ca.pem, cert.pem, key.pem, serial)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hello test files CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(ca_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, DOMAINS[0])]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in DOMAINS]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    paths = directory / "ca.pem", directory / "site.crt", directory / "site.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    paths[2].chmod(0o600)
    return (*paths, leaf.serial_number)


def test_scheduled_backups_on_the_host_go_over_sftp_to_another_server(site, servers):
    """The host's backup service writes to a repository on a second server (its own address
    and OpenSSH server), with a key made on the host and host keys trusted by fingerprint."""
    vault = servers("https-vault", images=())
    repository = vault.dir / "restic"
    stack = site.root / "config/stack.toml"
    stack.write_text(stack.read_text() + f'\n[backups]\nschedule = "0 3 1 1 *"\n'
                                          f'repository = "sftp:root@{vault.address}:{repository}"\ndrill = "weekly"\n')
    site.inv("render")
    site.inv("deploy", "--host", "web")
    # The password was made on the host, for the host: 0600 in its shared config.
    secrets = site.dir / "shared/config/secrets"
    assert oct((secrets / "restic_password").stat().st_mode & 0o777) == "0o600"
    assert len((secrets / "restic_password").read_text().strip()) >= 40
    # The deploy starts the backup service and goes on: its first line comes once it has started.
    logs = once_the_engine_says(lambda: site.inv("logs", "--host", "web", "-s", "backup").stdout,
                                lambda out: "schedule: backup next at" in out, seconds=60)
    assert "schedule: backup next at" in logs, logs
    fingerprint = subprocess.run(["ssh-keygen", "-lf", str(vault.dir / "host_key.pub")], capture_output=True,
                                 text=True, check=True).stdout.split()[1]
    made = site.inv("backup.ssh-key", "--host", "web", "--fingerprint", fingerprint).stdout
    line = re.search(r"^restrict ssh-ed25519 \S+ \S+-backup@web$", made, re.M)[0]
    assert oct((secrets / "backup_ssh_key").stat().st_mode & 0o777) == "0o600"
    assert "Then: inv backup.now --host web" in made
    with open(vault.dir / "authorized_keys", "a") as keys:
        keys.write(line + "\n")
    site.inv("backup.now", "--host", "web")
    assert (repository / "config").is_file()
    assert site.inv("backup.status", "--host", "web").returncode == 0
    listed = site.inv("backup.snapshots", "--host", "web").stdout
    assert re.search(r"database1 \([\d,]+ rows\), \d+ media file\(s\), the certificates", listed), listed
    drilled = site.inv("backup.drill", "--host", "web")
    assert re.search(r"PASS in [\d.]+ s", drilled.stdout), drilled.stdout


def test_tls_files_serves_the_users_own_certificate(site):
    # On the host: the test host's files are this machine's (its own network, same disk).
    ca, crt, key, serial = own_certificate(site.server.dir / "tls")
    site.configure(tls="files", certificate=str(crt), certificate_key=str(key))
    site.inv("deploy", "--host", "web")
    site.roots = ca
    assert site.serial() == serial
    page = site.curl(f"https://{DOMAINS[0]}/", "--write-out", "%{http_code}", "--output", "/dev/null")
    assert page.stdout == "200", page.stderr
    assert "from hello test files CA" in site.inv("certs", "--host", "web").stdout


def test_tls_off_believes_x_forwarded_proto_from_the_trusted_proxy_only(site):
    # This machine reaches the host from its gateway address: that is the load balancer.
    site.configure(tls="off", trusted_proxies=[site.server.gateway])
    site.inv("deploy", "--host", "web")

    def scheme(run, *headers):
        return run(["curl", "--silent", "--max-time", "20", "--output", "/dev/stderr", "--write-out", "%{http_code}",
                    "--header", f"Host: {DOMAINS[0]}", *[a for h in headers for a in ("--header", h)],
                    f"http://{site.server.address}/test/scheme/"])

    def public(argv):
        return subprocess.run(argv, capture_output=True, text=True, timeout=60)

    trusted = scheme(public, "X-Forwarded-Proto: https", "X-Forwarded-For: 198.51.100.7")
    assert trusted.stdout == "200" and "secure=True" in trusted.stderr, (trusted.stdout, trusted.stderr)
    assert "remote=198.51.100.7" in trusted.stderr  # the client the proxy named
    plain = scheme(public, "X-Forwarded-Proto: http")
    assert plain.stdout == "301", plain  # Django sends plain HTTP to HTTPS
    # From any other address the header is ignored: the request is plain HTTP.
    spoofed = scheme(lambda argv: site.inside(*argv), "X-Forwarded-Proto: https")
    assert spoofed.stdout == "301", (spoofed.stdout, spoofed.stderr)
    closed = site.inside("curl", "--silent", "--max-time", "5", f"https://{site.server.address}/")
    assert closed.returncode != 0  # nothing listens on 443 any more
