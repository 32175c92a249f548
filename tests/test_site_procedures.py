"""The site's certificate on a host (procedures/site.py), against a strict recording
connection: certs.py's runs in the certbot service's container, in order, and what a
refusal or a certificate near its end says; and execution/http.py against a server on
this machine's loopback."""
from __future__ import annotations

from http.server import BaseHTTPRequestHandler, HTTPServer
import shlex
import threading

import pytest
from invoke import Result

from tasks.errors import TaskError
from tasks.execution import http as one_get
from tasks.execution.runner import Runner
from tasks.execution.targets import HostTarget
from tasks.plans import compose
from tasks.plans import site as plans
from tasks.procedures import site
from tasks.source.stack import loads
from tests.test_backup_procedures import ALWAYS, ENGINE, OK, Host
from tests.stacks import COMMITTED

BASE = COMMITTED + '[hosts.prod]\naddress = "203.0.113.10"\ndirectory = "/srv/hello"\n'
COMPOSE = ["docker", "compose", "--project-name", "hello"]
TLS = shlex.join(["bash", "-c", plans.install_tls_files("/srv/hello/current/config/tls",
                                                        "/srv/hello/shared/config/tls", None)])
SHOW = shlex.join(COMPOSE + plans.show())
VALID = Result(stdout='checking\n{"installed": true, "names": ["example.com"], "issuer": "R11", "serial": "0a", '
                      '"days_left": 60}\n')


def on_host(extra, *rules):
    stack = loads(BASE + extra)
    conn = Host([*rules, *ALWAYS])
    return Runner(HostTarget(conn, stack.hosts["prod"], stack, local_c=Host([])), False), conn


def argv(plan):
    return shlex.join(COMPOSE + plan)


@pytest.fixture
def front(monkeypatch):
    """The front's files and start (procedures/rollout.py, tested there), recorded in order."""
    done = []
    for name in ("install_nginx_files", "refresh_front"):
        monkeypatch.setattr(site, name, lambda r, name=name: done.append(name))
    monkeypatch.setattr(site, "ensure_front", lambda r, timeout: done.append("ensure_front"))
    # A shared front that held the ports (procedures/server_front.py, tested there).
    monkeypatch.setattr(site.server_front, "move_off", lambda r: done.append("move_off"))
    return done


class TestSecure:
    def test_a_site_without_tls_only_gets_its_front(self, front):
        r, conn = on_host("")
        site.secure(r, 30)
        assert conn.commands == [] and front == ["install_nginx_files", "move_off", "ensure_front", "refresh_front"]

    def test_acme_starts_on_a_placeholder_then_obtains_the_certificate_and_starts_renewals(self, front, capsys):
        r, conn = on_host('domains = ["example.com"]\n', (TLS, OK), (argv(plans.placeholder()), OK),
                          (argv(plans.obtain()), Result(stdout="asked\nobtained a certificate for example.com\n")),
                          (argv(compose.up([plans.SERVICE], build=False, wait=False, no_deps=True)), OK), (SHOW, VALID))
        site.secure(r, 30)
        assert conn.commands == [TLS, *ENGINE, argv(plans.placeholder()), argv(plans.obtain()),
                                 argv(compose.up([plans.SERVICE], build=False, wait=False, no_deps=True)), SHOW]
        assert front == ["install_nginx_files", "move_off", "ensure_front", "refresh_front", "refresh_front"]
        out = capsys.readouterr().out.splitlines()
        assert "obtained a certificate for example.com" in out
        assert out[-1] == "certificate for example.com from R11, serial 0a, 60 day(s) left"

    def test_the_users_own_files_are_checked_and_installed(self, front, capsys):
        extra = ('domains = ["example.com"]\ntls = "files"\ncertificate = "/etc/ssl/site.pem"\n'
                 'certificate_key = "/etc/ssl/site.key"\n')
        stack_site = loads(BASE + extra).hosts["prod"].site
        r, conn = on_host(extra, (TLS, OK), (argv(plans.install_files(stack_site)), OK),
                          (SHOW, Result(stdout='{"installed": true, "names": ["example.com"], "days_left": 3}\n')))
        site.secure(r, 30)
        assert conn.commands == [TLS, *ENGINE, argv(plans.install_files(stack_site)), SHOW]
        assert capsys.readouterr().out.endswith(": renew it (under 14 days)\n")

    def test_a_refusal_of_the_acme_server_is_its_own_line(self, front):
        r, _ = on_host('domains = ["example.com"]\n', (TLS, OK), (argv(plans.placeholder()), OK),
                       (argv(plans.obtain()), Result(stderr="urn:ietf:params:acme:error:rateLimited: too many\n",
                                                     exited=plans.REFUSED)))
        with pytest.raises(TaskError, match="^urn:ietf:params:acme:error:rateLimited: too many$"):
            site.secure(r, 30)

    def test_another_failure_says_what_failed(self, front):
        r, _ = on_host('domains = ["example.com"]\n', (TLS, OK),
                       (argv(plans.placeholder()), Result(stderr="no such service\n", exited=1)))
        with pytest.raises(TaskError, match="^making a placeholder certificate failed: no such service$"):
            site.secure(r, 30)


