"""A deploy to a cluster ([clusters.NAME]): the stack on Docker Swarm, updated by Swarm's own
rolling update (plans in tasks/plans/swarm.py; the stack file is rendered from
config/stack.toml like the compose file).

The image reaches every node without a registry by the hosts' own way: the code ships to
each node by rsync (only what changed since its previous release) and each node builds it
from the same Pipfile.lock, hashes checked. No registry to run and secure, no trust between
the nodes, and a code change sends kilobytes, not the image; the cost is a build per node.

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

import getpass
import json
import os
import shlex
import socket
import time
from datetime import datetime, timezone

from ..errors import TaskError, last_line, reason
from ..execution.cluster import ClusterRun
from ..plans import archives, ledger
from ..plans import backups as backup_plans
from ..plans import release as release_plans
from ..plans import swarm as plans
from ..source import render
from ..source.render import app_secrets, backup_secrets
from ..source.stack import BACKUP_OPTIONAL_SECRETS, ROOT
from .release import (Deploy, build_image, check_migrations, current_release, deploy_lock, prepare, prune_releases,
                      rollback_target, ship_code)
from .starting import backup_settings
from .swarm import node_state


def deploy(s: ClusterRun, keep: int, timeout: int) -> None:
    started = time.monotonic()
    cluster, manager = s.cluster, s.manager
    project = manager.project
    digest = release_plans.code_digest(ROOT)
    release = release_plans.release_name(archives.stamp(), digest)
    image = f"{project}-djangoapp:{digest}"
    for name, node in s.nodes.items():
        node.ensure_engine()
        node.shell(release_plans.prepare_directories(node.target.directory), what=f"preparing {name}'s directory")
    _check_swarm(s)
    with deploy_lock(manager):
        previous = current_release(manager)
        if previous and previous.endswith(f"-{digest}") and not s.dry:
            s.report(f"cluster {cluster.name} runs this code already ({previous}): nothing to deploy")
            return
        manager.shell(release_plans.mark_served(manager.target.directory), check=False)
        s.say(f"deploying {release} to cluster {cluster.name} ({', '.join(cluster.nodes)}; previous: "
              f"{previous or 'none'})")
        steps = Steps(s, release, previous, image, timeout)
        try:
            steps.run()
        except BaseException as exc:
            where = f"deploy of {release} to cluster {cluster.name} failed ({reason(exc)})"
            try:
                steps.undo()
            except TaskError as back:
                raise TaskError(f"{where}; undoing it failed too ({reason(back)}): see `inv swarm.status "
                                f"--cluster {cluster.name}`") from None
            back = ("; Swarm is rolling the app back to what it ran (see `inv swarm.status "
                    f"--cluster {cluster.name}`)" if steps.switched else "; nothing was switched")
            raise TaskError(where + back, 130 if isinstance(exc, KeyboardInterrupt) else 1) from None
        steps.balance()
        for node in s.nodes.values():
            prune_releases(node, keep, release, previous)
    s.report(f"deployed {release} to cluster {cluster.name} in {time.monotonic() - started:.1f}s "
             f"({cluster.replicas} replica(s) of {image})")


def _check_swarm(s: ClusterRun) -> None:
    """Every node a member of the manager's swarm, else one line saying what to run."""
    state = node_state(s.manager)
    if not state.manager and not s.dry:
        raise TaskError(f"{s.cluster.manager} is not a swarm manager: run `inv swarm.init --cluster {s.cluster.name}`")
    for name, node in s.workers.items():
        if node_state(node).state != "active" and not s.dry:
            raise TaskError(f"{name} is not in the swarm: run `inv swarm.init --cluster {s.cluster.name}`")


