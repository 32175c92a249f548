"""The swarm strategy of a release ([clusters.NAME]): the stack on Docker Swarm, updated by
Swarm's own rolling update (plans in tasks/plans/swarm.py; the stack file is rendered from
config/stack.toml like the compose file). The flow, the lock, the ledger, the prune and the
rollback check are a host's (procedures/release.py `run_deploy`, `run_rollback`).

The image reaches every node without a registry by the hosts' own way: the code ships to
each node by rsync (only what changed since its previous release) and each node builds it
from the same pinned requirements ([app] in config/stack.toml), hashes checked. No registry
to run and secure, no trust between the nodes, and a code change sends kilobytes, not the
image; the cost is a build per node.

The release's directory, its ledger, `current` and the deploy lock live on the manager, as
they do on a host. The steps:
  1. the code shipped to every node and the image built there;
  2. the databases (and networks, secrets, configs) brought to what the file says, the app
     left on the image it runs (or none yet, on a first deploy);
  3. the release phase as one-off Swarm jobs: migrations once (on the databases' overlay
     networks), collectstatic once per node (each node's Nginx serves its own static volume);
  4. `docker stack deploy` with the new image: Swarm replaces the replicas one at a time,
     each new one healthy before an old one stops, and rolls back by itself if a new one
     fails (update_config: start-first, failure_action: rollback);
  5. the release's ledger written on the manager (commit, image, each database's applied
     migrations), `current` switched there once every replica runs the new image, and old
     releases (and their images) pruned on every node, as on a host.
"""
from __future__ import annotations

import json
import os
import shlex
import sys
import time

from ..errors import TaskError, last_line, reason
from ..execution.cluster import ClusterRun
from ..plans import backups as backup_plans
from ..plans import release as release_plans
from ..plans import swarm as plans
from ..source import render
from ..source.render import app_secrets, backup_secrets
from ..source.stack import BACKUP_NOTIFY, BACKUP_OPTIONAL_SECRETS
from .release import (Deploy, build_image, current_release, deploy_lock, prepare, prune_releases, run_deploy,
                      run_rollback, ship_code, switch, write_ledger)
from .starting import backup_settings
from .swarm import node_state


def deploy(s: ClusterRun, keep: int, timeout: int, ship_image: bool = False) -> None:
    if ship_image:
        raise TaskError("--ship-image is for a host: the nodes of a cluster each build the image")
    run_deploy(SwarmRelease(s), keep, timeout)


def rollback(s: ClusterRun, timeout: int, to: str | None = None, force: bool = False) -> None:
    """The cluster back on the release before the current one (or TO) by a rolling update."""
    run_rollback(SwarmRelease(s), timeout, to, force)


def check_swarm(s: ClusterRun) -> None:
    """Every node a member of the manager's swarm, else one line saying what to run."""
    state = node_state(s.manager)
    s.manager.require(state.manager, f"{s.cluster.manager} is not a swarm manager: run `inv swarm.init "
                                     f"--cluster {s.cluster.name}`")
    for name, node in s.workers.items():
        node.require(node_state(node).state == "active",
                     f"{name} is not in the swarm: run `inv swarm.init --cluster {s.cluster.name}`")


