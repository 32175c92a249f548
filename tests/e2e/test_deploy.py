"""`inv deploy` and `--host` against real servers: test hosts (testkit/testhost.py), each with
its own address, Docker engine and sshd, holding the base images and nothing else. `prod`
builds on the host; `edge` gets images built here with --ship-image."""
import json
import re
import signal
import socket
import subprocess
import time

import pytest

from tests.e2e.conftest import Stack, once_the_engine_says, own_build_cache
from testkit.projectcopy import copy_project
from testkit import INV

pytestmark = pytest.mark.e2e
PORT = 8080  # on each host's own loopback: no clash with anything here


class Remote(Stack):
    """The project copy here, deploying to SERVER as host NAME."""

    def __init__(self, root, server, name, project):
        super().__init__(project, PORT, root=root)
        self.server, self.name = server, name
        self.remote_dir = server.dir / "srv" / "hello"

    def releases(self):
        path = self.remote_dir / "releases"
        return sorted(p.name for p in path.iterdir()) if path.exists() else []

    def current(self):
        link = self.remote_dir / "current"
        return link.resolve().name if link.exists() else None

    def deploy(self, *args, check=True):
        result = self.inv("deploy", "--host", self.name, *args, check=check)
        match = re.search(r"shipped \S+: (\d+) bytes sent", result.stdout)
        result.sent = int(match.group(1)) if match else None
        # Shown with `pytest -s`: the figures a deploy reports (time, bytes shipped).
        print(*[line for line in result.stdout.splitlines() if line.startswith(("shipped", "deployed"))], sep="\n")
        return result

    def get(self, path, headers=None):
        return self.server.get(f"http://127.0.0.1:{PORT}{path}")

    def page(self):
        status, _, body = self.get("/")
        return status, body.decode()

    def app_image(self):
        return {i for i in self.server.images() if i.startswith(f"{self.project}-djangoapp:")}


def hosts_toml(prod, edge_placeholder=None):
    """The hosts of config/stack.toml: prod, and entries that cannot log in to it."""
    directory = str(prod.dir / "srv" / "hello")
    text = prod.hosts_entry("prod", directory, http_port=PORT, project="hello-e2e-prod")
    text += f"""
[hosts.wrongkey]
address = "{prod.address}"
user = "root"
identity_file = "{prod.dir}/other_key"
known_hosts = "{prod.known_hosts}"
directory = "{directory}"

[hosts.changed]
address = "{prod.address}"
user = "root"
identity_file = "{prod.key}"
known_hosts = "{prod.dir}/wrong_known_hosts"
directory = "{directory}"

[hosts.stranger]
address = "{prod.address}"
user = "root"
identity_file = "{prod.key}"
known_hosts = "{prod.dir}/empty_known_hosts"
directory = "{directory}"

[hosts.closed]
address = "{prod.address}"
port = 2222
user = "root"
identity_file = "{prod.key}"
known_hosts = "{prod.known_hosts}"
directory = "{directory}"
"""
    return text


@pytest.fixture(scope="module")
def remote(servers, tmp_path_factory):
    prod = servers("prod")
    root = copy_project(tmp_path_factory.mktemp("project"))
    own_build_cache(root, "hello-e2e-prod")  # edge counts the layers a code change ships
    with open(root / "config/stack.toml", "a") as handle:
        handle.write("\n" + hosts_toml(prod))
    r = Remote(root, prod, "prod", "hello-e2e-prod")
    r.servers = servers
    yield r


@pytest.fixture(scope="module")
def edge(remote):
    """A second fresh server, added to the same project copy."""
    server = remote.servers("edge")
    with open(remote.root / "config/stack.toml", "a") as handle:
        handle.write("\n" + server.hosts_entry("edge", str(server.dir / "srv" / "hello"), http_port=PORT,
                                               project="hello-e2e-edge"))
    return Remote(remote.root, server, "edge", "hello-e2e-edge")


