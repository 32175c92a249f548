"""Test hosts (testkit/testhost.py) get their base images as hard links into one image store:
each host still holds exactly this machine's images, with their IDs, and nothing else, and
what one host does to its images (a container writing over an image's file, an image
removed) changes neither another host's nor the store."""
import os
import subprocess
import time

import pytest

from tests.e2e.conftest import BASE_IMAGES
from testkit.testhost import STORE_PARTS, image_store

pytestmark = pytest.mark.e2e
PYTHON_IMAGE, _, NGINX_IMAGE = BASE_IMAGES


def image_ids(docker, images) -> list[str]:
    return docker("image", "inspect", "--format", "{{.Id}}", *images).stdout.split()


def test_hosts_share_the_base_images_by_hard_links_and_none_sees_another_s_changes(servers):
    here = image_ids(lambda *args: subprocess.run(["docker", *args], capture_output=True, text=True, check=True),
                     BASE_IMAGES)
    first, second = servers("seed-a"), servers("seed-b")
    store = image_store(BASE_IMAGES)
    for host in (first, second):
        assert image_ids(host.docker, BASE_IMAGES) == here
        assert host.images() == set(BASE_IMAGES)
        assert host.docker("ps", "--all", "--quiet").stdout.split() == []
        assert host.docker("volume", "ls", "--quiet").stdout.split() == []
    # The store holds images only: the engine's own state (networks, volumes, build cache) is its own.
    assert sorted(path.name for path in store.iterdir()) == sorted(STORE_PARTS)
    # The layers were linked, not loaded: a layer file of the host is one of the store's.
    layer = next(path for path in (first.data_root / "overlay2").glob("*/diff/usr/bin/*") if path.is_file())
    twin = store / layer.relative_to(first.data_root)
    assert os.stat(layer).st_ino == os.stat(twin).st_ino and os.stat(layer).st_nlink >= 3

    # The first host writes over a file of the image (overlay copies it up) and removes an image.
    written = first.docker("run", "--rm", PYTHON_IMAGE, "sh", "-c",
                           "echo written-on-seed-a >> /etc/issue && cat /etc/issue").stdout
    assert "written-on-seed-a" in written
    first.docker("rmi", "--force", NGINX_IMAGE)
    assert NGINX_IMAGE not in first.images()

    for docker in (second.docker, servers("seed-c").docker):
        assert "written-on-seed-a" not in docker("run", "--rm", PYTHON_IMAGE, "cat", "/etc/issue").stdout
        assert image_ids(docker, BASE_IMAGES) == here
        assert "nginx version" in docker("run", "--rm", "--entrypoint", "nginx", NGINX_IMAGE, "-v").stderr
    assert all((store / part).is_dir() for part in STORE_PARTS)


def test_stopping_a_host_s_engine_returns_once_it_has_stopped(servers):
    # Tests time what a lost engine does (a node of a swarm gone): waiting out the whole
    # patience for an engine that stopped at once would blur that and cost every teardown.
    host = servers("stop-engine", images=())
    started = time.monotonic()
    host.stop_engine(patience=60)
    took = time.monotonic() - started
    assert host._engine_pid() is None and host.docker("info", check=False).returncode != 0
    assert took < 20, f"stop_engine took {took:.1f}s for an engine without containers"
    host.start_engine()
    assert host.docker("info").returncode == 0


def test_engine_28_hosts_run_docker_28_on_their_own_stores_seeded_by_links(servers):
    """Engine 28 reads the overlay2 store as it is; with the containerd store it has a store
    of its own, linked too except containerd's bolt databases (written in place): what one
    host does to its images changes neither another host's nor the store."""
    classic = servers("e28-classic", engine="28")
    first, second = servers("e28-seed-a", engine="28-containerd"), servers("e28-seed-b", engine="28-containerd")
    version = "{{.ServerVersion}} {{.Driver}} {{.DriverStatus}}"
    assert classic.docker("info", "--format", version).stdout.startswith("28.5.2+dfsg4 overlay2 ")
    assert "nginx version" in classic.docker("run", "--rm", "--entrypoint", "nginx", NGINX_IMAGE, "-v").stderr
    assert classic.images() == set(BASE_IMAGES)
    for host in (first, second):
        info = host.docker("info", "--format", version).stdout
        assert info.startswith("28.5.2+dfsg4 overlayfs ") and "io.containerd.snapshotter.v1" in info
        assert host.images() == set(BASE_IMAGES)
        # Its own containerd (2.x, under its exec root), never this machine's.
        assert (host.exec_root / "containerd" / "containerd.sock").exists()
        assert host.docker("version", "--format", "{{range .Server.Components}}{{.Name}} {{.Version}};{{end}}"
                           ).stdout.count("containerd 2.") == 1
    ids = image_ids(first.docker, BASE_IMAGES)
    assert image_ids(second.docker, BASE_IMAGES) == ids
    store = image_store(BASE_IMAGES, "28-containerd")
    assert sorted(path.name for path in store.iterdir()) == ["containerd"]
    blob = next(path for path in (first.data_root / "containerd").rglob("blobs/sha256/*") if path.is_file())
    assert os.stat(blob).st_ino == os.stat(store / blob.relative_to(first.data_root)).st_ino
    for database in (first.data_root / "containerd").rglob("*.db"):
        assert os.stat(database).st_nlink == 1, database

    written = first.docker("run", "--rm", PYTHON_IMAGE, "sh", "-c",
                           "echo written-on-e28-seed-a >> /etc/issue && cat /etc/issue").stdout
    assert "written-on-e28-seed-a" in written
    first.docker("rmi", "--force", NGINX_IMAGE)
    assert NGINX_IMAGE not in first.images()
    assert "written-on-e28-seed-a" not in second.docker("run", "--rm", PYTHON_IMAGE, "cat", "/etc/issue").stdout
    assert image_ids(second.docker, BASE_IMAGES) == ids
    assert "nginx version" in second.docker("run", "--rm", "--entrypoint", "nginx", NGINX_IMAGE, "-v").stderr
