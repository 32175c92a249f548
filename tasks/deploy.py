"""`inv deploy --host NAME` and `inv rollback --host NAME`: releases on a host over SSH.

Layout on the host, under its `directory`:
  releases/STAMP-DIGEST/   one directory per release (the code, a .env, links to shared/)
  current -> releases/...  the live release; switched only once a new one serves
  shared/config/           the host's own secrets, generated there on the first deploy
  shared/backups/          backups taken with --host
  .deploy-lock/            held during a deploy (who, since when)
"""
from __future__ import annotations

import getpass
import os
import shlex
import socket
import time
from datetime import datetime, timezone
from pathlib import PurePosixPath

from invoke import Collection, Context, task

from . import app, archive, compose, render, shipping
from .lifecycle import wait_until_served
from .remote import connect
from .runner import Runner, TaskError, task_errors
from .stack import ROOT, StackError, load


def _host(c, host: str):
    try:
        hosts = load().resolve_hosts(host)
    except StackError as exc:
        raise TaskError(str(exc)) from None
    if len(hosts) != 1:
        raise TaskError("deploy one host at a time: name a single host")
    return hosts[0]


class deploy_lock:
    """mkdir is atomic: the first deploy takes the lock, a second one fails and says who
    holds it. Released on the way out, also after a failure."""

    def __init__(self, r: Runner):
        self.r = r
        self.path = r.directory / ".deploy-lock"

    def __enter__(self):
        owner = f"{getpass.getuser()}@{socket.gethostname()} pid {os.getpid()} since " \
                f"{datetime.now(timezone.utc).isoformat(timespec='seconds')}"
        q = shlex.quote(str(self.path))
        result = self.r.shell(f"mkdir {q} 2>/dev/null && printf '%s\\n' {shlex.quote(owner)} > {q}/owner", check=False)
        if result is not None and result.failed:
            holder = self.r.shell(f"cat {q}/owner 2>/dev/null || echo unknown", check=False).stdout.strip()
            raise TaskError(f"another deploy holds the lock on {self.r.host}: {holder}; if it is dead, "
                            f"release it with `inv deploy.unlock --host {self.r.host}`")
        return self

    def __exit__(self, *exc):
        self.r.shell(f"rm -rf {shlex.quote(str(self.path))}", check=False)
        return False


def _readlink(r: Runner, path) -> str | None:
    result = r.shell(f"readlink {shlex.quote(str(path))} || true", check=False)
    name = result.stdout.strip().rsplit("/", 1)[-1] if result is not None else ""
    return name or None


def _releases(r: Runner) -> list[str]:
    result = r.shell(f"ls -1 {shlex.quote(str(r.directory / 'releases'))} 2>/dev/null || true", check=False)
    names = result.stdout.split() if result is not None else []
    return sorted(n for n in names if shipping.RELEASE_PATTERN.match(n))


def _switch(r: Runner, release: str) -> None:
    d = shlex.quote(str(r.directory))
    r.shell(f"ln -sfn releases/{shlex.quote(release)} {d}/.current.tmp && mv -T {d}/.current.tmp {d}/current",
            what=f"pointing current at {release}")


def _secrets(r: Runner, release_dir: PurePosixPath) -> None:
    """The host's env files, generated there when missing, linked into the release."""
    stack = r.stack
    shared = r.directory / "shared"
    files = render.secret_templates(stack, shipping.SECRET_TOKEN)
    for rel, template in files.items():
        target = shared / rel
        script, stdin = shipping.generate_secret_file(str(target), template)
        r.shell(f"mkdir -p -m 700 {shlex.quote(str(target.parent))}; {script}", stdin_text=stdin,
                what=f"generating {rel} on the host")
        r.shell(f"ln -sfn {shlex.quote(str(target))} {shlex.quote(str(release_dir / rel))}",
                what=f"linking {rel} into the release")


def _ship_image(r: Runner, image: str) -> None:
    """Build here and send the image over SSH, unless the host has it already."""
    host = r.remote
    local = Runner(Context(), stack=r.stack, dry=r.dry, env={"APP_IMAGE": image})
    r.say(f"building the image here ({image})")
    local.compose(compose.build([compose.APP]), what="building the image here")
    there = r.probe(["docker", "image", "inspect", "--format", "{{.Id}}", image])
    if there is not None and there.ok:
        r.say(f"{r.host} already has {image}: nothing to send")
        return
    r.say(f"sending {image} to {r.host} (docker save | ssh docker load)")
    ssh = shlex.join(["ssh", *shipping.ssh_options(host), shipping.destination(host), "docker", "load"])
    local.run(archive.pipeline(["docker", "save", image], ["sh", "-c", ssh]), what=f"sending {image} to {r.host}")


