"""No job lost on a cluster: the example's Celery workers and beat, with Redis, as Swarm
services of a two-node cluster, moved by `inv deploy --cluster` and `inv rollback --cluster`,
then both workers killed, while a producer enqueues numbered jobs without pause (the counting is test_jobs.py's). Then
the everyday tasks on the same cluster: `inv scale worker=3 --cluster`, `inv schedule.status
--cluster` and `schedule.run --cluster`, `inv doctor --cluster` (processes and scheduler),
and the scheduler's notify URLs as a Swarm secret.

The producer is a one-off Swarm job cloned from the worker service (its image, environment,
secrets and networks), so that no deploy drains it. Everything shares one cluster: two test
hosts, each its own engine (no IPVS here: endpoint_mode dnsrr, publish_mode host).
"""
import json
import os
import re
import signal
import subprocess
import time
import tomllib
from pathlib import Path

import pytest

from testkit.projectcopy import copy_project
from testkit.running import MostAtOnce

from .conftest import BASE_IMAGES, SERVICE_IMAGES, Stack, free_port
from .test_jobs import PRODUCER, RATE, SETTLE, STOP, TICK, VISIBILITY, WORKERS, count_in_sql, report, settle, worker_main

pytestmark = pytest.mark.e2e
PROJECT = "hello-e2e-cjobs"
# clearsessions every minute: a real management command of every Django project.
SCHEDULE = '\n[[schedules]]\nname = "sessions"\ncron = "* * * * *"\ncommand = ["clearsessions"]\ntimeout = 120\n'
NOTIFY = "json://hooks.invalid/scheduler\n"
# The notes of TAG counted more than once (at most 5): each with when it was made and counted.
TWICE = """
import json
from django.db.models import Count
from notes.models import Note
twice = Note.objects.filter(text__startswith="TAG ").annotate(n=Count("word_counts")).filter(n__gt=1)[:5]
print(json.dumps([[note.pk, note.created.isoformat(), [w.counted_at.isoformat() for w in note.word_counts.all()]]
                  for note in twice]))
"""


class Cluster:
    """The cluster as the tests see it: `inv` in the checkout, docker on each node, the
    Django shell in an app replica (`inv manage --cluster`)."""

    def __init__(self, root, nodes):
        self.s = Stack(PROJECT, free_port(0), root=root)
        self.root, self.nodes = root, nodes
        self.config = Path(nodes[0].dir) / "srv" / "shared" / "config"

    def inv(self, *args, check=True, timeout=1800):
        return self.s.inv(*args, check=check, timeout=timeout)

    def manage(self, code):
        return self.inv("manage", "--cluster", "prod", "--", "shell", "-c", code, timeout=300).stdout

    def counted(self, tag):
        node, container = self.where("database1")
        return count_in_sql(node.docker, container, tag)

    def watch(self, service):
        """The most containers of SERVICE's tasks running at once, on all nodes, while the block runs."""
        return MostAtOnce({"com.docker.swarm.service.name": f"{PROJECT}_{service}"},
                          [node.docker_host for node in self.nodes])

    def containers(self, service):
        """The running containers of SERVICE's tasks, on every node."""
        return [found for node in self.nodes for found in node.docker(
            "ps", "--quiet", "--filter", f"label=com.docker.swarm.service.name={PROJECT}_{service}").stdout.split()]

    def where(self, service):
        """(node, container) of a running task of SERVICE."""
        for node in self.nodes:
            found = node.docker("ps", "--quiet", "--filter",
                                f"label=com.docker.swarm.service.name={PROJECT}_{service}").stdout.split()
            if found:
                return node, found[0]
        raise AssertionError(f"no running task of {service}")

    @property
    def server(self):
        """The node running Redis: test_jobs.py reads what Redis holds through `server`."""
        return self.where("redis")[0]

    def image(self, service):
        return self.nodes[0].docker("service", "inspect", "--format", "{{.Spec.TaskTemplate.ContainerSpec.Image}}",
                                    f"{PROJECT}_{service}").stdout.strip()

    def explain_twice(self, tag):
        """What the workers logged of each note of TAG counted twice: its deliveries (received,
        done, restored), on which task, so that a duplicate says how it came about."""
        notes = json.loads(self.manage(TWICE.replace("TAG", tag)).strip().splitlines()[-1])
        # Celery logs to stderr. Each node's containers of the worker's tasks, the stopped ones'
        # too, each read with a bound: `docker service logs` gathers them through the manager,
        # and once never returned (the test ran into its 1,200 s timeout there).
        logs = []
        for node in self.nodes:
            try:
                ids = node.docker("ps", "--all", "--quiet", "--filter",
                                  f"label=com.docker.swarm.service.name={PROJECT}_worker", check=False, timeout=30).stdout.split()
                for container in ids:
                    found = node.docker("logs", "--timestamps", container, check=False, timeout=60)
                    logs += (found.stdout + found.stderr).splitlines()
            except subprocess.TimeoutExpired as exc:
                logs.append(f"(the logs of {node.name} did not come within {exc.timeout} s)")
        told = []
        for pk, created, counted in notes:
            jobs = {found.group(1) for line in logs if f"note {pk}:" in line
                    for found in [re.search(r"count_words\[([0-9a-f-]+)\]", line)] if found}
            told += [f"note {pk} made {created}, counted {counted}, jobs {sorted(jobs)}"]
            told += [line for line in logs if any(job in line for job in jobs) or "estor" in line]
        return "\n".join(told[:200])

    def notify_file(self):
        node, container = self.where("scheduler")
        return node.docker("exec", container, "cat", "/run/secrets/notify").stdout


