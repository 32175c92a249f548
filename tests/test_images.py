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
    return sha_bytes(text.encode())


def sha_bytes(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


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


def manifest(files=FILES):
    return [{"Config": "config.json", "RepoTags": [IMAGE], "Layers": list(files)}]


CONFIG = {"rootfs": {"type": "layers", "diff_ids": DIFF_IDS}}
CONFIG_BYTES = json.dumps(CONFIG).encode()
# Engine 20.10's save: ID/layer.tar files, uncompressed.
MEMBERS = {path: (len(layer), layer[:4]) for path, layer in zip(FILES, LAYERS)}


def layer(diff_id, size, media="application/vnd.oci.image.layer.v1.tar"):
    return {"mediaType": media, "digest": diff_id, "size": size}


class TestLayerDescriptor:
    @pytest.mark.parametrize("path, head, descriptor", [
        ("aaa/layer.tar", b"base", layer(DIFF_IDS[0], 10)),
        (f"blobs/sha256/{'c' * 64}", b"\x1f\x8b\x08\x00",
         layer("sha256:" + "c" * 64, 10, "application/vnd.oci.image.layer.v1.tar+gzip")),
        (f"blobs/sha256/{'d' * 64}", b"\x28\xb5\x2f\xfd",
         layer("sha256:" + "d" * 64, 10, "application/vnd.oci.image.layer.v1.tar+zstd")),
        (f"blobs/sha256/{DIFF_IDS[0][7:]}", b"base", layer(DIFF_IDS[0], 10)),
    ], ids=["engine-20.10-layer-tar", "containerd-store-gzip-blob", "zstd-blob", "engine-25-uncompressed-blob"])
    def test_the_digest_is_the_blobs_name_or_the_diff_id_and_the_type_what_the_bytes_are(self, path, head, descriptor):
        assert plans.layer_descriptor(path, 10, head, DIFF_IDS[0]) == descriptor


@pytest.mark.parametrize("image, name", [
    ("hello-prod-djangoapp:abc", "docker.io/library/hello-prod-djangoapp:abc"),
    ("team/app:1", "docker.io/team/app:1"),
    ("registry.example.com/team/app:1", "registry.example.com/team/app:1"),
    ("localhost:5000/app:1", "localhost:5000/app:1"),
    ("localhost/app:1", "localhost/app:1"),
], ids=["official-style", "user-repo", "registry-host", "host-and-port", "localhost"])
def test_the_qualified_name_is_the_one_the_containerd_store_keeps(image, name):
    assert plans.qualified(image) == name


class TestSameImage:
    LINE = f'{json.dumps(DIFF_IDS)} 2026-12-06T06:14:19.018488271Z linux/amd64 {{"User":"app"}}'

    def test_the_same_layers_and_config_are_the_same_image_whatever_the_id(self):
        assert plans.same_image(self.LINE, self.LINE + "\n")

    @pytest.mark.parametrize("there", [
        "", "Error: No such image: x",
        LINE.replace("app", "root"),
        LINE.replace("06:14:19", "06:14:20"),
        f'{json.dumps(DIFF_IDS[:2])} 2026-12-06T06:14:19.018488271Z linux/amd64 {{"User":"app"}}',
        ' linux/amd64 {"User":"app"}',
    ], ids=["none", "an-error", "another-config", "another-build", "other-layers", "layers-it-cannot-show"])
    def test_anything_else_is_not(self, there):
        assert not plans.same_image(self.LINE, there)

    def test_an_image_whose_layers_cannot_be_shown_here_is_never_the_same(self):
        line = 'null  linux/amd64 {"User":"app"}'
        assert not plans.same_image(line, line) and not plans.same_image("", "")


def test_the_identity_is_read_from_the_image_not_its_id():
    assert plans.identity(IMAGE) == [
        "docker", "image", "inspect", "--format",
        "{{json .RootFS.Layers}} {{.Created}} {{.Os}}/{{.Architecture}} {{json .Config}}", IMAGE]


def blob_name(digest):
    return "blobs/sha256/" + digest[7:]


class TestLoad:
    def test_the_archive_is_an_oci_layout_and_a_manifest_json_naming_the_same_blobs(self):
        load = plans.load(IMAGE, manifest(), CONFIG_BYTES, MEMBERS, set())
        layers = [layer(d, len(data)) for d, data in zip(DIFF_IDS, LAYERS)]
        image_manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                                     "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                                "digest": sha_bytes(CONFIG_BYTES), "size": len(CONFIG_BYTES)},
                                     "layers": layers}, separators=(",", ":")).encode()
        assert load.files == {
            "oci-layout": b'{"imageLayoutVersion":"1.0.0"}',
            "index.json": json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                                      "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                                                     "digest": sha_bytes(image_manifest), "size": len(image_manifest),
                                                     "annotations": {
                                                         "io.containerd.image.name": f"docker.io/library/{IMAGE}",
                                                         "org.opencontainers.image.ref.name": "abcdef012345"}}]},
                                     separators=(",", ":")).encode(),
            "manifest.json": json.dumps([{"Config": blob_name(sha_bytes(CONFIG_BYTES)), "RepoTags": [IMAGE],
                                          "Layers": [blob_name(d) for d in DIFF_IDS]}], separators=(",", ":")).encode(),
            blob_name(sha_bytes(CONFIG_BYTES)): CONFIG_BYTES,
            blob_name(sha_bytes(image_manifest)): image_manifest,
        }
        assert load.layers == {blob_name(d): path for d, path in zip(DIFF_IDS, FILES)} and load.count == 3

    @pytest.mark.parametrize("have, sent", [
        (set(), [0, 1, 2]),
        ({DIFF_IDS[0]}, [1, 2]),
        ({DIFF_IDS[0], CHAIN_2}, [2]),
        ({DIFF_IDS[0], CHAIN_2, CHAIN_3}, []),
        # The host has layer 2's content on another base: not the same chain, so it is sent.
        ({sha(f"{DIFF_IDS[2]} {DIFF_IDS[1]}")}, [0, 1, 2]),
    ], ids=["nothing-there", "the-base", "all-but-the-code", "everything", "same-layer-other-base"])
    def test_the_layers_sent_are_those_whose_chain_the_host_lacks(self, have, sent):
        load = plans.load(IMAGE, manifest(), CONFIG_BYTES, MEMBERS, have)
        assert load.layers == {blob_name(DIFF_IDS[n]): FILES[n] for n in sent}
        # What is left out is still named, by the manifests of both formats.
        assert json.loads(load.files["manifest.json"])[0]["Layers"] == [blob_name(d) for d in DIFF_IDS]

    def test_a_blob_two_layers_share_is_sent_once_when_one_of_them_is_needed(self):
        # An empty layer written once, used at positions 1 and 3: the host has the first chain only.
        shared = [FILES[0], FILES[1], FILES[0]]
        config = json.dumps({"rootfs": {"diff_ids": [DIFF_IDS[0], DIFF_IDS[1], DIFF_IDS[0]]}}).encode()
        load = plans.load(IMAGE, manifest(shared), config, MEMBERS, {DIFF_IDS[0]})
        assert load.layers == {blob_name(DIFF_IDS[0]): FILES[0], blob_name(DIFF_IDS[1]): FILES[1]} and load.count == 2

    def test_a_save_of_the_containerd_store_keeps_its_compressed_blobs_and_their_digests(self):
        gz = {f"blobs/sha256/{n * 64}": (100, b"\x1f\x8b\x08\x00") for n in "abc"}
        entry = [{"Config": "blobs/sha256/" + "f" * 64, "RepoTags": [IMAGE], "Layers": list(gz)}]
        load = plans.load(IMAGE, entry, CONFIG_BYTES, gz, {DIFF_IDS[0], CHAIN_2})
        assert load.layers == {"blobs/sha256/" + "c" * 64: "blobs/sha256/" + "c" * 64}
        (image_manifest,) = [v for k, v in load.files.items() if k.startswith("blobs/") and b"schemaVersion" in v]
        assert [d["digest"] for d in json.loads(image_manifest)["layers"]] == [f"sha256:{n * 64}" for n in "abc"]

    def test_a_manifest_and_config_that_disagree_are_refused(self):
        with pytest.raises(ValueError, match="^the saved image's manifest and config disagree on its layers$"):
            plans.load(IMAGE, manifest(FILES[:2]), CONFIG_BYTES, MEMBERS, set())

    def test_a_save_of_two_images_is_refused(self):
        with pytest.raises(ValueError):
            plans.load(IMAGE, manifest() * 2, CONFIG_BYTES, MEMBERS, set())


