"""`inv deploy --ship-image` to a server whose Docker 28 keeps images in the containerd image
store, where image IDs are manifest digests and `docker load` goes through containerd: only
the layers it lacks go, and an image it has already is not sent again. (tests/e2e/test_deploy.py
ships to Engine 20.10's classic store.)"""
import re
import subprocess
import time

import pytest

from tests.e2e.conftest import own_build_cache
from tests.e2e.test_deploy import PORT, Remote, local_layers, shipped
from tests.e2e.test_faults import Faulty
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
    (before,) = store.app_image()
    template = store.root / "hello/hello/templates/hello/index.html"
    store.original = template.read_text()
    template.write_text(store.original + "<!-- containerd -->\n")
    change = shipped(deploy(store, "code change"))
    (after,) = store.app_image() - {before}
    old, new = local_layers(before), local_layers(after)
    assert change["layers"] == len([layer for layer in new if layer not in old]), change
    if new[:len(new) - 3] == old[:len(old) - 3]:  # this machine's build cache kept the dependency layers
        assert change["sent"] < 0.05 * change["whole"] and change["layers"] <= 3, change
    assert "<!-- containerd -->" in store.page()[1]


def test_an_image_the_server_has_is_not_sent_again(store):
    # Back to the first code: its image is still there (a kept release runs it).
    (store.root / "hello/hello/templates/hello/index.html").write_text(store.original)
    result = deploy(store, "back to the first code")
    assert "store already has hello-e2e-shipc-djangoapp:" in result.stdout and " layers, " not in result.stdout
    assert "<!-- containerd -->" not in store.page()[1]


def test_a_link_cut_mid_transfer_leaves_the_release_serving_and_the_next_deploy_completes_the_image(store):
    """containerd takes a `docker load` into its content store as it comes: a stream cut
    short must leave no image that looks whole, and the next deploy sends what is missing."""
    faulty = Faulty(store.root, store.server, host="store", project=store.project)
    before = faulty.current()
    served = store.page()[1]
    veth = store.server.veth
    # 1 MB/s, so that the layers are still on their way when the link goes.
    subprocess.run(["tc", "qdisc", "add", "dev", veth, "root", "tbf", "rate", "8mbit", "burst", "32kbit",
                    "latency", "400ms"], check=True)
    faulty.change("cut", blob_bytes=6 * 1024 * 1024)
    try:
        code, _, err = faulty.deploy_until(re.compile(r"^ +[\d.]+ of [\d.]+ MB, [\d.]+ MB sent"),
                                           lambda: store.server.link(up=False), "--ship-image")
    finally:
        store.server.link(up=True)
        subprocess.run(["tc", "qdisc", "del", "dev", veth, "root"], check=False)
    assert code == 1
    line = faulty.one_line(err, "link cut mid-image-transfer, containerd store")
    assert "sending the image to store failed:" in line and "`current` still points at" in line, line
    assert faulty.current() == before and store.page()[1] == served
    if (faulty.remote_dir / ".deploy-lock").exists():
        faulty.inv("deploy.unlock", "--host", "store")
    again = shipped(deploy(store, "after the cut"))
    assert again["layers"] <= 3, again
    (image,) = {i for i in store.app_image() if i.endswith(faulty.current().rsplit("-", 1)[1])}
    assert layers_there(store, image).count("sha256:") == again["of"]
    assert "<!-- cut -->" in store.page()[1]
    (store.root / "hello/hello/blob.bin").unlink()  # the next tests count a code change's bytes


def test_a_builder_on_the_containerd_store_ships_what_the_server_lacks(store, servers):
    """The building machine on the containerd store too (the default of new installs from
    Engine 29): its `docker save` writes an OCI layout. Its own build made other layers than
    this machine's, so the first deploy from it sends those (never the base image's); a code
    change then sends its layer alone."""
    builder = servers("shipb", engine="28-containerd")
    env = {"DOCKER_HOST": builder.docker_host}
    template = store.root / "hello/hello/templates/hello/index.html"
    text = template.read_text()
    sent = []
    for marker in ("built on containerd", "changed on containerd"):
        template.write_text(text + f"<!-- {marker} -->\n")
        result = store.inv("deploy", "--host", "store", "--ship-image", env=env)
        assert "building the image here" in result.stdout, result.stdout
        sent.append(shipped(result))
        print(f"ship-image from a containerd-store builder, {marker}: {sent[-1]}")
        assert f"<!-- {marker} -->" in store.page()[1]
    first, change = sent
    assert 0 < first["layers"] < first["of"], first
    assert change["sent"] < 0.05 * change["whole"] and change["layers"] <= 3, change
    assert builder.docker("image", "ls", "--quiet", f"{store.project}-djangoapp").stdout.strip()
