"""A cluster's nodes, each with its own Runner (a HostTarget over SSH): what a cluster task
works with, as a host task works with one Runner."""
from __future__ import annotations

from dataclasses import dataclass

from ..source.stack import Cluster
from .runner import Runner


@dataclass
class ClusterRun:
    cluster: Cluster
    nodes: dict[str, Runner]   # by [hosts] name, the manager first

    @property
    def manager(self) -> Runner:
        return self.nodes[self.cluster.manager]

    @property
    def workers(self) -> dict[str, Runner]:
        return {name: self.nodes[name] for name in self.cluster.workers}

    @property
    def dry(self) -> bool:
        return self.manager.dry

    def say(self, message: str) -> None:
        self.manager.say(message)

    def report(self, message: str) -> None:
        self.manager.report(message)
