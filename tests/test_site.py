"""A host's site in config/stack.toml (domains, TLS, ports, proxies): its defaults, its
one-line refusals, and what it renders (the compose file and the front's Nginx config, with
golden files per mode) -- checked by Nginx itself where an engine is at hand."""
import os
from pathlib import Path

import pytest
import yaml

from tasks.errors import StackError
from tasks.source import render
from tasks.source.stack import ACME_SERVERS, loads
from tests.stacks import COMMITTED

BASE = COMMITTED
GOLDEN = Path(__file__).resolve().parent / "golden" / "sites"
HOST = '[hosts.prod]\naddress = "203.0.113.10"\ndirectory = "/srv/hello"\n'


def site_of(extra: str):
    return loads(BASE + HOST + extra).hosts["prod"].site


def test_without_domains_a_host_keeps_todays_loopback_http():
    site = site_of("")
    assert (site.domains, site.tls, site.bind, site.http_port, site.secure) == ((), "off", "127.0.0.1", 8000, False)


def test_domains_default_to_acme_on_every_interface_with_a_short_hsts():
    site = site_of('domains = ["example.com", "www.example.com"]\n')
    assert site.tls == "acme" and site.https and site.secure
    assert (site.bind, site.http_port, site.https_port) == ("0.0.0.0", 80, 443)
    assert site.acme_server == ACME_SERVERS["production"]
    assert (site.hsts_max_age, site.hsts_include_subdomains, site.hsts_preload) == (300, False, False)


def test_staging_is_one_word_away():
    site = site_of('domains = ["example.com"]\nacme_server = "staging"\n')
    assert site.acme_server == ACME_SERVERS["staging"]


@pytest.mark.parametrize("extra, message", [
    ('domains = ["Example.com"]\n', "domains entry 'Example.com' is not valid"),
    ('domains = ["*.example.com"]\n', "no wildcard"),
    ('domains = ["example.com; return 200"]\n', "domains entry 'example.com; return 200'"),
    ('domains = "example.com"\n', "a list of DNS names"),
    ('domains = ["example.com", "example.com"]\n', "names a domain twice"),
    ('tls = "acme"\n', 'tls = "acme" needs domains'),
    ('domains = ["example.com"]\ntls = "letsencrypt"\n', "tls 'letsencrypt' is not valid"),
    ('domains = ["example.com"]\ntls = "files"\n', "needs certificate and certificate_key"),
    ('domains = ["example.com"]\ncertificate = "/etc/ssl/site.pem"\n', 'certificate is for tls = "files"'),
    ('domains = ["example.com"]\ntrusted_proxies = ["10.0.0.1"]\n', 'trusted_proxies is for tls = "off"'),
    ('domains = ["example.com"]\ntls = "off"\ntrusted_proxies = ["10.0.0.1; deny all"]\n', "is not an IP address or network"),
    ('domains = ["example.com"]\nbind = "0.0.0.0:80"\n', "bind '0.0.0.0:80' is not valid"),
    ('domains = ["example.com"]\nacme_server = "http://ca.example/dir"\n', "acme_server 'http://ca.example/dir'"),
    ('domains = ["example.com"]\nacme_email = "ops@example.com --server x"\n', "acme_email"),
    ('domains = ["example.com"]\nhsts_max_age = "1y"\n', "hsts_max_age '1y'"),
    ('domains = ["example.com"]\nhttps_port = 80\n', "http_port and https_port are both 80"),
    ('domains = ["example.com"]\ntls = "files"\ncertificate = "../site.pem"\ncertificate_key = "/k.pem"\n', "certificate '../site.pem'"),
], ids=["uppercase", "wildcard", "nginx-injection", "not-a-list", "twice", "acme-without-domains", "unknown-mode",
        "files-without-paths", "certificate-with-acme", "proxies-with-acme", "bad-proxy", "bind-with-port",
        "plain-http-acme", "email-injection", "hsts-text", "same-ports", "relative-certificate"])
def test_site_values_are_refused_in_one_line(extra, message):
    with pytest.raises(StackError) as caught:
        site_of(extra)
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert "[hosts.prod]" in str(caught.value)


SITES = {
    "acme": 'domains = ["example.com", "www.example.com"]\nacme_email = "ops@example.com"\n',
    "files": 'domains = ["example.com"]\ntls = "files"\ncertificate = "/etc/ssl/example.pem"\n'
             'certificate_key = "/etc/ssl/example.key"\nhttps_port = 8443\nhsts_max_age = 31536000\n'
             'hsts_include_subdomains = true\n',
    "behind-proxy": 'domains = ["example.com"]\ntls = "off"\ntrusted_proxies = ["10.0.0.0/8", "192.0.2.7"]\n',
}


@pytest.mark.parametrize("case", SITES, ids=list(SITES))
@pytest.mark.parametrize("path", render.SITE_FILES, ids=["compose", "front"])
def test_golden_sites(case, path):
    stack = loads(BASE + HOST + SITES[case])
    text = render.site_files(stack, stack.hosts["prod"].site)[path]
    golden = GOLDEN / case / path.name
    if os.environ.get("UPDATE_GOLDEN"):
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text)
    assert text == golden.read_text()


def test_an_https_site_publishes_443_runs_certbot_and_keeps_its_certificate_in_a_volume():
    stack = loads(BASE + HOST + SITES["acme"])
    compose = yaml.safe_load(render.site_files(stack, stack.hosts["prod"].site)[render.COMPOSE_FILE])
    front = compose["services"]["front"]
    assert front["ports"] == ["0.0.0.0:${HTTP_PORT:-80}:80", "0.0.0.0:443:443"]
    assert "certs:/etc/hello/certs:ro" in front["volumes"]
    certbot = compose["services"]["certbot"]
    assert certbot["cap_drop"] == ["ALL"] and certbot["cap_add"] == ["CHOWN"]
    assert {"certs", "letsencrypt", "acme_webroot"} <= set(compose["volumes"])
    app = compose["services"]["djangoapp"]["environment"]
    assert app["DJANGO_SITE_DOMAINS"] == "example.com,www.example.com" and app["DJANGO_HTTPS"] == "true"
    assert app["DJANGO_SECURE_HSTS_SECONDS"] == "300"


def test_the_local_site_renders_the_committed_files():
    stack = loads(BASE)
    assert render.site_files(stack, render.local_site(stack)) == {
        path: text for path, text in render.rendered(stack).items() if path in render.SITE_FILES}
    assert "certbot" not in render.rendered(stack)[render.COMPOSE_FILE]
