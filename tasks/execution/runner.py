"""The one place that runs commands, and the one place that knows about dry runs.

A Runner holds a target (targets.py: here, or a host over SSH). Plans (argv lists from
tasks.plans) go in; each is quoted once with shlex.join and run on the target. In a dry run
the runner prints what it would run or change, runs nothing (no command, no probe, no file
operation, here or on a host) and answers as Invoke's own dry mode does, with an empty
successful result. The facts a dry run cannot learn are assumed as for a running stack:
every service runs, and no file exists on the target yet. A command whose output later
commands use (a container's id, a checksum) says what it prints (`prints="helper
container"`), and a dry run answers with a placeholder of that name (HELPER_CONTAINER),
which those commands then print. Callers never ask whether the run is dry: outcome lines go
through `report`, which a dry run leaves out, and a requirement of what was read goes
through `require`, which a dry run, having read nothing, goes on without.
"""
from __future__ import annotations

import io
import shlex
import sys
import time

from invoke import Result

from ..errors import TaskError, last_line
from ..plans import compose

ENGINE_DOCS = "https://docs.docker.com/engine/install/"
COMPOSE_DOCS = "https://docs.docker.com/compose/install/linux/"


def engine_problem(result, where: str = "") -> tuple[str, str] | None:
    """(what is wrong, how to fix it) from the answer to `docker version`, or None."""
    if result.ok:
        return None
    if result.exited == 127:
        return f"the docker command is not installed{where}", f"install Docker Engine ({ENGINE_DOCS})"
    return (f"no Docker engine is reachable{where} ({last_line(result.stderr, 'no answer')})",
            "start it (`sudo systemctl start docker` or Docker Desktop)")


def compose_problem(result, where: str = "") -> tuple[str, str] | None:
    """(what is wrong, how to fix it) from the answer to `docker compose version`, or None."""
    if result.ok:
        return None
    return (f"Docker Compose is not installed{where}",
            f"install the Compose v2 plugin (package docker-compose-plugin, or {COMPOSE_DOCS}); "
            "docker-compose v1 is end-of-life and not supported")


def dry_run(c, flag: bool) -> bool:
    """Whether a task runs dry: its own --dry, or Invoke's (`inv --dry TASK`, run.dry)."""
    return bool(flag or c.config.run.dry)


def placeholder(prints: str | None) -> str:
    """A dry run's answer for a command that PRINTS something later commands use."""
    return "_".join(prints.upper().split()) if prints else ""


def interactive() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty()


def poll(check, timeout: float, interval: float) -> tuple[str | None, float]:
    """Call CHECK (None when done, else why not) until done or TIMEOUT seconds have passed;
    return (why not, or None when done; seconds waited)."""
    started = time.monotonic()
    while True:
        why = check()
        waited = time.monotonic() - started
        if why is None or waited > timeout:
            return why, waited
        time.sleep(interval)