class ClusterProducer:
    """test_jobs.py's producer as a one-off Swarm job: the worker service's image,
    environment, secrets and networks, `manage.py shell` enqueuing TAG's numbered jobs at RATE
    per second until a note says stop."""

    def __init__(self, cluster, tag, limit=600):
        self.cluster, self.tag, self.name = cluster, tag, f"{PROJECT}-producer-{tag}"
        manager = cluster.nodes[0]
        task = json.loads(manager.docker("service", "inspect", f"{PROJECT}_worker").stdout)[0]["Spec"]["TaskTemplate"]
        spec = task["ContainerSpec"]
        code = PRODUCER.replace("TAG", tag).replace("LIMIT", str(limit)).replace("RATE", str(RATE))
        argv = ["service", "create", "--detach", "--quiet", "--name", self.name, "--mode", "replicated-job",
                "--restart-condition", "none"]
        argv += [a for env in spec.get("Env", []) for a in ("--env", env)]
        argv += [a for secret in spec.get("Secrets", []) for a in (
            "--secret", f"source={secret['SecretName']},target={secret['File']['Name']},uid={secret['File']['UID']},"
                        f"gid={secret['File']['GID']},mode=0{secret['File']['Mode']:o}")]
        argv += [a for network in task.get("Networks", []) for a in ("--network", network["Target"])]
        manager.docker("service", "rm", self.name, check=False)
        manager.docker(*argv, spec["Image"], "python", "manage.py", "shell", "-c", code)

    def states(self):
        return self.cluster.nodes[0].docker("service", "ps", self.name, "--format", "{{.CurrentState}}").stdout.split("\n")

    def __enter__(self):
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and self.cluster.counted(self.tag)["notes"] < RATE:
            assert not any(s.startswith(("Failed", "Rejected")) for s in self.states()), self.logs()
            time.sleep(2)
        return self

    def logs(self):
        return self.cluster.nodes[0].docker("service", "logs", "--raw", self.name, check=False).stdout

    def __exit__(self, *exc):
        self.cluster.manage(STOP.replace("TAG", self.tag))
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not self.states()[0].startswith(("Complete", "Failed")):
            time.sleep(1)
        out = self.logs()
        self.cluster.nodes[0].docker("service", "rm", self.name, check=False)
        found = re.search(r"enqueued (\d+)", out)
        assert found, out
        self.enqueued = int(found.group(1))


