"""Plans for a Docker Swarm cluster ([clusters.NAME] in config/stack.toml; procedures/swarm.py
runs them on its nodes over SSH): what each node's engine says of its swarm, and the
commands that make the cluster what the source of truth says.

Swarm itself does the scheduling, the rolling updates and the rescheduling of a lost node's
replicas: nothing here replaces it.
"""
from __future__ import annotations

import json
import shlex
from dataclasses import dataclass

# The node label that pins a database's service to the node holding its volume.
LABEL_PREFIX = "hello.database."
# Swarm's ports between nodes: cluster management (TCP 2377), gossip (7946), overlay (UDP 4789).
MANAGEMENT_PORT = 2377


@dataclass(frozen=True)
class NodeState:
    """What a node's engine says of its swarm membership (`docker info`)."""
    state: str              # inactive | pending | active | error | locked
    node_id: str
    cluster_id: str
    manager: bool           # ControlAvailable: a manager of its swarm
    error: str

    @property
    def member(self) -> bool:
        return self.state == "active" and bool(self.cluster_id or self.node_id)


def info() -> list[str]:
    return ["docker", "info", "--format", "{{json .Swarm}}"]


def parse_info(stdout: str) -> NodeState:
    data = json.loads(stdout.strip() or "{}")
    cluster = data.get("Cluster") or {}
    return NodeState(state=data.get("LocalNodeState", "inactive") or "inactive", node_id=data.get("NodeID", ""),
                     cluster_id=cluster.get("ID", ""), manager=bool(data.get("ControlAvailable")),
                     error=data.get("Error", ""))


def init(address: str) -> list[str]:
    """Make the manager's swarm, advertising the address the other nodes reach it at."""
    return ["docker", "swarm", "init", "--advertise-addr", address, "--listen-addr", f"{address}:{MANAGEMENT_PORT}"]


def join_token() -> list[str]:
    return ["docker", "swarm", "join-token", "--quiet", "worker"]


def rotate_join_token() -> list[str]:
    """A new worker token: the one a join just used (which `docker swarm join` takes on its
    command line only, where the worker's other users could read it) is then worthless."""
    return ["docker", "swarm", "join-token", "--rotate", "--quiet", "worker"]


def join_script(manager_address: str, address: str) -> str:
    """A worker joins, the token read from standard input (never in our command line, our
    output or the SSH session's command)."""
    return (f'read -r token && exec docker swarm join --token "$token" --advertise-addr {shlex.quote(address)} '
            f"{shlex.quote(f'{manager_address}:{MANAGEMENT_PORT}')}")


def cluster_id() -> list[str]:
    """On a manager: the swarm's ID, which a worker's `docker info` also shows."""
    return ["docker", "info", "--format", "{{.Swarm.Cluster.ID}}"]


def nodes() -> list[str]:
    """On a manager: every node, one JSON object per line."""
    return ["docker", "node", "ls", "--format", "{{json .}}"]


def inspect_nodes(ids) -> list[str]:
    return ["docker", "node", "inspect", *ids]


def labels(node: dict) -> dict:
    return (node.get("Spec") or {}).get("Labels") or {}


def label_changes(node: dict, wanted: set[str]) -> tuple[list[str], list[str]]:
    """(labels to add, labels to remove) of our prefix on NODE (`docker node inspect`'s
    object) for it to carry exactly WANTED."""
    have = {key for key, value in labels(node).items() if key.startswith(LABEL_PREFIX) and value == "true"}
    return sorted(wanted - have), sorted(have - wanted)


def update_labels(node_id: str, add, remove) -> list[str]:
    return ["docker", "node", "update", *[a for key in add for a in ("--label-add", f"{key}=true")],
            *[a for key in remove for a in ("--label-rm", key)], node_id]


def database_label(database: str) -> str:
    return f"{LABEL_PREFIX}{database}"


def services(project: str) -> list[str]:
    return ["docker", "stack", "services", project, "--format", "{{json .}}"]


def tasks(project: str) -> list[str]:
    return ["docker", "stack", "ps", project, "--filter", "desired-state=running", "--format", "{{json .}}"]


def json_lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip().startswith("{")]
