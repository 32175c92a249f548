"""The everyday tasks on a cluster (`--cluster NAME`): what `ps`, `logs`, `migrate`,
`manage`, `createsuperuser` and `schedule.status` do on a host, done the Swarm way from the
manager (and, for manage.py and the scheduler's status, in a running container of the
service on whichever node runs one); what doctor reads of the services' tasks."""
from __future__ import annotations

from ..errors import TaskError, last_line
from ..execution.cluster import ClusterRun
from ..plans import backups as backup_plans
from ..plans import compose
from ..plans import schedules as schedule_plans
from ..plans import swarm as plans
from ..source.schedules import SCHEDULER


def logs(s: ClusterRun, service: str | None, follow: bool, tail: int) -> None:
    manager = s.manager
    known = [compose.APP, "nginx", *(db.name for db in manager.stack.databases),
             *(process.name for process in manager.stack.all_processes)]
    if service is not None and service not in known:
        raise TaskError(f"no service {service!r} on cluster {s.cluster.name} (there are: {', '.join(known)})")
    if follow and service is None:
        raise TaskError("--follow needs --service: Swarm streams one service's logs at a time")
    for name in [service] if service else known:
        manager.run(plans.service_logs(manager.project, name, follow, tail), check=False, anywhere=True)


def running_container(s: ClusterRun, service: str):
    """(the node's Runner, the id of a running container of SERVICE there), the nodes in
    their order; None when no node runs one."""
    for node in s.nodes.values():
        ids = node.probe(plans.task_containers(node.project, service), anywhere=True,
                         prints=f"{service} container").stdout.split()
        if ids:
            return node, ids[0]
    return None


def app_container(s: ClusterRun):
    """(the node's Runner, a running app container's id there)."""
    found = running_container(s, compose.APP)
    if found is None:
        raise TaskError(f"no replica of the app runs on cluster {s.cluster.name}: see `inv swarm.status "
                        f"--cluster {s.cluster.name}`")
    return found


def scheduler_status(s: ClusterRun):
    """The scheduler's status document, read in its container on the node that runs it
    (a singleton: one node); None in a dry run."""
    if s.manager.dry:
        return None
    found = running_container(s, SCHEDULER)
    if found is None:
        raise TaskError(f"the scheduler is not running on cluster {s.cluster.name}: deploy it (`inv deploy "
                        f"--cluster {s.cluster.name}`), or see `inv swarm.status --cluster {s.cluster.name}`")
    node, container = found
    result = node.probe(schedule_plans.status_in(container), anywhere=True)
    if result.failed:
        raise TaskError(f"reading the scheduler's status on {node.target.name} failed: "
                        f"{last_line(result.stderr, f'exit status {result.exited}')}")
    return backup_plans.parse_json(result.stdout)


def running_tasks(s: ClusterRun, wanted: dict[str, int]) -> dict[str, tuple[int, int]]:
    """Per service of WANTED (its name in the stack): (tasks running, tasks that should
    run), as the manager sees them. Swarm says a task with a health test runs once the test
    passes (`starting` until then): running is healthy."""
    found = {}
    for name in wanted:
        lines = [line.split("|") for line in s.manager.probe(plans.running_tasks(s.project, name),
                                                             anywhere=True).stdout.splitlines() if line.strip()]
        found[name] = (sum(len(fields) > 1 and fields[1].startswith("Running") for fields in lines), len(lines))
    return found


def manage(s: ClusterRun, words: list[str], tty: bool) -> None:
    node, container = app_container(s)
    node.run(plans.exec_manage(container, words, tty), pty=tty, stdin=True, anywhere=True,
             what=f"manage.py {words[0]} on {node.target.name}")


def createsuperuser(s: ClusterRun, username: str, email: str | None, password: str) -> None:
    """Unattended: the password on standard input into the environment of `docker exec -e
    NAME`, never in argv (as on a host)."""
    node, container = app_container(s)
    args = ["createsuperuser", "--noinput", "--username", username, *(["--email", email] if email else [])]
    argv = plans.exec_manage(container, args, tty=False, env_names=[compose.SUPERUSER_PASSWORD])
    result = node.shell(compose.with_secret_on_stdin(compose.SUPERUSER_PASSWORD, argv), stdin_text=password + "\n",
                        what="createsuperuser")
    print(result.stdout, end="")