class Steps:
    def __init__(self, s: ClusterRun, release: str, previous: str | None, image: str, timeout: int):
        self.s, self.release, self.previous, self.image, self.timeout = s, release, previous, image, timeout
        self.manager = s.manager.in_release(release)
        self.project = s.manager.project
        self.stack_file = str(render.stack_file(s.cluster.name))
        self.switched = False
        # The stack's secrets, configs and networks before this run's first `docker stack
        # deploy` (None: not read, or not deployed yet): what an undo may remove is the rest.
        self.before: set[tuple[str, str]] | None = None
        self.stack_deployed = False

    def run(self) -> None:
        # Every node builds at once: the deploy waits for the slowest, not for their sum.
        self.s.say(f"shipping the code and building {self.image} on {', '.join(self.s.nodes)} at once")
        self.s.each(self.build_on)
        env = self.stack_environment()
        # What serves now: the live release's image (not the service's, which a failed first
        # deploy may have left on an image never migrated, at 0 replicas).
        running = f"{self.project}-djangoapp:{self.previous.rsplit('-', 1)[1]}" if self.previous else None
        self.s.say("bringing the databases to the stack file" + (f" (the app stays on {running})" if running else ""))
        self.stack_deploy(env, running or self.image, self.s.cluster.replicas if running else 0,
                          "docker stack deploy (databases)")
        for db in self.manager.stack.databases:
            self.wait_running(db.name, None, 1)
        self.release_phase(env)
        self.s.say(f"rolling {self.s.cluster.replicas} replica(s) over to {self.image}")
        self.switched = True
        self.stack_deploy(env, self.image, self.s.cluster.replicas)
        self.wait_running("djangoapp", self.image, self.s.cluster.replicas)
        applied = self.record()
        if self.manager.stack.backups:
            backup_settings(self.manager, applied)
            self.wait_running("backup", env["BACKUP_IMAGE"], 1)
        self.manager.shell(release_plans.switch(self.manager.target.directory, self.release),
                           what=f"pointing current at {self.release}")

    def build_on(self, name: str, node) -> None:
        d = Deploy(node.in_release(self.release), node.here(), self.release, self.previous, self.image,
                   False, self.timeout)
        ship_code(d)
        prepare(d)
        if node is self.s.manager:
            cluster = self.s.cluster.name
            files = render.rendered(node.stack)
            for path in (render.stack_file(cluster), render.cluster_nginx_conf(cluster)):
                d.r.write(d.release_dir / path, files[path], mode=0o644)
        build_image(d)

    def record(self) -> dict[str, list[str]]:
        """The release's ledger entry on the manager, as a host's: what it is and what each
        database has applied (returned)."""
        applied = self.applied()
        here = self.s.manager.here()
        commit = here.probe(["git", "rev-parse", "HEAD"], anywhere=True).stdout.strip() or "unknown"
        if commit != "unknown" and here.probe(["git", "status", "--porcelain"], anywhere=True).stdout.strip():
            commit += "+changes"
        image = self.manager.probe(["docker", "image", "inspect", "--format", "{{.Id}}", self.image]).stdout.strip()
        entry = ledger.entry(self.release, commit, image, datetime.now(timezone.utc).isoformat(timespec="seconds"),
                             f"{getpass.getuser()}@{socket.gethostname()}", applied)
        self.manager.write(self.manager.target.root / ledger.LEDGER, entry, mode=0o644)
        return applied

    def applied(self) -> dict[str, list[str]]:
        """Per database, the migrations applied there now (read on the node that runs it)."""
        applied = {}
        for db, node in self.s.cluster.placement:
            database = next(d for d in self.manager.stack.databases if d.name == db)
            runner = self.s.nodes[node]
            ids = runner.probe(plans.task_containers(self.project, db), anywhere=True).stdout.split()
            result = runner.probe(plans.applied_migrations(ids[0], database), anywhere=True) if ids else None
            if result is None or result.failed:
                raise TaskError(f"reading the migrations of {db} on {node} failed: "
                                f"{last_line(result.stderr, 'no answer') if result else 'no container there'}")
            applied[db] = result.stdout.split()
        return applied

    def serve_again(self) -> None:
        """A rollback: the release's own stack file and image (still on every node) rolled
        out by Swarm, one replica at a time; no migration runs."""
        env = self.stack_environment()
        self.s.say(f"rolling {self.s.cluster.replicas} replica(s) back to {self.image}")
        self.switched = True
        self.stack_deploy(env, self.image, self.s.cluster.replicas)
        self.wait_running("djangoapp", self.image, self.s.cluster.replicas)
        self.manager.shell(release_plans.switch(self.manager.target.directory, self.release),
                           what=f"pointing current at {self.release}")

    def balance(self) -> None:
        """After a deploy or rollback has switched (a scale changes the service's previous
        spec, which an undo rolls back to): a failure here leaves the release serving, and
        says so."""
        try:
            self._balance()
        except TaskError as exc:
            self.s.say(f"warning: the replicas stay unevenly spread over the nodes ({reason(exc)}); "
                       f"the next deploy spreads them again")

    def _balance(self) -> None:
        """The replicas spread over the nodes again. A start-first update places each new
        replica while the old one it replaces still runs, so every choice is a tie that
        Swarm breaks the same way (the node with fewer tasks of any service: not the
        manager, which runs the databases): both replicas of two nodes can end up on one,
        and losing that node then loses the site until they start elsewhere. One replica
        more (Swarm places it on the emptiest node), then one fewer (Swarm removes it from
        the node with the most, stopping it as a rolling update does, drain included)."""
        manager, replicas = self.manager, self.s.cluster.replicas
        for _ in range(replicas):
            nodes = plans.available_nodes(manager.probe(plans.nodes(), anywhere=True).stdout)
            placed = manager.shell(plans.task_nodes(self.project, "djangoapp"), what="reading where the replicas run")
            if self.s.dry or not plans.unbalanced(placed.stdout.split(), nodes):
                return
            self.s.say("spreading the replicas over the nodes again (one more, then one fewer)")
            manager.run(plans.scale(self.project, "djangoapp", replicas + 1), hide=True, anywhere=True,
                        what="adding a replica")
            self.wait_running("djangoapp", self.image, replicas + 1)
            manager.run(plans.scale(self.project, "djangoapp", replicas), hide=True, anywhere=True,
                        what="removing a replica")
            self.wait_running("djangoapp", self.image, replicas, exactly=True)

    def environment(self) -> dict:
        """The ${...} of the stack file, for `docker stack deploy` on the manager."""
        target, stack = self.manager.target, self.manager.stack
        secrets = target.config_dir / "secrets"
        configs = [target.root / "config/nginx/nginx.conf", target.root / render.cluster_nginx_conf(self.s.cluster.name),
                   target.root / "config/db/app-role.sh"]
        backup = [secrets / name for name in [*backup_secrets(stack), *(source for source, _ in BACKUP_OPTIONAL_SECRETS)]]
        out = self.manager.shell(plans.versions_script([secrets / name for name in app_secrets(stack)], configs,
                                                       backup if stack.backups else []),
                                 what="reading the digests of the secrets and configs").stdout.split()
        secrets_version, config_version, backup_version = (out + ["dry", "dry", "dry"])[:3]
        env = {"PROJECT": self.project, "STACK_CONFIG_DIR": str(target.config_dir), "SECRETS_VERSION": secrets_version,
               "CONFIG_VERSION": config_version}
        if stack.backups:
            env["BACKUP_SECRETS_VERSION"] = backup_version
        for name in release_plans.PASS_THROUGH:
            if os.environ.get(name):
                env[name] = os.environ[name]
        return env

    def prepare_backups(self) -> dict:
        """With [backups]: the backup service's image built on the manager from this
        release, its files there (the settings; an empty file for each optional secret not
        set up, a blank line: a Swarm secret must have one; a local repository's folder, its own);
        the ${...} of the stack file that name its image."""
        manager, backups = self.manager, self.manager.stack.backups
        if backups is None:
            return {}
        secrets = manager.target.config_dir / "secrets"
        backup_settings(manager, None)  # first: it removes the notify file [backups] no longer names
        manager.shell("umask 077; " + "; ".join(f"[ -s {path} ] || echo > {path}" for path in (
            shlex.quote(str(secrets / source)) for source, _ in BACKUP_OPTIONAL_SECRETS)),
            what="making the backup service's optional secret files")
        self.s.say("building the backup image on the manager")
        built = manager.shell(plans.build_backup_image(self.project, str(manager.target.root / "config/backup"),
                                                       os.environ.get("POSTGRES_IMAGE") or "postgres:15"),
                              what="building the backup image")
        image = (built.stdout.split() or [f"{self.project}-backup:dry"])[-1]
        if backups.local_repository:
            manager.run(backup_plans.own_repository(image, backups.repository), anywhere=True,
                        what=f"making the repository folder {backups.repository}")
        return {"BACKUP_IMAGE": image}

    def stack_environment(self) -> dict:
        """Everything `docker stack deploy` needs: the backup image built first (its
        placeholder secrets exist before their digest is read)."""
        return {**self.prepare_backups(), **self.environment()}

    def stack_objects(self) -> set[tuple[str, str]] | None:
        """(kind, name) of the stack's secrets, configs and networks now; None if one list
        could not be read (then nothing is taken for new)."""
        found = set()
        for kind in plans.STACK_OBJECTS:
            result = self.s.manager.probe(plans.stack_objects(self.project, kind), anywhere=True)
            if result.failed:
                return None
            found |= {(kind, name) for name in result.stdout.split()}
        return found

    def stack_deploy(self, env: dict, image: str, replicas: int, what: str = "docker stack deploy") -> None:
        if not self.stack_deployed:
            self.before, self.stack_deployed = self.stack_objects(), True
        self.manager.run(plans.deploy_stack(self.stack_file, self.project, {
            **env, "APP_IMAGE": image, "APP_REPLICAS": str(replicas)}), what=what)

    def refresh(self) -> None:
        """The live release's stack deployed again as it is: what changed on the manager
        since (the backup service's secrets, say) taken up, the app left as it runs."""
        env = self.stack_environment()
        self.stack_deploy(env, self.image, self.s.cluster.replicas)
        if self.manager.stack.backups:
            self.wait_running("backup", env["BACKUP_IMAGE"], 1)

    def release_phase(self, env: dict, databases=None, static: bool = True) -> None:
        """Migrations of DATABASES (default: every one) as one job each; collectstatic on
        every node, with STATIC."""
        stack = self.manager.stack
        secrets = [(f"{self.project}_{name}_{env['SECRETS_VERSION']}", name) for name in app_secrets(stack)]
        settings = {"DJANGO_SETTINGS_MODULE": "hello.settings.production",
                    "DJANGO_DATABASES": ",".join(db.name for db in stack.databases),
                    "DJANGO_SECRET_KEY_FILE": "/run/secrets/django_secret_key",
                    **{f"{db.password_variable}_FILE": f"/run/secrets/{db.secret_name}" for db in stack.databases}}
        env_file = str(self.manager.target.config_dir / "django.env")
        tag = self.release.rsplit("-", 1)[1][:8]
        for db in databases or stack.databases:
            self.s.say(f"migrating {db.name} (a one-off Swarm job)")
            self.run_job(f"{self.project}-migrate-{db.name}-{tag}", "replicated-job", 1,
                         [*plans.MANAGE, "migrate", "--noinput", "--database", db.alias], env_file, settings, secrets,
                         networks=[f"{self.project}_{d.network}" for d in stack.databases])
        if not static:
            return
        self.s.say("collectstatic on every node (a one-off Swarm job per node)")
        self.run_job(f"{self.project}-static-{tag}", "global-job", len(self.s.cluster.nodes),
                     [*plans.MANAGE, "collectstatic", "--noinput", "--verbosity", "0"], env_file, settings, secrets,
                     mounts=[(f"{self.project}_static_volume", "/srv/static")])

    def run_job(self, name, mode, expected, command, env_file, settings, secrets, networks=(), mounts=()):
        manager = self.manager
        manager.run(plans.remove_service(name), check=False, hide=True, anywhere=True)
        manager.run(plans.job(name, mode, self.image, command, env=settings, env_file=env_file, secrets=secrets,
                              networks=networks, mounts=mounts), hide=True, anywhere=True, what=f"starting {name}")
        outcome = [None]

        def over():
            outcome[0] = plans.job_outcome(manager.probe(plans.job_states(name), anywhere=True).stdout, expected)
            return None if outcome[0] is not None else "still running"

        try:
            self.wait(f"the job {name}", over, "did not finish")
            if outcome[0] is not None and not outcome[0][0]:
                logs = manager.probe(plans.job_logs(name), anywhere=True)
                raise TaskError(f"{name} failed ({outcome[0][1]}): {last_line(logs.stdout + logs.stderr, 'no output')}")
        finally:
            manager.run(plans.remove_service(name), check=False, hide=True, anywhere=True)

    def wait_running(self, name: str, image: str | None, count: int, exactly: bool = False) -> None:
        """Until COUNT tasks of service NAME run (on IMAGE), healthy (EXACTLY: and no more);
        a rolling update that Swarm gave up on (and rolled back) fails at once."""
        manager = self.manager

        def ready():
            if image is not None:
                status = manager.probe(plans.update_status(self.project, name), anywhere=True).stdout.strip()
                if status and status != "null":
                    update = json.loads(status)
                    if update.get("State") in plans.UPDATE_FAILED:
                        raise TaskError(f"Swarm stopped the rolling update of {name} ({update.get('State')}: "
                                        f"{update.get('Message', '')}); the replicas run the previous image")
                    if update.get("State") not in (None, "completed"):
                        # Swarm still monitors the last replica it replaced: a failure now
                        # would still roll the service back.
                        return f"the update is {update.get('State')}"
            tasks = [line.split("|") for line in manager.probe(plans.running_tasks(self.project, name),
                                                               anywhere=True).stdout.splitlines() if line.strip()]
            good = [t for t in tasks if t[1].startswith("Running") and (image is None or t[0] == image)]
            if len(good) >= count and len(tasks) == len(good) and not (exactly and len(tasks) > count):
                return None
            return f"{len(good)} of {count} running" + (f" on {image}" if image else "")

        self.wait(name, ready, f"did not reach {count} running task(s)")

    def wait(self, what: str, check, failure: str) -> None:
        # Each replica is replaced in turn (start, health, drain, delay): the timeout is per replica.
        self.s.manager.wait_until(what, check, self.timeout * max(1, self.s.cluster.replicas), interval=1.0,
                                  failure=failure,
                                  hint=f"; see `inv swarm.status --cluster {self.s.cluster.name}`")

    def undo(self) -> None:
        """The app back on the image it ran (Swarm does it by itself when a new replica
        fails; `docker service rollback` when the deploy stopped for another reason), what
        this run made in Swarm and nothing uses removed, and the new release's directories
        removed; `current` was never switched."""
        status = self.s.manager.probe(plans.update_status(self.project, "djangoapp"), anywhere=True).stdout.strip()
        rolling_back = status not in ("", "null") and str(json.loads(status).get("State", "")).startswith("rollback")
        # Once Swarm rolls back by itself, its previous spec is the failed one: never ask again.
        if self.switched and not rolling_back:
            self.s.say(f"rolling the app back to what it ran before {self.release}")
            self.s.manager.run(plans.rollback_service(self.project, "djangoapp"), hide=True, anywhere=True,
                               what="asking Swarm to roll the app back")
        self.remove_created()
        for node in self.s.nodes.values():
            node.shell(release_plans.remove_trees([node.target.directory / "releases" / self.release]), check=False)

    def remove_created(self) -> None:
        """The secrets, configs and networks this run's `docker stack deploy` made and no
        service uses (a deploy that stopped half-way leaves them otherwise: a failed one
        leaves its networks, say); those in use stay, as Swarm refuses their removal."""
        after = self.stack_objects() if self.before is not None else None
        created = sorted(after - self.before) if after is not None else []
        if not created:
            return
        self.s.say(f"removing what this deploy made in Swarm: {', '.join(f'{kind} {name}' for kind, name in created)}")
        for argv in plans.remove_objects(created):
            self.s.manager.run(argv, check=False, hide=True, anywhere=True)