class SwarmRelease:
    """The swarm strategy: a build on every node, the release phase as Swarm jobs, the
    stack deployed for Swarm's rolling update, the replicas spread again; its undo asks
    Swarm to roll back and removes what the deploy made."""

    def __init__(self, s: ClusterRun):
        self.s, self.home, self.name = s, s.manager, s.name
        self.nodes_note = f"{', '.join(s.cluster.nodes)}; "
        self.stack_file = str(render.stack_file(s.cluster.name))
        # The stack's services, secrets, configs and networks before this run's first `docker
        # stack deploy` (None: not read, or not deployed yet): what an undo may remove is the
        # rest. The spec of each of those services then: what an undo rolls back to.
        self.before: set[tuple[str, str]] | None = None
        self.specs: dict[str, dict] | None = None
        self.stack_deployed = False
        self.env: dict = {}
        self.steps = (("building on every node", self.build), ("bringing the databases up", self.databases),
                      ("running the release phase", self.release_phase), ("rolling the replicas", self.roll),
                      ("recording the release", self.record), ("starting the backup service", self.backups),
                      ("switching current", switch))

    def context(self, release: str, previous: str | None, timeout: int) -> Deploy:
        """A Deploy for RELEASE on the manager, for what runs outside a deploy's steps."""
        image = release_plans.release_image(self.s.project, release)
        return Deploy(self.home.in_release(release), self.home.here(), release, previous, image, False, timeout)

    # -- the flow's hooks ------------------------------------------------------------------------
    def ready(self) -> None:
        for name, node in self.s.nodes.items():
            node.ensure_engine()
            node.shell(release_plans.prepare_directories(node.target.directory), what=f"preparing {name}'s directory")
        check_swarm(self.s)

    def leftovers(self) -> None:
        """A failed deploy removed its release on every node (undo)."""

    def abandon(self) -> None:
        """A deploy that serves nothing new leaves nothing to give back (no shared front)."""

    def settle(self, d: Deploy) -> None:
        balance(self.s, d)

    def prune(self, keep: int, release: str, previous: str | None) -> None:
        for node in self.s.nodes.values():
            prune_releases(node, keep, release, previous)

    def serving(self, d: Deploy) -> str:
        return f"{self.s.cluster.replicas} replica(s) of {d.image}"

    def check(self) -> None:
        check_swarm(self.s)

    def applied(self) -> dict[str, list[str]]:
        return applied(self.s)

    def serve_again(self, target: str, timeout: int) -> None:
        """The release's own stack file and image (still on every node) rolled out by
        Swarm, one replica at a time; no migration runs."""
        d = self.context(target, None, timeout)
        self.env = self.stack_environment(d)
        self.roll(d, "back to")
        switch(d)
        balance(self.s, d)

    # -- the steps ---------------------------------------------------------------------------------
    def build(self, d: Deploy) -> None:
        # Every node builds at once: the deploy waits for the slowest, not for their sum.
        self.s.say(f"shipping the code and building {d.image} on {', '.join(self.s.nodes)} at once")
        self.s.each(lambda name, node: self.build_on(d, node))

    def build_on(self, d: Deploy, node) -> None:
        there = Deploy(node.in_release(d.release), node.here(), d.release, d.previous, d.image, False, d.timeout)
        ship_code(there)
        prepare(there)
        if node is self.s.manager:
            files = render.rendered(node.stack)
            for path in (render.stack_file(self.s.cluster.name), render.cluster_nginx_conf(self.s.cluster.name)):
                there.r.write(there.release_dir / path, files[path], mode=0o644)
        build_image(there)

    def databases(self, d: Deploy) -> None:
        self.env = self.stack_environment(d)
        # What serves now: the live release's image (not the service's, which a failed first
        # deploy may have left on an image never migrated, at 0 replicas).
        running = release_plans.release_image(self.s.project, d.previous) if d.previous else None
        self.s.say("bringing the databases to the stack file" + (f" (the app stays on {running})" if running else ""))
        self.stack_deploy(d, running or d.image, self.s.cluster.replicas if running else 0,
                          "docker stack deploy (databases)", processes_as_they_are=True)
        for db in d.r.stack.databases:
            wait_running(self.s, d, db.name, None, 1)

    def release_phase(self, d: Deploy, databases=None, static: bool = True) -> None:
        release_jobs(self.s, d, self.env, databases, static)

    def roll(self, d: Deploy, way: str = "over to") -> None:
        self.s.say(f"rolling {self.s.cluster.replicas} replica(s) {way} {d.image}")
        d.started = True
        self.stack_deploy(d, d.image, self.s.cluster.replicas)
        wait_running(self.s, d, "djangoapp", d.image, self.s.cluster.replicas)
        for process in d.r.stack.all_processes:
            if process.replicas:
                wait_running(self.s, d, process.name, d.image, process.replicas)

    def record(self, d: Deploy) -> None:
        d.applied = applied(self.s)
        write_ledger(d, lambda: d.applied)

    def backups(self, d: Deploy) -> None:
        if d.r.stack.backups:
            backup_settings(d.r, d.applied)
            wait_running(self.s, d, "backup", self.env["BACKUP_IMAGE"], 1)

    # -- the stack ---------------------------------------------------------------------------------
    def stack_environment(self, d: Deploy) -> dict:
        """Everything `docker stack deploy` needs: the backup image built first (its
        placeholder secrets exist before their digest is read)."""
        return {**prepare_backups(self.s, d), **environment(self.s, d)}

    def stack_deploy(self, d: Deploy, image: str, replicas: int, what: str = "docker stack deploy",
                     processes_as_they_are: bool = False) -> None:
        """The stack file deployed with the app on IMAGE, REPLICAS of it; the processes
        ([[processes]]) at their replicas, or PROCESSES_AS_THEY_ARE: as many as run now (none
        of a new one), so that none starts on code before its release phase."""
        if not self.stack_deployed:
            self.before, self.stack_deployed = stack_objects(self.s), True
            self.specs = service_specs(self.s, self.before)
        running = replicas_now(self.specs, self.s.project) if processes_as_they_are else {}
        counts = {f"REPLICAS_{p.name.upper()}": str(running.get(p.name, 0) if processes_as_they_are else p.replicas)
                  for p in d.r.stack.all_processes}
        d.r.run(plans.deploy_stack(self.stack_file, self.s.project, {
            **self.env, "APP_IMAGE": image, "APP_REPLICAS": str(replicas), **counts}), what=what)

    def undo(self, d: Deploy, step: str, where: str, code: int) -> None:
        """The services this run changed back on what they ran (Swarm does it by itself
        when a new replica fails; `docker service rollback` when the deploy stopped for
        another reason), what this run made in Swarm removed (its services first), and the
        new release's directories removed; `current` was never switched. Raises the
        deploy's one-line error."""
        try:
            undo_swarm(self.s, d, self.before, self.specs)
        except TaskError as back:
            raise TaskError(f"{where}; undoing it failed too ({reason(back)}): see `inv swarm.status "
                            f"--cluster {self.s.cluster.name}`", code) from None
        if d.started and d.previous:  # a first deploy's app was removed
            raise TaskError(f"{where}; Swarm is rolling the app back to what it ran (see `inv swarm.status "
                            f"--cluster {self.s.cluster.name}`)", code) from None


