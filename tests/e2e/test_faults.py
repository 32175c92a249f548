"""Faults of a real host in the middle of `inv deploy`: its engine stopped, its sshd killed,
its link cut while an image is on the way, its release directory's filesystem full.

Each must end in one clear line, leave `current` on the release that served before (which
still serves wherever the fault leaves anything running), and let the next deploy work,
after `inv deploy.unlock` where the lock could not be released. The line each fault gave is
printed (`pytest -s`): the fault table of the closing notes comes from there."""
import os
import random
import re
import subprocess
import time

import pytest

from tests.e2e.conftest import Stack
from testkit.projectcopy import copy_project
from testkit import INV

pytestmark = pytest.mark.e2e
PORT = 8080
TMPFS_SIZE = 48 * 1024 * 1024


class Faulty(Stack):
    def __init__(self, root, server, host="fault", project="hello-e2e-fault"):
        super().__init__(project, PORT, root=root)
        self.server, self.host = server, host
        self.remote_dir = server.dir / "srv" / "hello"

    def releases(self):
        return sorted(p.name for p in (self.remote_dir / "releases").iterdir() if p.name != "filler")

    def current(self):
        return (self.remote_dir / "current").resolve().name

    def page(self):
        status, _, body = self.server.get(f"http://127.0.0.1:{PORT}/")
        return status, body.decode()

    def change(self, marker, blob_bytes=0):
        """A code change, with BLOB_BYTES of incompressible data shipped with it."""
        template = self.root / "hello/hello/templates/hello/index.html"
        template.write_text(template.read_text() + f"<!-- {marker} -->\n")
        blob = self.root / "hello/hello/blob.bin"
        if blob_bytes:
            blob.write_bytes(random.Random(marker).randbytes(blob_bytes))
        elif blob.exists():
            blob.unlink()

    def deploy_until(self, line_start, fault, *args):
        """Start a deploy, do FAULT() once its output has a line starting with LINE_START
        (stripped; a compiled pattern is searched instead), and return (exit status, stdout, stderr)."""
        proc = subprocess.Popen([*INV, "deploy", "--host", self.host, *args],
                                cwd=self.root, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, stdin=subprocess.DEVNULL)
        seen = []
        for line in proc.stdout:
            seen.append(line)
            if line_start.search(line) if isinstance(line_start, re.Pattern) else line.strip().startswith(line_start):
                fault()
                break
        else:
            proc.wait()
            pytest.fail(f"the deploy never printed {line_start!r}:\n{''.join(seen)}{proc.stderr.read()}")
        out, err = proc.communicate(timeout=240)
        return proc.returncode, "".join(seen) + out, err

    def one_line(self, stderr, fault):
        """The one error line, last on stderr (a build's own output may come before it)."""
        lines = [line for line in stderr.strip().splitlines() if line.startswith("error:")]
        assert len(lines) == 1 and stderr.strip().endswith(lines[0]), stderr
        print(f"\n[fault table] {fault}: {lines[0]}")
        return lines[0]

    def wait_serving(self, marker, timeout=90):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                status, body = self.page()
                if status == 200 and marker in body:
                    return
            except OSError:
                pass
            time.sleep(1)
        pytest.fail(f"{marker!r} not served within {timeout}s")


@pytest.fixture(scope="module")
def faulty(servers, tmp_path_factory):
    server = servers("fault")
    root = copy_project(tmp_path_factory.mktemp("project"))
    f = Faulty(root, server)
    # The releases live on a small filesystem of their own, for the full-disk fault.
    (f.remote_dir / "releases").mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(f.remote_dir / "releases")],
                   check=True)
    with open(root / "config/stack.toml", "a") as handle:
        handle.write("\n" + server.hosts_entry("fault", str(f.remote_dir), http_port=PORT, project=f.project))
    # A release that serves, shipped from here (the cold build is test_deploy's business).
    f.change("one")
    f.inv("deploy", "--host", "fault", "--ship-image")
    f.wait_serving("<!-- one -->")
    yield f


