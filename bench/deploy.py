"""Deploy: `inv deploy --host bench` to a fresh server, against the deploy people write by
hand: rsync the tree, then over ssh `docker compose up -d --build --wait`, migrate,
collectstatic; and, for an image built here, `docker save | gzip | ssh docker load`.

Every repeat gives each way a server of its own, made for it (testkit/testhost.py: its own
address, engine and sshd, holding the base images and nothing else), then deploys:
  first           nothing on the host yet: the app image is built there from cold
  code change     after a one-line change to hello/hello/views.py, built on the host
  unchanged       the same tree again
  first shipped   another one-line change, the image built here and sent: ours with
                  --ship-image (the layers the host lacks: its own builds made other
                  dependency layers, so those go too), by hand the whole saved image
  shipped change  one more one-line change, sent the same way: ours sends the code layers
Bytes are what rsync reports as sent, plus the image bytes on the wire when one is sent.
"""
from __future__ import annotations

import re
import shlex
import subprocess
import time

from testkit.testhost import Server

from .build import change_code
from .harness import BenchError, Env, Section, log, median, ratio, seconds

STEPS = ("first", "code change", "unchanged", "first shipped", "shipped change")
# A smoke run (--quick) leaves out the code change built on the server, a step like the first,
# and gzips the hand-written way's image at level 1: its figures mean nothing, and level 6
# (gzip's default, what the full run measures) was a third of its CPU.
QUICK = ("first", "unchanged", "first shipped", "shipped change")
# The hand-written way takes its shipped change alone: that step runs all its code (rsync,
# the whole image saved, gzipped and loaded, compose up, migrate, collectstatic), where its
# first (a cold build on the server, a third of the smoke run's deploy section) and unchanged
# steps add a `--build` and nothing the smoke run checks; its first shipped sends the same
# whole image as its shipped change.
QUICK_BY_HAND = ("shipped change",)
QUICK_GZIP_LEVEL, GZIP_LEVEL = 1, 6
SHIPPED = ("first shipped", "shipped change")
PORT = 8080  # on each server's own loopback


