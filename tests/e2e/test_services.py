"""`inv service.*` on a real engine, in a copy of the project: a Redis added with --up is
healthy, never published, reached by the app alone with the URL the stack gives it, its
password in no `docker inspect`; an add that fails changes nothing; remove takes it out.

The images are REDIS_IMAGE, VALKEY_IMAGE, MEMCACHED_IMAGE and RABBITMQ_IMAGE (CI's stand-ins
built from Debian's packages, with the official images' interface), else the official ones."""
import os
import shlex

import pytest

from tests.e2e.conftest import once_the_engine_says
from testkit.projectcopy import copy_project, git_status

pytestmark = pytest.mark.e2e

REDIS_IMAGE = os.environ.get("REDIS_IMAGE", "redis:7.4")
IMAGES = {name: os.environ[name] for name in ("VALKEY_IMAGE", "MEMCACHED_IMAGE", "RABBITMQ_IMAGE") if name in os.environ}
# Inside the app's process: the URL the settings put in its environment, used as is (a raw
# AUTH and PING: the example has no Redis client).
PING = """
import os, socket
from urllib.parse import unquote, urlsplit
url = urlsplit(os.environ["REDIS_URL"])
print("broker", os.environ["CELERY_BROKER_URL"] == os.environ["REDIS_URL"])
with socket.create_connection((url.hostname, url.port), timeout=5) as conn:
    password = unquote(url.password).encode()
    conn.sendall(b"*2\\r\\n$4\\r\\nAUTH\\r\\n$%d\\r\\n%s\\r\\n*1\\r\\n$4\\r\\nPING\\r\\n" % (len(password), password))
    answer = b""
    while answer.count(b"\\r\\n") < 2:
        answer += conn.recv(100)
print("answer", answer.decode().split())
"""


def reaches(s, service, host, port):
    """Whether SERVICE's container opens a TCP connection to HOST:PORT (bash's /dev/tcp)."""
    result = s.compose("exec", "-T", service, "timeout", "3", "bash", "-c", f"exec 3<>/dev/tcp/{host}/{port}",
                       check=False)
    return result.returncode == 0


def redis_container(s):
    return s.compose("ps", "--all", "-q", "redis").stdout.strip()


@pytest.fixture(scope="module")
def s(tmp_path_factory):
    from tests.e2e.conftest import Stack, free_port

    # A project of its own: the other modules' copies run beside it.
    stack = Stack("hello-e2e-services", free_port(0), root=copy_project(tmp_path_factory.mktemp("project")))
    stack.env.update(REDIS_IMAGE=REDIS_IMAGE, **IMAGES)
    stack.purge()
    stack.inv("up")
    yield stack
    stack.purge()


def test_an_add_that_fails_changes_nothing(s):
    result = s.inv("service.add", "redis", "--up", check=False, env={"REDIS_IMAGE": f"{REDIS_IMAGE}-missing"})
    assert result.returncode != 0
    error = result.stderr.strip().splitlines()[-1]
    assert "service redis was not added: put back config/stack.toml, docker-compose.yml" in error, result.stderr
    assert git_status(s.root) == ""
    assert not (s.root / "config/secrets/redis_password").exists()
    assert redis_container(s) == ""
    assert "redis_volume" not in s.volumes()
    assert s.docker("network", "inspect", f"{s.project}_redis_network", check=False).returncode != 0
    assert s.health_inside()[0] == 200


def test_service_add_up_starts_a_healthy_redis_that_is_never_published(s):
    result = s.inv("service.add", "redis", "--up")
    assert "Service redis is up; the app reads REDIS_URL." in result.stdout
    container = redis_container(s)
    state = once_the_engine_says(
        lambda: s.docker("inspect", "--format", "{{.State.Health.Status}} {{json .NetworkSettings.Ports}} "
                         "{{json .HostConfig.PortBindings}}", container).stdout.split(),
        lambda fields: fields[:1] == ["healthy"])
    assert state[0] == "healthy"
    assert state[1] in ('{"6379/tcp":null}', "{}") and state[2] in ("{}", "null")
    assert "redis_volume" in s.volumes()
    assert (s.root / "config/secrets/redis_password").stat().st_mode & 0o777 == 0o600
    assert s.health_inside()[0] == 200


def test_the_apps_process_gets_a_url_that_works(s):
    out = s.inv("manage", "--", "shell", "-c", PING).stdout
    assert "broker True" in out
    assert "answer ['+OK', '+PONG']" in out


