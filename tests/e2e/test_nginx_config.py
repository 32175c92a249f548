"""Whatever the validation layer accepts renders an Nginx configuration that Nginx itself
accepts (`nginx -t`, in the stack's Nginx image): property tests with hypothesis, the
rendered files checked in one container."""
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


def test_every_accepted_input_renders_a_config_nginx_accepts(tmp_path):
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
    for index, (main, server, front) in enumerate(rendered):
        case = tmp_path / str(index)
        case.mkdir()
        (case / "nginx.conf").write_text(main)
        (case / "default.conf").write_text(server)
        (case / "front.conf").write_text(front)
    # Each case where the containers read it (/etc/nginx/hello), with a live file as the tasks write it.
    script = ('mkdir -p /etc/nginx/live && echo "set \\$djangoapp http://hello-djangoapp-2:8000;" > /etc/nginx/live/app.conf; '
              'for case in /cases/*; do rm -rf /etc/nginx/hello; cp -r "$case" /etc/nginx/hello; '
              'for conf in nginx.conf front.conf; do nginx -t -q -c "/etc/nginx/hello/$conf" '
              '|| { echo "refused: $case/$conf"; exit 1; }; done; done; echo "all accepted"')
    result = subprocess.run(["docker", "run", "--rm", "--pull", "never", "--network", "none",
                             "--volume", f"{tmp_path}:/cases:ro", "--entrypoint", "sh", NGINX_IMAGE, "-c", script],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "all accepted" in result.stdout, result.stdout + result.stderr


BACKEND = """events {}
http { server { listen 80; location / { return 200 "behind $host $uri\\n"; } } }
"""


@pytest.mark.parametrize("site", [{}, {"domains": ["example.com", "www.example.com"], "tls": "off"}],
                         ids=["local", "domains-behind-a-proxy"])
def test_the_front_answers_files_and_healthz_for_the_sites_own_names_only(tmp_path, site):
    """The front's rendered configuration in the Nginx image, with a stand-in for Nginx behind
    it (on the network alias `nginx`, as in the stack): files and /healthz pass for the site's
    names and this machine's; any other Host gets a 400, as Django gives it for the pages."""
    from tasks.source.stack import Site, loads

    stack = loads(open("config/stack.toml").read())
    front = render.rendered(stack, Site(http_port=stack.http_port, **site) if site else None)[render.FRONT_CONF]
    (tmp_path / "front.conf").write_text(front)
    (tmp_path / "behind.conf").write_text(BACKEND)
    name = f"hello-e2e-front-names-{os.getpid()}-{len(site)}"
    docker = ["docker", "run", "--detach", "--pull", "never", "--network", name]
    subprocess.run(["docker", "network", "create", name], check=True, capture_output=True)
    try:
        subprocess.run([*docker, "--name", f"{name}-nginx", "--network-alias", "nginx", "--volume",
                        f"{tmp_path}/behind.conf:/etc/nginx/behind.conf:ro", NGINX_IMAGE,
                        "nginx", "-g", "daemon off;", "-c", "/etc/nginx/behind.conf"], check=True, capture_output=True)
        subprocess.run([*docker, "--name", f"{name}-front", "--publish", "127.0.0.1::80", "--volume",
                        f"{tmp_path}/front.conf:/etc/nginx/front.conf:ro", NGINX_IMAGE,
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
