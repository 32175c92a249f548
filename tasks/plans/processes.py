"""Plans of moving the stack's processes ([[processes]]) to new code with the app
(procedures/processes.py runs them): the new containers start beside the old ones (a
singleton's only once the old one has stopped), the old ones stop with their grace.
"""
from __future__ import annotations

from . import rollout as rollout_plans


def ids(project: str, name: str) -> list[str]:
    """The ids of every container of the process NAME, running or not (one-off ones aside)."""
    return rollout_plans.service_ids(project, name)


def would_recreate(name: str, count: int) -> list[str]:
    """Compose, as a dry run: whether the COUNT containers of NAME match the compose file and
    the image (plans.rollout.up_to_date reads the answer)."""
    return ["--dry-run", "up", "--detach", "--no-deps", "--no-build", "--scale", f"{name}={count}", name]


def start_beside(name: str, count: int) -> list[str]:
    """Compose: COUNT containers of NAME, the ones there untouched, the missing ones started."""
    return ["up", "--detach", "--no-deps", "--no-recreate", "--no-build", "--scale", f"{name}={count}", name]


def create_beside(name: str, count: int) -> list[str]:
    """Compose: COUNT containers of NAME, the missing ones created but not started (and a
    stopped one left stopped: `up` would start it)."""
    return ["up", "--no-start", "--no-deps", "--no-recreate", "--no-build", "--scale", f"{name}={count}", name]


def start(names) -> list[str]:
    return ["docker", "start", *names]


def newest_first(names) -> list[str]:
    """Compose's container names (PROJECT-SERVICE-N), the highest N first."""
    def number(name: str) -> int:
        tail = name.rsplit("-", 1)[-1]
        return int(tail) if tail.isdigit() else 0
    return sorted(names, key=number, reverse=True)
