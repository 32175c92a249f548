"""Moving traffic to a new app container without dropping a request (`inv up`, deploys,
rollbacks; plans in tasks/plans/rollout.py).

1. A new app container starts beside the running one (`--scale djangoapp=N+1
   --no-recreate`) and must pass its health check; if it does not, it is removed and the
   old one never stopped serving.
2. Nginx is pointed at it by a reload: the new configuration is tested first, and the
   reload returns once every old worker has stopped accepting connections.
3. The old container drains: Gunicorn's graceful stop finishes the requests in flight.

The stack's processes (workers, beat: procedures/processes.py) move with the app: their new
containers are healthy before Nginx is switched, their old ones stop after the old app
drained; a failure of either takes both back.

An app container that already runs this image with this definition is left alone, as are
the databases, Nginx and the front when their definitions did not change.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from ..errors import TaskError, last_line, reason
from ..execution.runner import Runner
from ..plans import compose
from ..plans import diagnosis
from ..plans import rollout as plans

# Seconds between the reload and stopping the old container: requests the old workers
# accepted just before the reload reach the old app (and then finish there) in this time.
SETTLE = 1.0


@dataclass(frozen=True)
class AppContainer:
    name: str
    state: str
    health: str


def app_containers(r: Runner) -> list[AppContainer]:
    ids = r.probe(plans.app_ids(r.project)).stdout.split()
    if not ids:
        return []
    found = []
    for line in r.probe(plans.describe(ids)).stdout.splitlines():
        fields = line.split()
        if len(fields) == 3:
            found.append(AppContainer(fields[0].lstrip("/"), *fields[1:]))
    return found


# How often we run a starting container's own health test: the engine runs it every
# `interval` (render.HEALTH_INTERVAL, 10 s), and engine 20.10 refuses `start_interval`, so
# waiting for its verdict would cost up to a whole interval after the container is ready.
READY_POLL = 0.2


class HealthAnswers:
    """What the health URL of a running app container that is not healthy yet answers,
    asked inside it at each poll (a redirect not followed). The same redirect or refusal
    REPEATS times in a row is given up on at once: waiting will not turn it into a 200
    (a 5xx or no answer at all is waited for: the app may still be starting)."""

    def __init__(self, r: Runner, place: str, repeats: int = diagnosis.REPEATS):
        self.r, self.place, self.repeats = r, place, repeats
        self.url = diagnosis.HEALTH_URL
        self.last: diagnosis.Answer | None = None
        self.times = 0

    def look(self, name: str, healthcheck) -> None:
        self.url = diagnosis.health_url(healthcheck)
        answer = diagnosis.parse_answer(self.r.probe(diagnosis.health_answer(name, self.url)).stdout)
        if answer is None:
            return
        self.times = self.times + 1 if answer == self.last else 1
        self.last = answer
        if answer.settled and self.times >= self.repeats:
            raise TaskError(diagnosis.settled_line(self.place, self.url, answer, self.times))

    def said(self) -> str:
        """What the URL answered last, for a message ("" when it was never asked)."""
        if self.last is None:
            return ""
        return f"{self.url} {'answered' if self.last.status else 'gave'} {self.last}"


def wait_containers_healthy(r: Runner, containers, timeout: float, description: str,
                            answers: HealthAnswers | None = None) -> float:
    """Wait until every one of CONTAINERS (names or ids) runs and passes its health check:
    the engine's verdict once it has one; while it says `starting`, the container's own
    health test run now with `docker exec` (one the engine calls unhealthy must be called
    healthy by the engine again). A container without a health test counts once it runs.
    ANSWERS, for an app container: what its health URL answers while it is not healthy,
    asked at each poll (a redirect or refusal repeated ends the wait). Return the seconds
    waited."""
    pending = [str(c) for c in containers]

    def check():
        if not pending:
            return None
        found = {}
        for line in r.probe(plans.health_tests(pending)).stdout.splitlines():
            fields = line.split("\t")
            if len(fields) == 4:
                found[fields[0].lstrip("/")] = fields
        if len(found) < len(pending):
            return "a container is gone"
        why = None
        for name, (_, state, health, test) in found.items():
            if state != "running":
                why = f"{name} is {state}"
            elif health_now(r, name, state, health, test) not in ("healthy", "none"):
                why = f"{name} is {health}"
                if answers is not None:
                    answers.look(name, decoded(test))
        return why

    return r.wait_until(description, check, timeout, interval=READY_POLL, failure="did not become healthy")


def decoded(test: str):
    """A container's health test as `docker inspect` gives it in JSON; None when unreadable."""
    try:
        return json.loads(test or "null")
    except ValueError:
        return None


