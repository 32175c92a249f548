"""The one place that runs commands.

A `Runner` wraps `c`: an Invoke `Context` here or a Fabric `Connection` on a host, which
offer the same `run`. Plans (argv lists from tasks.compose) go in; each is quoted once with
shlex.join and handed to `c.run`. Dry runs print the command instead and run nothing, not
even the probes that find the engine and the compose program.
"""
from __future__ import annotations

import functools
import io
import os
import shlex
import sys
from pathlib import Path, PurePosixPath

from invoke.exceptions import Exit

from . import compose
from .stack import ROOT, StackError, load

# Which compose program a host has, found once per host and process.
_COMPOSE_PROGRAM: dict[str, list[str]] = {}
_ENGINE_OK: set[str] = set()


class TaskError(Exit):
    """A failure explained in one line; Invoke prints it and exits with status 1."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(f"error: {message}", code)


def task_errors(func):
    """Turn StackError (bad config or input) into a one-line TaskError."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except StackError as exc:
            raise TaskError(str(exc)) from None

    return wrapper


def is_dry(c, dry=False) -> bool:
    return bool(dry or c.config.run.dry)


def interactive() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty()


def confirm(yes: bool, question: str, consequence: str) -> None:
    """Go on with --yes; otherwise ask on a terminal, and refuse when there is none."""
    if yes:
        return
    if not interactive():
        raise TaskError(f"{consequence}: add --yes to confirm")
    if input(f"{question} Type 'yes': ").strip() != "yes":
        raise TaskError("nothing changed")


