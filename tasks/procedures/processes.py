"""Moving the stack's processes ([[processes]]: workers, beat, long-running commands) to new
code with the app (plans in tasks/plans/processes.py), in the app's rollout
(procedures/rollout.py `roll_out`):

1. before Nginx is switched, each process whose containers do not run this code (or not as
   many as its replicas) gets its new containers beside the old ones, healthy; a singleton's
   old container stops first (its grace), so that two never run at once. A new one that
   does not become healthy: every new container is removed, a stopped singleton started
   again, and the rollout stops there (Nginx never switched).
2. Nginx is switched to the new app; if that fails, step 1 is undone the same way.
3. The old containers stop with their grace (a worker's warm shutdown: the job in hand
   finishes or goes back to the queue) and are removed.

The containers of a process config/stack.toml no longer has are Compose's orphans: the
`up --remove-orphans` that starts Nginx and the front in step 2 stops them (their stop
signal, their grace) and removes them.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import TaskError, reason
from ..execution.runner import Runner
from ..plans import processes as plans
from ..plans import rollout as rollout_plans
from ..source.processes import Process
from .rollout import AppContainer, HealthAnswers, show_why_unhealthy, wait_containers_healthy


@dataclass
class Moved:
    """What step 1 did to one process: OLD stops in step 3, NEW goes in an undo, STOPPED
    (a singleton's old containers, stopped already) starts again in an undo."""
    name: str
    old: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)


def process_containers(r: Runner, name: str) -> list[AppContainer]:
    """The containers of the process NAME, running or not (name, state, health)."""
    ids = r.probe(plans.ids(r.project, name)).stdout.split()
    if not ids:
        return []
    found = []
    for line in r.probe(rollout_plans.describe(ids)).stdout.splitlines():
        fields = line.split()
        if len(fields) == 3:
            found.append(AppContainer(fields[0].lstrip("/"), *fields[1:]))
    return found


def runs_this_code(r: Runner, process: Process, containers: list[AppContainer]) -> bool:
    """Every one of CONTAINERS runs, is not unhealthy, and matches the compose file and image."""
    if not containers or any(c.state != "running" or c.health not in ("healthy", "none", "starting")
                             for c in containers):
        return False
    return rollout_plans.up_to_date(r.compose_probe(plans.would_recreate(process.name, len(containers))).stderr)


def start_new(r: Runner, process: Process, old: list[AppContainer], count: int) -> list[str]:
    """Start COUNT containers of PROCESS beside OLD; return the new ones' names."""
    known = {c.name for c in old}
    r.compose(plans.start_beside(process.name, len(old) + count), what=f"starting {process.name}", hide=True)
    return [c.name for c in process_containers(r, process.name) if c.name not in known]


def start_singleton(r: Runner, process: Process, old: list[AppContainer], moved: Moved) -> None:
    """Stop the singleton's old container (its grace), then start its new one: never two."""
    running = [c.name for c in old if c.state in ("running", "restarting", "paused")]
    if running:
        stop_gracefully(r, process.name, running)
        moved.stopped = running
    if process.replicas:
        known = {c.name for c in old}
        r.compose(plans.create_beside(process.name, len(old) + 1), what=f"creating {process.name}", hide=True)
        moved.new = [c.name for c in process_containers(r, process.name) if c.name not in known]
        if r.require(len(moved.new) == 1, f"expected one new {process.name} container, found {len(moved.new)}"):
            r.run(plans.start(moved.new), hide=True, what=f"starting {', '.join(moved.new)}")


def stop_gracefully(r: Runner, name: str, containers: list[str]) -> None:
    """Stop CONTAINERS with their grace period (the process's stop signal, then its wait)."""
    r.run(rollout_plans.stop(containers), hide=True, what=f"stopping {name} ({', '.join(containers)})")


def wait_healthy(r: Runner, process: Process, moved: Moved, timeout: float) -> None:
    """The new containers of MOVED pass their health test, else step 1 of this process is
    undone and the one-line error names the process (its last log lines printed before)."""
    if not moved.new:
        return
    try:
        wait_containers_healthy(r, moved.new, timeout, f"the new {process.name} container(s) {', '.join(moved.new)}")
    except TaskError as exc:
        why = reason(exc)
        r.say(why)
        for name in moved.new:
            show_why_unhealthy(r, name, HealthAnswers(r, name))
        undo(r, [moved])
        before = list(dict.fromkeys(moved.old + moved.stopped))
        kept = f"{', '.join(before)} still run(s)" if before else "none was running"
        raise TaskError(f"{why}; the new {process.name} container(s) were removed and {kept}") from None


def move_process(r: Runner, process: Process, timeout: float) -> Moved:
    """Step 1 for PROCESS (see the module's docstring)."""
    old = process_containers(r, process.name)
    moved = Moved(process.name)
    if runs_this_code(r, process, old):
        missing = process.replicas - len(old)
        if missing > 0:
            moved.new = start_new(r, process, old, missing)
        elif missing < 0:  # the newest go first
            moved.old = plans.newest_first(c.name for c in old)[:-missing]
        else:
            r.say(f"{process.name} runs this code already")
    elif process.singleton:
        moved.old = [c.name for c in old]
        start_singleton(r, process, old, moved)
    else:
        moved.old = [c.name for c in old]
        moved.new = start_new(r, process, old, process.replicas)
    wait_healthy(r, process, moved, timeout)
    return moved


def move_processes(r: Runner, timeout: float) -> list[Moved]:
    """Step 1 for every process of the stack; a failure undoes what the others did too."""
    done: list[Moved] = []
    for process in r.stack.all_processes:
        try:
            done.append(move_process(r, process, timeout))
        except (Exception, KeyboardInterrupt):
            undo(r, done)
            raise
    return done


def undo(r: Runner, moved: list[Moved]) -> None:
    """Take step 1 back: the new containers removed, the stopped singletons started again."""
    for one in reversed(moved):
        if one.new:
            r.run(rollout_plans.remove(one.new), check=False, hide=True)
        if one.stopped:
            r.run(plans.start(one.stopped), check=False, hide=True)
            r.say(f"started {', '.join(one.stopped)} again")


def retire(r: Runner, moved: list[Moved]) -> None:
    """Step 3: the old containers stop with their grace and are removed."""
    for one in moved:
        if one.old:
            running = [name for name in one.old if name not in one.stopped]
            if running:
                stop_gracefully(r, one.name, running)
            r.run(rollout_plans.remove(one.old), hide=True, what=f"removing {', '.join(one.old)}")
            r.report(f"{one.name}: stopped and removed {', '.join(one.old)}")
        if one.new:
            r.report(f"{one.name}: {', '.join(one.new)} started")


def scale(r: Runner, process: Process, timeout: float) -> None:
    """PROCESS's containers made as many as its replicas, whatever code they run: the
    missing ones started beside (healthy, else removed again), the extra ones stopped with
    their grace, the newest first."""
    there = process_containers(r, process.name)
    missing = process.replicas - len(there)
    moved = Moved(process.name)
    if missing > 0:
        moved.new = start_new(r, process, there, missing)
        wait_healthy(r, process, moved, timeout)
    elif missing < 0:
        moved.old = plans.newest_first(c.name for c in there)[:-missing]
    else:
        r.say(f"{process.name} has {len(there)} container(s) already")
    retire(r, [moved])
