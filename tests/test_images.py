"""Shipping an image to a host without a registry: the plans (tasks/plans/images.py), by
exact equality, and the procedure (tasks/procedures/images.py) with the host a strict
recorder and this machine's `docker` and `ssh` small scripts first on PATH: `docker save`
copies a real save-format tar made here, and `ssh` keeps what it was sent, so the test reads
the very stream `docker load` would get on the host."""
import gzip
import hashlib
import io
import json
import os
import re
import shlex
import stat
import tarfile

import pytest
from invoke import Context

from tasks.errors import TaskError
from tasks.execution.runner import Runner
from tasks.execution.targets import HostTarget
from tasks.plans import images as plans
from tasks.plans import release as release_plans
from tasks.procedures import images
from tasks.source.stack import loads
from tests.cluster_fakes import StrictNode, commands
from tests.stacks import COMMITTED

IMAGE = "hello-prod-djangoapp:abcdef012345"
LAYERS = [b"base layer " * 100, b"python packages " * 200, b"the code " * 50]
DIFF_IDS = ["sha256:" + hashlib.sha256(layer).hexdigest() for layer in LAYERS]
FILES = [f"{n}/layer.tar" for n in ("aaa", "bbb", "ccc")]


def sha(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


# The chain IDs by the image spec's definition, written out.
CHAIN_2 = sha(f"{DIFF_IDS[0]} {DIFF_IDS[1]}")
CHAIN_3 = sha(f"{CHAIN_2} {DIFF_IDS[2]}")


class TestChainIds:
    def test_the_first_layers_chain_is_its_diff_id_and_each_next_hashes_the_one_below(self):
        assert plans.chain_ids(DIFF_IDS) == [DIFF_IDS[0], CHAIN_2, CHAIN_3]

    def test_no_layers_no_chains(self):
        assert plans.chain_ids([]) == []

    def test_the_same_layer_on_another_base_has_another_chain(self):
        assert plans.chain_ids([DIFF_IDS[2], DIFF_IDS[1]])[1] != CHAIN_2
        assert plans.chain_ids([DIFF_IDS[2], DIFF_IDS[1]])[1] == sha(f"{DIFF_IDS[2]} {DIFF_IDS[1]}")


class TestHostChains:
    def test_every_chain_of_every_image_on_the_host(self):
        output = f'{json.dumps(DIFF_IDS[:2])}\n\n  {json.dumps(DIFF_IDS[2:])}  \n'
        assert plans.host_chains(output) == {DIFF_IDS[0], CHAIN_2, DIFF_IDS[2]}

    @pytest.mark.parametrize("output", ["", "\n", "null\n", "Error: No such image: x\n"],
                             ids=["nothing", "blank", "no-layers", "an-error-line"])
    def test_lines_that_are_not_lists_of_layers_say_nothing(self, output):
        assert plans.host_chains(output) == set()


@pytest.mark.parametrize("output, containerd", [
    ('[["driver-type","io.containerd.snapshotter.v1"]]\n', True),
    ('[["Backing Filesystem","extfs"],["Supports d_type","true"],["Using metacopy","false"]]\n', False),
    ("", False),
], ids=["containerd-store", "overlay2", "no-answer"])
def test_the_containerd_image_store_is_told_by_the_driver_status(output, containerd):
    assert plans.uses_containerd_store(output) is containerd


def manifest(files=FILES):
    return [{"Config": "config.json", "RepoTags": [IMAGE], "Layers": list(files)}]


CONFIG = {"rootfs": {"type": "layers", "diff_ids": DIFF_IDS}}


class TestLayersToLeaveOut:
    @pytest.mark.parametrize("have, left_out", [
        (set(), {}),
        ({DIFF_IDS[0]}, {FILES[0]: DIFF_IDS[0]}),
        ({DIFF_IDS[0], CHAIN_2}, {FILES[0]: DIFF_IDS[0], FILES[1]: DIFF_IDS[1]}),
        ({DIFF_IDS[0], CHAIN_2, CHAIN_3}, dict(zip(FILES, DIFF_IDS))),
        # The host has layer 2's content on another base: not the same chain, so it is sent.
        ({sha(f"{DIFF_IDS[2]} {DIFF_IDS[1]}")}, {}),
    ], ids=["nothing-there", "the-base", "all-but-the-code", "everything", "same-layer-other-base"])
    def test_the_files_of_the_chains_the_host_has(self, have, left_out):
        assert plans.layers_to_leave_out(manifest(), CONFIG, have) == left_out

    def test_a_file_two_layers_share_stays_when_one_of_them_is_needed(self):
        # An empty layer written once, used at positions 1 and 3: the host has the first chain only.
        shared = [FILES[0], FILES[1], FILES[0]]
        assert plans.layers_to_leave_out(manifest(shared), CONFIG, {DIFF_IDS[0]}) == {}
        assert plans.layers_to_leave_out(manifest(shared), CONFIG, {DIFF_IDS[0], CHAIN_2, CHAIN_3}) == {
            FILES[0]: DIFF_IDS[2], FILES[1]: DIFF_IDS[1]}

    def test_a_manifest_and_config_that_disagree_are_refused(self):
        with pytest.raises(ValueError, match="^the saved image's manifest and config disagree on its layers$"):
            plans.layers_to_leave_out(manifest(FILES[:2]), CONFIG, set())

    def test_a_save_of_two_images_is_refused(self):
        with pytest.raises(ValueError):
            plans.layers_to_leave_out(manifest() * 2, CONFIG, set())


def test_the_image_id_and_the_save_commands():
    assert plans.image_id(IMAGE) == ["docker", "image", "inspect", "--format", "{{.Id}}", IMAGE]
    assert plans.save(IMAGE, "/tmp/x/image.tar") == ["docker", "save", "--output", "/tmp/x/image.tar", IMAGE]


def test_the_gzip_pipe_sends_a_gzip_stream_and_counts_both_sides():
    out, seen = io.BytesIO(), []
    pipe = images._GzipPipe(out, lambda p: seen.append(p.raw))
    assert pipe.write(b"a" * 1000) == 1000
    assert pipe.write(b"b" * 500) == 500
    pipe.close()
    assert gzip.decompress(out.getvalue()) == b"a" * 1000 + b"b" * 500
    assert (pipe.raw, pipe.sent) == (1500, len(out.getvalue())) and seen == [1000, 1500]


# -- the procedure ------------------------------------------------------------------------------

STACK = loads(COMMITTED + """
[hosts.prod]
address = "203.0.113.10"
user = "deploy"
port = 2222
directory = "/srv/hello"
project = "hello-prod"
""")
HOST = STACK.hosts["prod"]
INSPECT = shlex.join(plans.image_id(IMAGE))
STORE = f"bash -c {shlex.quote(plans.STORE)}"
HOST_LAYERS = f"bash -c {shlex.quote(plans.HOST_LAYERS)}"
OVERLAY = '[["Backing Filesystem","extfs"]]\n'
CONTAINERD = '[["driver-type","io.containerd.snapshotter.v1"]]\n'


def saved_image(path):
    """A tar as `docker save` writes it: the layers' files, the config, the manifest."""
    with tarfile.open(path, "w") as tar:
        for name, data in [*zip(FILES, LAYERS), ("config.json", json.dumps(CONFIG).encode()),
                           ("manifest.json", json.dumps(manifest()).encode())]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def here(tmp_path, monkeypatch):
    """`docker` and `ssh` here: docker knows IMAGE's id and saves the tar above; ssh keeps
    its arguments and its standard input. Returns the folder where they write."""
    folder = tmp_path / "bin"
    folder.mkdir()
    saved = saved_image(tmp_path / "saved.tar")
    scripts = {
        "docker": '#!/bin/sh\necho "$*" >> "$SHIP_LOG"\ncase "$1 $2" in\n'
                  '  "image inspect") echo sha256:1111;;\n'
                  f'  "save --output") cp {saved} "$3";;\n'
                  '  *) exit 2;;\nesac\n',
        "ssh": '#!/bin/sh\nprintf "%s\\n" "$@" > "$SHIP_ARGS"\ncat > "$SHIP_STREAM"\n'
               'test -z "$SHIP_FAIL" || { echo "$SHIP_FAIL" >&2; exit 255; }\n',
    }
    for name, text in scripts.items():
        (folder / name).write_text(text)
        (folder / name).chmod((folder / name).stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    for name, file in (("SHIP_LOG", "docker.log"), ("SHIP_ARGS", "ssh.args"), ("SHIP_STREAM", "stream.gz")):
        monkeypatch.setenv(name, str(tmp_path / file))
    monkeypatch.delenv("SHIP_FAIL", raising=False)
    return tmp_path


def host(host_id="sha256:2222", store=OVERLAY, layers="", dry=False):
    """The host as a strict recorder: it answers the image id, the driver status and the
    layers it has, and nothing else."""
    conn = StrictNode("prod", [(re.escape(INSPECT), host_id + "\n"), (re.escape(STORE), store),
                               (re.escape(HOST_LAYERS), layers)])
    return Runner(HostTarget(conn, HOST, STACK, local_c=Context()), dry), conn


def received(folder):
    """{file: bytes} of the tar stream the host's `docker load` got."""
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress((folder / "stream.gz").read_bytes())), mode="r|") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar}


