"""Plans for a Docker Swarm cluster ([clusters.NAME] in config/stack.toml; procedures/swarm.py
runs them on its nodes over SSH): what each node's engine says of its swarm, and the
commands that make the cluster what the source of truth says.

Swarm itself does the scheduling, the rolling updates and the rescheduling of a lost node's
replicas: nothing here replaces it.
"""
from __future__ import annotations

import json
import shlex
from dataclasses import dataclass

from ..source.stack import Logs


# Swarm's ports between nodes: cluster management (TCP 2377), gossip (7946), overlay (UDP 4789).
MANAGEMENT_PORT = 2377


@dataclass(frozen=True)
class NodeState:
    """What a node's engine says of its swarm membership (`docker info`)."""
    state: str              # inactive | pending | active | error | locked
    node_id: str
    cluster_id: str
    manager: bool           # ControlAvailable: a manager of its swarm
    error: str

    @property
    def member(self) -> bool:
        return self.state == "active" and bool(self.cluster_id or self.node_id)


def info() -> list[str]:
    return ["docker", "info", "--format", "{{json .Swarm}}"]


def parse_info(stdout: str) -> NodeState:
    data = json.loads(stdout.strip() or "{}")
    cluster = data.get("Cluster") or {}
    return NodeState(state=data.get("LocalNodeState", "inactive") or "inactive", node_id=data.get("NodeID", ""),
                     cluster_id=cluster.get("ID", ""), manager=bool(data.get("ControlAvailable")),
                     error=data.get("Error", ""))


def init(address: str | None) -> list[str]:
    """Make the manager's swarm, advertising the address the other nodes reach it at (the
    engine's own choice without one); it listens on every interface, so that an address a
    NAT gives the node works too."""
    return ["docker", "swarm", "init", *(["--advertise-addr", address] if address else [])]


def join_token() -> list[str]:
    return ["docker", "swarm", "join-token", "--quiet", "worker"]


def rotate_join_token() -> list[str]:
    """A new worker token: the one a join just used (which `docker swarm join` takes on its
    command line only, where the worker's other users could read it) is then worthless."""
    return ["docker", "swarm", "join-token", "--rotate", "--quiet", "worker"]


def join_script(manager_address: str, address: str | None) -> str:
    """A worker joins, the token read from standard input (never in our command line, our
    output or the SSH session's command)."""
    advertise = f"--advertise-addr {shlex.quote(address)} " if address else ""
    return (f'read -r token && exec docker swarm join --token "$token" {advertise}'
            f"{shlex.quote(f'{manager_address}:{MANAGEMENT_PORT}')}")


def cluster_id() -> list[str]:
    """On a manager: the swarm's ID, which a worker's `docker info` also shows."""
    return ["docker", "info", "--format", "{{.Swarm.Cluster.ID}}"]


def nodes() -> list[str]:
    """On a manager: every node, one JSON object per line."""
    return ["docker", "node", "ls", "--format", "{{json .}}"]


def inspect_nodes(ids) -> list[str]:
    return ["docker", "node", "inspect", *ids]


def labels(node: dict) -> dict:
    return (node.get("Spec") or {}).get("Labels") or {}


def label_prefix(project: str) -> str:
    """The node labels of PROJECT's databases: another project on the swarm has its own."""
    return f"{project}.database."


def label_changes(node: dict, wanted: set[str], prefix: str) -> tuple[list[str], list[str]]:
    """(labels to add, labels to remove) of our prefix on NODE (`docker node inspect`'s
    object) for it to carry exactly WANTED."""
    have = {key for key, value in labels(node).items() if key.startswith(prefix) and value == "true"}
    return sorted(wanted - have), sorted(have - wanted)


def update_labels(node_id: str, add, remove) -> list[str]:
    return ["docker", "node", "update", *[a for key in add for a in ("--label-add", f"{key}=true")],
            *[a for key in remove for a in ("--label-rm", key)], node_id]


def database_label(project: str, database: str) -> str:
    return f"{label_prefix(project)}{database}"


def services(project: str) -> list[str]:
    return ["docker", "stack", "services", project, "--format", "{{json .}}"]


def tasks(project: str) -> list[str]:
    return ["docker", "stack", "ps", project, "--filter", "desired-state=running", "--format", "{{json .}}"]


def json_lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip().startswith("{")]


# -- a deploy to a cluster ------------------------------------------------------------------
# Stack deploys never ask a registry: every node has the image, built there.
MANAGE = ["python", "manage.py"]
# What `docker service ps` says of a job's task once it is over.
JOB_DONE, JOB_FAILED = {"Complete"}, {"Failed", "Rejected", "Shutdown", "Orphaned"}


