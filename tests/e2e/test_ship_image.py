"""`inv deploy --ship-image` to a server whose Docker 28 keeps images in the containerd image
store, where image IDs are manifest digests and `docker load` goes through containerd: only
the layers it lacks go, and an image it has already is not sent again. (tests/e2e/test_deploy.py
ships to Engine 20.10's classic store.)"""
import time

import pytest

from tests.e2e.conftest import own_build_cache
from tests.e2e.test_deploy import PORT, Remote, shipped
from testkit.projectcopy import copy_project

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def store(servers, tmp_path_factory):
    server = servers("shipc", engine="28-containerd")
    root = copy_project(tmp_path_factory.mktemp("project"))
    own_build_cache(root, "hello-e2e-shipc")
    with open(root / "config/stack.toml", "a") as handle:
        handle.write("\n" + server.hosts_entry("store", str(server.dir / "srv" / "hello"), http_port=PORT,
                                               project="hello-e2e-shipc"))
    return Remote(root, server, "store", "hello-e2e-shipc")


def layers_there(remote, image):
    return remote.server.docker("image", "inspect", "--format", "{{json .RootFS.Layers}}", image).stdout.strip()


def deploy(remote, label):
    started = time.monotonic()
    result = remote.deploy("--ship-image")
    sent = shipped(result) if " layers, " in result.stdout else "nothing sent"
    print(f"ship-image to the containerd store, {label}: {sent} "
          f"in {time.monotonic() - started:.1f}s (the whole deploy)")
    return result


def test_a_fresh_server_gets_the_layers_it_lacks_and_shows_the_image_whole(store):
    result = deploy(store, "fresh server")
    first = shipped(result)
    # The server has the python base image: its layers stay here.
    assert 0 < first["layers"] < first["of"] and first["sent"] < first["whole"] / 2, first
    (image,) = store.app_image()
    assert layers_there(store, image).count("sha256:") == first["of"]  # not `null`: every blob is there
    assert store.page()[0] == 200


def test_a_code_change_sends_its_layer_alone(store):
    template = store.root / "hello/hello/templates/hello/index.html"
    store.original = template.read_text()
    template.write_text(store.original + "<!-- containerd -->\n")
    change = shipped(deploy(store, "code change"))
    assert change["sent"] < 0.05 * change["whole"] and change["layers"] <= 3, change
    assert "<!-- containerd -->" in store.page()[1]


def test_an_image_the_server_has_is_not_sent_again(store):
    # Back to the first code: its image is still there (a kept release runs it).
    (store.root / "hello/hello/templates/hello/index.html").write_text(store.original)
    result = deploy(store, "back to the first code")
    assert "store already has hello-e2e-shipc-djangoapp:" in result.stdout and " layers, " not in result.stdout
    assert "<!-- containerd -->" not in store.page()[1]
