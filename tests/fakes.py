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
    ANSWERS still win over all of this.

    PROCESSES ([[processes]]) are kept the same way, by container name: "SERVICE STATE
    HEALTH", made in the directory of PROCESS_MADE_IN; a process container started by `up`
    is NEW_PROCESS, one created by `up --no-start` is `created`, until `docker start`.
    RUNNING_MOST records, by process, the most of its containers that ever ran at once."""

    def __init__(self, answers=None, project="hello-prod", app=None, made_in=None, new="running healthy",
                 processes=None, process_made_in=None, new_process="running healthy"):
        super().__init__(answers)
        self.project, self.new, self.new_process = project, new, new_process
        self.databases = ("database1",)
        self.app = dict({f"{project}-djangoapp-1": "running healthy"} if app is None else app)
        self.made_in = {name: made_in for name in self.app}
        self.processes = dict(processes or {})
        self.made_in.update({name: process_made_in for name in self.processes})
        self.running_most: dict[str, int] = {}
        self._count_running()

    def of(self, service):
        return [n for n, state in self.processes.items() if state.split()[0] == service]

    def _count_running(self):
        for name, state in self.processes.items():
            service = state.split()[0]
            running = sum(1 for n in self.of(service) if self.processes[n].split()[1] == "running")
            self.running_most[service] = max(self.running_most.get(service, 0), running)

    def _states(self):
        return {**self.app, **{n: state.split(" ", 1)[1] for n, state in self.processes.items()}}

    def run(self, command, **kwargs):
        result = super().run(command, **kwargs)
        if command in self.answers:
            return result
        words = shlex.split(command)
        try:
            return self._process_command(words, command) or self._app_command(words, command, result)
        finally:
            self._count_running()

    def _process_command(self, words, command):
        """What the engine does to process containers (None: not about them)."""
        labelled = [w for w in words if w.startswith("label=com.docker.compose.service=")]
        if words[:3] == ["docker", "ps", "--all"] and labelled:  # plans.rollout.service_ids
            service = labelled[0].rsplit("=", 1)[1]
            names = self.app if service == "djangoapp" else self.of(service)
            return Result(stdout="".join(f"{n}\n" for n in names), command=command)
        if words[:4] == ["docker", "compose", "--project-name", self.project] and words[-1] != "djangoapp":
            words = words[4:]
            service = words[-1]
            if words == ["ps", "--all", "--quiet", service]:
                return Result(stdout="".join(f"{n}\n" for n in self.of(service)), command=command)
            if words[:2] == ["--dry-run", "up"] and "--scale" in words:
                ok = all(self.made_in[n] == self.cwd for n in self.of(service))
                return Result(stderr="".join(f" Container {n}  {'Running' if ok else 'Recreate'}\n"
                                             for n in self.of(service)), command=command)
            if words[0] == "up" and "--scale" in words:
                count = int(words[words.index("--scale") + 1].split("=")[1])
                state = "created none" if "--no-start" in words else self.new_process
                for name in self.of(service):
                    if state != "created none" and self.processes[name].split()[1] in ("exited", "created"):
                        self.processes[name] = f"{service} {self.new_process}"  # `up` starts a stopped one
                while len(self.of(service)) < count:
                    number = max([int(n.rsplit("-", 1)[1]) for n in self.of(service)] + [0]) + 1
                    name = f"{self.project}-{service}-{number}"
                    self.processes[name], self.made_in[name] = f"{service} {state}", self.cwd
                return Result(command=command)
            return None
        if words[:2] == ["docker", "start"]:
            for name in words[2:]:
                self.processes[name] = f"{self.processes[name].split()[0]} {self.new_process}"
            return Result(command=command)
        return None

    def _app_command(self, words, command, result):
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
                states = {**{f"{db}-id": "running healthy" for db in self.databases}, **self._states()}
                return Result(stdout="".join("\t".join([f"/{n}", *states[n].split(), "null"]) + "\n"
                                             for n in words[4:] if n in states), command=command)
            states = self._states()
            return Result(stdout="".join(f"/{n} {states[n]}\n" for n in words[4:] if n in states),
                          command=command)
        elif words[:2] == ["docker", "stop"]:
            for name in words[2:]:
                if name in self.processes:
                    self.processes[name] = f"{self.processes[name].split()[0]} exited none"
                else:
                    self.app[name] = "exited unhealthy"
        elif words[:3] == ["docker", "rm", "--force"]:
            for name in words[3:]:
                self.app.pop(name, None)
                self.processes.pop(name, None)
        return result
