"""The essentials of deploying, on Docker Engine 28 with the containerd image store (the
default of new installs from Engine 29): one test host running it (testkit/testhost.py,
engine "28-containerd"), taken through what differs per engine, each once: a cold deploy
building there, `inv up` and `inv doctor` over --host, the engine stopped (a deploy fails
in one line; its restart brings the release back), then a code change and a rollback under
load (0 failed), the backups (an archive fetched here, the backup service's restic
snapshot there), and the local stack (`inv up` without --host) on that engine. The rest of the e2e suite runs on 20.10; --ship-image on this store is
tested with the other ship-image tests.

The tests run in order and share the host."""
import os
import re
import subprocess
import time

import pytest

from testkit import INV
from testkit.load import Load
from testkit.projectcopy import copy_project

from .conftest import once_the_engine_says
from .test_zero_downtime import SLOW, Host, assert_no_request_dropped

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("engine28")]
PORT = 8080
PROJECT = "hello-e2e-e28"


@pytest.fixture(scope="module")
def e28(servers, tmp_path_factory):
    server = servers("e28", engine="28-containerd")
    assert server.docker("info", "--format", "{{.ServerVersion}} {{.DriverStatus}}").stdout.startswith("28.")
    root = copy_project(tmp_path_factory.mktemp("project"))
    h = Host(server, root)
    h.repository = server.dir / "restic"
    with open(root / "config/stack.toml", "a") as handle:
        handle.write("\n" + server.hosts_entry("prod", str(h.dir), http_port=PORT, project=PROJECT))
        handle.write(f'\n[backups]\nschedule = "0 3 1 1 *"\nrepository = "{h.repository}"\ndrill = "off"\n')
    h.inv("render")
    # The host's settings, made before the first deploy (which keeps an existing file): the
    # test-only slow view on, for the load's slow requests.
    shared = h.dir / "shared" / "config"
    shared.mkdir(parents=True, mode=0o700)
    (shared / "django.env").write_text((root / "config/django.env.example").read_text() + "DJANGO_TEST_VIEWS=true\n")
    (shared / "django.env").chmod(0o600)
    return h


def load(host):
    """Two connections back to back, the probe and the slow requests: no request may fail, and
    the build the deploy runs keeps the CPU it needs (16 connections flat out took it)."""
    return Load(f"http://127.0.0.1:{PORT}", host.prefix, connections=2, slow_path=SLOW)


def timed(what, started):
    print(f"[engine 28] {what}: {time.monotonic() - started:.1f}s")


def test_a_cold_deploy_builds_into_the_containerd_store_and_serves(e28):
    started = time.monotonic()
    result = e28.inv("deploy", "--host", "prod")
    timed("cold deploy", started)
    assert "building on prod (hello-e2e-e28-djangoapp:" in result.stdout
    status, body = e28.page()
    assert status == 200 and "Hello from Django" in body
    # The image is in containerd's store: its ID there is the manifest's digest, its content
    # is in the content store of the host's own containerd.
    assert "io.containerd.snapshotter.v1" in e28.server.docker("info", "--format", "{{.DriverStatus}}").stdout
    assert any(name.startswith(f"{PROJECT}-djangoapp:") for name in e28.server.images())
    assert any((e28.server.data_root / "containerd").rglob("blobs/sha256/*"))
    assert not (e28.server.data_root / "overlay2").exists()


def test_doctor_reports_the_engine_and_its_image_store(e28):
    out = e28.inv("doctor", "--host", "prod").stdout
    line = next(line for line in out.splitlines() if line.startswith("ok   Docker Engine 28."))
    assert re.fullmatch(r"ok   Docker Engine 28\.5\.\S+ on prod: containerd image store \(overlayfs snapshotter\), "
                        r"cgroup v[12] \(\S+ driver\), log driver json-file, [\d,.]+ GiB free under "
                        + re.escape(str(e28.server.data_root)), line), line
    assert "FAIL" not in out and "all checks passed" in out


def test_up_over_host_leaves_the_release_serving(e28):
    started = time.monotonic()
    e28.inv("up", "--host", "prod")
    timed("inv up --host", started)
    healthy = re.compile(rf"{PROJECT}-djangoapp-\d.*\(healthy\)")
    assert healthy.search(once_the_engine_says(lambda: e28.inv("ps", "--host", "prod").stdout, healthy.search))
    assert "Hello from Django" in e28.page()[1]