def health_now(r: Runner, name: str, state: str, health: str, test: str) -> str:
    """The engine's HEALTH for the container NAME, or healthy when the engine still says
    `starting` (it checks every 10 s, and engine 20.10 has no faster `start_interval`) and the
    container's own health TEST (JSON, as inspected) passes when run now. A test we cannot run
    (none, or a name outside the grammar) leaves the engine's word."""
    if state != "running" or health != "starting":
        return health
    try:
        argv = plans.run_health_test(name, decoded(test))
    except ValueError:
        return health
    return "healthy" if argv is not None and r.probe(argv).ok else health


def healthy_now(r: Runner, name: str) -> bool:
    """Whether the container NAME is healthy, asked now when the engine still says starting."""
    fields = r.probe(plans.health_tests([name])).stdout.rstrip("\n").split("\t")
    return len(fields) == 4 and health_now(r, name, *fields[1:]) in ("healthy", "none")


def service_states(r: Runner, ids) -> list[tuple[str, str, str]]:
    """(service, state, health) of each of the containers IDS, health as health_now gives it."""
    states = []
    for line in r.probe(plans.service_states(ids)).stdout.splitlines() if ids else []:
        fields = line.split("\t")
        if len(fields) == 5:
            service, state, health, name, test = fields
            states.append((service, state, health_now(r, name.lstrip("/"), state, health, test)))
        elif len(fields) >= 3:
            states.append(tuple(fields[:3]))
    return states


# The app container's log lines shown when it does not become healthy.
LOG_LINES = 30


def start_beside(r: Runner, old: list[AppContainer], timeout: float) -> str:
    """Start one new app container beside OLD; return its name once healthy. One that does
    not become healthy is removed, after what tells why is printed (what its health URL
    answered, the engine's last health checks, its last log lines), and the error says so."""
    r.compose(plans.scale_up(len(old) + 1), what="starting a new app container")
    known = {c.name for c in old}
    new = [c.name for c in app_containers(r) if c.name not in known]
    r.require(len(new) == 1, f"expected one new app container, found {len(new)}: {', '.join(new) or 'none'}")
    name = new[0] if new else f"{r.project}-{compose.APP}-new"
    answers = HealthAnswers(r, f"the new app container {name}")
    try:
        wait_containers_healthy(r, [name], timeout, f"the new app container {name}", answers)
    except TaskError as exc:
        why = reason(exc)
        if answers.last is not None and not why.startswith(answers.url):
            why = f"{why}; {answers.said()}"
        r.say(why)  # the one line first, what tells more after it
        show_why_unhealthy(r, name, answers)
        r.run(plans.remove([name]), check=False, hide=True)
        serving = f"{', '.join(c.name for c in old)} still serves" if old else "nothing was serving"
        raise TaskError(f"{why}; it was removed and {serving}") from None
    return name


def show_why_unhealthy(r: Runner, name: str, answers: HealthAnswers) -> None:
    """Print, before the container NAME goes: what its health URL answered, the engine's
    last health checks and its last log lines (`inv logs` cannot show them afterwards)."""
    if answers.last is not None:
        r.say(f"  health URL: {answers.said()}")
    checks = diagnosis.parse_health_log(r.probe(diagnosis.health_log(name)).stdout)
    for check in checks:
        r.say(f"  health check (exit {check.exit_code}): {check.output}")
    logged = r.probe(plans.logs(name, LOG_LINES))
    tail = logged.stdout + logged.stderr
    lines = tail.strip().splitlines()[-LOG_LINES:]
    if lines:
        r.say(f"  its last {len(lines)} log lines:")
    for line in lines:
        r.say(f"  {name}: {line}")


def ensure_front(r: Runner, timeout: float) -> None:
    """Nginx and the front, started when missing and recreated only if their definition
    changed (an unchanged running container is left alone). Behind the server's shared
    front (procedures/server_front.py), the project has no front: Nginx alone."""
    if r.target.site.shared:
        # A project's own front, moving to the shared one, serves until it hands the ports over.
        r.compose(compose.up(["nginx"], build=False, timeout=timeout, no_deps=True, keep_orphans=True),
                  what="starting Nginx")
        return
    r.compose(compose.up(["nginx", "front"], build=False, timeout=timeout, no_deps=True),
              what="starting Nginx and the front")


