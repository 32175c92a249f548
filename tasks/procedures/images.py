"""Sending an image built here to a host: only the layers the host lacks, gzip-compressed,
through one SSH stream into `docker load`, with progress. See tasks/plans/images.py for why
this works and why it is not a registry."""
from __future__ import annotations

import json
import tarfile
import tempfile
import time
import zlib
from pathlib import Path

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
    local_id = here.probe(images.image_id(image), prints="image id here").stdout.strip()
    if r.probe(images.image_id(image), prints=f"image id on {name}").stdout.strip() == local_id:
        r.say(f"{name} already has {image}: nothing to send")
        return
    containerd = images.uses_containerd_store(r.shell(images.STORE, check=False).stdout)
    have = set() if containerd else images.host_chains(r.shell(images.HOST_LAYERS, check=False).stdout)
    why = " (its engine uses the containerd image store: the whole image)" if containerd else ""
    r.say(f"sending the layers of {image} that {name} lacks{why}")
    load = ["ssh", *release_plans.ssh_options(r.target.host), release_plans.destination(r.target.host),
            "docker", "load", "--quiet"]
    here.do(f"send the layers of {image} that {name} lacks (docker save | gzip | ssh docker load)",
            _send, r, here, image, have, load)


def _send(r: Runner, here: Runner, image: str, have: set[str], load: list[str]) -> None:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="hello-ship-") as tmp:
        saved = Path(tmp) / "image.tar"
        here.run(images.save(image, saved), hide=True, what=f"docker save {image}")
        with tarfile.open(saved) as tar:
            manifest = json.load(tar.extractfile("manifest.json"))
            config = json.load(tar.extractfile(manifest[0]["Config"]))
            leave_out = images.layers_to_leave_out(manifest, config, have)
            members = [m for m in tar.getmembers() if m.name not in leave_out]
            total = sum(m.size for m in members)
            full = saved.stat().st_size
            layers = len(config["rootfs"]["diff_ids"])
            sent = _stream(r, here, tar, members, total, load)
    r.report(f"shipped {image} to {r.target.name}: {layers - len(leave_out)} of {layers} layers, "
             f"{sent.sent} bytes sent ({sent.raw} before compression; the whole image is {full}) "
             f"in {time.monotonic() - started:.1f}s")


def _stream(r: Runner, here: Runner, tar, members, total: int, load: list[str]) -> _GzipPipe:
    """MEMBERS of TAR, as one gzip-compressed tar stream, into LOAD (run here)."""
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
            for member in members:
                out.addfile(member, tar.extractfile(member) if member.isfile() else None)
        pipe.close()

    here.feed(load, write, what=f"sending the image to {r.target.name}")
    return sent[0]