def wait_served(server: Server, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if server.get(f"http://127.0.0.1:{PORT}/", timeout=5)[0] == 200:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise BenchError(f"nothing served on {server.name} within {timeout:.0f}s")
        time.sleep(0.1)


class Ours:
    def __init__(self, env: Env, project: str):
        self.env, self.project = env, project
        self.stack_toml = (env.copy / "config/stack.toml").read_text()

    def reset(self, server: Server) -> None:
        self.server = server
        (self.env.copy / "config/stack.toml").write_text(self.stack_toml + "\n" + server.hosts_entry(
            "bench", str(server.dir / "srv/hello"), http_port=PORT, project=self.project))

    def deploy(self, step: str) -> int:
        result = self.env.inv("deploy", "--host", "bench", *(["--ship-image"] if step in SHIPPED else []))
        if "runs this code already" in result.stdout:
            return 0
        code = re.search(r"shipped \S+: (\d+) bytes sent", result.stdout)
        if code is None:
            raise BenchError(f"inv deploy did not say what it sent:\n{result.stdout}")
        image = re.search(r"shipped \S+ to bench: .*?(\d+) bytes sent", result.stdout)
        wait_served(self.server, 30)
        return int(code.group(1)) + (int(image.group(1)) if image else 0)

    def teardown(self) -> None:
        remove_images(self.env, f"{self.project}-djangoapp")
        (self.env.copy / "config/stack.toml").write_text(self.stack_toml)


class ByHand:
    """rsync + ssh docker compose, as a Makefile target would do it."""

    def __init__(self, env: Env, project: str, gzip_level: int = GZIP_LEVEL):
        self.env, self.project, self.gzip_level = env, project, gzip_level
        self.image = f"{project}-djangoapp:latest"

    def reset(self, server: Server) -> None:
        self.server = server
        self.directory = server.dir / "srv/byhand"
        self.ssh = ["ssh", "-i", str(server.key), "-o", f"UserKnownHostsFile={server.known_hosts}",
                    "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes"]
        self.target = f"{server.user}@{server.address}"

    def remote(self, command: str) -> None:
        self.env.run([*self.ssh, self.target, command])

    def deploy(self, step: str) -> int:
        self.remote(f"mkdir -p {shlex.quote(str(self.directory))}")
        rsync = self.env.run(["rsync", "--archive", "--compress", "--delete", "--stats", "--exclude", ".git",
                              "--exclude", "backups", "--exclude", "__pycache__", "-e", shlex.join(self.ssh),
                              f"{self.env.copy}/", f"{self.target}:{self.directory}/"])
        match = re.search(r"Total bytes sent: ([\d,]+)", rsync.stdout)
        if match is None:
            raise BenchError(f"rsync did not say what it sent:\n{rsync.stdout}")
        sent = int(match.group(1).replace(",", ""))
        variables = {name: self.env.vars[name] for name in ("PYTHON_IMAGE", "POSTGRES_IMAGE", "NGINX_IMAGE")
                     if self.env.vars.get(name)}
        variables.update(HTTP_PORT=str(PORT), APP_IMAGE=self.image)
        compose = f"env {' '.join(f'{k}={shlex.quote(v)}' for k, v in variables.items())} " \
                  f"docker compose --project-name {self.project}"
        build = "--build"
        if step in SHIPPED:
            self.env.run(["docker", "compose", "--project-name", self.project, "build", "djangoapp"],
                         env={"APP_IMAGE": self.image})
            sent += self.send_image()
            build = "--no-build"
        self.remote(f"cd {shlex.quote(str(self.directory))} && {compose} up --detach {build} --wait && "
                    f"{compose} exec -T djangoapp python manage.py migrate --noinput && "
                    f"{compose} exec -T djangoapp python manage.py collectstatic --noinput")
        wait_served(self.server, 30)
        return sent

    def send_image(self) -> int:
        """docker save | gzip | ssh docker load, counting the bytes on the wire."""
        save = subprocess.Popen(["docker", "save", self.image], stdout=subprocess.PIPE)
        gzip = subprocess.Popen(["gzip", f"-{self.gzip_level}"], stdin=save.stdout, stdout=subprocess.PIPE)
        save.stdout.close()
        load = subprocess.Popen([*self.ssh, self.target, "docker", "load", "--quiet"], stdin=subprocess.PIPE,
                                stdout=subprocess.DEVNULL)
        sent = 0
        for chunk in iter(lambda: gzip.stdout.read(1 << 20), b""):
            load.stdin.write(chunk)
            sent += len(chunk)
        load.stdin.close()
        if save.wait() or gzip.wait() or load.wait():
            raise BenchError(f"docker save | gzip | ssh docker load of {self.image} failed")
        return sent

    def teardown(self) -> None:
        remove_images(self.env, f"{self.project}-djangoapp")


def remove_images(env: Env, repository: str) -> None:
    images = env.run(["docker", "images", "--quiet", "--filter", f"reference={repository}"], check=False).stdout.split()
    if images:
        env.run(["docker", "rmi", "--force", *sorted(set(images))], check=False)


def base_images(env: Env) -> list[str]:
    return [env.python_image, env.postgres_image, env.vars.get("NGINX_IMAGE") or "nginx:1.27"]


def measure(env: Env, repeat: int, quick: bool = False) -> Section:
    steps = QUICK if quick else STEPS
    env.inv("build")  # the env files exist (the hand-written deploy ships them)
    ways = {"ours": Ours(env, f"{env.project}-prod"), "by hand": ByHand(env, f"{env.project}-byhand",
                                                                      QUICK_GZIP_LEVEL if quick else GZIP_LEVEL)}
    taken = {"ours": steps, "by hand": QUICK_BY_HAND if quick else steps}
    times = {(w, s): [] for w in ways for s in steps}
    sent = {(w, s): [] for w in ways for s in steps}
    for i in range(repeat):
        for name in (list(ways) if i % 2 == 0 else list(ways)[::-1]):
            way = ways[name]
            server = Server(f"{env.project}-{i}-{name.replace(' ', '')}")
            try:
                way.reset(server.up(base_images(env)))
                for step in taken[name]:
                    if step not in ("first", "unchanged"):
                        change_code(env.copy, f"deploy {i} {name} {step}")
                    started = time.monotonic()
                    sent[name, step].append(way.deploy(step))
                    times[name, step].append(time.monotonic() - started)
            finally:
                way.teardown()
                server.down()
            log(f"  deploy {i + 1}/{repeat} {name}: " + ", ".join(
                f"{s} {times[name, s][-1]:.1f}s/{sent[name, s][-1]}B" for s in taken[name]))
    rows = []
    for step in steps:
        mine, mine_sent = median(times["ours", step]), median(sent["ours", step])
        if not times["by hand", step]:  # not taken in a smoke run
            rows.append([step, seconds(mine), f"{mine_sent:,.0f}", "–", "–", "–", "–"])
            continue
        theirs, theirs_sent = median(times["by hand", step]), median(sent["by hand", step])
        rows.append([step, seconds(mine), f"{mine_sent:,.0f}", seconds(theirs), f"{theirs_sent:,.0f}",
                     ratio(mine / theirs), f"{mine_sent / theirs_sent:.3f}" if theirs_sent else "–"])
    return Section(
        title="Deploy",
        header=["deploy", "`inv deploy`", "bytes sent", "rsync + ssh compose", "bytes sent", "time ÷ by hand",
                "bytes ÷ by hand"],
        rows=rows,
        notes=[f"Each way to a fresh server of its own (a network namespace with its own engine and sshd, "
               f"holding the base images only; 'first' builds the app image there from cold); median of "
               f"{repeat} run(s).",
               "first shipped, shipped change: ours sends the image layers the server lacks, gzipped "
               f"(`--ship-image`); by hand sends the whole image (`docker save | gzip -{ways['by hand'].gzip_level} | "
               "ssh docker load`).",
               *(["A smoke run (--quick) takes the hand-written way's shipped change alone (–: not taken), "
                  "on a server of its own."] if quick else []),
               "Ours also takes a lock, makes a release directory (hard links to the previous one), "
               "generates the host's secrets, tags the image with the code's digest, waits for /healthz "
               "through Nginx and switches `current` (rolling back on failure); unchanged code makes no "
               "release at all. The hand-written one ships the developer's env files and overwrites the "
               "running tree in place."],
    )
