"""Plans for the schedules' tasks (tasks/schedule.py): reading the scheduler's status in its
container, a schedule's command run once in a one-off app container (on a cluster: a
one-off Swarm job, procedures/cluster_release.py), and the status as a
table with its verdict. The scheduler itself is config/app/djangostack/scheduler.py.
"""
from __future__ import annotations

from ..source.schedules import SCHEDULER, SCHEDULER_COMMAND
from .compose import APP, MANAGE


def status() -> list[str]:
    """Compose: the status file with its verdict, as JSON, from the running scheduler."""
    return ["exec", "-T", SCHEDULER, *SCHEDULER_COMMAND, "status"]


def status_in(container: str) -> list[str]:
    """On a node of a cluster: the same, in the scheduler's running CONTAINER there."""
    return ["docker", "exec", container, *SCHEDULER_COMMAND, "status"]


def run_once(command, tty: bool = False) -> list[str]:
    """Compose: manage.py COMMAND in a one-off container of the app's service (its image,
    environment, secrets and networks), removed afterwards."""
    return ["run", "--rm", "--no-deps", *([] if tty else ["-T"]), APP, *MANAGE, *command]


def _when(moment) -> str:
    return moment.replace("T", " ")[:19] if moment else "-"


def report(schedules, document) -> tuple[bool, list[list[str]], list[str]]:
    """(fine, table, problems) of the scheduler's DOCUMENT (its `status` output) for the
    SCHEDULES of config/stack.toml: not fine when the scheduler has stopped writing, a
    schedule's last run failed, one is overdue, or one has never been seen by the scheduler."""
    entries = document.get("schedules", {}) if isinstance(document, dict) else {}
    rows = [["schedule", "cron", "last start", "exit", "duration", "next", "skipped", "state"]]
    problems = []
    if not isinstance(document, dict) or document.get("stale", True):
        problems.append("the scheduler has not written its status for over a minute: it is not running "
                        "(see `inv logs -s scheduler`)")
    for schedule in schedules:
        entry = entries.get(schedule.name)
        if entry is None:
            rows.append([schedule.name, schedule.cron, "-", "-", "-", "-", "-", "unknown"])
            problems.append(f"{schedule.name}: the scheduler does not know it (is it of an older release?)")
            continue
        state = "running" if entry.get("running") else "failing" if entry.get("failing") else \
            "overdue" if entry.get("overdue") else "ok" if entry.get("last_start") else "waiting"
        duration = entry.get("duration")
        rows.append([schedule.name, schedule.cron, _when(entry.get("last_start")),
                     "-" if entry.get("exit") is None else str(entry["exit"]),
                     "-" if duration is None else f"{duration} s", _when(entry.get("next")),
                     str(entry.get("skipped", 0)), state])
        if entry.get("failing"):
            problems.append(f"{schedule.name}: last run FAILED at {_when(entry.get('last_failure'))}: "
                            f"{entry.get('last_error')}")
        if entry.get("overdue"):
            problems.append(f"{schedule.name}: OVERDUE: due at {_when(entry.get('next'))}, not started")
    return not problems, rows, problems
