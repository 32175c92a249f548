"""Whatever the validation layer accepts renders an Nginx configuration that Nginx itself
accepts (`nginx -t`, in the stack's Nginx image): property tests with hypothesis, the
rendered files checked in one container."""
import os
import subprocess

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
