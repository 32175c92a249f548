"""Two projects on one server behind its shared front (front = "shared"): hello (project A)
and a project made by `django-admin startproject`, adopted with `inv init` (project B), each
with its own domain and its own certificate from Pebble (testkit/acme.py), on one test host.

- both served over HTTPS with their own certificate (SNI), HTTP to HTTPS per project, a
  foreign Host refused, a foreign name's TLS handshake refused;
- a domain another project (or a copy of the same one, from another directory) serves is
  refused at deploy time in one line, nothing changed;
- under paced load on both sites (new TLS connections, each with a request: testkit/load.py
  HANDSHAKER): a code deploy of A, a rollback of A, a forced renewal of B's certificate and
  the removal of B: 0 failed requests on the site not being changed, and 0 on the one being
  changed except its removal (the counts and seconds of each operation are printed);
- after B's removal, A serves with its certificate, and `inv doctor --host` shows the front.
"""
import os
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from testkit import INV
from testkit.acme import Pebble
from testkit.load import Handshakes
from testkit.projectcopy import copy_project

from .conftest import BASE_IMAGES, CERTBOT_IMAGE
from .test_adopt import make_shop

pytestmark = pytest.mark.e2e
A_DOMAINS = ["hello.test", "www.hello.test"]
B_DOMAINS = ["shop.test"]


