"""A cluster's nodes made one Docker Swarm as [clusters.NAME] says, and what it runs
(plans in tasks/plans/swarm.py).

`init` is idempotent: it reads each node's membership first and changes only what differs
(the manager's swarm, each worker's membership, the database placement labels), then says
what it changed, or that nothing needed to.
"""
from __future__ import annotations

import ipaddress
import json

from ..errors import TaskError, last_line
from ..execution.cluster import ClusterRun
from ..plans import swarm as plans


def node_state(node) -> plans.NodeState:
    result = node.probe(plans.info(), anywhere=True)
    if result.failed:
        raise TaskError(f"{node.target.name}: no Docker engine answers ({last_line(result.stderr, 'no answer')})")
    return plans.parse_info(result.stdout)


def _address(node) -> str | None:
    """The address the node advertises to the others: its [hosts] address when that is an IP
    (Swarm takes no DNS name there), else the engine's own choice."""
    address = node.target.host.address
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return None
    return address


def init(s: ClusterRun) -> None:
    cluster, changed = s.cluster, []
    manager = s.manager
    state = node_state(manager)
    if state.state == "active" and not state.manager:
        raise TaskError(f"{cluster.manager} is a worker of another swarm: run `docker swarm leave` there first")
    if state.state not in ("active", "inactive"):
        raise TaskError(f"{cluster.manager}'s swarm is {state.state}: {state.error or 'see docker info there'}")
    if state.state == "inactive":
        manager.run(plans.init(_address(manager)), hide=True, anywhere=True,
                    what=f"making the swarm on {cluster.manager}")
        changed.append(f"made the swarm on {cluster.manager}")
    members = {node["ID"]: node for node in plans.json_lines(manager.probe(plans.nodes(), anywhere=True).stdout)}
    manager_address = _address(manager) or manager.target.host.address
    joined = False
    try:
        for name, worker in s.workers.items():
            mine = node_state(worker)
            if mine.state == "active" and mine.node_id in members:
                continue
            if mine.state != "inactive":
                raise TaskError(f"{name} is in another swarm ({mine.state}): run `docker swarm leave` there first")
            token = manager.probe(plans.join_token(), anywhere=True).stdout.strip()
            joined = True
            # The token on standard input, never in a command line here or in a log; `docker
            # swarm join` takes it as an argument only, so it is rotated once used.
            worker.shell(plans.join_script(manager_address, _address(worker)), stdin_text=token + "\n",
                         what=f"joining {name} to the swarm")
            changed.append(f"joined {name}")
    finally:
        if joined:
            manager.run(plans.rotate_join_token(), hide=True, anywhere=True, what="rotating the join token")
    _label(s, changed)
    if changed:
        s.report(f"swarm {cluster.name}: " + "; ".join(changed))
    else:
        s.report(f"swarm {cluster.name} is as configured ({len(cluster.nodes)} nodes): nothing changed")


def _label(s: ClusterRun, changed: list[str]) -> None:
    """Each database's label on the node that holds its volume, and on no other node of the
    swarm (this project's labels only)."""
    manager = s.manager
    ids = {name: node_state(node).node_id for name, node in s.nodes.items()}
    every = [node["ID"] for node in plans.json_lines(manager.probe(plans.nodes(), anywhere=True).stdout)]
    found = json.loads(manager.probe(plans.inspect_nodes(every), anywhere=True).stdout or "[]")
    names = {node_id: name for name, node_id in ids.items()}
    prefix = plans.label_prefix(manager.project)
    for node in found:
        name = names.get(node["ID"], node.get("Description", {}).get("Hostname", node["ID"]))
        wanted = {plans.database_label(manager.project, db) for db, where in s.cluster.placement
                  if ids.get(where) == node["ID"]}
        add, remove = plans.label_changes(node, wanted, prefix)
        if add or remove:
            manager.run(plans.update_labels(node["ID"], add, remove), hide=True, anywhere=True,
                        what=f"labelling {name}")
            changed.append(f"{name} labelled {', '.join(add) or ''}{' without ' + ', '.join(remove) if remove else ''}")


def status(s: ClusterRun) -> list[list[list[str]]]:
    """Two tables: the nodes (state, role, databases pinned there), then the stack's services
    (replicas running of wanted) with each running task's node and state."""
    manager = s.manager
    state = node_state(manager)
    if not state.manager:
        raise TaskError(f"{s.cluster.manager} is not a swarm manager: run `inv swarm.init --cluster {s.cluster.name}`")
    nodes = plans.json_lines(manager.probe(plans.nodes(), anywhere=True).stdout)
    node_table = [["node", "status", "availability", "manager", "engine"]]
    for node in nodes:
        node_table.append([node.get("Hostname", "?"), node.get("Status", "?"), node.get("Availability", "?"),
                           node.get("ManagerStatus", "") or "-", node.get("EngineVersion", "?")])
    project = manager.project
    services = plans.json_lines(manager.probe(plans.services(project), anywhere=True).stdout)
    running = plans.json_lines(manager.probe(plans.tasks(project), anywhere=True).stdout)
    service_table = [["service", "mode", "replicas", "tasks"]]
    for service in services:
        name = service.get("Name", "?")
        tasks = [f"{t.get('Node', '?')}: {t.get('CurrentState', '?')}" for t in running
                 if t.get("Name", "").rsplit(".", 1)[0] == name or t.get("Name", "").startswith(name + ".")]
        service_table.append([name, service.get("Mode", "?"), service.get("Replicas", "?"), "; ".join(tasks) or "-"])
    return [node_table, service_table]