class Runner:
    """Runs plans on a target, or prints them in a dry run."""

    def __init__(self, target, dry: bool = False):
        self.target = target
        self.dry = dry

    # What the tasks read of the target.
    @property
    def stack(self):
        return self.target.stack

    @property
    def project(self) -> str:
        return self.target.project

    @property
    def root(self):
        return self.target.root

    @property
    def backups(self):
        return self.target.backups

    def with_stack(self, stack) -> "Runner":
        return Runner(self.target.with_stack(stack), self.dry)

    def in_release(self, release: str) -> "Runner":
        return Runner(self.target.in_release(release), self.dry)

    def here(self, env=None) -> "Runner":
        """A runner for this machine, for the part of a host's task that happens here."""
        return Runner(self.target.here(env), self.dry)

    # -- saying -----------------------------------------------------------------------------
    def say(self, message: str) -> None:
        """Progress: printed in a dry run too."""
        print(message, flush=True)

    def report(self, message: str) -> None:
        """An outcome: a dry run has none, so it prints nothing."""
        if not self.dry:
            self.say(message)

    def _would(self, text: str) -> Result:
        self.say(f"[dry] {self.target.where()}{text}")
        return Result(stdout="", stderr="", exited=0, command=text)

    # -- running ------------------------------------------------------------------------------
    def run(self, argv, *, check=True, hide=False, pty=False, stdin=False, stdin_text=None, what=None,
            prints=None, anywhere=False) -> Result:
        """Run ARGV in the stack's directory (ANYWHERE: wherever the session starts); with
        CHECK a non-zero exit becomes a one-line TaskError naming WHAT. Standard input reaches
        the command only with PTY or STDIN, or is STDIN_TEXT. PRINTS: what its output is,
        when later commands use it (a dry run answers a placeholder of that name)."""
        command = shlex.join(str(a) for a in argv)
        if self.dry:
            result = self._would(command)
            result.stdout = placeholder(prints)
            return result
        stream = io.StringIO(stdin_text) if stdin_text is not None else None if pty or stdin else False
        result = self.target.execute(command, warn=True, hide=hide, pty=pty, echo=not hide, in_stream=stream,
                                     in_root=not anywhere)
        if check and result.failed:
            detail = f": {last_line(result.stderr, '')}" if hide and result.stderr.strip() else ""
            raise TaskError(f"{what or command} failed (exit status {result.exited}){detail}")
        return result

    def probe(self, argv, *, stdin_text=None, prints=None, anywhere=False) -> Result:
        """Run a read-only command quietly and return its result; a dry run runs none,
        prints nothing and answers empty, or a placeholder named after what it PRINTS (as
        `run`). ANYWHERE: not in the stack's directory, which may not exist yet (a first deploy)."""
        if self.dry:
            return Result(stdout=placeholder(prints), stderr="", exited=0, command=shlex.join(str(a) for a in argv))
        stream = io.StringIO(stdin_text) if stdin_text is not None else False
        return self.target.execute(shlex.join(str(a) for a in argv), warn=True, hide=True, in_stream=stream,
                                   in_root=not anywhere)

    def shell(self, script: str, *, stdin_text=None, check=True, what=None) -> Result:
        """A small shell SCRIPT on the target (file operations), quietly."""
        if self.dry:
            return self._would(script)
        return self.target.shell(script, stdin_text=stdin_text, check=check, what=what)

    def do(self, description: str, func, *args, **kwargs):
        """FUNC(*ARGS) unless this is a dry run, which prints `would DESCRIPTION` instead."""
        if self.dry:
            self._would(f"would {description}")
            return None
        return func(*args, **kwargs)

    def wait_until(self, description: str, check, timeout: float, interval: float = 0.5,
                   hint: str = "", failure: str = "did not answer 200") -> float:
        """Poll CHECK (None when done, else why not) until done; return the seconds waited.
        Past TIMEOUT: "DESCRIPTION FAILURE within TIMEOUT (last: why)HINT"."""
        if self.dry:
            self._would(f"would wait for {description}")
            return 0.0
        why, waited = poll(check, timeout, interval)
        if why is not None:
            raise TaskError(f"{description} {failure} within {timeout:.0f}s (last: {why}){hint}")
        return waited

    def require(self, condition: bool, message: str) -> bool:
        """Fail with MESSAGE unless CONDITION: a precondition of running, not of planning, so
        a dry run goes on without it. Returns CONDITION: what depends on it (a fact that was
        read) is left out when it does not hold, which only a dry run gets past."""
        if not condition and not self.dry:
            raise TaskError(message)
        return condition

    def confirm(self, yes: bool, question: str, consequence: str) -> None:
        """Go on with --yes, or in a dry run (nothing will change); otherwise ask on a
        terminal, and refuse when there is none."""
        if yes or self.dry:
            return
        if not interactive():
            raise TaskError(f"{consequence}: add --yes to confirm")
        if input(f"{question} Type 'yes': ").strip() != "yes":
            raise TaskError("nothing changed")

    # -- files on the target --------------------------------------------------------------------
    def write(self, path, text: str, mode: int = 0o600) -> None:
        """Write PATH in one step (temporary file, then rename)."""
        self.do(f"write {path}", self.target.write, path, text, mode)

    def mkdir(self, path) -> None:
        self.do(f"create {path}", self.target.mkdir, path)

    def rename(self, source, target) -> None:
        self.do(f"rename {source} to {target}", self.target.rename, source, target)

    def remove(self, *paths) -> None:
        if paths:
            self.do("delete " + " ".join(map(str, paths)), self.target.remove, paths)

    def exists(self, path) -> bool:
        return False if self.dry else self.target.exists(path)

    # -- bytes through a command on this machine (pipes.py; the target is a LocalTarget) ----------
    def feed(self, argv, write, *, what: str) -> None:
        """Run ARGV with WRITE(stdin) writing its standard input as it makes the bytes; a
        failure is one TaskError naming WHAT, with the command's own last word."""
        if self.dry:
            self._would(shlex.join(str(a) for a in argv))
            return
        code, errors = self.target.feed(argv, write)
        if code != 0:
            raise TaskError(f"{what} failed: {last_line(errors, f'exit status {code}')}")

    def read_input(self, argv, path, tap, read) -> tuple[int, str | None]:
        """pipes.filter_file: the file at PATH through ARGV, for READ. For an input a user
        names (a backup to restore), which a dry run reads too, as it reads the command line."""
        return self.target.filter_file(argv, path, tap, read)

    def size(self, path) -> int:
        return 0 if self.dry else self.target.size(path)

    # -- the engine and compose -------------------------------------------------------------------
    def ensure_engine(self) -> None:
        """Docker and Compose v2 answer on the target (checked once per target)."""
        facts = self.target.facts
        if self.dry or facts.get("engine"):
            return
        for plan, diagnose in ((compose.engine_version(), engine_problem), (compose.compose_version(), compose_problem)):
            problem = diagnose(self.probe(plan, anywhere=True), f" on {self.target.name}")
            if problem:
                raise TaskError(f"{problem[0]}: {problem[1]}, then run `inv doctor`")
        facts["engine"] = True

    def compose_argv(self, args) -> list[str]:
        return compose.compose_prefix(compose.PROGRAM, self.project) + list(args)

    def compose(self, args, **kwargs) -> Result:
        self.ensure_engine()
        kwargs.setdefault("what", f"compose {args[0]}")
        return self.run(self.compose_argv(args), **kwargs)

    def compose_probe(self, args) -> Result:
        self.ensure_engine()
        return self.probe(self.compose_argv(args))

    def running_services(self) -> set[str]:
        """The services running now; in a dry run, every service of the stack."""
        if self.dry:
            return {compose.APP, "nginx", "front", *(db.name for db in self.stack.databases),
                    *(service.name for service in self.stack.services)}
        self.ensure_engine()
        result = self.probe(compose.running_services(self.project))
        return set(result.stdout.split()) if result.ok else set()

    def require_running(self, service: str) -> None:
        if service not in self.running_services():
            raise TaskError(f"service {service} is not running: start the stack with `inv up`")