def refresh(s: ClusterRun, timeout: int = 180) -> None:
    """The live release deployed again, for what changed on the manager only."""
    if s.dry:
        s.say(f"[dry] would deploy the live release of cluster {s.cluster.name} again (the backup service restarts)")
        return
    _check_swarm(s)
    with deploy_lock(s.manager):
        live = current_release(s.manager)
        if live is None:
            raise TaskError(f"nothing is deployed to cluster {s.cluster.name} yet: `inv deploy --cluster "
                            f"{s.cluster.name}` (it starts the backup service)")
        steps = Steps(s, live, None, f"{s.manager.project}-djangoapp:{live.rsplit('-', 1)[1]}", timeout)
        # The live release's stack file is deployed again: it must have the backup service
        # that this checkout's [backups] sets up.
        if not steps.manager.probe(["grep", "-q", "^  backup:$", steps.stack_file]).ok:
            raise TaskError(f"the live release of cluster {s.cluster.name} ({live}) has no backup service: "
                            f"deploy this checkout's [backups] first (`inv deploy --cluster {s.cluster.name}`)")
        steps.refresh()
    s.report(f"the stack of cluster {s.cluster.name} took up the change ({live}, as it was)")


def rollback(s: ClusterRun, timeout: int, to: str | None = None, force: bool = False) -> None:
    """The cluster back on the release before the current one (or TO) by a rolling update;
    refused when a database has applied migrations that release's code does not know,
    unless FORCE (as for a host)."""
    manager = s.manager
    _check_swarm(s)
    with deploy_lock(manager):
        current, target, entry = rollback_target(manager, to)
        steps = Steps(s, target, current, f"{manager.project}-djangoapp:{target.rsplit('-', 1)[1]}", timeout)
        check_migrations(manager, target, entry, force, now=steps.applied())
        steps.serve_again()
        steps.balance()
    s.report(f"rolled cluster {s.cluster.name} back from {current} to {target}")