class TestTLSFiles:
    def test_the_acme_servers_ca_bundle_travels_on_standard_input(self, tmp_path):
        bundle = tmp_path / "ca.pem"
        bundle.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
        script = shlex.join(["bash", "-c", plans.install_tls_files(
            "/srv/hello/current/config/tls", "/srv/hello/shared/config/tls", bundle.read_text())])
        r, conn = on_host(f'domains = ["example.com"]\nacme_ca_bundle = "{bundle}"\n', (script, OK))
        site.install_tls_files(r)
        assert conn.calls == [(None, script, bundle.read_text())]

    @pytest.mark.parametrize("content, message", [
        (None, r"^acme_ca_bundle .*/ca.pem cannot be read: No such file or directory$"),
        ("not a certificate\n", r"^acme_ca_bundle .*/ca.pem holds no PEM certificate$"),
    ], ids=["missing", "not-pem"])
    def test_a_bundle_that_is_not_a_certificate_is_refused(self, tmp_path, content, message):
        bundle = tmp_path / "ca.pem"
        if content is not None:
            bundle.write_text(content)
        r, conn = on_host(f'domains = ["example.com"]\nacme_ca_bundle = "{bundle}"\n')
        with pytest.raises(TaskError, match=message):
            site.install_tls_files(r)
        assert conn.commands == []


class TestCertificate:
    @pytest.mark.parametrize("found, fine, line", [
        ({}, False, "no certificate installed yet"),
        ({"installed": True, "names": ["a.example", "b.example"], "issuer": "R11", "serial": "1f", "days_left": 89},
         True, "certificate for a.example, b.example from R11, serial 1f, 89 day(s) left"),
        ({"installed": True, "placeholder": True, "days_left": 1}, False,
         "certificate for  from ?, serial ?, 1 day(s) left: a self-signed placeholder (no certificate obtained yet)"),
        ({"installed": True, "names": ["a.example"], "days_left": 13}, False,
         "certificate for a.example from ?, serial ?, 13 day(s) left: renew it (under 14 days)"),
    ], ids=["none", "fine", "placeholder", "ending"])
    def test_a_certificate_is_described_in_one_line(self, found, fine, line):
        assert site.describe(found) == (fine, line)

    def test_a_site_without_https_has_no_certificate_to_show(self):
        r, conn = on_host("")
        assert site.certificate(r) == {} and conn.commands == []

    def test_a_show_that_fails_is_no_certificate(self):
        r, _ = on_host('domains = ["example.com"]\n', (SHOW, Result(exited=1)))
        assert site.certificate(r) == {}

    def test_renewal_is_for_acme_sites_only(self):
        r, conn = on_host("")
        with pytest.raises(TaskError, match='^prod does not use ACME \\(tls = "off"\\): nothing to renew$'):
            site.renew(r, False)
        assert conn.commands == []

    def test_a_renewal_reloads_the_front_and_shows_the_certificate(self, front, capsys):
        r, conn = on_host('domains = ["example.com"]\n', (argv(plans.renew(True)), Result(stdout="a\nb\nrenewed\n")),
                          (SHOW, VALID))
        site.renew(r, True)
        assert conn.commands == [*ENGINE, argv(plans.renew(True)), SHOW] and front == ["refresh_front"]
        assert capsys.readouterr().out.splitlines()[:2] == ["b", "renewed"]


class TestHTTP:
    @pytest.fixture
    def server(self):
        class Answer(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - the library's name
                self.send_response({"/ok": 200, "/moved": 204}.get(self.path, 503))
                self.end_headers()

            def log_message(self, *args):
                pass

        httpd = HTTPServer(("127.0.0.1", 0), Answer)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
        httpd.shutdown()
        httpd.server_close()

    def test_200_is_no_problem_and_anything_else_is_said(self, server):
        assert one_get.problem(f"{server}/ok") is None
        assert one_get.problem(f"{server}/moved") == "HTTP 204"
        assert one_get.problem(f"{server}/down") == "HTTP 503"

    def test_nothing_listening_is_why(self):
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        assert "refused" in one_get.problem(f"http://127.0.0.1:{port}/", timeout=2).lower()