def test_engine_stopped(faulty):
    before = (faulty.releases(), faulty.current())
    faulty.server.stop_engine()
    try:
        faulty.change("two")
        result = faulty.inv("deploy", "--host", "fault", check=False)
        assert result.returncode == 1
        line = faulty.one_line(result.stderr, "engine stopped")
        assert "no Docker engine is reachable on fault" in line and "start it" in line
        assert (faulty.releases(), faulty.current()) == before
        assert not (faulty.remote_dir / ".deploy-lock").exists()  # checked before the lock was taken
    finally:
        faulty.server.start_engine()
    faulty.wait_serving("<!-- one -->")  # the old release comes back with its engine (restart policy)
    faulty.inv("deploy", "--host", "fault")
    faulty.wait_serving("<!-- two -->")


def test_sshd_killed_mid_deploy(faulty):
    before = (faulty.releases(), faulty.current())
    faulty.change("three")
    try:
        code, out, err = faulty.deploy_until("building on fault", faulty.server.stop_sshd)
        assert code == 1
        line = faulty.one_line(err, "sshd killed mid-build")
        assert "failed while building the image (lost the connection to fault" in line
        assert "`current` still points at" in line
        assert "inv deploy.unlock --host fault" in line  # the lock could not be released
        assert faulty.current() == before[1]
        faulty.wait_serving("<!-- two -->", timeout=5)  # the old release never stopped
    finally:
        faulty.server.start_sshd()
    assert (faulty.remote_dir / ".deploy-lock").exists()
    assert "released the deploy lock on fault" in faulty.inv("deploy.unlock", "--host", "fault").stdout
    result = faulty.inv("deploy", "--host", "fault")
    assert "removing what failed deploys left" in result.stdout
    faulty.wait_serving("<!-- three -->", timeout=5)
    assert len(faulty.releases()) == len(before[0]) + 1


def test_link_cut_mid_image_transfer(faulty):
    before = (faulty.releases(), faulty.current())
    veth = faulty.server.veth
    # 1 MB/s, so that the image is still on its way when the link goes.
    subprocess.run(["tc", "qdisc", "add", "dev", veth, "root", "tbf", "rate", "8mbit", "burst", "32kbit",
                    "latency", "400ms"], check=True)
    faulty.change("four", blob_bytes=6 * 1024 * 1024)
    cut = []

    def cut_link():
        cut.append(time.monotonic())
        faulty.server.link(up=False)

    try:
        # Cut once the stream is under way: at its first progress line.
        code, out, err = faulty.deploy_until(re.compile(r"^ +[\d.]+ of [\d.]+ MB, [\d.]+ MB sent"),
                                             cut_link, "--ship-image")
        waited = time.monotonic() - cut[0]
    finally:
        faulty.server.link(up=True)
        subprocess.run(["tc", "qdisc", "del", "dev", veth, "root"], check=False)
    assert code == 1
    line = faulty.one_line(err, "link cut mid-image-transfer")
    assert "failed while building the image (sending the image to fault failed:" in line
    assert "`current` still points at" in line
    assert waited < 120, waited  # given up on after the cut, not hung
    assert faulty.current() == before[1]
    faulty.wait_serving("<!-- three -->", timeout=10)
    if (faulty.remote_dir / ".deploy-lock").exists():
        assert "inv deploy.unlock --host fault" in line
        faulty.inv("deploy.unlock", "--host", "fault")
    faulty.inv("deploy", "--host", "fault", "--ship-image")
    faulty.wait_serving("<!-- four -->", timeout=5)


def test_release_directory_on_a_full_filesystem(faulty):
    before = (faulty.releases(), faulty.current())
    releases = faulty.remote_dir / "releases"
    stat = os.statvfs(releases)
    filler = releases / "filler"
    with open(filler, "wb") as handle:  # all but 256 KB of the filesystem
        handle.truncate(0)
        handle.write(b"\0" * max(0, stat.f_bavail * stat.f_frsize - 256 * 1024))
    try:
        faulty.change("five", blob_bytes=2 * 1024 * 1024)
        result = faulty.inv("deploy", "--host", "fault", check=False)
        assert result.returncode == 1
        line = faulty.one_line(result.stderr, "release directory's filesystem full")
        assert "failed while shipping the code (rsync to fault failed:" in line and "No space left on device" in line
        assert "nothing was switched" in line
        assert (faulty.releases(), faulty.current()) == before  # the partial release is gone
        assert not (faulty.remote_dir / ".deploy-lock").exists()
        faulty.wait_serving("<!-- four -->", timeout=5)
    finally:
        filler.unlink()
    faulty.inv("deploy", "--host", "fault")
    faulty.wait_serving("<!-- five -->", timeout=5)
