"""A cluster as a task sees it: a target with the runner's face (its name, stack, project,
saying and confirming, as a Runner has them) over its nodes, each a Runner on a HostTarget
over SSH with no release root of its own. What happens on the cluster as a whole is
said and decided on the manager, which holds the releases, the ledger and the lock."""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import TaskError, reason
from ..source.stack import Cluster
from .runner import Runner
from .ssh import in_parallel


@dataclass(frozen=True)
class ClusterPlace:
    """How messages name a cluster and what a command line adds to act on it (as a
    target's name, `on` and `host_flag`)."""
    name: str

    @property
    def on(self) -> str:
        return f" on cluster {self.name}"

    @property
    def host_flag(self) -> str:
        return f" --cluster {self.name}"

    # What `inv doctor --cluster` checks (tasks/doctor.py CHECKS).
    doctor_checks = ("swarm", "cluster_processes", "schedules")


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
    def target(self) -> ClusterPlace:
        return ClusterPlace(self.cluster.name)

    @property
    def name(self) -> str:
        """The cluster as messages name it."""
        return f"cluster {self.cluster.name}"

    @property
    def stack(self):
        return self.manager.stack

    @property
    def project(self) -> str:
        return self.manager.project

    def say(self, message: str) -> None:
        self.manager.say(message)

    def report(self, message: str) -> None:
        self.manager.report(message)

    def confirm(self, yes: bool, question: str, consequence: str) -> None:
        self.manager.confirm(yes, question, consequence)

    def require(self, condition: bool, message: str) -> bool:
        return self.manager.require(condition, message)

    def each(self, work) -> None:
        """WORK(name, runner) on every node at once; once all have finished, the first
        failure in the nodes' order, naming its node."""
        for name, exc in in_parallel(self.nodes, work):
            if exc is not None:
                raise exc if isinstance(exc, TaskError) and name in str(exc) else TaskError(f"{name}: {reason(exc)}")