def replicas_now(specs: dict | None, project: str) -> dict[str, int]:
    """The replicas each replicated service of SPECS (service_specs) has, by its name in the stack."""
    found = {}
    for name, spec in (specs or {}).items():
        replicated = ((spec or {}).get("Mode") or {}).get("Replicated") or {}
        found[name.removeprefix(f"{project}_")] = int(replicated.get("Replicas") or 0)
    return found


def applied(s: ClusterRun) -> dict[str, list[str]]:
    """Per database, the migrations applied there now (read on the node that runs it)."""
    found = {}
    for db, node in s.cluster.placement:
        database = next(d for d in s.stack.databases if d.name == db)
        runner = s.nodes[node]
        ids = runner.probe(plans.task_containers(s.project, db), anywhere=True).stdout.split()
        result = runner.probe(plans.applied_migrations(ids[0], database), anywhere=True) if ids else None
        if result is None or result.failed:
            raise TaskError(f"reading the migrations of {db} on {node} failed: "
                            f"{last_line(result.stderr, 'no answer') if result else 'no container there'}")
        found[db] = result.stdout.split()
    return found


def environment(s: ClusterRun, d: Deploy) -> dict:
    """The ${...} of the stack file, for `docker stack deploy` on the manager."""
    target, stack = d.r.target, d.r.stack
    secrets = target.config_dir / "secrets"
    notify = secrets / BACKUP_NOTIFY
    if stack.schedules:
        # The scheduler's secret: a Swarm secret must have content, a blank line is no URL.
        d.r.shell(plans.blank_if_missing([notify]), what="making the scheduler's notify file")
    # Every secret and config of the stack file (its key there, its file on the manager).
    files = {name: secrets / name for name in app_secrets(stack)}
    files |= {"nginx_main": target.root / "config/nginx/nginx.conf",
              "nginx_site": target.root / render.cluster_nginx_conf(s.cluster.name),
              "app_role": target.root / "config/db/app-role.sh"}
    if stack.backups:
        files |= {f"backup_{name}": secrets / name for name in backup_secrets(stack)}
        files |= {source: secrets / source for source, _ in BACKUP_OPTIONAL_SECRETS}
    if stack.schedules:
        files["scheduler_notify"] = notify
    out = d.r.shell(plans.versions_script(files.values()),
                    what="reading the digests of the secrets and configs").stdout.split()
    env = {"PROJECT": s.project, "STACK_CONFIG_DIR": str(target.config_dir),
           **{render.version_variable(key): digest for key, digest in zip(files, out + ["dry"] * len(files))}}
    for name in release_plans.PASS_THROUGH:
        if os.environ.get(name):
            env[name] = os.environ[name]
    return env