def test_the_password_is_in_no_inspect_nor_argv(s):
    password = (s.root / "config/secrets/redis_password").read_text().strip()
    assert len(password) >= 40
    containers = s.containers()
    assert len(containers) >= 5
    assert password not in s.docker("inspect", *containers).stdout
    # The processes' command lines (ps's CMD column) name the configuration file, not its content.
    processes = s.docker("top", redis_container(s)).stdout
    assert "redis-server" in processes and password not in processes
    app = s.compose("ps", "-q", "djangoapp").stdout.split()[0]
    processes = s.docker("top", app).stdout
    assert "gunicorn" in processes and password not in processes
    # Without it, the server refuses.
    answer = s.compose("exec", "-T", "redis", "redis-cli", "ping").stdout
    assert "NOAUTH" in answer


def test_only_the_app_reaches_it(s):
    assert reaches(s, "djangoapp", "redis", 6379)
    fmt = f'{{{{(index .NetworkSettings.Networks "{s.project}_redis_network").IPAddress}}}}'
    ip = s.docker("inspect", "--format", fmt, redis_container(s)).stdout.strip()
    assert ip
    for service in ("nginx", "database1"):
        assert s.compose("exec", "-T", service, "getent", "hosts", "redis", check=False).returncode != 0
        assert not reaches(s, service, ip, 6379), f"{service} reached redis at {ip}"


def test_list_and_doctor_see_it_running(s):
    rows = s.inv("service.list").stdout.splitlines()
    assert rows[0].split() == ["NAME", "KIND", "IMAGE", "NETWORK", "VOLUME", "STATE"]
    assert rows[1].split() == ["redis", "redis", "${REDIS_IMAGE:-redis:7.4}", f"{s.project}_redis_network",
                               f"{s.project}_redis_volume", "running"]
    assert "ok   services running and healthy: redis" in s.inv("doctor", check=False).stdout


def test_service_remove_takes_it_out_and_keeps_its_data(s):
    result = s.inv("service.remove", "redis")
    assert f"its data stays in the volume {s.project}_redis_volume" in result.stdout
    assert redis_container(s) == ""
    assert s.health()[0] == 200  # through the front: Nginx was switched to the new app container
    assert git_status(s.root, ignored=False) == ""
    assert "redis_volume" in s.volumes()
    assert s.health_inside()[0] == 200
    env = s.inv("manage", "--", "shell", "-c", "import os; print('url', os.environ.get('REDIS_URL'))").stdout
    assert "url None" in env
    # --purge deletes the volume and the password for good.
    s.inv("service.add", "redis")
    s.inv("service.remove", "redis", "--purge", "--yes")
    assert "redis_volume" not in s.volumes()
    assert not (s.root / "config/secrets/redis_password").exists()
    assert shlex.split(s.inv("service.list").stdout) == ["NAME", "KIND", "IMAGE", "NETWORK", "VOLUME", "STATE"]


# Inside the app's process: each URL used as is (raw protocol lines; the broker's password
# is checked by the broker itself, below).
OTHERS = """
import os, socket
from urllib.parse import unquote, urlsplit

def talk(url, payload, lines):
    with socket.create_connection((url.hostname, url.port), timeout=5) as conn:
        conn.sendall(payload)
        answer = b""
        while answer.count(b"\\r\\n") < lines:
            answer += conn.recv(100)
    return answer.decode().split()

queue = urlsplit(os.environ["QUEUE_URL"])
password = unquote(queue.password).encode()
print("queue", talk(queue, b"AUTH %s\\r\\nPING\\r\\n" % password, 2))
print("cache", os.environ["CACHE_URL"], talk(urlsplit(os.environ["CACHE_URL"]), b"version\\r\\n", 1)[0])
print("broker", os.environ["CELERY_BROKER_URL"] == os.environ["BROKER_URL"], unquote(urlsplit(os.environ["BROKER_URL"]).password))
"""


def test_valkey_memcached_and_rabbitmq_too(s):
    for name, kind in (("queue", "valkey"), ("cache", "memcached"), ("broker", "rabbitmq")):
        assert f"Service {name} is up" in s.inv("service.add", name, "--kind", kind, "--up").stdout
    out = s.inv("manage", "--", "shell", "-c", OTHERS).stdout
    assert "queue ['+OK', '+PONG']" in out
    assert "cache memcache://cache:11211 VERSION" in out
    # RabbitMQ first for Celery; the URL's user and password are the broker's.
    broker = next(line.split() for line in out.splitlines() if line.startswith("broker "))
    assert broker[1] == "True"
    check = s.compose("exec", "-T", "broker", "rabbitmqctl", "authenticate_user", "app", broker[2], check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    passwords = [(s.root / f"config/secrets/{name}_password").read_text().strip() for name in ("queue", "broker")]
    inspected = s.docker("inspect", *s.containers()).stdout
    assert not any(password in inspected for password in passwords)
    for name in ("queue", "cache", "broker"):
        assert s.compose("exec", "-T", "nginx", "getent", "hosts", name, check=False).returncode != 0