def test_dry_deploy_runs_nothing_remotely(remote):
    result = remote.inv("deploy", "--host", "prod", "--dry")
    assert "[dry] rsync --archive --delete" in result.stdout
    assert "docker compose --project-name hello-e2e-prod build djangoapp" in result.stdout
    assert not remote.remote_dir.exists()


def test_first_deploy_builds_cold_on_the_host_and_serves(remote):
    assert remote.app_image() == set()  # nothing built there, ever
    started = time.monotonic()
    result = remote.deploy()
    print(f"cold first deploy: {time.monotonic() - started:.1f}s")
    remote.first_sent = result.sent
    assert "building on prod (hello-e2e-prod-djangoapp:" in result.stdout
    assert "Bake" not in result.stdout + result.stderr  # compose builds through buildx, no warning
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
    assert len(remote.app_image()) == 1


def test_unchanged_redeploy_makes_no_new_release(remote):
    releases, secret = remote.releases(), (remote.remote_dir / "shared/config/django.env").read_text()
    result = remote.deploy()
    assert f"prod runs this code already ({releases[-1]}): nothing to deploy" in result.stdout
    assert remote.releases() == releases
    assert (remote.remote_dir / "shared/config/django.env").read_text() == secret
    assert remote.page()[0] == 200


def host_state(remote):
    """What a refused task must leave as it was on the host: its folders, containers, volumes."""
    return (sorted(str(p.relative_to(remote.server.dir)) for p in (remote.server.dir / "srv").glob("*/*")),
            remote.current(), remote.server.docker("ps", "--all", "--format", "{{.Names}} {{.ID}} {{.State}}").stdout,
            sorted(remote.server.docker("volume", "ls", "--quiet").stdout.split()))


def test_another_project_is_refused_in_this_projects_directory_and_on_its_port(remote):
    """Two projects on one server, each with its own front: one given this project's
    directory (`intruder`) or this project's port (`neighbour`) is refused in one line
    before anything changes, naming whose they are and the ways out."""
    other = "hello-e2e-other"
    with open(remote.root / "config/stack.toml", "a") as handle:
        handle.write("\n" + remote.server.hosts_entry("intruder", str(remote.remote_dir), http_port=PORT, project=other))
        handle.write("\n" + remote.server.hosts_entry("neighbour", str(remote.server.dir / "srv" / "other"),
                                                      http_port=PORT, project=other))
    before = host_state(remote)
    owner_file = remote.remote_dir / "project"
    owned = owner_file.read_text() if owner_file.exists() else None
    runs = [("deploy", "intruder"), ("rollback", "intruder"), ("releases", "intruder"),
            ("deploy", "intruder", "older version"), ("deploy", "neighbour")]
    outcomes = []
    for task, name, *older in runs:
        if older and owned:  # a directory an earlier version deployed: no file, its releases say whose it is
            owner_file.rename(owner_file.with_name("project.kept"))
        started = time.monotonic()
        result = remote.inv(task, "--host", name, check=False)
        outcomes.append((result.returncode, result.stderr.strip().splitlines(), time.monotonic() - started))
        if older and owned:
            owner_file.with_name("project.kept").rename(owner_file)
        print(f"inv {task} --host {name}{' (' + older[0] + ')' if older else ''}: exit {result.returncode} in "
              f"{outcomes[-1][2]:.1f}s: {(result.stderr.strip() or result.stdout.strip()).splitlines()[-1:]}")
    assert owned == "hello-e2e-prod\n"  # written by its first deploy
    assert host_state(remote) == before  # nothing changed, no directory made for the neighbour
    assert not (remote.server.dir / "srv" / "other").exists() and not (remote.remote_dir / ".deploy-lock").exists()
    refusal = (f"error: {remote.remote_dir} on intruder belongs to project hello-e2e-prod ({owner_file}), not {other}: "
               "give [hosts.intruder] a directory of its own (each project deploys into its own)")
    assert [outcome[:2] for outcome in outcomes[:3]] == [(1, [refusal])] * 3
    assert outcomes[3][:2] == (1, [f"error: {remote.remote_dir} on intruder holds the releases of project "
                                   f"hello-e2e-prod, not {other}: give [hosts.intruder] a directory of its own "
                                   "(each project deploys into its own)"])
    assert outcomes[4][:2] == (1, [f"error: port {PORT} on neighbour is taken by project hello-e2e-prod (its container "
                                   "hello-e2e-prod-front-1): give [hosts.neighbour] another http_port, or put the "
                                   "projects behind the server's shared front (front = \"shared\" in "
                                   "[hosts.neighbour])"])
    assert remote.page()[0] == 200