def prepare_backups(s: ClusterRun, d: Deploy) -> dict:
    """With [backups]: the backup service's image built on the manager from this release,
    its files there (the settings; an empty file for each optional secret not set up, a
    blank line: a Swarm secret must have one; a local repository's folder, its own); the
    ${...} of the stack file that name its image."""
    manager, backups = d.r, d.r.stack.backups
    if backups is None:
        return {}
    secrets = manager.target.config_dir / "secrets"
    backup_settings(manager, None)  # first: it removes the notify file [backups] no longer names
    manager.shell(plans.blank_if_missing([secrets / source for source, _ in BACKUP_OPTIONAL_SECRETS]),
                  what="making the backup service's optional secret files")
    s.say("building the backup image on the manager")
    newest = manager.stack.newest_database
    built = manager.shell(plans.build_backup_image(s.project, str(manager.target.root / "config/backup"),
                                                   os.environ.get(newest.image_variable) or newest.image_default),
                          what="building the backup image")
    image = (built.stdout.split() or [f"{s.project}-backup:dry"])[-1]
    if backups.local_repository:
        manager.run(backup_plans.own_repository(image, backups.repository), anywhere=True,
                    what=f"making the repository folder {backups.repository}")
    return {"BACKUP_IMAGE": image}


def stack_objects(s: ClusterRun) -> set[tuple[str, str]] | None:
    """(kind, name) of the stack's services, secrets, configs and networks now; None if one
    list could not be read (then nothing is taken for new)."""
    found = set()
    for kind in plans.STACK_OBJECTS:
        result = s.manager.probe(plans.stack_objects(s.project, kind), anywhere=True)
        if result.failed:
            return None
        found |= {(kind, name) for name in result.stdout.split()}
    return found


def job_secrets(project: str, stack, env: dict) -> list[tuple[str, str]]:
    """(Swarm's name, the name in /run/secrets) of each of the app's secrets, for a one-off job."""
    return [(f"{project}_{name}_{env[render.version_variable(name)]}", name) for name in app_secrets(stack)]


def release_jobs(s: ClusterRun, d: Deploy, env: dict, databases=None, static: bool = True) -> None:
    """Migrations of DATABASES (default: every one) as one job each; collectstatic on
    every node, with STATIC."""
    stack, project = d.r.stack, s.project
    secrets = job_secrets(project, stack, env)
    settings = render.django_environment(stack)
    env_file = str(d.r.target.config_dir / "django.env")
    tag = release_plans.digest_of(d.release)[:8]
    for db in databases or stack.databases:
        s.say(f"migrating {db.name} (a one-off Swarm job)")
        run_job(s, d, f"{project}-migrate-{db.name}-{tag}", "replicated-job", 1,
                plans.job(f"{project}-migrate-{db.name}-{tag}", "replicated-job", d.image,
                          [*plans.MANAGE, "migrate", "--noinput", "--database", db.alias], env=settings,
                          env_file=env_file, secrets=secrets, logs=stack.logs,
                          networks=[f"{project}_{x.network}" for x in stack.databases]))
    if not static:
        return
    s.say("collectstatic on every node (a one-off Swarm job per node)")
    run_job(s, d, f"{project}-static-{tag}", "global-job", len(s.cluster.nodes),
            plans.job(f"{project}-static-{tag}", "global-job", d.image,
                      [*plans.MANAGE, "collectstatic", "--noinput", "--verbosity", "0"], env=settings,
                      env_file=env_file, secrets=secrets, mounts=[(f"{project}_static_volume", "/srv/static")],
                      logs=stack.logs))


