"""`inv schedule.*`: the [[schedules]] of config/stack.toml, management commands the stack's
scheduler process runs at their times (config/app/djangostack/scheduler.py).

`inv schedule.status` tells what each schedule last did and when it runs next, for
monitoring (exit 1 when one fails or is overdue, or the scheduler is not running);
`inv schedule.run NAME` runs one now, beside the scheduler."""
from __future__ import annotations

from invoke import Collection

from .cli import print_table, stack_task
from .errors import TaskError, last_line
from .execution.runner import interactive
from .plans import backups as backup_plans
from .plans import compose
from .plans import schedules as plans


def _schedules(r):
    if not r.stack.schedules:
        raise TaskError("no [[schedules]] in config/stack.toml: add one (name, cron, command), then `inv up`")
    return r.stack.schedules


@stack_task()
def status(r):
    """Report the schedules' last runs, for monitoring.

    Per schedule: its cron, the last run's start, exit status and duration, the next run,
    the firings skipped while a run still went. Exits 1 when a last run failed, one is
    overdue, or the scheduler is not running."""
    schedules = _schedules(r)
    result = r.compose(plans.status(), hide=True, check=False, what="reading the scheduler's status")
    if r.dry:
        return
    if result.failed:
        raise TaskError(f"the scheduler is not running on {r.target.name} "
                        f"({last_line(result.stderr, f'exit status {result.exited}')}): start it with `inv up`")
    fine, rows, problems = plans.report(schedules, backup_plans.parse_json(result.stdout))
    print_table(rows)
    for line in problems:
        print(f"{r.target.name}: {line}")
    if not fine:
        raise TaskError(f"schedules on {r.target.name} are failing or overdue")


@stack_task(help={"name": "The schedule's name in config/stack.toml."})
def run(r, name):
    """Run a schedule's command once, now.

    `manage.py COMMAND` in a one-off container of the app (the live release's image), beside
    the scheduler, which does not count it; exits with a failure when the command fails."""
    known = {s.name: s for s in _schedules(r)}
    if name not in known:
        raise TaskError(f"no schedule named {name!r} in config/stack.toml (known: {', '.join(known)})")
    r.require_running(compose.APP)
    tty = interactive()
    result = r.compose(plans.run_once(known[name].command, tty=tty), pty=tty, check=False,
                       what=f"schedule {name}")
    if result.failed:
        raise TaskError(f"schedule {name} (manage.py {' '.join(known[name].command)}) failed with exit status "
                        f"{result.exited}: see above")


ns = Collection("schedule", status, run)
