"""What a task does where the CLI put it: here or on a host (a Runner), or on a Swarm
cluster (a ClusterRun). The CLI makes one or the other once, from --host or --cluster; a
task body asks `of(r)` for the place and calls the same method on either, never which one
it holds. A new kind of process in a release is one change per strategy
(procedures/release.py HostRelease, procedures/cluster_release.py SwarmRelease)."""
from __future__ import annotations

import os

from ..errors import TaskError, last_line
from ..execution.cluster import ClusterRun
from ..execution.runner import Runner, interactive
from ..plans import backups as backup_plans
from ..plans import compose
from ..plans import schedules as schedule_plans
from . import backups as scheduled
from . import cluster_release, cluster_tasks, release, swarm
from . import processes as rollout
from .django import migrate_all
from .locks import project_lock

PASSWORD_NEEDED = "set DJANGO_SUPERUSER_PASSWORD in the environment to create a user with --username"


class HostPlace:
    """Here, or a host: the stack under Compose."""

    restores_media = True

    def __init__(self, r: Runner):
        self.r = self.home = r

    def deploy(self, ship_image: bool, keep: int, timeout: int) -> None:
        release.deploy(self.r, ship_image=ship_image, keep=keep, timeout=timeout)

    def rollback(self, timeout: int, to: str | None, force: bool) -> None:
        release.rollback(self.r, timeout, to=to, force=force)

    def migrate(self, database, timeout: int) -> None:
        migrate_all(self.r, database)

    def manage(self, words: list[str]) -> None:
        self.r.require_running(compose.APP)
        tty = interactive()
        self.r.compose(compose.manage(words, tty=tty), pty=tty, stdin=True, what=f"manage.py {words[0]}")

    def createsuperuser(self, username: str | None, email: str | None) -> None:
        r = self.r
        if username is not None:
            r.require(bool(os.environ.get(compose.SUPERUSER_PASSWORD)), PASSWORD_NEEDED)
        r.require_running(compose.APP)
        if username is None:
            r.compose(compose.createsuperuser(tty=True), pty=True, what="createsuperuser")
            return
        # The password travels on standard input into the environment of `docker compose
        # exec -e NAME`: never in argv, here or on a host (where the SSH environment is not ours).
        argv = r.compose_argv(compose.createsuperuser(username, email))
        result = r.shell(compose.with_secret_on_stdin(compose.SUPERUSER_PASSWORD, argv),
                         stdin_text=os.environ.get(compose.SUPERUSER_PASSWORD, "") + "\n", check=False)
        print(result.stdout, end="")
        if result.failed:
            raise TaskError(f"createsuperuser failed: {last_line(result.stderr, 'no output')}")

    def ps(self, all_: bool) -> list[list[list[str]]]:
        """Tables to print; Compose prints its own."""
        self.r.compose(compose.ps(all_=all_))
        return []

    def logs(self, service: str | None, follow: bool, tail: int) -> None:
        self.r.compose(compose.logs([service] if service else [], follow=follow, tail=tail), check=False)

    def restore(self, snapshot: str, databases: list, media: bool, timeout: int) -> None:
        scheduled.restore(self.r, snapshot, databases, media, timeout)

    def lock(self):
        """What keeps two changes of the stack here apart."""
        return project_lock(self.r)

    def scale(self, stack, wanted: dict[str, int], timeout: int) -> None:
        r = self.r.with_stack(stack)
        for name in wanted:
            rollout.scale(r, next(p for p in stack.processes if p.name == name), timeout)

    def scheduler_status(self):
        """The scheduler's status document, read in its container; None in a dry run."""
        r = self.r
        result = r.compose(schedule_plans.status(), hide=True, check=False, what="reading the scheduler's status")
        if r.dry:
            return None
        if result.failed:
            raise TaskError(f"the scheduler is not running on {r.target.name} "
                            f"({last_line(result.stderr, f'exit status {result.exited}')}): start it with `inv up`")
        return backup_plans.parse_json(result.stdout)

    def run_schedule(self, schedule) -> None:
        r = self.r
        r.require_running(compose.APP)
        tty = interactive()
        result = r.compose(schedule_plans.run_once(schedule.command, tty=tty), pty=tty, check=False,
                           what=f"schedule {schedule.name}")
        if result.failed:
            raise TaskError(f"schedule {schedule.name} (manage.py {' '.join(schedule.command)}) failed with exit "
                            f"status {result.exited}: see above")


class SwarmPlace:
    """A cluster: the stack on Docker Swarm, run from its manager."""

    restores_media = False

    def __init__(self, s: ClusterRun):
        self.s, self.home = s, s.manager

    def deploy(self, ship_image: bool, keep: int, timeout: int) -> None:
        cluster_release.deploy(self.s, keep=keep, timeout=timeout, ship_image=ship_image)

    def rollback(self, timeout: int, to: str | None, force: bool) -> None:
        cluster_release.rollback(self.s, timeout, to=to, force=force)

    def migrate(self, database, timeout: int) -> None:
        cluster_release.migrate(self.s, database, timeout)

    def manage(self, words: list[str]) -> None:
        cluster_tasks.manage(self.s, words, tty=interactive())

    def createsuperuser(self, username: str | None, email: str | None) -> None:
        if username is None:
            cluster_tasks.manage(self.s, ["createsuperuser"], tty=True)
            return
        password = os.environ.get(compose.SUPERUSER_PASSWORD)
        if not password:
            raise TaskError(PASSWORD_NEEDED)
        cluster_tasks.createsuperuser(self.s, username, email, password)

    def ps(self, all_: bool) -> list[list[list[str]]]:
        return swarm.status(self.s)

    def logs(self, service: str | None, follow: bool, tail: int) -> None:
        cluster_tasks.logs(self.s, service, follow, tail)

    def restore(self, snapshot: str, databases: list, media: bool, timeout: int) -> None:
        scheduled.restore_cluster(self.s, snapshot, databases)

    def lock(self):
        """The manager's deploy lock: a deploy sets every process's replicas too."""
        return release.deploy_lock(self.s.manager)

    def scale(self, stack, wanted: dict[str, int], timeout: int) -> None:
        cluster_release.scale(self.s, wanted, timeout)

    def scheduler_status(self):
        return cluster_tasks.scheduler_status(self.s)

    def run_schedule(self, schedule) -> None:
        cluster_release.run_schedule(self.s, schedule)


def of(r: Runner | ClusterRun) -> HostPlace | SwarmPlace:
    """The place of what the CLI made: the one spot that tells a cluster from a host."""
    return SwarmPlace(r) if isinstance(r, ClusterRun) else HostPlace(r)
