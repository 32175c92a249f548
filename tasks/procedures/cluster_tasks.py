"""The everyday tasks on a cluster (`--cluster NAME`): what `ps`, `logs`, `migrate`,
`manage` and `createsuperuser` do on a host, done the Swarm way from the manager (and, for
manage.py, in a running replica of the app on whichever node runs one)."""
from __future__ import annotations

from ..errors import TaskError
from ..execution.cluster import ClusterRun
from ..plans import compose
from ..plans import swarm as plans


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


def app_container(s: ClusterRun):
    """(the node's Runner, a running app container's id there)."""
    for node in s.nodes.values():
        ids = node.probe(plans.task_containers(node.project, compose.APP), anywhere=True,
                         prints="app container").stdout.split()
        if ids:
            return node, ids[0]
    raise TaskError(f"no replica of the app runs on cluster {s.cluster.name}: see `inv swarm.status "
                    f"--cluster {s.cluster.name}`")


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