def test_a_code_change_is_served(remote):
    template = remote.root / "hello/hello/templates/hello/index.html"
    template.write_text(template.read_text().replace("Hello from Django", "Hello from release two"))
    result = remote.deploy()
    assert result.sent < remote.first_sent
    assert "Hello from release two" in remote.page()[1]
    assert len(remote.releases()) == 2


def test_remote_tasks(remote):
    ps = once_the_engine_says(lambda: remote.inv("ps", "--host", "prod").stdout, lambda out: "(healthy)" in out)
    assert re.search(r"hello-e2e-prod-djangoapp-\d", ps) and "(healthy)" in ps
    assert "No migrations to apply." in remote.inv("migrate", "--host", "prod").stdout
    remote.inv("volume.archive", "--host", "prod", "--volume", "media_volume")
    local = sorted((remote.root / "backups").glob("hello-e2e-prod_media_volume_*.tar.zst"))
    assert local, "the archive did not arrive locally"
    manifest = json.loads(local[-1].with_name(local[-1].name + ".json").read_text())
    digest = subprocess.run(["sha256sum", str(local[-1])], capture_output=True, text=True).stdout.split()[0]
    assert manifest["sha256"] == digest and manifest["docker_volume"] == "hello-e2e-prod_media_volume"


def test_every_container_on_the_host_keeps_a_bounded_log(remote):
    """[logs] (its defaults here) reaches every container of the host's stack, and `inv logs
    --host` still reads them."""
    ids = remote.server.docker("ps", "--all", "--quiet", "--filter",
                               f"label=com.docker.compose.project={remote.project}").stdout.split()
    configs = remote.server.docker("inspect", "--format", "{{.Name}} {{json .HostConfig.LogConfig}}",
                                   *ids).stdout.splitlines()
    names = {line.split()[0] for line in configs}
    assert {"/hello-e2e-prod-database1-1", "/hello-e2e-prod-nginx-1", "/hello-e2e-prod-front-1"} <= names, names
    assert any(name.startswith("/hello-e2e-prod-djangoapp-") for name in names), names
    bounded = '{"Type":"json-file","Config":{"max-file":"3","max-size":"10m"}}'
    assert [line for line in configs if not line.endswith(" " + bounded)] == [], configs
    shown = remote.inv("logs", "--host", "prod", "--service", "djangoapp", "--tail", "40").stdout
    assert "Booting worker" in shown, shown


def test_restore_with_host_uploads_the_archive_first(remote):
    local = sorted((remote.root / "backups").glob("hello-e2e-prod_media_volume_*.tar.zst"))[-1]
    result = remote.inv("volume.restore", str(local), "--host", "prod", "--yes")
    verified = [line for line in result.stdout.splitlines() if f"verified {local.name} (sha256" in line]
    assert len(verified) == 2 and " on prod" in verified[1]  # here before sending, and there
    assert (remote.remote_dir / "shared/backups" / local.name).exists()
    assert remote.health()[0] == 200


def test_a_release_failing_its_health_check_is_rolled_back(remote):
    before = remote.current()
    health = remote.root / "config/app/djangostack/wsgi.py"
    good = health.read_text()
    broken = good.replace('    healthy = all(state == "ok" for state in databases.values())',
                          '    healthy = False  # a broken release')
    assert broken != good
    health.write_text(broken)
    try:
        result = remote.deploy("--timeout", "40", check=False)
    finally:
        health.write_text(good)
    assert result.returncode == 1
    assert "rolled back to" in result.stderr and "which is serving again" in result.stderr
    assert remote.current() == before
    assert "Hello from release two" in remote.page()[1]
    assert not (remote.remote_dir / ".deploy-lock").exists()  # released after the failure