def shipped_line(out):
    return [line for line in out.splitlines() if line.startswith("shipped ")]


def test_a_host_with_the_image_already_gets_nothing(here, capsys):
    r, conn = host(host_id="sha256:1111")
    images.ship_image(r, r.here(), IMAGE)
    assert commands(conn) == [INSPECT]
    assert not (here / "stream.gz").exists()
    assert capsys.readouterr().out == f"prod already has {IMAGE}: nothing to send\n"


def test_only_the_layers_the_host_lacks_are_sent_through_ssh_into_docker_load(here, capsys):
    r, conn = host(layers=json.dumps(DIFF_IDS[:2]) + "\n")
    images.ship_image(r, r.here(), IMAGE)
    assert commands(conn) == [INSPECT, STORE, HOST_LAYERS]
    assert received(here) == {FILES[2]: LAYERS[2], "config.json": json.dumps(CONFIG).encode(),
                              "manifest.json": json.dumps(manifest()).encode()}
    assert (here / "ssh.args").read_text().splitlines() == [
        *release_plans.ssh_options(HOST), "deploy@203.0.113.10", "docker", "load", "--quiet"]
    assert (here / "docker.log").read_text().splitlines()[0] == f"image inspect --format {{{{.Id}}}} {IMAGE}"
    out = capsys.readouterr().out
    assert f"sending the layers of {IMAGE} that prod lacks\n" in out
    sent = (here / "stream.gz").stat().st_size
    assert re.fullmatch(rf"shipped {re.escape(IMAGE)} to prod: 1 of 3 layers, {sent} bytes sent "
                        r"\(\d+ before compression; the whole image is \d+\) in \d+\.\ds", *shipped_line(out))