class Project:
    """One project's checkout and its host entry (HOST) on the shared server."""

    def __init__(self, stand, root: Path, host: str, project: str, domains):
        self.stand, self.root, self.host, self.project, self.domains = stand, root, host, project, domains
        self.dir = stand.server.dir / "srv" / project

    def configure(self, front="shared"):
        """This project's host entry in its checkout's config/stack.toml, added or replaced."""
        server, ca = self.stand.server, self.stand.ca
        shared = {"front": "shared", "front_directory": str(self.stand.front_dir)} if front == "shared" else {}
        entry = "\n" + server.hosts_entry(
            self.host, str(self.dir), project=self.project, domains=self.domains, acme_email=f"ops@{self.domains[0]}",
            acme_server=ca.directory_url(server.gateway), acme_ca_bundle=str(ca.ca_bundle), **shared)
        stack = self.root / "config/stack.toml"
        text = stack.read_text()
        stack.write_text(text.replace(self.entry, entry) if getattr(self, "entry", None) else text + entry)
        self.entry = entry
        self.inv("render")

    def change_code(self, words):
        views = self.root / "hello/hello/views.py"
        views.write_text(views.read_text() + f"\n# {words}\n")

    def inv(self, *args, check=True, timeout=1200):
        result = subprocess.run([*INV, *args], cwd=self.root, capture_output=True, text=True, timeout=timeout,
                                stdin=subprocess.DEVNULL, env=dict(os.environ))
        if check and result.returncode != 0:
            raise AssertionError(f"inv {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
        return result

    def curl(self, url, *args, name=None):
        """curl from the public (this machine), NAME resolving to the server, trusting Pebble's root only."""
        name = name or self.domains[0]
        address = self.stand.server.address
        return subprocess.run(["curl", "--silent", "--show-error", "--max-time", "20", "--cacert", str(self.stand.roots),
                               "--resolve", f"{name}:443:{address}", "--resolve", f"{name}:80:{address}", *args, url],
                              capture_output=True, text=True, timeout=60)

    def certificate(self, name=None):
        """(names, issuer organisation, serial) of the certificate a new TLS handshake for NAME gets."""
        context = ssl.create_default_context(cafile=str(self.stand.roots))
        with socket.create_connection((self.stand.server.address, 443), timeout=10) as sock:
            with context.wrap_socket(sock, server_hostname=name or self.domains[0]) as tls:
                der = tls.getpeercert(binary_form=True)
        from cryptography import x509

        cert = x509.load_der_x509_certificate(der)
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
        return sorted(names), cert.issuer.rfc4514_string(), cert.serial_number

    def load(self, rate=25):
        """Paced load on this site: new TLS connections, each with a request for the page."""
        return Handshakes(self.stand.server.address, 443, self.domains[0], rate=rate, threads=4, limit=900,
                          path="/", every=1)


class Stand:
    def __init__(self, server, ca, roots, work):
        self.server, self.ca, self.roots, self.work = server, ca, roots, work
        self.front_dir = server.dir / "srv" / "stackfront"


@pytest.fixture(scope="module")
def stand(servers, tmp_path_factory):
    server = servers("sfront", images=(*BASE_IMAGES, CERTBOT_IMAGE))
    with Pebble(addresses=[server.gateway]) as ca:
        for name in (*A_DOMAINS, *B_DOMAINS, "other.test"):
            ca.add_a(name, server.address)
        work = tmp_path_factory.mktemp("shared-front")
        s = Stand(server, ca, ca.write_roots(work / "pebble-roots.pem"), work)
        a = Project(s, copy_project(work / "a"), "web", "hello-a", A_DOMAINS)
        a.configure(front="own")
        s.a = a
        yield s


@pytest.fixture(scope="module")
def both(stand):
    """A deployed, then B made by startproject, adopted with `inv init` and deployed beside it."""
    started = time.monotonic()
    stand.a.deployed = stand.a.inv("deploy", "--host", "web")
    print(f"deploy of A: {time.monotonic() - started:.1f}s")
    source = make_shop(stand.work / "user")
    b = Project(stand, copy_project(stand.work / "b"), "shop", "shop-b", B_DOMAINS)
    b.inv("init", str(source))
    b.configure()
    started = time.monotonic()
    b.deployed = b.inv("deploy", "--host", "shop")
    print(f"deploy of B: {time.monotonic() - started:.1f}s")
    stand.b = b
    return stand


def test_a_project_moves_from_its_own_front_to_the_shared_front_in_one_deploy(stand):
    """A served by its own front, then `front = "shared"` and a deploy under load on A: its
    own front leaves the ports to the shared front while new connections are held (their
    SYN dropped, sent again by the client a second later), so that none is refused."""
    a = stand.a
    started = time.monotonic()
    a.inv("deploy", "--host", "web")
    print(f"deploy of A with its own front: {time.monotonic() - started:.1f}s")
    a.own_release = (a.dir / "current").resolve().name
    assert a.certificate()[0] == sorted(A_DOMAINS)
    a.configure(front="shared")
    a.change_code("moved onto the shared front")
    with a.load() as on_a:
        started = time.monotonic()
        a.deployed = a.inv("deploy", "--host", "web")
        seconds = time.monotonic() - started
    print(f"move of A onto the shared front: {seconds:.1f}s; site A {on_a.requests} requests, {on_a.failed} failed "
          f"{on_a.failures[:3]}")
    # No connection refused (held while the ports changed hands) and no 502: the project's
    # Nginx, the same container throughout, was not recreated.
    assert on_a.requests > 0 and on_a.failed == 0, on_a.failures
    assert stand.server.docker("ps", "--quiet", "--filter", "name=^hello-a-front-1$").stdout == ""
    assert_no_hold_left(stand.server)


def assert_no_hold_left(server):
    """No rule of a hand-over's hold left on SERVER."""
    rules = subprocess.run(["nsenter", f"--net={server.netns}", "iptables", "-w", "-t", "raw", "-S"],
                           capture_output=True, text=True, check=True).stdout
    assert "stackfront-hand-over" not in rules, rules


def test_one_project_is_served_over_https_through_the_shared_front(stand):
    a = stand.a
    page = a.curl(f"https://{A_DOMAINS[0]}/", "--include")
    assert page.returncode == 0, page.stderr
    assert "Hello from Django" in page.stdout
    headers = page.stdout.lower()
    assert headers.count("strict-transport-security: max-age=300") == 1, page.stdout[:800]
    assert headers.count("x-content-type-options: nosniff") == 1
    assert headers.count("x-frame-options: deny") == 1
    names, issuer, _ = a.certificate()
    assert names == sorted(A_DOMAINS) and "Pebble" in issuer, (names, issuer)
    # The project publishes no port of its own: the front owns 80 and 443.
    published = stand.server.docker("ps", "--format", "{{.Names}} {{.Ports}}").stdout
    assert [line for line in published.splitlines() if ":443->" in line] == \
        [line for line in published.splitlines() if line.startswith("stackfront-front-1 ")], published


def test_both_sites_answer_https_with_their_own_certificate(both):
    a, b = both.a, both.b
    assert "Hello from Django" in a.curl(f"https://{A_DOMAINS[0]}/").stdout
    www = a.curl(f"https://{A_DOMAINS[1]}/", "--write-out", "%{http_code}", "--output", "/dev/null", name=A_DOMAINS[1])
    assert www.stdout == "200", www.stderr
    shop = b.curl(f"https://{B_DOMAINS[0]}/", "--include")
    assert shop.returncode == 0 and "Shop v1" in shop.stdout, shop.stdout[-500:] + shop.stderr
    assert shop.stdout.lower().count("strict-transport-security: max-age=300") == 1
    assert a.certificate()[0] == sorted(A_DOMAINS)
    assert b.certificate()[0] == B_DOMAINS and "Pebble" in b.certificate()[1]


def test_http_redirects_to_https_on_each_sites_own_name(both):
    for project, name in ((both.a, A_DOMAINS[1]), (both.b, B_DOMAINS[0])):
        moved = project.curl(f"http://{name}/admin/?x=1", "--write-out", "%{http_code} %{redirect_url}",
                             "--output", "/dev/null", name=name)
        assert moved.stdout == f"301 https://{name}/admin/?x=1", moved.stdout


def test_a_foreign_host_and_a_foreign_name_are_refused(both):
    a = both.a
    for url in (f"http://{A_DOMAINS[0]}/", f"https://{A_DOMAINS[0]}/"):
        foreign = a.curl(url, "--header", "Host: other.test", "--write-out", "%{http_code}", "--output", "/dev/null")
        assert foreign.stdout == "421", (url, foreign.stdout, foreign.stderr)
    # Another project's name on a connection opened for A's: not passed to either.
    crossed = a.curl(f"https://{A_DOMAINS[0]}/", "--header", f"Host: {B_DOMAINS[0]}", "--write-out", "%{http_code}",
                     "--output", "/dev/null")
    assert crossed.stdout == "421", crossed.stdout
    # A name no project claims gets no certificate: the handshake fails.
    with pytest.raises((ssl.SSLError, ConnectionError)):
        a.certificate("other.test")


def test_a_domain_another_project_serves_is_refused_before_anything_changes(both):
    """A third project on the same server claiming B's domain: one line, nothing made."""
    c = Project(both, both.a.root, "third", "hello-c", B_DOMAINS)
    c.configure()
    refused = c.inv("deploy", "--host", "third", check=False)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert refused.stderr.strip().splitlines()[-1].endswith(
        f"error: {B_DOMAINS[0]} is served by project shop-b on this server: nothing was changed"), refused.stderr
    assert not c.dir.exists()
    assert "Shop v1" in both.b.curl(f"https://{B_DOMAINS[0]}/").stdout
    # A copy of A (the same compose project) deployed from another directory: refused too.
    copy = Project(both, both.a.root, "staging", "hello-a", A_DOMAINS[:1])
    copy.dir = both.server.dir / "srv" / "hello-a-staging"
    copy.configure()
    refused = copy.inv("deploy", "--host", "staging", check=False)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert refused.stderr.strip().splitlines()[-1].endswith(
        f"error: {A_DOMAINS[0]} is served by project hello-a from {both.a.dir} on this server: nothing was changed"), \
        refused.stderr
    assert not copy.dir.exists()


def test_moving_back_to_its_own_front_is_refused_while_another_project_is_behind_the_shared_one(both):
    a = both.a
    a.configure(front="own")
    try:
        refused = a.inv("deploy", "--host", "web", check=False)
    finally:
        a.configure(front="shared")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert refused.stderr.strip().splitlines()[-1] == (
        f"error: the shared front on web holds its ports for other projects too (shop-b: shop.test ({both.b.dir})): "
        "keep front = \"shared\" in [hosts.web], or give this project another http_port and https_port: nothing was "
        "changed"), refused.stderr
    assert both.server.docker("inspect", "--format", "{{.State.Status}}", "stackfront-front-1").stdout.strip() == "running"
    assert "Hello from Django" in a.curl(f"https://{A_DOMAINS[0]}/").stdout


def measure(both, operation, run):
    """RUN() under load on both sites; print and return ({site: (requests, failed)}, seconds)."""
    with both.a.load() as on_a, both.b.load() as on_b:
        started = time.monotonic()
        run()
        seconds = time.monotonic() - started
    counts = {"A": (on_a.requests, on_a.failed), "B": (on_b.requests, on_b.failed)}
    print(f"{operation}: {seconds:.1f}s; site A {on_a.requests} requests, {on_a.failed} failed {on_a.failures[:3]}; "
          f"site B {on_b.requests} requests, {on_b.failed} failed {on_b.failures[:3]}")
    return counts, seconds


def test_operations_on_one_project_fail_no_request_of_either_site(both):
    a, b = both.a, both.b
    a.change_code("a code change")

    counts, _ = measure(both, "code deploy of A", lambda: a.inv("deploy", "--host", "web"))
    assert counts["A"][1] == 0 and counts["B"][1] == 0, counts
    assert counts["A"][0] > 0 and counts["B"][0] > 0, counts

    counts, _ = measure(both, "rollback of A", lambda: a.inv("rollback", "--host", "web"))
    assert counts["A"][1] == 0 and counts["B"][1] == 0, counts

    serial = b.certificate()[2]
    counts, _ = measure(both, "forced renewal of B", lambda: b.inv("certs.renew", "--host", "shop", "--force"))
    assert counts["A"][1] == 0 and counts["B"][1] == 0, counts
    assert b.certificate()[2] != serial  # a new certificate is served

    published = both.front_dir / "certs" / b.project / "site.pem"
    assert published.exists()
    counts, _ = measure(both, "removal of B", lambda: b.inv("down", "--host", "shop", "--volumes", "--yes"))
    assert counts["A"][1] == 0, counts
    # Its volumes gone, its key goes from the front's folder too; A's stays.
    assert not published.exists() and (both.front_dir / "certs" / a.project / "site.pem").exists()


def test_after_b_is_removed_a_serves_with_its_certificate_and_doctor_shows_the_front(both):
    a, b = both.a, both.b
    assert "Hello from Django" in a.curl(f"https://{A_DOMAINS[0]}/").stdout
    assert a.certificate()[0] == sorted(A_DOMAINS)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        b.certificate()
    doctor = a.inv("doctor", "--host", "web", check=False)
    out = doctor.stdout
    assert "shared front running" in out, out
    assert f"it routes hello-a: {', '.join(sorted(A_DOMAINS))}" in out, out
    assert f"hello-a's names claimed: {', '.join(A_DOMAINS)}" in out, out
    assert "hello-a's certificate published to the front" in out, out
    # Through every operation of both projects, the front was never reloaded.
    logs = both.server.docker("logs", "stackfront-front-1").stderr
    assert "start worker process" in logs and "reconfiguring" not in logs, logs[-2000:]
    # Installing it again changes nothing: the same container, still on A's network.
    started = both.server.docker("inspect", "--format", "{{.Id}} {{.State.StartedAt}}", "stackfront-front-1").stdout
    a.inv("server.front", "--host", "web")
    assert both.server.docker("inspect", "--format", "{{.Id}} {{.State.StartedAt}}",
                              "stackfront-front-1").stdout == started
    assert "Hello from Django" in a.curl(f"https://{A_DOMAINS[0]}/").stdout
    # A release deployed with A's own front is not served behind the shared one.
    back = a.inv("rollback", "--host", "web", "--to", a.own_release, "--force", check=False)
    assert back.returncode == 1 and back.stderr.strip().splitlines()[-1].endswith(
        f"{a.own_release} was deployed with the project's own front and is not served again behind the shared "
        "front: deploy its code again instead"), back.stderr
    assert "Hello from Django" in a.curl(f"https://{A_DOMAINS[0]}/").stdout
    # The front cannot go while A uses it.
    refused = a.inv("server.front", "--host", "web", "--remove", check=False)
    assert refused.returncode == 1 and "projects still use the shared front" in refused.stderr, refused.stderr


def test_the_last_project_moves_back_to_its_own_front_in_one_deploy(both):
    """A alone behind the shared front, `front = "own"` again and a deploy under load on A:
    the shared front hands the ports to A's own front (new connections held), and goes."""
    a, server = both.a, both.server
    shared_release = (a.dir / "current").resolve().name
    a.configure(front="own")
    a.change_code("back on its own front")
    with a.load() as on_a:
        started = time.monotonic()
        a.inv("deploy", "--host", "web")
        seconds = time.monotonic() - started
    print(f"move of A back to its own front: {seconds:.1f}s; site A {on_a.requests} requests, {on_a.failed} failed "
          f"{on_a.failures[:3]}")
    assert on_a.requests > 0 and on_a.failed == 0, on_a.failures
    assert server.docker("inspect", "--format", "{{.State.Status}}", "hello-a-front-1").stdout.strip() == "running"
    assert server.docker("ps", "--all", "--quiet", "--filter", "name=^stackfront-front-1$").stdout == ""
    assert_no_hold_left(server)
    assert a.certificate()[0] == sorted(A_DOMAINS)
    assert "Hello from Django" in a.curl(f"https://{A_DOMAINS[0]}/").stdout
    assert not list((both.front_dir / "names").iterdir())  # its claims went with it
    # The release made for the shared front is not served by the own one.
    back = a.inv("rollback", "--host", "web", "--to", shared_release, "--force", check=False)
    assert back.returncode == 1 and back.stderr.strip().splitlines()[-1].endswith(
        f"{shared_release} was deployed behind the shared front and is not served again by the project's own "
        "front: deploy its code again instead"), back.stderr