def run_job(s: ClusterRun, d: Deploy, name: str, mode: str, expected: int, argv: list[str],
            show: bool = False) -> None:
    """The job NAME (ARGV, of MODE) started on the manager, waited for, its last line of
    output the error when it failed (SHOW: all its output printed first); removed in any case."""
    manager = d.r
    manager.run(plans.remove_service(name), check=False, hide=True, anywhere=True)
    manager.run(argv, hide=True, anywhere=True, what=f"starting {name}")
    outcome = [None]

    def over():
        outcome[0] = plans.job_outcome(manager.probe(plans.job_states(name), anywhere=True).stdout, expected)
        return None if outcome[0] is not None else "still running"

    try:
        wait(s, d, f"the job {name}", over, "did not finish")
        if show and outcome[0] is not None:
            logs = manager.probe(plans.job_logs(name), anywhere=True)
            print(logs.stdout, end="")
            print(logs.stderr, end="", file=sys.stderr)
        if outcome[0] is not None and not outcome[0][0]:
            logs = manager.probe(plans.job_logs(name), anywhere=True)
            raise TaskError(f"{name} failed ({outcome[0][1]}): {last_line(logs.stdout + logs.stderr, 'no output')}")
    finally:
        manager.run(plans.remove_service(name), check=False, hide=True, anywhere=True)


def wait_running(s: ClusterRun, d: Deploy, name: str, image: str | None, count: int, exactly: bool = False) -> None:
    """Until COUNT tasks of service NAME run (on IMAGE), healthy (EXACTLY: and no more);
    a rolling update that Swarm gave up on (and rolled back) fails at once."""
    manager = d.r

    def ready():
        if image is not None:
            why = update_state(manager, s.project, name)
            if why:
                return why
        tasks = [line.split("|") for line in manager.probe(plans.running_tasks(s.project, name),
                                                           anywhere=True).stdout.splitlines() if line.strip()]
        good = [t for t in tasks if t[1].startswith("Running") and (image is None or t[0] == image)]
        if len(good) >= count and len(tasks) == len(good) and not (exactly and len(tasks) > count):
            return None
        return f"{len(good)} of {count} running" + (f" on {image}" if image else "")

    wait(s, d, name, ready, f"did not reach {count} running task(s)")


def update_state(manager, project: str, name: str) -> str | None:
    """Why service NAME's rolling update is not over yet (None: over, or none); a failed one
    raises: Swarm rolled it back."""
    status = manager.probe(plans.update_status(project, name), anywhere=True).stdout.strip()
    if not status or status == "null":
        return None
    update = json.loads(status)
    if update.get("State") in plans.UPDATE_FAILED:
        raise TaskError(f"Swarm stopped the rolling update of {name} ({update.get('State')}: "
                        f"{update.get('Message', '')}); the replicas run the previous image")
    if update.get("State") not in (None, "completed"):
        # Swarm still monitors the last replica it replaced: a failure now would still roll
        # the service back.
        return f"the update is {update.get('State')}"
    return None


def wait(s: ClusterRun, d: Deploy, what: str, check, failure: str) -> None:
    # Each replica is replaced in turn (start, health, drain, delay): the timeout is per replica.
    s.manager.wait_until(what, check, d.timeout * max(1, s.cluster.replicas), interval=1.0, failure=failure,
                         hint=f"; see `inv swarm.status --cluster {s.cluster.name}`")


def balance(s: ClusterRun, d: Deploy) -> None:
    """After a deploy or rollback has switched (a scale changes the service's previous
    spec, which an undo rolls back to): a failure here leaves the release serving, and
    says so."""
    try:
        spread(s, d)
    except TaskError as exc:
        s.say(f"warning: the replicas stay unevenly spread over the nodes ({reason(exc)}); "
              f"the next deploy spreads them again")