def service(project: str, name: str) -> str:
    return f"{project}_{name}"


def deploy_stack(stack_file: str, project: str, env: dict) -> list[str]:
    """`docker stack deploy` of STACK_FILE with ENV (its ${...}), services no longer in it
    removed, images used as the nodes have them."""
    return ["env", *[f"{key}={value}" for key, value in sorted(env.items())],
            "docker", "stack", "deploy", "--compose-file", stack_file, "--prune", "--resolve-image", "never",
            project]


def versions_script(paths) -> str:
    """The digest of each file of PATHS, a line each: Swarm's secrets and configs are
    immutable, so new content takes a new name; each its own, so that a new file (a database
    added) or a change to one (Nginx's configuration) restarts only the services using it."""
    return "set -eo pipefail; " + "; ".join(
        f"sha256sum < {shlex.quote(str(path))} | cut -c1-12" for path in paths)


def blank_if_missing(paths) -> str:
    """Shell: each of PATHS that is missing or empty made a file of one blank line (0600):
    a Swarm secret must have content."""
    return "umask 077; " + "; ".join(f"[ -s {shlex.quote(str(p))} ] || echo > {shlex.quote(str(p))}" for p in paths)


def stack_has_service(stack_file: str, name: str) -> list[str]:
    """On the manager: exits 0 when STACK_FILE (as rendered) defines the service NAME."""
    return ["grep", "-q", f"^  {name}:$", stack_file]


def build_backup_image(project: str, context: str, postgres_image: str) -> str:
    """On the manager: the backup service's image built from CONTEXT (config/backup of the
    release) and tagged by its image id, which it prints: the same content, the same tag,
    so that a deploy restarts the backup service only when its image changed."""
    return (f"set -eo pipefail; id=$(docker build --quiet --build-arg POSTGRES_IMAGE={shlex.quote(postgres_image)} "
            f"{shlex.quote(context)} | tail -n 1); tag={shlex.quote(project + '-backup')}:$(echo \"$id\" | cut -c8-19); "
            f'docker tag "$id" "$tag"; echo "$tag"')


def exec_in(container: str) -> list[str]:
    """On a node: a command in its running CONTAINER, standard input passed through."""
    return ["docker", "exec", "-i", container]


def exec_backup(container: str, args, tty: bool = False) -> list[str]:
    """config/backup/backup.py ARGS in the running backup CONTAINER (on the manager): its
    state, secrets and networks; the run's lock keeps it from overlapping the schedule's."""
    return ["docker", "exec", "-i", *(["-t"] if tty else []), container,
            "python3", "/usr/local/lib/hello-backup/backup.py", *args]


def job(name: str, mode: str, image: str, command, *, env: dict, env_file: str, secrets, networks=(),
        mounts=(), logs: Logs = Logs()) -> list[str]:
    """A one-off task of IMAGE in the swarm (MODE replicated-job: once; global-job: once per
    node), with the app's settings, secrets, networks and volumes, its log bounded as LOGS."""
    argv = ["docker", "service", "create", "--detach", "--quiet", "--name", name, "--mode", mode,
            "--restart-condition", "none", "--env-file", env_file, "--log-driver", logs.driver]
    argv += [a for key, value in sorted(logs.options.items()) for a in ("--log-opt", f"{key}={value}")]
    argv += [a for key, value in sorted(env.items()) for a in ("--env", f"{key}={value}")]
    argv += [a for source, target in secrets
             for a in ("--secret", f"source={source},target={target},uid=10001,gid=10001,mode=0400")]
    argv += [a for network in networks for a in ("--network", network)]
    argv += [a for volume, target in mounts for a in ("--mount", f"type=volume,source={volume},target={target}")]
    return argv + [image, *command]


def job_states(name: str) -> list[str]:
    return ["docker", "service", "ps", name, "--no-trunc", "--format", "{{.CurrentState}}|{{.Error}}"]


def job_logs(name: str) -> list[str]:
    return ["docker", "service", "logs", "--raw", "--no-task-ids", name]


def remove_service(name: str) -> list[str]:
    return ["docker", "service", "rm", name]


def job_outcome(stdout: str, expected: int) -> tuple[bool, str] | None:
    """(done well, the error) once the EXPECTED tasks of a job (one, or one per node) have
    all finished, else None."""
    states = [(line.split("|", 1)[0].split()[:1] or [""])[0] for line in stdout.splitlines() if line.strip()]
    errors = [line.split("|", 1)[1] for line in stdout.splitlines() if "|" in line and line.split("|", 1)[1]]
    if len(states) < expected or not all(state in JOB_DONE | JOB_FAILED for state in states):
        return None
    if all(state in JOB_DONE for state in states):
        return True, ""
    return False, errors[0] if errors else "a task did not complete"


