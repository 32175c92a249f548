"""Whatever the validation layer accepts renders an Nginx configuration that Nginx itself
accepts (`nginx -t`, in the stack's Nginx image and in Nginx 1.26): property tests with
hypothesis, the rendered files checked in one container per image."""
import os
import subprocess
import time

import pytest
from hypothesis import given, settings

from tasks.errors import StackError
from tasks.source import render, values

from ..stackinputs import INPUTS, accepted

pytestmark = pytest.mark.e2e

NGINX_IMAGE = os.environ.get("NGINX_IMAGE", "nginx:1.27")
# The stack's image (1.22 where CI builds stand-ins) and a second, newer one: the front's
# configuration holds on both.
IMAGES = {"NGINX_IMAGE": NGINX_IMAGE, "NGINX126_IMAGE": os.environ.get("NGINX126_IMAGE", "nginx:1.26")}
# What a newer Nginx says of a configuration an older one needs: `listen ... http2` is the
# only way 1.22 turns HTTP/2 on (`http2 on;` came in 1.25.1), and still works after.
KNOWN_WARNINGS = ('the "listen ... http2" directive is deprecated, use the "http2" directive instead',)
# The front with HTTPS ([hosts.NAME] sites): its certificates are named by a variable, read
# at the handshake, so `nginx -t` needs only the map's include.
HTTPS_SITES = [{"domains": ("example.com", "www.example.com"), "tls": "acme", "acme_email": "ops@example.com"},
               {"domains": ("example.com",), "tls": "files", "certificate": "/etc/ssl/example.pem",
                "certificate_key": "/etc/ssl/example.key", "https_port": 8443, "hsts_include_subdomains": True}]


def nginx_version(image: str) -> tuple[int, ...]:
    said = subprocess.run(["docker", "run", "--rm", "--pull", "never", "--network", "none", "--entrypoint", "nginx",
                           image, "-v"], capture_output=True, text=True, timeout=60).stderr
    return tuple(int(part) for part in said.strip().rsplit("/", 1)[1].split("."))