def test_a_link_in_a_save_points_beside_it():
    assert plans.linked("bbb/layer.tar", "../aaa/layer.tar") == "aaa/layer.tar"


def test_the_save_command():
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
INSPECT = shlex.join(plans.identity(IMAGE))
HOST_LAYERS = f"bash -c {shlex.quote(plans.HOST_LAYERS)}"
# The image as `docker image inspect` shows it here; on the host, under any ID, the same.
IDENTITY = f'{json.dumps(DIFF_IDS)} 2026-12-06T06:14:19.018488271Z linux/amd64 {{"User":"app"}}'
OTHER = IDENTITY.replace("06:14:19", "05:00:00")  # an earlier build of the same tag
UNSHOWN = ' linux/amd64 {"User":"app"}'  # the containerd store lacking one of the image's blobs


def saved_image(path):
    """A tar as `docker save` writes it: the layers' files, the config, the manifest."""
    with tarfile.open(path, "w") as tar:
        for name, data in [*zip(FILES, LAYERS), ("config.json", CONFIG_BYTES),
                           ("manifest.json", json.dumps(manifest()).encode())]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def here(tmp_path, monkeypatch):
    """`docker` and `ssh` here: docker shows IMAGE as IDENTITY and saves the tar above; ssh
    keeps its arguments and its standard input (a second one in stream.gz.2). Returns the
    folder where they write."""
    folder = tmp_path / "bin"
    folder.mkdir()
    saved = saved_image(tmp_path / "saved.tar")
    scripts = {
        "docker": '#!/bin/sh\necho "$*" >> "$SHIP_LOG"\ncase "$1 $2" in\n'
                  f'  "image inspect") echo {shlex.quote(IDENTITY)};;\n'
                  f'  "save --output") cp {saved} "$3";;\n'
                  '  *) exit 2;;\nesac\n',
        "ssh": '#!/bin/sh\nprintf "%s\\n" "$@" > "$SHIP_ARGS"\n'
               'if test -e "$SHIP_STREAM"; then cat > "$SHIP_STREAM.2"; else cat > "$SHIP_STREAM"; fi\n'
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


def host(shows=(OTHER, IDENTITY), layers="", dry=False):
    """The host as a strict recorder: it answers how it shows IMAGE (SHOWS, one answer per
    asking, the last one again after that) and the layers it has, and nothing else."""
    answers = list(shows)

    def show(_):
        return (answers.pop(0) if len(answers) > 1 else answers[0]) + "\n"
    conn = StrictNode("prod", [(re.escape(INSPECT), show), (re.escape(HOST_LAYERS), layers)])
    return Runner(HostTarget(conn, HOST, STACK, local_c=Context()), dry), conn


def received(folder, stream="stream.gz"):
    """{file: bytes} of the tar stream the host's `docker load` got."""
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress((folder / stream).read_bytes())), mode="r|") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar}