def update_status(project: str, name: str) -> list[str]:
    return ["docker", "service", "inspect", "--format", "{{json .UpdateStatus}}", service(project, name)]


def running_tasks(project: str, name: str) -> list[str]:
    return ["docker", "service", "ps", service(project, name), "--filter", "desired-state=running",
            "--format", "{{.Image}}|{{.CurrentState}}|{{.Node}}"]


def task_nodes(project: str, name: str) -> str:
    """On a manager: the node ID of each task of service NAME that should run, a line each."""
    return (f"docker service ps --quiet --no-trunc --filter desired-state=running {shlex.quote(service(project, name))} "
            "| xargs -r docker inspect --type task --format '{{.NodeID}}'")


def scale(project: str, name: str, replicas: int) -> list[str]:
    return ["docker", "service", "scale", "--detach", f"{service(project, name)}={replicas}"]


def unbalanced(placements: list[str], nodes: list[str]) -> bool:
    """Whether one of NODES (the IDs of those that take tasks) runs two or more tasks more
    than another, given each task's node ID (PLACEMENTS)."""
    counts = {node: 0 for node in nodes}
    for node in placements:
        if node in counts:
            counts[node] += 1
    return len(counts) > 1 and max(counts.values()) - min(counts.values()) >= 2


def available_nodes(stdout: str) -> list[str]:
    """The IDs of the nodes that take tasks (Ready and Active), from `docker node ls`'s JSON lines."""
    return [n["ID"] for n in json_lines(stdout) if n.get("Status") == "Ready" and n.get("Availability") == "Active"]


# Swarm's words for a rolling update that gave up and went back.
UPDATE_FAILED = {"paused", "rollback_started", "rollback_paused", "rollback_completed"}


# What `docker stack deploy` makes, by the kind its command line names, in the order an
# undo removes them: services first (they hold the rest), networks last.
STACK_OBJECTS = ("service", "secret", "config", "network")


def stack_objects(project: str, kind: str) -> list[str]:
    """On the manager: the names of stack PROJECT's objects of KIND (STACK_OBJECTS), a line each."""
    return ["docker", kind, "ls", "--filter", f"label=com.docker.stack.namespace={project}", "--format", "{{.Name}}"]


def remove_objects(objects) -> list[tuple[tuple[str, str], list[str]]]:
    """On the manager: OBJECTS, (kind, name) pairs, removed one command each (what a service
    still uses is refused by Swarm, and stays: its command fails), as (object, argv);
    services first, networks last (a service being removed may still hold one)."""
    return [((kind, name), ["docker", kind, "rm", name])
            for kind in STACK_OBJECTS for name in sorted(name for k, name in objects if k == kind)]


def inspect_services(names) -> list[str]:
    """On the manager: services NAMES (full names) as one JSON list: Spec, PreviousSpec, UpdateStatus."""
    return ["docker", "service", "inspect", *names]


def stack_tasks(project: str) -> list[str]:
    """On the manager: the name (SERVICE.SLOT, or SERVICE.NODE) of each task of stack PROJECT
    that should run, a line each."""
    return ["docker", "stack", "ps", project, "--filter", "desired-state=running", "--format", "{{.Name}}"]


def rollback_service(project: str, name: str) -> list[str]:
    """The service back to its previous spec (Swarm keeps one), rolling as configured."""
    return ["docker", "service", "rollback", "--detach", service(project, name)]


def task_containers(project: str, name: str) -> list[str]:
    """On a node: the ids of the running containers of service NAME there."""
    return ["docker", "ps", "--quiet", "--filter", f"label=com.docker.swarm.service.name={service(project, name)}"]


def applied_migrations(container: str, db) -> list[str]:
    """In DB's container (on its node): the migrations applied, read as the app's role."""
    from .ledger import read_migrations

    return ["docker", "exec", container, *read_migrations(db.name)]


def service_logs(project: str, name: str, follow: bool, tail: int) -> list[str]:
    return ["docker", "service", "logs", "--timestamps", "--tail", str(tail), *(["--follow"] if follow else []),
            service(project, name)]


def exec_manage(container: str, args, tty: bool, env_names=()) -> list[str]:
    """manage.py ARGS in a running app CONTAINER on its node; ENV_NAMES passed by name."""
    return ["docker", "exec", "-i", *(["-t"] if tty else []), *[a for n in env_names for a in ("-e", n)],
            container, *MANAGE, *args]