@pytest.mark.parametrize("image", list(IMAGES), ids=list(IMAGES))
def test_every_accepted_input_renders_a_config_nginx_accepts(tmp_path, image):
    from tasks.source.stack import Site, loads

    rendered = []

    @settings(max_examples=40, deadline=None, database=None)
    @given(**INPUTS)
    def collect(name, port, size, databases):
        stack = accepted(name, port, size, databases)
        if stack is None:
            return
        files = render.rendered(stack)
        rendered.append((files[render.NGINX_MAIN_CONF], files[render.NGINX_CONF], files[render.FRONT_CONF]))

    collect()
    # And what the probe tried: the value that once injected a location, refused before rendering.
    with pytest.raises(StackError):
        values.body_size('1m; location /leak/ {alias /etc/; autoindex on;} #')
    assert len(rendered) >= 10
    committed = loads(open("config/stack.toml").read())
    for site in HTTPS_SITES:
        files = render.rendered(committed, Site(http_port=committed.http_port, **site))
        rendered.append((files[render.NGINX_MAIN_CONF], files[render.NGINX_CONF], files[render.FRONT_CONF]))
    for index, (main, server, front) in enumerate(rendered):
        case = tmp_path / str(index)
        case.mkdir()
        (case / "nginx.conf").write_text(main)
        (case / "default.conf").write_text(server)
        (case / "front.conf").write_text(front)
    # Each case where the containers read it (/etc/nginx/hello), with a live file as the tasks write it.
    script = ('mkdir -p /etc/nginx/live && echo "set \\$djangoapp http://hello-djangoapp-2:8000;" > /etc/nginx/live/app.conf; '
              'mkdir -p /etc/hello/certs && echo "default /etc/hello/certs/example.com.pem;" > /etc/hello/certs/site.conf; '
              'for case in /cases/*; do rm -rf /etc/nginx/hello; cp -r "$case" /etc/nginx/hello; '
              'for conf in nginx.conf front.conf; do nginx -t -q -c "/etc/nginx/hello/$conf" '
              '|| { echo "refused: $case/$conf"; exit 1; }; done; done; echo "all accepted"')
    result = subprocess.run(["docker", "run", "--rm", "--pull", "never", "--network", "none",
                             "--volume", f"{tmp_path}:/cases:ro", "--entrypoint", "sh", IMAGES[image], "-c", script],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "all accepted" in result.stdout, result.stdout + result.stderr
    # Nothing it only tolerates, but the one way HTTP/2 is said on both.
    said = [line for line in result.stderr.splitlines() if line.strip()]
    assert [line for line in said if not any(known in line for known in KNOWN_WARNINGS)] == [], said
    if nginx_version(IMAGES[image]) < (1, 25, 1):
        assert said == []


@pytest.mark.parametrize("image", list(IMAGES), ids=list(IMAGES))
def test_upstream_resolve_is_there_from_1_27_3_only(tmp_path, image):
    """An upstream that re-resolves its servers (`server app resolve`) would keep connections
    to the app across releases; open-source Nginx has it from 1.27.3 on. The stack supports
    older ones, so it resolves per request (a variable in proxy_pass) instead."""
    (tmp_path / "resolve.conf").write_text(
        "events {}\nhttp { resolver 127.0.0.11 valid=10s; upstream app { zone app 64k; "
        "server djangoapp:8000 resolve; } server { listen 8080; location / { proxy_pass http://app; } } }\n")
    result = subprocess.run(["docker", "run", "--rm", "--pull", "never", "--network", "none", "--volume",
                             f"{tmp_path}:/cases:ro", "--entrypoint", "nginx", IMAGES[image], "-t", "-q", "-c",
                             "/cases/resolve.conf"], capture_output=True, text=True, timeout=60)
    if nginx_version(IMAGES[image]) >= (1, 27, 3):
        assert result.returncode == 0, result.stderr
    else:
        assert result.returncode != 0 and 'invalid parameter "resolve"' in result.stderr, result.stderr


BACKEND = """events {}
http { server { listen 80; location / { return 200 "behind $host $uri\\n"; } } }
"""


@pytest.mark.parametrize("image", list(IMAGES), ids=list(IMAGES))
@pytest.mark.parametrize("site", [{}, {"domains": ["example.com", "www.example.com"], "tls": "off"}],
                         ids=["local", "domains-behind-a-proxy"])
def test_the_front_answers_files_and_healthz_for_the_sites_own_names_only(tmp_path, site, image):
    """The front's rendered configuration in the Nginx image, with a stand-in for Nginx behind
    it (on the network alias `nginx`, as in the stack): files and /healthz pass for the site's
    names and this machine's; any other Host gets a 400, as Django gives it for the pages."""
    from tasks.source.stack import Site, loads

    stack = loads(open("config/stack.toml").read())
    front = render.rendered(stack, Site(http_port=stack.http_port, **site) if site else None)[render.FRONT_CONF]
    (tmp_path / "front.conf").write_text(front)
    (tmp_path / "behind.conf").write_text(BACKEND)
    name = f"hello-e2e-front-names-{os.getpid()}-{len(site)}-{image.lower()}"
    docker = ["docker", "run", "--detach", "--pull", "never", "--network", name]
    subprocess.run(["docker", "network", "create", name], check=True, capture_output=True)
    try:
        subprocess.run([*docker, "--name", f"{name}-nginx", "--network-alias", "nginx", "--volume",
                        f"{tmp_path}/behind.conf:/etc/nginx/behind.conf:ro", IMAGES[image],
                        "nginx", "-g", "daemon off;", "-c", "/etc/nginx/behind.conf"], check=True, capture_output=True)
        subprocess.run([*docker, "--name", f"{name}-front", "--publish", "127.0.0.1::80", "--volume",
                        f"{tmp_path}/front.conf:/etc/nginx/front.conf:ro", IMAGES[image],
                        "nginx", "-g", "daemon off;", "-c", "/etc/nginx/front.conf"], check=True, capture_output=True)
        port = subprocess.run(["docker", "port", f"{name}-front", "80/tcp"], check=True, capture_output=True,
                              text=True).stdout.split()[0].rsplit(":", 1)[1]

        def status(path, host):
            argv = ["curl", "--silent", "--max-time", "10", "--output",
                    "/dev/null", "--write-out", "%{http_code}", "--header", f"Host: {host}",
                    f"http://127.0.0.1:{port}{path}"]
            return subprocess.run(argv, capture_output=True, text=True, timeout=60).stdout

        # Docker's proxy takes the connection before Nginx listens: wait for an answer.
        deadline = time.monotonic() + 30
        while status("/", "localhost") == "000" and time.monotonic() < deadline:
            time.sleep(0.2)

        own = ["localhost", f"127.0.0.1:{port}", f"localhost:{port}", "[::1]", *site.get("domains", [])]
        for path in ("/static/hello.css", "/media/a.png", "/healthz", "/"):
            assert [status(path, host) for host in own] == ["200"] * len(own), path
        for host in ("evil.example", "example.com.evil.example", "nginx", "127.0.0.2"):
            assert [status(path, host) for path in ("/static/hello.css", "/media/a.png", "/healthz",
                                                    "//static/hello.css", "/x/../healthz")] == ["400"] * 5, host
            assert status("/", host) == "200"  # the pages are the app's to refuse (Django's ALLOWED_HOSTS)
    finally:
        subprocess.run(["docker", "rm", "--force", f"{name}-front", f"{name}-nginx"], capture_output=True)
        subprocess.run(["docker", "network", "rm", name], capture_output=True)
