"""`inv deploy` and `--host` against a real OpenSSH server on 127.0.0.1 playing `prod`.
The remote stack has its own compose project and port, so it does not meet the local one."""
import json
import re
import subprocess
import sys
import time

import pytest

from tests.e2e.conftest import Stack, free_port
from testkit.projectcopy import copy_project

pytestmark = pytest.mark.e2e
PROJECT = "hello-e2e-prod"


def hosts_toml(sshd, remote_dir, http_port):
    d = sshd["dir"]
    common = f'address = "127.0.0.1"\nuser = "{sshd["user"]}"\nidentity_file = "{d}/client_key"\n'
    return f"""
[hosts.prod]
{common}port = {sshd["port"]}
known_hosts = "{d}/known_hosts"
directory = "{remote_dir}"
http_port = {http_port}
project = "{PROJECT}"

[hosts.wrongkey]
address = "127.0.0.1"
user = "{sshd["user"]}"
identity_file = "{d}/other_key"
port = {sshd["port"]}
known_hosts = "{d}/known_hosts"
directory = "{remote_dir}"

[hosts.changed]
{common}port = {sshd["port"]}
known_hosts = "{d}/wrong_known_hosts"
directory = "{remote_dir}"

[hosts.stranger]
{common}port = {sshd["port"]}
known_hosts = "{d}/empty_known_hosts"
directory = "{remote_dir}"

[hosts.closed]
{common}port = {free_port(0)}
known_hosts = "{d}/known_hosts"
directory = "{remote_dir}"
"""


class Remote(Stack):
    def __init__(self, root, remote_dir, port):
        super().__init__(PROJECT, port, root=root)
        self.remote_dir = remote_dir

    def releases(self):
        path = self.remote_dir / "releases"
        return sorted(p.name for p in path.iterdir()) if path.exists() else []

    def current(self):
        link = self.remote_dir / "current"
        return link.resolve().name if link.exists() else None

    def deploy(self, *args, check=True):
        result = self.inv("deploy", "--host", "prod", *args, check=check)
        match = re.search(r"shipped \S+: (\d+) bytes sent", result.stdout)
        result.sent = int(match.group(1)) if match else None
        # Shown with `pytest -s`: the figures a deploy reports (time, bytes shipped).
        print(*[line for line in result.stdout.splitlines() if line.startswith(("shipped", "deployed"))], sep="\n")
        return result

    def page(self):
        status, _, body = self.get("/")
        return status, body.decode()


@pytest.fixture(scope="module")
def remote(sshd, tmp_path_factory):
    root = copy_project(tmp_path_factory.mktemp("project"))
    remote_dir = tmp_path_factory.mktemp("remote") / "hello"
    port = free_port(0)
    with open(root / "config/stack.toml", "a") as handle:
        handle.write(hosts_toml(sshd, remote_dir, port))
    r = Remote(root, remote_dir, port)
    yield r
    compose_file = remote_dir / "current" / "docker-compose.yml"
    if compose_file.exists():
        r.docker("compose", "--project-name", PROJECT, "-f", str(compose_file), "down", "--volumes", check=False)
    images = r.docker("images", "--quiet", "--filter", f"reference={PROJECT}-djangoapp", check=False).stdout.split()
    if images:
        r.docker("rmi", "--force", *set(images), check=False)


def test_dry_deploy_runs_nothing_remotely(remote):
    result = remote.inv("deploy", "--host", "prod", "--dry")
    assert "[dry] rsync --archive --delete" in result.stdout
    assert "docker compose --project-name hello-e2e-prod build djangoapp" in result.stdout
    assert not remote.remote_dir.exists()


def test_first_deploy_serves_through_nginx(remote):
    result = remote.deploy()
    remote.first_sent = result.sent
    assert result.sent and result.sent > 50_000  # the whole project went over
    assert re.search(r"deployed \S+ to prod in [\d.]+s", result.stdout)
    status, body = remote.page()
    assert status == 200 and "Hello from Django" in body
    assert remote.health()[0] == 200
    assert remote.current() == remote.releases()[-1]
    env = remote.remote_dir / "shared/config/django.env"
    assert env.stat().st_mode & 0o777 == 0o600 and "@@" not in env.read_text()
    assert not (remote.remote_dir / ".deploy-lock").exists()
    shipped = remote.remote_dir / "releases" / remote.current()
    assert not (shipped / ".git").exists() and not (shipped / "backups").exists() and not (shipped / "tasks").exists()


def test_unchanged_redeploy_ships_almost_nothing_and_keeps_the_secrets(remote):
    secret = (remote.remote_dir / "shared/config/django.env").read_text()
    result = remote.deploy()
    assert result.sent < 20_000 and result.sent * 10 < remote.first_sent, (result.sent, remote.first_sent)
    assert (remote.remote_dir / "shared/config/django.env").read_text() == secret
    assert remote.page()[0] == 200