def install_nginx_files(r: Runner) -> bool:
    """Copy the release's config/nginx files to where the containers mount them from (on a
    host, shared/config; here they are the same folder). True when that is elsewhere."""
    source, target = r.root / "config" / "nginx", r.target.config_dir / "nginx"
    if source == target:
        return False
    r.shell(plans.install_files(source, target), what="installing the Nginx configuration")
    return True


def refresh_front(r: Runner) -> None:
    """The front keeps its configuration from release to release; when it did change, it is
    reloaded (idle keep-alive connections of clients are closed then, once). The shared
    front is never reloaded by a project's work."""
    if r.target.site.shared:
        return
    same = r.run(compose_exec(r, "front", plans.front_sum_check()), check=False, hide=True)
    if same.failed:
        r.say("the front's configuration changed: reloading it")
        r.run(compose_exec(r, "front", plans.front_reload()), what="reloading the front", hide=True)


def point_nginx_at(r: Runner, container: str, timeout: float) -> None:
    """Install the configuration the containers read, start Nginx and the front if they do
    not run, then write the live app, test and reload."""
    installed = install_nginx_files(r)
    ensure_front(r, timeout)
    result = r.run(compose_exec(r, "nginx", plans.switch_script(plans.NGINX_MAIN)),
                   stdin_text=plans.live_conf(container), check=False, hide=True)
    if result.failed:
        if installed:
            r.shell(plans.restore_files(r.target.config_dir / "nginx", plans.NGINX_FILES), check=False)
        why = last_line(result.stderr, f"exit status {result.exited}")
        if result.exited == plans.REFUSED:
            raise TaskError(f"Nginx refused the new configuration ({why}); it still runs the previous one")
        raise TaskError(f"reloading Nginx failed ({why})")
    r.report(f"Nginx sends requests to {container}")
    refresh_front(r)


def reload_nginx(r: Runner) -> None:
    """The project's Nginx reads the configuration installed (tested first: a refused one
    changes nothing), sending requests where it did: before a front that it was not
    configured for sends it any (a move between its own front and the shared one)."""
    result = r.run(compose_exec(r, "nginx", plans.reload_script(plans.NGINX_MAIN)), check=False, hide=True)
    if result.failed:
        if r.root / "config" / "nginx" != r.target.config_dir / "nginx":
            # The files install_nginx_files replaced go back: Nginx reads them at its next start.
            r.shell(plans.restore_files(r.target.config_dir / "nginx", plans.NGINX_FILES), check=False)
        why = last_line(result.stderr, f"exit status {result.exited}")
        raise TaskError(f"Nginx refused the new configuration ({why}); it still runs the previous one"
                        if result.exited == plans.REFUSED else f"reloading Nginx failed ({why})")


def compose_exec(r: Runner, service: str, script: str) -> list[str]:
    return r.compose_argv(compose.exec_(service, ["sh", "-c", script]))


def drain(r: Runner, old: list[AppContainer]) -> None:
    """Stop OLD with their grace period (Gunicorn finishes what is in flight), then remove them."""
    if not old:
        return
    names = [c.name for c in old]
    r.do(f"wait {SETTLE:g}s for requests already accepted by Nginx's old workers", _sleep, SETTLE)
    r.run(plans.stop(names), hide=True, what=f"stopping {', '.join(names)}")
    r.run(plans.remove(names), hide=True, what=f"removing {', '.join(names)}")
    r.report(f"drained and removed {', '.join(names)}")


def _sleep(seconds: float) -> None:
    import time

    time.sleep(seconds)


def roll_out(r: Runner, timeout: float) -> None:
    """The app of the compose file in R's directory serves, through Nginx and the front,
    with no request dropped on the way (see the module's docstring)."""
    old = app_containers(r)
    current = old[0] if len(old) == 1 else None
    serving = current is not None and current.state == "running" and (
        current.health in ("healthy", "none") or current.health == "starting" and healthy_now(r, current.name))
    if serving and plans.up_to_date(r.compose_probe(plans.would_recreate()).stderr):
        live, stale = old[0].name, []
        r.say(f"the app container {live} runs this code already")
    else:
        live, stale = start_beside(r, old, timeout), old
    from . import processes  # it builds on this module's waits
    try:
        moved = processes.move_processes(r, timeout)
        try:
            point_nginx_at(r, live, timeout)
        except (Exception, KeyboardInterrupt):
            processes.undo(r, moved)
            raise
    except (Exception, KeyboardInterrupt):
        if stale:  # the new container never took traffic: the old ones still serve
            r.run(plans.remove([live]), check=False, hide=True)
        raise
    drain(r, stale)
    processes.retire(r, moved)