def test_the_engine_stopped_fails_a_deploy_in_one_line_and_its_restart_brings_the_release_back(e28):
    live = e28.current()
    started = time.monotonic()
    e28.server.stop_engine()
    timed("engine stopped", started)
    try:
        result = e28.inv("deploy", "--host", "prod", check=False)
        assert result.returncode == 1
        assert [line for line in result.stderr.splitlines() if line.startswith("error:")] == [
            result.stderr.strip().splitlines()[-1]]
        assert "no Docker engine is reachable on prod" in result.stderr
        assert e28.current() == live and not (e28.dir / ".deploy-lock").exists()
    finally:
        e28.server.start_engine()
    deadline = time.monotonic() + 90  # the containers come back by their restart policy
    while time.monotonic() < deadline:
        try:
            if e28.page()[0] == 200:
                break
        except OSError:
            pass
        time.sleep(1)
    assert "Hello from Django" in e28.page()[1]
    timed("engine stopped, refused deploy, restarted, serving", started)
    # The next deploy works: the code change below.


def test_a_code_change_and_a_rollback_under_load_drop_nothing(e28):
    first = e28.current()
    e28.edit("hello/hello/templates/hello/index.html", "Hello from Django", "Hello from engine 28")
    started = time.monotonic()
    with load(e28) as seen:
        out, moved = e28.deploy_timed()
    timed("code change deploy under load", started)
    assert_no_request_dropped(seen, "engine 28: code change deploy")
    # The front restarted with the engine, its configuration unchanged: it is not reloaded
    # (a reload closes the clients' idle keep-alive connections: wrk saw read errors).
    assert "the front's configuration changed" not in out, out
    assert "Hello from engine 28" in e28.page()[1]
    assert moved and any(s[0] < moved - 0.5 < s[1] and s[2] == 200 for s in seen.slow), (moved, seen.slow)
    e28.second = e28.current()
    with load(e28) as seen:
        e28.inv("rollback", "--host", "prod")
    assert_no_request_dropped(seen, "engine 28: rollback")
    assert e28.current() == first and "Hello from Django" in e28.page()[1]


def test_backups_on_the_host_an_archive_here_and_a_restic_snapshot_there(e28):
    e28.inv("volume.archive", "--host", "prod", "--volume", "media_volume")
    assert sorted((e28.root / "backups").glob(f"{PROJECT}_media_volume_*.tar.zst"))
    started = time.monotonic()
    e28.inv("backup.now", "--host", "prod")
    timed("backup.now --host", started)
    assert (e28.repository / "config").is_file()
    listed = e28.inv("backup.snapshots", "--host", "prod").stdout
    assert re.search(r"database1 \([\d,]+ rows\), \d+ media file\(s\)", listed), listed


LOCAL = "hello-e2e-e28-local"
LOCAL_PORT = 8081


def test_the_local_stack_runs_on_this_engine_too(e28):
    """`inv up`, `inv ps` and `inv down` without --host against engine 28 (DOCKER_HOST at the
    test host's socket), under a project and port of their own; run in the host's
    network namespace, where that engine publishes ports and `inv up` waits for /healthz.
    The build reuses the layers the deploys above left in that engine's build cache."""
    env = {**os.environ, "DOCKER_HOST": e28.server.docker_host, "COMPOSE_PROJECT_NAME": LOCAL,
           "HTTP_PORT": str(LOCAL_PORT)}

    def inv(*args):
        result = subprocess.run([*e28.prefix, *INV, *args], cwd=e28.root, env=env, capture_output=True, text=True,
                                timeout=600, stdin=subprocess.DEVNULL)
        assert result.returncode == 0, f"inv {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
        return result

    started = time.monotonic()
    up = inv("up")
    timed("inv up here (no --host)", started)
    built = up.stdout + up.stderr
    cached = re.findall(r"#\d+ CACHED", built)
    print(f"[engine 28] inv up here: {len(cached)} build steps from the cache")
    # Every step of the requirements' install came from the cache: nothing was downloaded.
    assert cached and "Collecting " not in built and "Downloading " not in built, built
    assert f"The stack is up at http://127.0.0.1:{LOCAL_PORT}/" in up.stdout
    status, _, body = e28.server.get(f"http://127.0.0.1:{LOCAL_PORT}/")
    assert status == 200 and b"Hello from" in body
    listed = inv("ps").stdout
    for service in ("djangoapp", "database1", "nginx", "front"):
        assert re.search(rf"^{LOCAL}-{service}-\d\s.*\sUp\b", listed, re.M), listed
    assert "Hello from" in e28.page()[1]  # the host's release, beside it, serves on
    started = time.monotonic()
    inv("down", "--volumes", "--yes")
    timed("inv down here", started)
    assert e28.server.docker("ps", "--all", "--quiet", "--filter", f"label=com.docker.compose.project={LOCAL}").stdout == ""
    assert e28.server.docker("volume", "ls", "--quiet", "--filter", f"name=^{LOCAL}_").stdout == ""
