"""A cluster's nodes, each with its own Runner (a HostTarget over SSH): what a cluster task
works with, as a host task works with one Runner."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ..errors import TaskError, reason
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

    def each(self, work) -> None:
        """WORK(name, runner) on every node at once (each its own SSH connection); once all
        have finished, the first failure in the nodes' order, naming its node."""
        def one(item):
            name, node = item
            try:
                work(name, node)
                return None
            except Exception as exc:  # every node finishes, whatever happened on another
                return exc if isinstance(exc, TaskError) and name in str(exc) else TaskError(f"{name}: {reason(exc)}")

        with ThreadPoolExecutor(max_workers=len(self.nodes)) as pool:
            failures = [exc for exc in pool.map(one, self.nodes.items()) if exc is not None]
        if failures:
            raise failures[0]