@pytest.fixture(scope="module")
def cluster(servers, tmp_path_factory):
    images = (*BASE_IMAGES, SERVICE_IMAGES["redis"])
    node1, node2 = servers("cjobs-1", images=images), servers("cjobs-2", images=images)
    root = copy_project(tmp_path_factory.mktemp("cjobs") / "project")
    with open(root / "config/stack.toml", "a") as handle:
        handle.write(WORKERS + SCHEDULE + "\n" + node1.hosts_entry("node1", f"{node1.dir}/srv", project=PROJECT)
                     + node2.hosts_entry("node2", f"{node2.dir}/srv", project=PROJECT)
                     + '\n[clusters.prod]\nmanager = "node1"\nworkers = ["node2"]\nreplicas = 1\n'
                       'endpoint_mode = "dnsrr"\npublish_mode = "host"\n')
    c = Cluster(root, (node1, node2))
    c.inv("render")
    c.config.mkdir(parents=True, mode=0o700)
    (c.config / "django.env").write_text((root / "config/django.env.example").read_text()
                                         + f"HELLO_TICK_SECONDS={TICK}\nSTACK_CELERY_VISIBILITY_TIMEOUT={VISIBILITY}\n")
    (c.config / "django.env").chmod(0o600)
    c.inv("swarm.init", "--cluster", "prod", timeout=600)
    c.inv("deploy", "--cluster", "prod")
    assert len(c.containers("worker")) == 2 and len(c.containers("beat")) == 1
    assert len(c.containers("scheduler")) == 1
    listed = c.inv("swarm.status", "--cluster", "prod").stdout
    for name, count in (("worker", 2), ("beat", 1), ("scheduler", 1)):
        assert re.search(rf"{PROJECT}_{name} +replicated +{count}/{count}", listed), listed
    c.first_image = c.image("worker")
    return c


def test_a_code_deploy_and_a_rollback_of_a_cluster_lose_no_job_and_run_none_twice(cluster):
    c = cluster
    # The scheduler's notify URLs, set up on the manager (as `inv backup.notify` writes
    # them): the deploy makes them a Swarm secret of the scheduler, never in its spec.
    (c.config / "secrets" / "backup_notify").write_text(NOTIFY)
    (c.config / "secrets" / "backup_notify").chmod(0o600)
    path = c.root / "hello/hello/templates/hello/index.html"
    path.write_text(path.read_text().replace("Hello from Django", "Hello from release two"))
    counts = {}
    for operation, argv in (("deploy", ("deploy", "--cluster", "prod")), ("rollback", ("rollback", "--cluster", "prod"))):
        workers = set(c.containers("worker"))
        with ClusterProducer(c, operation) as producer, c.watch("beat") as beat:
            c.inv(*argv)
        counts[operation] = seen = settle(c, producer, SETTLE)
        report(f"cluster {operation}", seen)
        if seen["duplicated"]:
            print(c.explain_twice(operation))
        assert producer.enqueued > RATE * 5, seen
        assert beat.starts >= 1 and beat.most == 1, f"{operation}: {beat.most} beat containers at once ({beat.starts} started)"
        # Every worker is a new task, on the release's image.
        assert not workers & set(c.containers("worker")) and len(c.containers("worker")) == 2
        if operation == "deploy":
            assert c.image("worker") != c.first_image
            assert c.image("worker") == c.image("beat") == c.image("scheduler") == c.image("djangoapp")
    assert c.image("worker") == c.image("beat") == c.first_image
    assert {op: (seen["lost"], seen["duplicated"]) for op, seen in counts.items()} == \
        {"deploy": (0, 0), "rollback": (0, 0)}, counts

    # Both workers' main processes frozen for a second (a job is then on its way to each), then
    # killed (SIGKILL, as the OOM killer would): Swarm starts new tasks, and what the killed
    # ones had in hand comes back after the visibility timeout. None lost; run again at most
    # what each pool (2 processes) had finished but its frozen worker had not acknowledged.
    with ClusterProducer(c, "kill") as producer:
        victims = [(node, found) for node in c.nodes for found in node.docker(
            "ps", "--quiet", "--filter", f"label=com.docker.swarm.service.name={PROJECT}_worker").stdout.split()]
        assert len(victims) == 2, victims
        mains = [worker_main(int(node.docker("inspect", "--format", "{{.State.Pid}}", found).stdout))
                 for node, found in victims]
        for pid in mains:
            os.kill(pid, signal.SIGSTOP)
        time.sleep(1)
        for pid in mains:
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 120
        while len(set(c.containers("worker")) - {found for _, found in victims}) < 2:
            assert time.monotonic() < deadline, "Swarm did not replace the killed workers"
            time.sleep(2)
        time.sleep(3)
    seen = settle(c, producer, VISIBILITY + SETTLE)
    report("cluster: both workers killed", seen)
    assert seen["lost"] == 0 and seen["in_hand"] == 0, seen
    assert seen["duplicated"] <= 2 * 2, seen
    assert c.notify_file() == NOTIFY
    assert "hooks.invalid" not in c.nodes[0].docker("service", "inspect", f"{PROJECT}_scheduler").stdout