def small_files(have):
    return plans.load(IMAGE, manifest(), CONFIG_BYTES, MEMBERS, have).files


def shipped_line(out):
    return [line for line in out.splitlines() if line.startswith("shipped ")]


def test_a_host_with_the_same_image_gets_nothing_whatever_its_id(here, capsys):
    r, conn = host(shows=[IDENTITY])
    images.ship_image(r, r.here(), IMAGE)
    assert commands(conn) == [INSPECT]
    assert not (here / "stream.gz").exists()
    assert capsys.readouterr().out == f"prod already has {IMAGE}: nothing to send\n"


def test_only_the_layers_the_host_lacks_are_sent_through_ssh_into_docker_load(here, capsys):
    r, conn = host(layers=json.dumps(DIFF_IDS[:2]) + "\n")
    images.ship_image(r, r.here(), IMAGE)
    assert commands(conn) == [INSPECT, HOST_LAYERS, INSPECT]  # the last: is it there, whole?
    assert received(here) == {**small_files({DIFF_IDS[0], CHAIN_2}), blob_name(DIFF_IDS[2]): LAYERS[2]}
    assert (here / "ssh.args").read_text().splitlines() == [
        *release_plans.ssh_options(HOST), "deploy@203.0.113.10", "docker", "load", "--quiet"]
    assert (here / "docker.log").read_text().splitlines()[0] == f"image inspect --format {plans.IDENTITY} {IMAGE}"
    out = capsys.readouterr().out
    assert f"sending the layers of {IMAGE} that prod lacks\n" in out
    sent = (here / "stream.gz").stat().st_size
    assert re.fullmatch(rf"shipped {re.escape(IMAGE)} to prod: 1 of 3 layers, {sent} bytes sent "
                        r"\(\d+ before compression; the whole image is \d+\) in \d+\.\ds", *shipped_line(out))


def test_a_host_that_has_layers_only_under_other_digests_gets_every_layer_once_more(here, capsys):
    # The containerd store shows an image without its layers when a blob its manifest names is
    # not in its content store (its base pulled compressed, say): then every layer goes.
    r, conn = host(shows=[OTHER, UNSHOWN, IDENTITY], layers=json.dumps(DIFF_IDS[:2]) + "\n")
    images.ship_image(r, r.here(), IMAGE)
    assert commands(conn) == [INSPECT, HOST_LAYERS, INSPECT, INSPECT]
    assert received(here, "stream.gz.2") == {**small_files(set()),
                                             **{blob_name(d): data for d, data in zip(DIFF_IDS, LAYERS)}}
    out = capsys.readouterr().out
    assert "prod has some of these layers only under other digests: sending every layer\n" in out
    both = (here / "stream.gz").stat().st_size + (here / "stream.gz.2").stat().st_size
    assert shipped_line(out)[0].startswith(f"shipped {IMAGE} to prod: 3 of 3 layers, {both} bytes sent ")


def test_a_host_that_does_not_show_the_image_after_the_load_is_an_error(here):
    r, conn = host(shows=[OTHER, UNSHOWN], layers="")
    with pytest.raises(TaskError) as failed:
        images.ship_image(r, r.here(), IMAGE)
    assert commands(conn) == [INSPECT, HOST_LAYERS, INSPECT]  # it had nothing: everything went already
    assert failed.value.message == (f"error: prod does not show {IMAGE} as it is here after the load: "
                                    f"compare `docker image inspect {IMAGE}` there and here")


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
