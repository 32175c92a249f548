"""Deploy: `inv deploy --host bench` to a real OpenSSH server on 127.0.0.1, against the
deploy people write by hand: rsync the tree, then over ssh `docker compose up -d --build
--wait`, migrate, collectstatic.

Both go to the same sshd and engine, each into a directory and compose project of its own.
Each repeat starts from an empty directory and no stack, then deploys three times:
  first        nothing on the host yet
  code change  after appending a comment to hello/hello/views.py
  unchanged    the same tree again
Bytes are what rsync reports as sent (ours prints it; the hand-written one asks --stats).
The "remote" engine is this machine's, so the first deploy builds with a warm layer cache:
on a fresh server the first build is the cold build of the Build section.
"""
from __future__ import annotations

import re
import shlex
import time

from testkit.sshd import loopback_sshd

from .build import change_code
from .harness import BenchError, Env, Section, free_port, log, median, ratio, seconds, wait_for_200

STEPS = ("first", "code change", "unchanged")


def hosts_toml(sshd: dict, directory, project: str, port: int) -> str:
    d = sshd["dir"]
    return f"""
[hosts.bench]
address = "127.0.0.1"
user = "{sshd["user"]}"
port = {sshd["port"]}
identity_file = "{d}/client_key"
known_hosts = "{d}/known_hosts"
directory = "{directory}"
http_port = {port}
project = "{project}"
"""


class Ours:
    def __init__(self, env: Env, sshd: dict, project: str):
        self.env, self.sshd, self.project = env, sshd, project
        self.port = free_port()
        self.stack_toml = (env.copy / "config/stack.toml").read_text()

    def reset(self, n: int) -> None:
        self.directory = self.env.workdir / f"ours-{n}" / "hello"
        (self.env.copy / "config/stack.toml").write_text(
            self.stack_toml + hosts_toml(self.sshd, self.directory, self.project, self.port))

    def deploy(self) -> int:
        result = self.env.inv("deploy", "--host", "bench")
        match = re.search(r"shipped \S+: (\d+) bytes sent", result.stdout)
        if match is None:
            raise BenchError(f"inv deploy did not say what it sent:\n{result.stdout}")
        wait_for_200(f"http://127.0.0.1:{self.port}/", timeout=30)
        return int(match.group(1))

    def teardown(self) -> None:
        # By project name alone: a failed first deploy leaves containers but no `current`.
        down_project(self.env, self.project)
        remove_images(self.env, f"{self.project}-djangoapp")
        (self.env.copy / "config/stack.toml").write_text(self.stack_toml)


class ByHand:
    """rsync + ssh docker compose, as a Makefile target would do it."""

    def __init__(self, env: Env, sshd: dict, project: str):
        self.env, self.sshd, self.project = env, sshd, project
        self.port = free_port()
        d = sshd["dir"]
        self.ssh = ["ssh", "-i", f"{d}/client_key", "-p", str(sshd["port"]), "-o", f"UserKnownHostsFile={d}/known_hosts",
                    "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes"]
        self.target = f"{sshd['user']}@127.0.0.1"

    def reset(self, n: int) -> None:
        self.directory = self.env.workdir / f"byhand-{n}" / "hello"

    def remote(self, command: str) -> None:
        self.env.run([*self.ssh, self.target, command])

    def deploy(self) -> int:
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
        variables.update(HTTP_PORT=str(self.port), APP_IMAGE=f"{self.project}-djangoapp:latest")
        compose = f"env {' '.join(f'{k}={shlex.quote(v)}' for k, v in variables.items())} " \
                  f"docker compose --project-name {self.project}"
        self.remote(f"cd {shlex.quote(str(self.directory))} && {compose} up --detach --build --wait && "
                    f"{compose} exec -T djangoapp python manage.py migrate --noinput && "
                    f"{compose} exec -T djangoapp python manage.py collectstatic --noinput")
        wait_for_200(f"http://127.0.0.1:{self.port}/", timeout=30)
        return sent

    def teardown(self) -> None:
        down_project(self.env, self.project)
        remove_images(self.env, f"{self.project}-djangoapp")


def down_project(env: Env, project: str) -> None:
    """Remove a compose project's containers, networks and volumes, found by their labels."""
    env.run(["docker", "compose", "--project-name", project, "down", "--volumes", "--remove-orphans"],
            check=False, cwd=env.workdir)


def remove_images(env: Env, repository: str) -> None:
    images = env.run(["docker", "images", "--quiet", "--filter", f"reference={repository}"], check=False).stdout.split()
    if images:
        env.run(["docker", "rmi", "--force", *sorted(set(images))], check=False)


def measure(env: Env, repeat: int) -> Section:
    env.inv("build")  # the env files exist (the hand-written deploy ships them) and the image is built
    sshd_dir = env.workdir / "sshd"
    sshd_dir.mkdir()
    with loopback_sshd(sshd_dir) as sshd:
        ways = {"ours": Ours(env, sshd, f"{env.project}-prod"), "by hand": ByHand(env, sshd, f"{env.project}-byhand")}
        times = {(w, s): [] for w in ways for s in STEPS}
        sent = {(w, s): [] for w in ways for s in STEPS}
        for i in range(repeat):
            for name in (list(ways) if i % 2 == 0 else list(ways)[::-1]):
                way = ways[name]
                way.reset(i)
                try:
                    for step in STEPS:
                        if step == "code change":
                            change_code(env.copy, f"deploy {i} {name}")
                        started = time.monotonic()
                        sent[name, step].append(way.deploy())
                        times[name, step].append(time.monotonic() - started)
                finally:
                    way.teardown()
                log(f"  deploy {i + 1}/{repeat} {name}: " + ", ".join(
                    f"{s} {times[name, s][-1]:.1f}s/{sent[name, s][-1]}B" for s in STEPS))
    rows = []
    for step in STEPS:
        mine, theirs = median(times["ours", step]), median(times["by hand", step])
        rows.append([step, seconds(mine), f"{median(sent['ours', step]):,.0f}", seconds(theirs),
                     f"{median(sent['by hand', step]):,.0f}", ratio(mine / theirs)])
    return Section(
        title="Deploy",
        header=["deploy", "`inv deploy`", "bytes sent", "rsync + ssh compose", "bytes sent", "ours ÷ by hand"],
        rows=rows,
        notes=[f"To an OpenSSH server on 127.0.0.1 (same machine, same engine); median of {repeat} run(s).",
               "Ours also takes a lock, makes a release directory (hard links to the previous one), "
               "generates the host's secrets, tags the image with the code's digest, waits for /healthz "
               "through Nginx and switches `current` (rolling back on failure); the hand-written one "
               "ships the developer's env files and overwrites the running tree in place."],
    )