def test_scale_schedules_and_doctor_on_a_cluster(cluster):
    c = cluster
    scaled = c.inv("scale", "worker=3", "--cluster", "prod")
    assert "worker: 3 running" in scaled.stdout, scaled.stdout
    assert len(c.containers("worker")) == 3
    entries = tomllib.loads((c.root / "config/stack.toml").read_text())["processes"]
    assert {e["name"]: e.get("replicas", 1) for e in entries} == {"worker": 3, "beat": 1}
    refused = c.inv("scale", "beat=2", "--cluster", "prod", check=False)
    assert refused.returncode == 1 and refused.stderr.strip().splitlines() == [
        "error: config/stack.toml: [[processes]] beat replicas 2 is not valid: a whole number from 0 to 1"]
    assert len(c.containers("beat")) == 1

    ran = c.inv("schedule.run", "sessions", "--cluster", "prod", check=False)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    unknown = c.inv("schedule.run", "nosuch", "--cluster", "prod", check=False)
    assert unknown.returncode == 1 and unknown.stderr.strip().splitlines() == [
        "error: no schedule named 'nosuch' in config/stack.toml (known: sessions)"]
    # The scheduler runs clearsessions each minute: wait for its first run.
    deadline = time.monotonic() + 150
    while True:
        status = c.inv("schedule.status", "--cluster", "prod", check=False)
        if re.search(r"^sessions +\* \* \* \* \* +\S+ \S+ +0 ", status.stdout, re.M) or time.monotonic() > deadline:
            break
        time.sleep(10)
    assert status.returncode == 0 and re.search(r"^sessions .* ok$", status.stdout, re.M), status.stdout + status.stderr

    doctor = c.inv("doctor", "--cluster", "prod", check=False)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert re.search(r"ok +processes running and healthy: djangoapp 1/1, worker 3/3, beat 1/1, scheduler 1/1",
                     doctor.stdout), doctor.stdout
    assert re.search(r"ok +schedules: sessions (ok|running)$", doctor.stdout, re.M), doctor.stdout
    # A process down: doctor says which, and fails.
    c.nodes[0].docker("service", "scale", "--detach", f"{PROJECT}_beat=0")
    sick = c.inv("doctor", "--cluster", "prod", check=False)
    assert sick.returncode == 1 and re.search(r"FAIL process beat: 0 of 1 running and healthy on cluster prod",
                                              sick.stdout), sick.stdout
    c.inv("scale", "beat=1", "--cluster", "prod")
