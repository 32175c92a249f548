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
