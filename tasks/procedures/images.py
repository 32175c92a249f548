"""Sending an image built here to a host: only the layers the host lacks, gzip-compressed,
through one SSH stream into `docker load`, with progress; then the host is asked whether it
shows the image as it is here. See tasks/plans/images.py for why this works and why it is
not a registry."""
from __future__ import annotations

import io
import json
import tarfile
import tempfile
import time
import zlib
from pathlib import Path

from ..errors import TaskError
from ..execution.runner import Runner
from ..plans import images
from ..plans import release as release_plans

PROGRESS_EVERY = 2.0  # seconds between progress lines


class _GzipPipe:
    """A file-like writer that gzips into PIPE and counts what went in and what went out."""

    def __init__(self, pipe, progress):
        self.pipe, self.progress = pipe, progress
        self.compressor = zlib.compressobj(6, zlib.DEFLATED, 31)  # 31: a gzip stream
        self.raw = self.sent = 0

    def write(self, data: bytes) -> int:
        self.raw += len(data)
        self._send(self.compressor.compress(data))
        self.progress(self)
        return len(data)

    def close(self) -> None:
        self._send(self.compressor.flush())

    def _send(self, chunk: bytes) -> None:
        if chunk:
            self.pipe.write(chunk)
            self.sent += len(chunk)


def ship_image(r: Runner, here: Runner, image: str) -> None:
    """Make IMAGE (built here) present on R's host, sending what the host lacks."""
    name = r.target.name
    local = here.probe(images.identity(image), prints="the image here").stdout.strip()
    # Anywhere: the images are the engine's, no release's.
    there = r.probe(images.identity(image), prints=f"the image on {name}", anywhere=True).stdout
    if images.same_image(local, there):
        r.say(f"{name} already has {image}: nothing to send")
        return
    have = images.host_chains(r.shell(images.HOST_LAYERS, check=False).stdout)
    r.say(f"sending the layers of {image} that {name} lacks")
    load = ["ssh", *release_plans.ssh_options(r.target.host), release_plans.destination(r.target.host),
            "docker", "load", "--quiet"]
    here.do(f"send the layers of {image} that {name} lacks (docker save | gzip | ssh docker load)",
            _send, r, here, image, local, have, load)


def _send(r: Runner, here: Runner, image: str, local: str, have: set[str], load: list[str]) -> None:
    started = time.monotonic()
    name = r.target.name
    with tempfile.TemporaryDirectory(prefix="hello-ship-") as tmp:
        saved = Path(tmp) / "image.tar"
        here.run(images.save(image, saved), hide=True, what=f"docker save {image}")
        with tarfile.open(saved) as tar:
            plan = _plan(tar, image, have)
            sent = [_stream(r, here, tar, plan, load)]
            arrived = images.same_image(local, r.probe(images.identity(image), anywhere=True).stdout)
            if not arrived and have:
                # The containerd store has some of these layers only under other digests
                # (compressed, as pulled): it gets them as this machine has them, once.
                r.say(f"{name} has some of these layers only under other digests: sending every layer")
                plan = _plan(tar, image, set())
                sent.append(_stream(r, here, tar, plan, load))
                arrived = images.same_image(local, r.probe(images.identity(image), anywhere=True).stdout)
        full = saved.stat().st_size
    if not arrived:
        raise TaskError(f"{name} does not show {image} as it is here after the load: "
                        f"compare `docker image inspect {image}` there and here")
    r.report(f"shipped {image} to {name}: {len(plan.layers)} of {plan.count} layers, "
             f"{sum(s.sent for s in sent)} bytes sent ({sum(s.raw for s in sent)} before compression; "
             f"the whole image is {full}) in {time.monotonic() - started:.1f}s")


def _plan(tar: tarfile.TarFile, image: str, have: set[str]) -> images.Load:
    manifest = json.load(tar.extractfile("manifest.json"))
    members = {}
    for path in manifest[0]["Layers"] if len(manifest) == 1 else ():
        member = _file(tar, path)
        members[path] = (member.size, tar.extractfile(member).read(4))
    return images.load(image, manifest, tar.extractfile(manifest[0]["Config"]).read(), members, have)


def _file(tar: tarfile.TarFile, path: str) -> tarfile.TarInfo:
    member = tar.getmember(path)
    return _file(tar, images.linked(path, member.linkname)) if member.issym() else member


def _stream(r: Runner, here: Runner, tar: tarfile.TarFile, plan: images.Load, load: list[str]) -> _GzipPipe:
    """PLAN's files, and its layers from TAR, as one gzip-compressed tar stream into LOAD (run here)."""
    layers = {name: _file(tar, path) for name, path in plan.layers.items()}
    total = sum(len(data) for data in plan.files.values()) + sum(m.size for m in layers.values())
    last = [time.monotonic()]
    sent = []

    def progress(pipe: _GzipPipe) -> None:
        now = time.monotonic()
        if now - last[0] >= PROGRESS_EVERY:
            last[0] = now
            r.say(f"  {pipe.raw / 1e6:.1f} of {total / 1e6:.1f} MB, {pipe.sent / 1e6:.1f} MB sent")

    def write(stdin) -> None:
        pipe = _GzipPipe(stdin, progress)
        sent.append(pipe)
        with tarfile.open(fileobj=pipe, mode="w|", format=tarfile.PAX_FORMAT) as out:
            for name, data in plan.files.items():
                out.addfile(_entry(name, len(data)), io.BytesIO(data))
            for name, member in layers.items():
                out.addfile(_entry(name, member.size), tar.extractfile(member))
        pipe.close()

    here.feed(load, write, what=f"sending the image to {r.target.name}")
    return sent[0]


def _entry(name: str, size: int) -> tarfile.TarInfo:
    entry = tarfile.TarInfo(name)
    entry.size, entry.mode = size, 0o644
    return entry
