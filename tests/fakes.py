"""A recording stand-in for a Fabric connection (or an Invoke context), so that what runs on
a host is checked as exact commands without an SSH server or an engine."""
from __future__ import annotations

import shlex
from contextlib import contextmanager
from pathlib import Path

from invoke import Config, Result


class Recorder:
    """Records every command with the directory it ran in and the input it was given.
    ANSWERS maps a command (exact) to a Result, or to an exception to raise; anything
    else succeeds with empty output."""

    def __init__(self, answers=None):
        self.answers = dict(answers or {})
        self.calls: list[tuple[str | None, str, str | None]] = []
        self.transfers: list[tuple[str, str, str]] = []
        self.cwd = None
        self.config = Config()

    @contextmanager
    def cd(self, path):
        previous, self.cwd = self.cwd, path
        try:
            yield
        finally:
            self.cwd = previous

    def run(self, command, **kwargs):
        stream = kwargs.get("in_stream")
        self.calls.append((self.cwd, command, stream.read() if hasattr(stream, "read") else None))
        answer = self.answers.get(command, Result(stdout="", exited=0))
        if isinstance(answer, BaseException):
            raise answer
        return Result(stdout=answer.stdout, stderr=answer.stderr, exited=answer.exited, command=command)

    def get(self, remote, local):
        self.transfers.append(("get", remote, local))
        Path(local).write_text(f"copy of {remote}")

    def put(self, local, remote):
        self.transfers.append(("put", local, remote))

    @property
    def commands(self) -> list[str]:
        return [command for _, command, _ in self.calls]


class Engine(Recorder):
    """A Recorder that also keeps the app's containers, as the engine would, for the rollout
    (tasks/procedures/rollout.py). APP maps a container's name to "STATE HEALTH"; the
    containers there were made in the directory MADE_IN (None: here). `compose ps --all
    --quiet djangoapp` and `docker inspect` answer from APP; the scale-up starts the next
    PROJECT-djangoapp-N, in state NEW, made in the directory it ran in; `docker stop` exits
    and `docker rm --force` removes containers. The dry run of `up` answers Running when
    every container was made in the directory it runs in (that compose file, that image),
    else Recreate. Containers go by their names (the engine takes a name for an id).
    ANSWERS still win over all of this."""

    def __init__(self, answers=None, project="hello-prod", app=None, made_in=None, new="running healthy"):
        super().__init__(answers)
        self.project, self.new = project, new
        self.databases = ("database1",)
        self.app = dict({f"{project}-djangoapp-1": "running healthy"} if app is None else app)
        self.made_in = {name: made_in for name in self.app}

    def run(self, command, **kwargs):
        result = super().run(command, **kwargs)
        if command in self.answers:
            return result
        words = shlex.split(command)
        if words[:4] == ["docker", "compose", "--project-name", self.project]:
            words = words[4:]
            if words == ["ps", "--all", "--quiet", "djangoapp"]:
                return Result(stdout="".join(f"{name}\n" for name in self.app), command=command)
            if words[:2] == ["--dry-run", "up"]:
                action = "Running" if all(self.made_in[n] == self.cwd for n in self.app) else "Recreate"
                return Result(stderr="".join(f" Container {n}  {action}\n" for n in self.app), command=command)
            if words[0] == "up" and "--scale" in words:
                name = f"{self.project}-djangoapp-{max([int(n.rsplit('-', 1)[1]) for n in self.app] + [0]) + 1}"
                self.app[name], self.made_in[name] = self.new, self.cwd
        elif words[:3] == ["docker", "ps", "--all"] and f"label=com.docker.compose.project={self.project}" in words:
            # plans.rollout.service_containers: the databases run too
            return Result(stdout="".join(f"{db}-id {db}\n" for db in self.databases), command=command)
        elif words[:3] == ["docker", "inspect", "--format"]:
            if "{{json .Config.Healthcheck}}" in words[3]:  # plans.rollout.health_tests: no test of its own
                states = {**{f"{db}-id": "running healthy" for db in self.databases}, **self.app}
                return Result(stdout="".join("\t".join([f"/{n}", *states[n].split(), "null"]) + "\n"
                                             for n in words[4:] if n in states), command=command)
            return Result(stdout="".join(f"/{n} {self.app[n]}\n" for n in words[4:] if n in self.app),
                          command=command)
        elif words[:2] == ["docker", "stop"]:
            for name in words[2:]:
                self.app[name] = "exited unhealthy"
        elif words[:3] == ["docker", "rm", "--force"]:
            for name in words[3:]:
                self.app.pop(name, None)
        return result