class Runner:
    """Runs plans through `c`. With a Fabric connection and its Host (`c.stack_host`), the
    same plans run in the host's deployed directory, under the host's project name."""

    def __init__(self, c, stack=None, dry=False, env=None, release=None):
        self.c = c
        self.stack = stack or load()
        self.dry = is_dry(c, dry)
        self.env = dict(env or {})
        self.remote = getattr(c, "stack_host", None)
        if self.remote:
            self.host = self.remote.name
            self.directory = PurePosixPath(self.remote.directory)
            # Tasks run in the live release; a deploy runs in the one it is preparing.
            self.root = self.directory / "releases" / release if release else self.directory / "current"
            self.backups = self.directory / "shared" / "backups"
            self.project = self.remote.project or self.stack.project
            self.http_port = self.remote.http_port or self.stack.http_port
        else:
            self.host = "local"
            self.root = ROOT
            self.backups = ROOT / "backups"
            # Compose's own variables override the source of truth for one run, as users
            # of Compose expect (a second copy of the stack on another port, the tests).
            self.project = os.environ.get("COMPOSE_PROJECT_NAME") or self.stack.project
            self.http_port = int(self.env.get("HTTP_PORT") or os.environ.get("HTTP_PORT") or self.stack.http_port)

    def say(self, message: str) -> None:
        print(message, flush=True)

    # -- running ------------------------------------------------------------------------
    def run(self, argv, *, check=True, hide=False, pty=False, stdin=False, what=None):
        """Run ARGV; with CHECK a non-zero exit becomes a one-line TaskError naming WHAT.
        Standard input reaches the command only with PTY or STDIN (piped SQL, say)."""
        command = shlex.join(str(a) for a in argv)
        if self.dry:
            self.say(f"[dry] {self._where()}{command}")
            return None
        result = self._run(command, warn=True, hide=hide, pty=pty, echo=not hide,
                           in_stream=None if pty or stdin else False)
        if check and result.failed:
            raise TaskError(f"{what or command} failed (exit status {result.exited})")
        return result

    def probe(self, argv):
        """Run a read-only command quietly and return its Result (never in a dry run)."""
        if self.dry:
            return None
        return self._run(shlex.join(argv), warn=True, hide=True, in_stream=False)

    def _where(self) -> str:
        return f"[{self.host}:{self.root}] " if self.remote else ""

    def _run(self, command, in_release=True, **kwargs):
        if not self.remote:
            return self.c.run(command, env=self.env, **kwargs)
        if not in_release:
            return self.c.run(command, **kwargs)
        # On a host, run in the deployed release; the release's .env gives compose the
        # project name, port and image names, so nothing depends on the SSH environment.
        with self.c.cd(str(self.root)):
            return self.c.run(command, **kwargs)

    # -- files, here or on the host ---------------------------------------------------------
    def shell(self, script: str, *, stdin_text=None, check=True, what=None):
        """Run a small shell SCRIPT quietly (file operations); input comes from STDIN_TEXT."""
        if self.dry:
            self.say(f"[dry] {self._where()}{script}")
            return None
        stream = io.StringIO(stdin_text) if stdin_text is not None else False
        # Absolute paths only: the release directory may not exist yet.
        result = self._run(f"bash -c {shlex.quote(script)}", in_release=False, warn=True, hide=True, in_stream=stream)
        if check and result.failed:
            reason = (result.stderr.strip().splitlines() or [f"exit status {result.exited}"])[-1]
            raise TaskError(f"{what or script} failed on {self.host}: {reason}")
        return result

    def write(self, path, text: str, mode: int = 0o600) -> None:
        """Write PATH in one step (temporary file, then rename)."""
        if not self.remote:
            if self.dry:
                self.say(f"[dry] would write {path}")
                return
            from .files import write_atomic

            write_atomic(Path(path), text, mode)
            return
        q = shlex.quote(str(path))
        self.shell(f"umask 077; t={q}.$$.tmp; cat > \"$t\" && chmod {mode:o} \"$t\" && mv -f \"$t\" {q}",
                   stdin_text=text, what=f"writing {path}")

    def mkdir(self, path) -> None:
        if not self.remote:
            if not self.dry:
                Path(path).mkdir(mode=0o700, parents=True, exist_ok=True)
            return
        self.shell(f"mkdir -p -m 700 {shlex.quote(str(path))}", what=f"creating {path}")

    def exists(self, path) -> bool:
        if not self.remote:
            return Path(path).exists()
        if self.dry:
            return False
        return self.shell(f"test -e {shlex.quote(str(path))}", check=False).ok

    def rename(self, source, target) -> None:
        if not self.remote:
            if not self.dry:
                os.replace(source, target)
            return
        self.shell(f"mv -f {shlex.quote(str(source))} {shlex.quote(str(target))}", what=f"renaming {source}")

    def remove(self, *paths) -> None:
        if not paths:
            return
        if not self.remote:
            if not self.dry:
                for path in paths:
                    Path(path).unlink(missing_ok=True)
            return
        self.shell("rm -f -- " + " ".join(shlex.quote(str(p)) for p in paths), check=False)

    def read(self, path) -> str:
        if not self.remote:
            return Path(path).read_text(encoding="utf-8")
        return self.shell(f"cat {shlex.quote(str(path))}", what=f"reading {path}").stdout

    def size(self, path) -> int:
        if not self.remote:
            return 0 if self.dry else Path(path).stat().st_size
        result = self.shell(f"stat -c %s {shlex.quote(str(path))}", check=False)
        return int(result.stdout.strip()) if result and result.ok else 0

    # -- the engine and compose -----------------------------------------------------------
    def ensure_engine(self) -> None:
        if self.dry or self.host in _ENGINE_OK:
            return
        result = self.probe(compose.engine_version())
        if result.exited == 127:
            raise TaskError(
                f"the docker command is not installed on {self.host}: install Docker Engine "
                "(https://docs.docker.com/engine/install/) and run `inv doctor`"
            )
        if result.failed:
            reason = (result.stderr.strip().splitlines() or ["no answer"])[-1]
            raise TaskError(
                f"no Docker engine is reachable on {self.host} ({reason}); start it "
                "(`sudo systemctl start docker` or Docker Desktop) and run `inv doctor`"
            )
        _ENGINE_OK.add(self.host)

    def compose_program(self) -> list[str]:
        """`docker compose` (v2) when available, else `docker-compose` (v1)."""
        if self.dry:
            return ["docker", "compose"]
        if self.host not in _COMPOSE_PROGRAM:
            if self.probe(compose.compose_v2_version()).ok:
                _COMPOSE_PROGRAM[self.host] = ["docker", "compose"]
            elif self.probe(compose.compose_v1_version()).ok:
                _COMPOSE_PROGRAM[self.host] = ["docker-compose"]
            else:
                raise TaskError(
                    f"Docker Compose is not installed on {self.host}: install the compose "
                    "plugin (https://docs.docker.com/compose/install/) and run `inv doctor`"
                )
        return _COMPOSE_PROGRAM[self.host]

    def compose_argv(self, args) -> list[str]:
        return compose.compose_prefix(self.compose_program(), self.project) + list(args)

    def compose(self, args, **kwargs):
        self.ensure_engine()
        kwargs.setdefault("what", f"compose {args[0]}")
        return self.run(self.compose_argv(args), **kwargs)

    def compose_probe(self, args):
        self.ensure_engine()
        return self.probe(self.compose_argv(args))

    def running_services(self) -> set[str]:
        result = self.compose_probe(compose.running_services())
        if result is None or result.failed:
            return set()
        return set(result.stdout.split())

    def require_running(self, service: str) -> None:
        if self.dry:
            return
        if service not in self.running_services():
            raise TaskError(f"service {service} is not running: start the stack with `inv up`")
