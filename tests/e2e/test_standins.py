"""The images of [[services]] (REDIS_IMAGE, VALKEY_IMAGE, MEMCACHED_IMAGE, RABBITMQ_IMAGE: in CI
the stand-ins .ci/engine.sh builds from Debian packages where no registry answers, else the
official images) have the official images' interface, the one the rendered stack relies on:
the server is the default command and runs as the image's own user, owns its data folder
(a volume a root container wrote into included), answers its health command, and a client in
another container on the same user network gets in (with the password of a configuration
file where there is one, and not without it)."""
import os
import subprocess
import time
import uuid

import pytest

from tests.e2e.conftest import BASE_IMAGES, SERVICE_IMAGES

pytestmark = pytest.mark.e2e

REDIS_IMAGE, VALKEY_IMAGE = SERVICE_IMAGES["redis"], SERVICE_IMAGES["valkey"]
MEMCACHED_IMAGE, RABBITMQ_IMAGE = SERVICE_IMAGES["memcached"], SERVICE_IMAGES["rabbitmq"]
PYTHON_IMAGE = BASE_IMAGES[0]

# A client from the standard library: the AMQP 0-9-1 handshake up to the broker's Tune, which
# it sends only once the PLAIN login was accepted (a refused login closes the connection).
AMQP_LOGIN = r"""
import socket, struct, sys, time
host, user, password = sys.argv[1:]
for _ in range(120):  # the broker's address may take a moment to resolve on a new network
    try:
        conn = socket.create_connection((host, 5672), timeout=20)
        break
    except OSError:
        time.sleep(0.5)
def read(n):
    data = b""
    while len(data) < n:
        try:
            chunk = conn.recv(n - len(data))
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            return None
        data += chunk
    return data
def method():
    head = read(7)
    if head is None:
        return None
    size = struct.unpack(">BHI", head)[2]
    payload = read(size + 1)
    return None if payload is None else struct.unpack(">HH", payload[:4])
conn.sendall(b"AMQP\x00\x00\x09\x01")
assert method() == (10, 10), "no Connection.Start"
response = b"\0" + user.encode() + b"\0" + password.encode()
args = (struct.pack(">HHI", 10, 11, 0) + b"\x05PLAIN" + struct.pack(">I", len(response)) + response
        + b"\x05en_US")
conn.sendall(struct.pack(">BHI", 1, 0, len(args)) + args + b"\xce")
print("in" if method() == (10, 30) else "refused")
"""


def docker(*args: str, check: bool = True, timeout: int = 120) -> subprocess.CompletedProcess:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)}: {result.stderr.strip()}")
    return result


@pytest.fixture
def place():
    """A user network and a prefix for the containers and volumes of one test, all removed after."""
    prefix = f"hello-e2e-standins-{uuid.uuid4().hex[:8]}"
    docker("network", "create", prefix)
    yield prefix
    names = docker("ps", "--all", "--quiet", "--filter", f"name={prefix}").stdout.split()
    if names:
        docker("rm", "--force", "--volumes", *names, check=False)
    volumes = docker("volume", "ls", "--quiet", "--filter", f"name={prefix}").stdout.split()
    if volumes:
        docker("volume", "rm", "--force", *volumes, check=False)
    docker("network", "rm", prefix, check=False)


def wait_for(container: str, *command: str, seconds: int = 60) -> str:
    deadline = time.monotonic() + seconds
    while True:
        result = docker("exec", container, *command, check=False)
        if result.returncode == 0:
            return result.stdout
        if time.monotonic() > deadline:
            logs = docker("logs", "--tail", "20", container, check=False)
            raise AssertionError(f"{' '.join(command)} never answered in {container}: {result.stderr}"
                                 f"{logs.stdout}{logs.stderr}")
        time.sleep(0.5)


def server_ids(container: str) -> tuple[str, str]:
    """The real uid and gid of the container's main process."""
    status = docker("exec", container, "cat", "/proc/1/status").stdout.splitlines()
    field = {line.split(":")[0]: line.split()[1] for line in status if line.startswith(("Uid:", "Gid:"))}
    return field["Uid"], field["Gid"]


def volume_written_by_root(name: str, image: str, folder: str) -> str:
    docker("volume", "create", name)
    docker("run", "--rm", "--user", "0", "--entrypoint", "touch", "-v", f"{name}:{folder}", image,
           f"{folder}/left-by-root")
    return name


@pytest.mark.parametrize("image,server,cli,user", [
    pytest.param(REDIS_IMAGE, "redis-server", "redis-cli", "redis", id="redis"),
    pytest.param(VALKEY_IMAGE, "valkey-server", "valkey-cli", "valkey", id="valkey"),
])
def test_a_redis_keeps_its_data_as_its_own_user_and_lets_other_containers_in(place, image, server, cli, user):
    volume = volume_written_by_root(f"{place}-data", image, "/data")
    srv = f"{place}-server"
    docker("run", "--detach", "--name", srv, "--network", place, "--network-alias", "cache",
           "-v", f"{volume}:/data", image)
    assert wait_for(srv, cli, "ping").strip() == "PONG"
    assert server_ids(srv) == ("999", "999")
    assert docker("exec", srv, "stat", "-c", "%U %u", "/data", "/data/left-by-root").stdout.split("\n")[:2] == \
        [f"{user} 999", f"{user} 999"]
    assert docker("exec", srv, "sh", "-c", "command -v " + cli).returncode == 0
    # No configuration, no password: protected mode is off, as in the official image.
    client = docker("run", "--rm", "--network", place, image, cli, "-h", "cache", "set", "note", "kept").stdout
    assert client.strip() == "OK"
    docker("exec", srv, cli, "save")
    docker("restart", srv)
    assert wait_for(srv, cli, "get", "note").strip() == "kept"
    assert "dump.rdb" in docker("exec", srv, "ls", "/data").stdout.split()


