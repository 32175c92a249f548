"""`inv swarm.init --cluster NAME`, `inv swarm.status --cluster NAME`: hosts of
config/stack.toml run as one Docker Swarm ([clusters.NAME]; procedures/swarm.py)."""
from __future__ import annotations

from invoke import Collection

from .cli import print_table, stack_task
from .procedures import swarm


@stack_task(hosts="cluster")
def init(s):
    """Make the cluster's hosts one Docker Swarm.

    Init on the manager, join the workers, label the node of each database. Idempotent: a
    second run changes nothing and says so."""
    swarm.init(s)


@stack_task(hosts="cluster")
def status(s):
    """Show the swarm's nodes and the stack's services.

    The nodes' status, availability and role, then the services: replicas running of
    wanted, and each task's node and state."""
    nodes, services = swarm.status(s)
    print_table(nodes)
    print()
    if len(services) > 1:
        print_table(services)
    else:
        print("no services of this stack yet")


ns = Collection("swarm", init, status)