def spread(s: ClusterRun, d: Deploy) -> None:
    """The replicas spread over the nodes again. A start-first update places each new
    replica while the old one it replaces still runs, so every choice is a tie that Swarm
    breaks the same way (the node with fewer tasks of any service: not the manager, which
    runs the databases): both replicas of two nodes can end up on one, and losing that node
    then loses the site until they start elsewhere. One replica more (Swarm places it on
    the emptiest node), then one fewer (Swarm removes it from the node with the most,
    stopping it as a rolling update does, drain included)."""
    manager, replicas = d.r, s.cluster.replicas
    for _ in range(replicas):
        nodes = plans.available_nodes(manager.probe(plans.nodes(), anywhere=True).stdout)
        placed = manager.shell(plans.task_nodes(s.project, "djangoapp"), what="reading where the replicas run")
        if not plans.unbalanced(placed.stdout.split(), nodes):
            return
        s.say("spreading the replicas over the nodes again (one more, then one fewer)")
        manager.run(plans.scale(s.project, "djangoapp", replicas + 1), hide=True, anywhere=True,
                    what="adding a replica")
        wait_running(s, d, "djangoapp", d.image, replicas + 1)
        manager.run(plans.scale(s.project, "djangoapp", replicas), hide=True, anywhere=True,
                    what="removing a replica")
        wait_running(s, d, "djangoapp", d.image, replicas, exactly=True)


def service_specs(s: ClusterRun, objects: set | None) -> dict[str, dict] | None:
    """The spec of each service among OBJECTS (as stack_objects reads them), by name; None
    if they could not be read."""
    if objects is None:
        return None
    names = sorted(name for kind, name in objects if kind == "service")
    found = inspected(s, names) if names else {}
    return None if found is None else {name: entry.get("Spec") for name, entry in found.items()}


def inspected(s: ClusterRun, names: list[str]) -> dict[str, dict] | None:
    """What `docker service inspect` says of each of services NAMES that exists, by name;
    None if it said nothing readable."""
    result = s.manager.probe(plans.inspect_services(names), anywhere=True)
    try:
        return {entry["Spec"]["Name"]: entry for entry in json.loads(result.stdout)}
    except (ValueError, KeyError, TypeError):
        return None


def update_of(entry: dict) -> str:
    return str((entry.get("UpdateStatus") or {}).get("State") or "")


def undo_swarm(s: ClusterRun, d: Deploy, before: set | None, specs: dict | None) -> None:
    back = roll_back(s, d, specs)
    remove_created(s, d, before, back)
    for node in s.nodes.values():
        node.shell(release_plans.remove_trees([node.target.directory / "releases" / d.release]), check=False)


def roll_back(s: ClusterRun, d: Deploy, specs: dict | None) -> list[str]:
    """Each service that ran before this run and that it changed, asked back on its
    previous spec (Swarm keeps one: the spec before this run, unless the run changed it
    twice, as the app's when a new database came and then the new image); one that Swarm
    rolls back by itself (a failed rolling update) is left to it, its previous spec the
    failed one. The names of the services rolling back; without SPECS (not read), the app's
    alone is rolled back, once it was rolled over."""
    now = inspected(s, sorted(specs)) if specs else {}
    if specs is None or now is None:
        status = s.manager.probe(plans.update_status(s.project, "djangoapp"), anywhere=True).stdout.strip()
        rolling_back = status not in ("", "null") and str(json.loads(status).get("State", "")).startswith("rollback")
        if d.started and not rolling_back:
            s.say(f"rolling the app back to what it ran before {d.release}")
            s.manager.run(plans.rollback_service(s.project, "djangoapp"), hide=True, anywhere=True,
                          what="asking Swarm to roll the app back")
        return []
    by_swarm = [name for name, entry in sorted(now.items()) if update_of(entry).startswith("rollback")]
    changed = [name for name, entry in sorted(now.items())
               if name not in by_swarm and entry.get("Spec") != specs.get(name)]
    if changed:
        s.say(f"rolling {', '.join(changed)} back to what ran before {d.release}")
    for name in changed:
        s.manager.run(plans.rollback_service(s.project, name.removeprefix(f"{s.project}_")), hide=True,
                      anywhere=True, what=f"asking Swarm to roll {name} back")
    return by_swarm + changed