def test_two_deploys_at_once_one_fails_on_the_lock(remote):
    with (remote.root / "hello/hello/templates/hello/index.html").open("a") as template:
        template.write("<!-- three -->\n")
    first = subprocess.Popen([*INV, "deploy", "--host", "prod"], cwd=remote.root,
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


def test_unlock_is_refused_while_the_deploy_runs_and_needs_force_for_another_machines(remote):
    """`inv deploy.unlock` while a deploy holds the lock: refused (with --force too), naming
    the process to stop; the deploy ends with its release in place. A lock held from another
    machine is released with --force only; one left by a process gone from here without."""
    releases = remote.releases()
    lock = remote.remote_dir / ".deploy-lock"
    # Held still while unlock is tried: a deploy with little to do holds the lock for a few
    # round trips, and on a busy machine it may be gone before the deploy is stopped; then the
    # deploy goes on to its end and is started again (three tries).
    for _ in range(3):
        deploying = subprocess.Popen([*INV, "deploy", "--host", "prod"], cwd=remote.root, env=remote.env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while not (lock / "owner").exists() and deploying.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        deploying.send_signal(signal.SIGSTOP)
        time.sleep(0.5)  # a command it had sent over SSH (the lock's release, say) ends meanwhile
        caught = lock.exists()
        try:
            if caught:
                refused = remote.inv("deploy.unlock", "--host", "prod", check=False)
                forced = remote.inv("deploy.unlock", "--host", "prod", "--force", check=False)
                held = lock.exists()
        finally:
            deploying.send_signal(signal.SIGCONT)
        out, err = deploying.communicate(timeout=300)
        assert deploying.returncode == 0, err
        if caught:
            break
    assert caught, "the deploy ended before it could be stopped holding its lock, three times"
    for attempt in (refused, forced):
        assert attempt.returncode == 1, attempt.stdout
        assert re.search(r"error: the deploy lock on prod is held by a deploy that still runs on this machine "
                         r"\(\S+@\S+ pid \d+ since \S+\): wait for it to end, or stop it \(kill \d+\) and run this again",
                         attempt.stderr), attempt.stderr
    assert held
    assert deploying.returncode == 0, err
    # The deploy went on to its end (this module's tree is unchanged here: no new release).
    assert remote.current() in remote.releases() and set(releases) <= set(remote.releases())
    assert not lock.exists()

    lock.mkdir()
    (lock / "owner").write_text("bob@elsewhere.invalid pid 7 since 2026-11-21T10:00:00+00:00\n")
    elsewhere = remote.inv("deploy.unlock", "--host", "prod", check=False)
    assert elsewhere.returncode == 1 and lock.exists()
    assert "release the lock with `inv deploy.unlock --host prod --force`" in elsewhere.stderr, elsewhere.stderr
    assert "held by bob@elsewhere.invalid" in remote.inv("deploy.unlock", "--host", "prod", "--force").stdout
    assert not lock.exists()

    gone = subprocess.Popen(["true"])
    gone.wait()
    lock.mkdir()
    (lock / "owner").write_text(f"ann@{socket.gethostname()} pid {gone.pid} since 2026-11-21T10:00:00+00:00\n")
    remote.inv("deploy.unlock", "--host", "prod")
    assert not lock.exists()


def test_rollback_goes_back_to_the_previous_code(remote):
    releases, current = remote.releases(), remote.current()
    assert "<!-- three -->" in remote.page()[1]
    remote.inv("rollback", "--host", "prod")
    assert remote.current() == releases[releases.index(current) - 1]
    status, body = remote.page()
    assert status == 200 and "Hello from release two" in body and "<!-- three -->" not in body


def test_a_tampered_ledger_is_named_and_never_trusted_for_a_rollback(remote):
    if len(remote.releases()) < 2:  # run alone: two releases to go between
        remote.deploy()
        template = remote.root / "hello/hello/templates/hello/index.html"
        template.write_text(template.read_text() + "<!-- tampered ledger -->\n")
        remote.deploy()
    releases, current = remote.releases(), remote.current()
    target = releases[releases.index(current) - 1]
    path = remote.remote_dir / "releases" / target / "release.json"
    kept = path.read_text()
    path.write_text(json.dumps({**json.loads(kept), "migrations": {"database1": 5}}, indent=2))
    try:
        listed = remote.inv("releases", "--host", "prod")
        warning = (f"warning: the ledger of {target} ({remote.remote_dir}/releases/{target}/release.json) is not "
                   f"valid: the migrations of database1 are a number, not a list; its migrations are unknown")
        assert warning in listed.stdout.splitlines() and listed.stderr == ""
        row = next(line for line in listed.stdout.splitlines() if target in line and "warning" not in line)
        assert "ledger not valid" in row
        refused = remote.inv("rollback", "--host", "prod", check=False)
        assert refused.returncode == 1 and refused.stderr.strip().splitlines() == [
            f"error: {warning.removeprefix('warning: ')}: add --force to roll back to it anyway"]
        assert remote.current() == current and remote.page()[0] == 200
        assert not (remote.remote_dir / ".deploy-lock").exists()
    finally:
        path.write_text(kept)


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


def shipped(result):
    match = re.search(r"shipped \S+ to \w+: (\d+) of (\d+) layers, (\d+) bytes sent \((\d+) before compression; "
                      r"the whole image is (\d+)\)", result.stdout)
    assert match, result.stdout
    return dict(zip(("layers", "of", "sent", "raw", "whole"), map(int, match.groups())))


def test_ship_image_streams_the_layers_a_fresh_host_lacks(edge):
    assert edge.app_image() == set()
    result = edge.deploy("--ship-image")
    assert "building on edge" not in result.stdout and "building the image here" in result.stdout
    first = shipped(result)
    print(f"ship-image, fresh host: {first}")
    # The host has the python base image: its layers stay here.
    assert 0 < first["layers"] < first["of"] and first["sent"] < first["whole"] / 2
    assert len(edge.app_image()) == 1
    assert edge.page()[0] == 200


def local_layers(image):
    out = subprocess.run(["docker", "image", "inspect", "--format", "{{json .RootFS.Layers}}", image],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def test_ship_image_sends_a_code_change_alone(edge):
    (before,) = edge.app_image()
    template = edge.root / "hello/hello/templates/hello/index.html"
    template.write_text(template.read_text() + "<!-- four -->\n")
    started = time.monotonic()
    result = edge.deploy("--ship-image")
    change = shipped(result)
    print(f"ship-image, code change: {change} in {time.monotonic() - started:.1f}s")
    (after,) = edge.app_image() - {before}
    # Exactly the layers the host lacks: those of the new image that the one it runs has not.
    old, new = local_layers(before), local_layers(after)
    made = [layer for layer in new if layer not in old]
    assert change["layers"] == len(made), (change, len(made))
    if new[:len(new) - 3] == old[:len(old) - 3]:
        assert change["layers"] <= 3 and change["sent"] < 0.05 * change["whole"], change
    else:
        # This machine's build cache gave the code change other dependency layers than the
        # first build's (a --no-cache build of the same base elsewhere, the bench's cold build,
        # replaces the shared first step's cached layer): they are new to the host too.
        print(f"ship-image, code change: the local build made {len(made)} new layers of {len(new)}")
    assert "<!-- four -->" in edge.page()[1]


def test_several_hosts_run_in_parallel_with_a_line_each(remote, edge):
    result = remote.inv("volume.archive", "--host", "prod,edge", "--volume", "media_volume")
    assert "[prod] ok" in result.stdout and "[edge] ok" in result.stdout
    for project in ("hello-e2e-prod", "hello-e2e-edge"):
        assert list((remote.root / "backups").glob(f"{project}_media_volume_*.tar.zst")), project
    result = remote.inv("ps", "--host", "prod,closed", check=False)
    assert result.returncode == 1
    assert "[prod] ok" in result.stdout
    assert "[closed] error: cannot reach closed" in result.stdout
    assert "failed on closed (of 2 hosts)" in result.stderr
