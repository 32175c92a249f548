"""A fake cluster for fast tests of the cluster procedures: each node a Runner on a
HostTarget whose connection is a strict recorder. A node answers only the commands its
rules know (a regular expression matched against the whole command line, first match
wins); any other command is an error that fails the test, whichever code caught it."""
from __future__ import annotations

import json
import re

from invoke import Result

from tasks.execution.cluster import ClusterRun
from tasks.execution.runner import Runner
from tasks.execution.targets import HostTarget
from tasks.source.stack import loads
from tests.fakes import Recorder
from tests.stacks import COMMITTED, NODES

CLUSTER = '[clusters.prod]\nmanager = "node1"\nworkers = ["node2"]\nreplicas = 2\n'
MANAGER_INFO = json.dumps({"LocalNodeState": "active", "NodeID": "id1", "ControlAvailable": True})
WORKER_INFO = json.dumps({"LocalNodeState": "active", "NodeID": "id2", "ControlAvailable": False})


class UnexpectedCommand(AssertionError):
    pass


class StrictNode(Recorder):
    """A node's connection: RULES, (regular expression, answer) pairs, the answer a Result,
    a str (its stdout), a callable of the command, or an exception to raise."""

    def __init__(self, name: str, rules=()):
        super().__init__()
        self.name = name
        self.rules = list(rules)
        self.unexpected: list[str] = []

    def answer(self, pattern: str, answer) -> None:
        """A rule that wins over the ones given before."""
        self.rules.insert(0, (pattern, answer))

    def run(self, command, **kwargs):
        stream = kwargs.get("in_stream")
        self.calls.append((self.cwd, command, stream.read() if hasattr(stream, "read") else None))
        for pattern, answer in self.rules:
            if re.fullmatch(pattern, command, re.DOTALL):
                if callable(answer) and not isinstance(answer, type):
                    answer = answer(command)
                if isinstance(answer, BaseException):
                    raise answer
                if isinstance(answer, str):
                    answer = Result(stdout=answer)
                return Result(stdout=answer.stdout, stderr=answer.stderr, exited=answer.exited, command=command)
        self.unexpected.append(command)
        raise UnexpectedCommand(f"unexpected on {self.name}: {command}")


def fake_cluster(extra: str = "", here_rules=(), node_rules=None):
    """(ClusterRun, {node: StrictNode}, the StrictNode of this machine) for [clusters.prod]
    of node1 (manager) and node2."""
    stack = loads(COMMITTED + NODES + CLUSTER + extra)
    here = StrictNode("here", here_rules)
    conns = {name: StrictNode(name, (node_rules or {}).get(name, ())) for name in ("node1", "node2")}
    nodes = {name: Runner(HostTarget(conn, stack.hosts[name], stack, local_c=here), False)
             for name, conn in conns.items()}
    return ClusterRun(stack.clusters["prod"], nodes), conns, here


def commands(conn: StrictNode) -> list[str]:
    assert not conn.unexpected, conn.unexpected
    return conn.commands


class SwarmState:
    """A manager's Swarm as far as an undo sees it, its rules for a StrictNode: the stack's
    OBJECTS, (kind, name) pairs; each service's spec, SPEC(name, deploys) (after the DEPLOYS-th
    `docker stack deploy`, 0 before any), and the spec before it; a `docker stack deploy`
    makes MADE (and fails when FAIL(its number) says so); `docker service rollback` swaps a
    service's spec and previous spec, as Swarm does; `docker KIND rm` removes the names
    given but those IN_USE (Swarm refuses them); one removed that LINGERS is still listed
    that many times (a network whose containers are still stopping)."""

    def __init__(self, objects, made=(), spec=None, fail=lambda deploys: False, in_use=(), lingers=None):
        self.objects, self.made, self.in_use = set(objects), set(made), set(in_use)
        self.lingers, self.lingering = dict(lingers or {}), {}
        self.spec, self.fail, self.deploys = spec or (lambda name, deploys: {}), fail, 0
        self.specs = {name: self.spec_of(name) for kind, name in self.objects if kind == "service"}
        self.previous: dict[str, dict] = {}
        self.updates: dict[str, str] = {}

    def spec_of(self, name: str) -> dict:
        return {"Name": name, **self.spec(name, self.deploys)}

    def rules(self):
        return [(r"env .* docker stack deploy .*", self.deploy),
                (r"docker (service|secret|config|network) ls --filter label=com.docker.stack.namespace=hello .*",
                 self.ls),
                (r"docker service inspect hello_[\w ]+", self.inspect),
                (r"docker service rollback --detach hello_\w+", self.rollback),
                (r"docker (service|secret|config|network) rm .*", self.remove),
                (r"docker stack ps hello .*", "")]

    def deploy(self, command: str):
        self.deploys += 1
        self.objects |= self.made
        for kind, name in sorted(self.objects):
            if kind == "service" and self.spec_of(name) != self.specs.get(name):
                if name in self.specs:
                    self.previous[name], self.updates[name] = self.specs[name], "updating"
                self.specs[name] = self.spec_of(name)
        return Result(exited=1, stderr="update failed\n") if self.fail(self.deploys) else ""

    def ls(self, command: str) -> str:
        kind = command.split()[1]
        listed = sorted({*self.objects, *(entry for entry, count in self.lingering.items() if count > 0)})
        for entry in listed:
            if entry[0] == kind and entry in self.lingering:
                self.lingering[entry] -= 1
        return "".join(f"{name}\n" for k, name in listed if k == kind)

    def inspect(self, command: str) -> str:
        return json.dumps([{"Spec": self.specs[name], "PreviousSpec": self.previous.get(name),
                            "UpdateStatus": {"State": self.updates[name]} if name in self.updates else None}
                           for name in command.split()[3:] if name in self.specs])

    def rollback(self, command: str) -> str:
        name = command.split()[-1]
        self.specs[name], self.previous[name] = self.previous[name], self.specs[name]
        self.updates[name] = "rollback_completed"
        return ""

    def remove(self, command: str):
        kind, names = command.split()[1], command.split()[3:]
        for name in names:
            if (kind, name) in self.objects and (kind, name) not in self.in_use:
                self.objects.discard((kind, name))
                self.specs.pop(name, None)
                self.lingering[(kind, name)] = self.lingers.get((kind, name), 0)
        if {(kind, name) for name in names} & self.in_use:
            return Result(exited=1, stderr=f"Error response from daemon: {kind} is in use\n")
        return ""