def remove_created(s: ClusterRun, d: Deploy, before: set | None, back: list[str]) -> None:
    """What this run's `docker stack deploy` made, once the services rolling BACK have: its
    services removed first; then, once
    their tasks and those of the services rolling BACK should no longer run (Swarm removes a
    network only then), its secrets, configs and networks, waited for until the manager no
    longer lists them (a network stays listed there until the containers on it have stopped).
    What a service still uses is refused by Swarm and stays, named in a warning."""
    after = stack_objects(s) if before is not None else None
    created = sorted(after - before) if after is not None else []
    if not created:
        return
    s.say(f"removing what this deploy made in Swarm: {', '.join(f'{kind} {name}' for kind, name in created)}")
    services = [(kind, name) for kind, name in created if kind == "service"]
    rest = [entry for entry in created if entry not in services]
    if services and back:
        # The undo in the change's reverse order: until they have rolled back, the services
        # BACK may use what it made (the app, a database added): gone first, their health
        # checks would fail meanwhile.
        settle(s, d, back, [])
    kept = refused(s, services)
    if rest and (services or back):
        settle(s, d, back, [name for _, name in services])
    kept += refused(s, rest)
    gone(s, d, [entry for entry in created if entry not in kept])
    if kept:
        s.say(f"warning: Swarm kept {', '.join(f'{kind} {name}' for kind, name in kept)}, still in use (see "
              f"`inv swarm.status --cluster {s.cluster.name}`): once nothing uses it, run on {s.cluster.manager}: "
              f"`{'; '.join(shlex.join(argv) for _, argv in plans.remove_objects(kept))}`")


def refused(s: ClusterRun, objects) -> list[tuple[str, str]]:
    """OBJECTS removed from Swarm; those it refused to remove."""
    return [entry for entry, argv in plans.remove_objects(objects)
            if s.manager.run(argv, check=False, hide=True, anywhere=True).failed]


def gone(s: ClusterRun, d: Deploy, removed: list[tuple[str, str]]) -> None:
    """Until the manager lists none of REMOVED; past the deploy's timeout, a warning."""

    def over():
        left = stack_objects(s)
        still = [f"{kind} {name}" for kind, name in removed if left is None or (kind, name) in left]
        return f"{', '.join(still)} still listed" if still else None

    try:
        wait(s, d, "what this deploy made in Swarm", over, "did not go")
    except TaskError as exc:
        s.say(f"warning: {reason(exc)}")


def settle(s: ClusterRun, d: Deploy, back: list[str], removed: list[str]) -> None:
    """Until the services BACK have rolled back and no task of the services REMOVED should
    run; past the deploy's timeout, a warning, and the removal goes on."""

    def over():
        states = inspected(s, back) if back else {}
        rolling = [name for name, entry in sorted((states or {}).items()) if update_of(entry) == "rollback_started"]
        tasks = s.manager.probe(plans.stack_tasks(s.project), anywhere=True).stdout.split()
        stopping = sorted({task.rsplit(".", 1)[0] for task in tasks} & set(removed))
        why = [*(f"{name} rolling back" for name in rolling), *(f"{name} stopping" for name in stopping)]
        return "; ".join(why) or None

    try:
        wait(s, d, "the services this deploy changed", over, "did not settle")
    except TaskError as exc:
        s.say(f"warning: {reason(exc)}")


def live(s: ClusterRun, timeout: int, then: str) -> tuple[SwarmRelease, Deploy]:
    """The swarm strategy and a Deploy for the cluster's live release; none yet: one line
    that says what to run, THEN."""
    release = current_release(s.manager)
    s.manager.require(release is not None, f"nothing is deployed to cluster {s.cluster.name} yet: "
                                           f"`inv deploy --cluster {s.cluster.name}`{then}")
    place = SwarmRelease(s)
    return place, place.context(release or "current", None, timeout)