def test_a_host_on_the_containerd_image_store_gets_the_whole_image(here, capsys):
    r, conn = host(store=CONTAINERD)
    images.ship_image(r, r.here(), IMAGE)
    assert commands(conn) == [INSPECT, STORE]  # its layers do not count: containerd wants every blob
    assert received(here) == {**dict(zip(FILES, LAYERS)), "config.json": json.dumps(CONFIG).encode(),
                              "manifest.json": json.dumps(manifest()).encode()}
    out = capsys.readouterr().out
    assert (f"sending the layers of {IMAGE} that prod lacks (its engine uses the containerd image store: "
            "the whole image)\n") in out
    assert shipped_line(out)[0].startswith(f"shipped {IMAGE} to prod: 3 of 3 layers, ")


def test_progress_is_said_while_the_image_goes(here, capsys, monkeypatch):
    monkeypatch.setattr(images, "PROGRESS_EVERY", 0)
    r, _ = host()
    images.ship_image(r, r.here(), IMAGE)
    progress = [line for line in capsys.readouterr().out.splitlines() if line.startswith("  ")]
    assert progress and all(re.fullmatch(r"  \d+\.\d of 0\.0 MB, \d+\.\d MB sent", line) for line in progress)


def test_a_failing_ssh_is_one_line_with_its_own_reason(here, monkeypatch):
    monkeypatch.setenv("SHIP_FAIL", "Host key verification failed.")
    r, _ = host()
    with pytest.raises(TaskError) as failed:
        images.ship_image(r, r.here(), IMAGE)
    assert failed.value.message == "error: sending the image to prod failed: Host key verification failed."


def test_a_dry_run_reads_nothing_and_sends_nothing(here, capsys):
    r, conn = host(dry=True)
    images.ship_image(r, r.here(), IMAGE)
    assert conn.calls == []
    assert not (here / "docker.log").exists() and not (here / "stream.gz").exists()
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"[dry] would send the layers of {IMAGE} that prod lacks (docker save | gzip | ssh docker load)")
