"""`inv schedule.*`: the [[schedules]] of config/stack.toml, management commands the stack's
scheduler process runs at their times (config/app/djangostack/scheduler.py).

`inv schedule.status` tells what each schedule last did and when it runs next, for
monitoring (exit 1 when one fails or is overdue, or the scheduler is not running);
`inv schedule.run NAME` runs one now, beside the scheduler."""
from __future__ import annotations

from invoke import Collection

from .cli import print_table, stack_task
from .errors import TaskError
from .plans import schedules as plans
from .procedures import places


def _schedules(r):
    if not r.stack.schedules:
        raise TaskError("no [[schedules]] in config/stack.toml: add one (name, cron, command), then `inv up`")
    return r.stack.schedules


@stack_task(hosts="many-or-cluster")
def status(r):
    """Report the schedules' last runs, for monitoring.

    Per schedule: its cron, the last run's start, exit status and duration, the next run,
    the firings skipped while a run still went. Exits 1 when a last run failed, one is
    overdue, or the scheduler is not running. On a cluster: read on the node that runs it."""
    schedules = _schedules(r)
    document = places.of(r).scheduler_status()
    if document is None:  # a dry run
        return
    fine, rows, problems = plans.report(schedules, document)
    print_table(rows)
    for line in problems:
        print(f"{r.target.name}: {line}")
    if not fine:
        raise TaskError(f"schedules on {r.target.name} are failing or overdue")


@stack_task(hosts="many-or-cluster", help={"name": "The schedule's name in config/stack.toml."})
def run(r, name):
    """Run a schedule's command once, now.

    `manage.py COMMAND` in a one-off container of the app (the live release's image; on a
    cluster, a one-off Swarm job), beside the scheduler, which does not count it; exits
    with a failure when the command fails."""
    known = {s.name: s for s in _schedules(r)}
    if name not in known:
        raise TaskError(f"no schedule named {name!r} in config/stack.toml (known: {', '.join(known)})")
    places.of(r).run_schedule(known[name])


ns = Collection("schedule", status, run)