def refresh(s: ClusterRun, timeout: int = 180) -> None:
    """The live release deployed again, for what changed on the manager only."""
    check_swarm(s)
    with deploy_lock(s.manager):
        place, d = live(s, timeout, " (it starts the backup service)")
        # The live release's stack file is deployed again: it must have the backup service
        # that this checkout's [backups] sets up.
        if not d.r.probe(plans.stack_has_service(place.stack_file, "backup")).ok:
            raise TaskError(f"the live release of cluster {s.cluster.name} ({d.release}) has no backup service: "
                            f"deploy this checkout's [backups] first (`inv deploy --cluster {s.cluster.name}`)")
        place.env = place.stack_environment(d)
        place.stack_deploy(d, d.image, s.cluster.replicas)
        if d.r.stack.backups:
            wait_running(s, d, "backup", place.env["BACKUP_IMAGE"], 1)
    s.report(f"the stack of cluster {s.cluster.name} took up the change ({d.release}, as it was)")


def migrate(s: ClusterRun, database, timeout: int) -> None:
    """Migrations as the deploy runs them: one-off Swarm jobs of the live release's image."""
    check_swarm(s)
    place, d = live(s, timeout, "")
    targets = [s.stack.database(database)] if database else None
    release_jobs(s, d, environment(s, d), targets, static=False)


def run_schedule(s: ClusterRun, schedule) -> None:
    """SCHEDULE's `manage.py COMMAND` once, now: a one-off Swarm job of the live release's
    image (as a migration runs), on the networks of the databases and services, beside the
    scheduler, which does not count it; its output printed."""
    check_swarm(s)
    _, d = live(s, schedule.timeout, "")
    env = environment(s, d)
    stack, project = d.r.stack, s.project
    # A name of its own per run: a job of the same name would be removed first.
    name = f"{project}-schedule-{schedule.name}-{int(time.time())}"
    s.say(f"running schedule {schedule.name} (a one-off Swarm job of {d.image})")
    try:
        run_job(s, d, name, "replicated-job", 1, plans.job(
            name, "replicated-job", d.image, [*plans.MANAGE, *schedule.command],
            env=render.django_environment(stack), env_file=str(d.r.target.config_dir / "django.env"),
            secrets=job_secrets(project, stack, env),
            networks=[f"{project}_{x.network}" for x in (*stack.databases, *stack.services)]), show=True)
    except TaskError as exc:
        raise TaskError(f"schedule {schedule.name} (manage.py {' '.join(schedule.command)}) failed on cluster "
                        f"{s.cluster.name}: {reason(exc)}") from None


def scale(s: ClusterRun, wanted: dict[str, int], timeout: int) -> None:
    """The processes of WANTED ({name: replicas}) scaled by Swarm: the new tasks running
    (healthy, where there is a health test), the extra ones stopped with their stop signal
    and grace. One that does not get there: every one scaled back to what it had."""
    check_swarm(s)
    _, d = live(s, timeout, " (it starts the processes)")
    found = inspected(s, [plans.service(s.project, name) for name in wanted]) or {}
    before = replicas_now({name: entry.get("Spec") for name, entry in found.items()}, s.project)
    missing = [name for name in wanted if name not in before]
    s.manager.require(not missing, f"{', '.join(missing)} not on cluster {s.cluster.name} yet: `inv deploy "
                                   f"--cluster {s.cluster.name}` starts it")
    before = {name: before.get(name, 0) for name in wanted}  # a dry run reads none
    try:
        for name, count in wanted.items():
            s.say(f"scaling {name} from {before[name]} to {count} task(s)")
            d.r.run(plans.scale(s.project, name, count), hide=True, anywhere=True, what=f"scaling {name}")
        for name, count in wanted.items():
            wait_running(s, d, name, None, count, exactly=True)
    except (Exception, KeyboardInterrupt) as exc:
        s.say(f"scaling back: {', '.join(f'{name} to {before[name]}' for name in wanted)} ({reason(exc)})")
        for name in wanted:
            d.r.run(plans.scale(s.project, name, before[name]), check=False, hide=True, anywhere=True)
        raise