@task(help={
    "host": "The host to deploy to (a name from config/stack.toml).",
    "ship_image": "Build the image here and send it over SSH instead of building on the host (default: off).",
    "keep": "Releases to keep on the host (default: 5).",
    "timeout": "Seconds to wait for the new release to be healthy (default: 180).",
    "dry": "Print every command, remote and local, without running any.",
})
@task_errors
def deploy(c, host, ship_image=False, keep=5, timeout=180, dry=False):
    """Ship the code to a host as a new release, build, migrate, start, switch; roll back on failure."""
    started = time.monotonic()
    target = _host(c, host)
    conn = connect(target, dry=dry or c.config.run.dry)
    stack = load()
    digest = shipping.code_digest(ROOT)
    release = shipping.release_name(archive.stamp(), digest)
    r = Runner(conn, stack=stack, dry=dry, release=release)
    project = target.project or stack.project
    image = f"{project}-djangoapp:{digest}"
    release_dir = r.directory / "releases" / release
    r.shell(f"mkdir -p -m 755 {shlex.quote(str(r.directory / 'releases'))} {shlex.quote(str(r.directory / 'shared'))}",
            what="preparing the host's directory")
    with deploy_lock(r):
        previous = _readlink(r, r.directory / "current")
        r.say(f"deploying {release} to {r.host} (previous: {previous or 'none'})")
        link_dest = str(r.directory / "releases" / previous) if previous else None
        rsync = Runner(Context(), stack=stack, dry=r.dry).run(
            shipping.rsync(ROOT, target, str(release_dir), link_dest), hide=True, what="shipping the code (rsync)")
        sent = shipping.bytes_sent(rsync.stdout) if rsync is not None else 0
        r.say(f"shipped {release}: {sent} bytes sent")
        step = "preparing the release"
        live = False
        try:
            _secrets(r, release_dir)
            r.write(release_dir / ".env", shipping.release_env(project, target.http_port or stack.http_port,
                                                                image, os.environ), mode=0o644)
            step = "building the image"
            if ship_image:
                _ship_image(r, image)
            else:
                r.say(f"building on {r.host} ({image})")
                r.compose(compose.build([compose.APP]), what=f"building on {r.host}")
            step = "starting the release"
            live = True
            r.compose(compose.up(build=False, timeout=timeout), what=f"starting {release}")
            step = "migrating"
            app.migrate_all(r)
            step = "collecting static files"
            r.compose(compose.collectstatic(), what="collectstatic")
            step = "waiting for /healthz"
            wait_until_served(r, timeout)
            _switch(r, release)
        except (TaskError, Exception) as exc:
            reason = getattr(exc, "message", None) or str(exc)
            if live and previous:
                r.say(f"{step} failed; rolling back to {previous}")
                back = Runner(conn, stack=stack, dry=r.dry, release=previous)
                back.compose(compose.up(build=False, timeout=timeout), check=False, what=f"starting {previous}")
                r.shell(f"rm -rf {shlex.quote(str(release_dir))}", check=False)
                raise TaskError(f"deploy of {release} to {r.host} failed while {step} ({reason.removeprefix('error: ')}); "
                                f"rolled back to {previous}, which is serving again") from None
            r.shell(f"rm -rf {shlex.quote(str(release_dir))}", check=False)
            raise TaskError(f"deploy of {release} to {r.host} failed while {step} "
                            f"({reason.removeprefix('error: ')}); nothing was switched") from None
        old = _releases(r)[:-keep] if keep > 0 else []
        old = [name for name in old if name not in (release, previous)]
        if old:
            r.shell("rm -rf " + " ".join(shlex.quote(str(r.directory / "releases" / n)) for n in old), check=False)
    if not r.dry:
        r.say(f"deployed {release} to {r.host} in {time.monotonic() - started:.1f}s "
              f"(http://127.0.0.1:{target.http_port or stack.http_port}/ on the host)")


@task(help={
    "host": "The host to roll back (a name from config/stack.toml).",
    "timeout": "Seconds to wait for the previous release to be healthy (default: 180).",
    "dry": "Print every command without running any.",
})
@task_errors
def rollback(c, host, timeout=180, dry=False):
    """Go back to the release before the current one on a host."""
    target = _host(c, host)
    conn = connect(target, dry=dry or c.config.run.dry)
    r = Runner(conn, dry=dry)
    with deploy_lock(r):
        current = _readlink(r, r.directory / "current")
        releases = _releases(r)
        if current not in releases or releases.index(current) == 0:
            raise TaskError(f"no release before {current or 'the current one'} on {r.host} to roll back to")
        previous = releases[releases.index(current) - 1]
        back = Runner(conn, dry=dry, release=previous)
        back.compose(compose.up(build=False, timeout=timeout), what=f"starting {previous}")
        wait_until_served(back, timeout)
        _switch(r, previous)
        r.say(f"rolled {r.host} back from {current} to {previous}")


@task(help={"host": "The host whose deploy lock to release.", "dry": "Print the command only."})
@task_errors
def unlock(c, host, dry=False):
    """Release a stale deploy lock (after checking that no deploy runs)."""
    target = _host(c, host)
    r = Runner(connect(target, dry=dry or c.config.run.dry), dry=dry)
    path = shlex.quote(str(r.directory / ".deploy-lock"))
    result = r.shell(f"cat {path}/owner 2>/dev/null", check=False)
    holder = result.stdout.strip() if result is not None and result.ok else None
    r.shell(f"rm -rf {path}", what="releasing the lock")
    r.say(f"released the deploy lock on {r.host}" + (f" (held by {holder})" if holder else " (it was not held)"))


ns = Collection("deploy")
ns.add_task(deploy, default=True)
ns.add_task(unlock)