def test_a_code_change_is_served(remote):
    template = remote.root / "hello/hello/templates/hello/index.html"
    template.write_text(template.read_text().replace("Hello from Django", "Hello from release two"))
    result = remote.deploy()
    assert result.sent < remote.first_sent
    assert "Hello from release two" in remote.page()[1]


def test_remote_tasks(remote):
    ps = remote.inv("ps", "--host", "prod").stdout
    assert "hello-e2e-prod-djangoapp-1" in ps and "(healthy)" in ps
    assert "No migrations to apply." in remote.inv("migrate", "--host", "prod").stdout
    remote.inv("volume.backup", "--host", "prod", "--volume", "media_volume")
    local = sorted((remote.root / "backups").glob(f"{PROJECT}_media_volume_*.tar.zst"))
    assert local, "the archive did not arrive locally"
    manifest = json.loads(local[-1].with_name(local[-1].name + ".json").read_text())
    digest = subprocess.run(["sha256sum", str(local[-1])], capture_output=True, text=True).stdout.split()[0]
    assert manifest["sha256"] == digest and manifest["docker_volume"] == f"{PROJECT}_media_volume"


def test_restore_with_host_uploads_the_archive_first(remote):
    local = sorted((remote.root / "backups").glob(f"{PROJECT}_media_volume_*.tar.zst"))[-1]
    result = remote.inv("volume.restore", str(local), "--host", "prod", "--yes")
    assert f"verified {local.name} (sha256" in result.stdout  # here, before sending
    assert f"verified {local.name} (sha256" in result.stdout and " on prod" in result.stdout  # and there
    assert (remote.remote_dir / "shared/backups" / local.name).exists()
    assert remote.health()[0] == 200


def test_several_hosts_run_in_parallel_with_a_line_each(remote):
    result = remote.inv("ps", "--host", "prod,closed", check=False)
    assert result.returncode == 1
    assert "[prod] ok" in result.stdout
    assert "[closed] error: cannot reach closed" in result.stdout
    assert "failed on closed (of 2 hosts)" in result.stderr


def test_a_release_failing_its_health_check_is_rolled_back(remote):
    before = remote.current()
    views = remote.root / "hello/hello/health.py"
    good = views.read_text()
    views.write_text(good.replace('    healthy = all(state == "ok" for state in databases.values())',
                                  '    healthy = False  # a broken release'))
    try:
        result = remote.deploy("--timeout", "40", check=False)
    finally:
        views.write_text(good)
    assert result.returncode == 1
    assert "rolled back to" in result.stderr and "which is serving again" in result.stderr
    assert remote.current() == before
    assert "Hello from release two" in remote.page()[1]
    assert not (remote.remote_dir / ".deploy-lock").exists()  # released after the failure


def test_two_deploys_at_once_one_fails_on_the_lock(remote):
    first = subprocess.Popen([sys.executable, "-m", "invoke", "deploy", "--host", "prod"], cwd=remote.root,
                             env=remote.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             stdin=subprocess.DEVNULL)
    lock = remote.remote_dir / ".deploy-lock" / "owner"
    deadline = time.monotonic() + 60
    while not lock.exists():
        assert time.monotonic() < deadline and first.poll() is None
        time.sleep(0.05)
    second = remote.deploy(check=False)
    out, err = first.communicate(timeout=300)
    assert second.returncode == 1
    assert "another deploy holds the lock on prod:" in second.stderr and " pid " in second.stderr
    assert first.returncode == 0, err
    assert not (remote.remote_dir / ".deploy-lock").exists()


def test_rollback_goes_back_one_release(remote):
    releases, current = remote.releases(), remote.current()
    remote.inv("rollback", "--host", "prod")
    assert remote.current() == releases[releases.index(current) - 1]
    assert remote.page()[0] == 200


def test_ship_image_deploys_without_building_on_the_host(remote):
    result = remote.deploy("--ship-image")
    assert "building on prod" not in result.stdout
    assert "building the image here" in result.stdout
    assert remote.page()[0] == 200


@pytest.mark.parametrize("host, message", [
    ("nope", "unknown host 'nope': add [hosts.nope] to config/stack.toml"),
    ("wrongkey", "refused the login"),
    ("changed", "has CHANGED"),
    ("stranger", "is unknown: check its fingerprint, then add it with `ssh-keyscan"),
    ("closed", "cannot reach closed"),
], ids=["unknown-name", "wrong-key", "changed-host-key", "unknown-host-key", "unreachable-port"])
def test_ssh_problems_are_clear_and_change_nothing(remote, host, message):
    before = (remote.releases(), remote.current())
    result = remote.inv("deploy", "--host", host, check=False)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert (remote.releases(), remote.current()) == before