@pytest.mark.parametrize("image,server,cli", [
    pytest.param(REDIS_IMAGE, "redis-server", "redis-cli", id="redis"),
    pytest.param(VALKEY_IMAGE, "valkey-server", "valkey-cli", id="valkey"),
])
def test_a_redis_started_with_a_configuration_file_asks_for_its_password(place, image, server, cli):
    srv = f"{place}-server"
    # The configuration is written where the server runs (as a stack's entrypoint writes it
    # from a secret file); the password never in argv.
    docker("create", "--name", srv, "--network", place, "--network-alias", "cache", image,
           server, "/usr/local/etc/service.conf")
    conf = f"{place}.conf"
    with open(f"/tmp/{conf}", "w") as f:
        f.write("requirepass s3cret-from-file\nappendonly yes\n")
    try:
        docker("cp", f"/tmp/{conf}", f"{srv}:/usr/local/etc/service.conf")
    finally:
        os.unlink(f"/tmp/{conf}")
    docker("start", srv)
    wait_for(srv, "sh", "-c", f"REDISCLI_AUTH=s3cret-from-file {cli} ping | grep -qx PONG")
    refused = docker("run", "--rm", "--network", place, image, cli, "-h", "cache", "ping", check=False)
    assert "NOAUTH" in refused.stdout + refused.stderr
    let_in = docker("run", "--rm", "--network", place, "-e", "REDISCLI_AUTH=s3cret-from-file", image,
                    cli, "-h", "cache", "ping")
    assert let_in.stdout.strip() == "PONG"
    assert docker("exec", srv, "sh", "-c", "ls /data/appendonly*").returncode == 0


def test_memcached_runs_as_memcache_and_answers_other_containers(place):
    srv = f"{place}-server"
    docker("run", "--detach", "--name", srv, "--network", place, "--network-alias", "cache", MEMCACHED_IMAGE)
    assert server_ids(srv) == ("11211", "11211")
    assert docker("image", "inspect", "--format", "{{json .Config.ExposedPorts}}", MEMCACHED_IMAGE).stdout.strip() \
        == '{"11211/tcp":{}}'
    client = ("import socket, time\n"
              "for _ in range(60):\n"
              "    try:\n"
              "        conn = socket.create_connection(('cache', 11211), timeout=5); break\n"
              "    except OSError:\n"
              "        time.sleep(0.5)\n"
              "conn.sendall(b'set note 0 0 4\\r\\nkept\\r\\nget note\\r\\n')\n"
              "data = b''\n"
              "while not data.endswith(b'END\\r\\n'):\n"
              "    data += conn.recv(1024)\n"
              "print(data.decode().split())\n")
    answer = docker("run", "--rm", "--network", place, PYTHON_IMAGE, "python3", "-c", client).stdout
    assert answer.strip() == "['STORED', 'VALUE', 'note', '0', '4', 'kept', 'END']"


def test_rabbitmq_reads_conf_d_and_lets_its_user_in_from_other_containers(place):
    volume = volume_written_by_root(f"{place}-data", RABBITMQ_IMAGE, "/var/lib/rabbitmq")
    srv = f"{place}-server"
    docker("create", "--name", srv, "--network", place, "--network-alias", "broker",
           "-v", f"{volume}:/var/lib/rabbitmq", RABBITMQ_IMAGE)
    conf = f"/tmp/{place}.conf"
    with open(conf, "w") as f:
        f.write("default_user = app\ndefault_pass = s3cret-from-file\n")
    try:
        docker("cp", conf, f"{srv}:/etc/rabbitmq/conf.d/20-stack.conf")
    finally:
        os.unlink(conf)
    docker("start", srv)
    wait_for(srv, "rabbitmq-diagnostics", "-q", "check_port_connectivity", seconds=120)
    assert server_ids(srv) == ("999", "999")
    owners = docker("exec", srv, "stat", "-c", "%U %u", "/var/lib/rabbitmq", "/var/lib/rabbitmq/left-by-root")
    assert owners.stdout.split("\n")[:2] == ["rabbitmq 999", "rabbitmq 999"]
    assert docker("exec", srv, "sh", "-c", "ls /var/lib/rabbitmq/mnesia").stdout.strip()
    login = ["run", "--rm", "--network", place, PYTHON_IMAGE, "python3", "-c", AMQP_LOGIN, "broker"]
    assert docker(*login, "app", "s3cret-from-file").stdout.strip() == "in"
    assert docker(*login, "app", "wrong").stdout.strip() == "refused"
