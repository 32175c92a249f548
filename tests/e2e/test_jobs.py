"""No job lost: the example's Celery workers and beat, with Redis, on a test host, moved by a
code deploy and a rollback and hit by a killed worker while a producer enqueues numbered jobs
without pause (and the web page is under load).

Each job is a note whose words a worker counts (notes.tasks.count_words appends a WordCount
row). Lost: a note enqueued and never counted; duplicated: counted more than once. The stack
sets late acks and a visibility timeout (djangostack/settings.py), so a worker stopped
gracefully finishes its jobs in hand and hands back what it has not started, and one killed
has its jobs in hand delivered again once the visibility timeout passes; its transport
(djangostack.broker) takes a job off the queue and records it as in hand in one step, so even a
job on its way to a killed worker is among them. No job may be lost, and none may run twice
across a deploy or a rollback. Beat is a singleton: never two containers at once, each tick run
once. The counts of each operation are printed as a table at the end.
"""
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from testkit import INV
from testkit.projectcopy import copy_project
from testkit.running import MostAtOnce

from .conftest import BASE_IMAGES
from .test_zero_downtime import Host, assert_no_request_dropped

pytestmark = pytest.mark.e2e
PORT = 8080  # the port test_zero_downtime.Host loads and reads (each test host has its own)
PROJECT = "hello-e2e-jobs"
# Jobs enqueued per second, without pause, during each operation.
RATE = 20
# The visibility timeout the test's stack sets: a killed worker's job comes back after it.
# It must exceed how long a job may wait, delivered, in a worker: 15 s was not enough on a
# loaded CI machine during a deploy (a job and a tick were delivered again: duplicates).
VISIBILITY = 60
TICK = 1  # seconds between two beat ticks (HELLO_TICK_SECONDS)
KILLS = 3  # times both workers are frozen and killed in the kill test
# Seconds the workers may go without running a job before the jobs left are taken for lost
# (settle waits while they catch up: on a machine at load 40 they fell 1,200 jobs behind).
SETTLE = 120
WORKERS = """
[[services]]
name = "redis"
kind = "redis"

[[processes]]
name = "worker"
command = ["celery", "-A", "hello", "worker", "--loglevel", "INFO", "--concurrency", "2"]
replicas = 2
health = "celery"

[[processes]]
name = "beat"
command = ["celery", "-A", "hello", "beat", "--loglevel", "INFO", "--schedule", "/tmp/celerybeat-schedule"]
singleton = true
"""
PRODUCER = """
import time
from notes.models import Note
from notes.tasks import count_words
start, n, stop = time.monotonic(), 0, "STOP TAG"
while time.monotonic() - start < LIMIT:
    if n % RATE == 0 and Note.objects.filter(text=stop).exists():
        break
    note = Note.objects.create(text=f"TAG {n} " + "word " * (n % 5))
    count_words.delay(note.pk)
    n += 1
    time.sleep(max(0.0, start + n / RATE - time.monotonic()))
print("enqueued", n, flush=True)
"""
STOP = """
from notes.models import Note
Note.objects.create(text="STOP TAG")
"""
# TAG's jobs: the notes made, those whose job ran (counted) and the runs in all (two runs of a
# note's job are a duplicate). Asked in SQL in the database's container: `settle` and the
# producer poll them every few seconds, where a `manage.py shell` through `inv manage` cost
# about 1.5 CPU-s each time (`inv`, SSH, Django started in the app container; a Swarm job on a cluster).
COUNT_SQL = """
SELECT json_build_object('notes', count(DISTINCT n.id), 'counted', count(DISTINCT w.note_id), 'runs', count(w.id))
FROM notes_note n LEFT JOIN notes_wordcount w ON w.note_id = n.id
WHERE left(n.text, length('TAG ')) = 'TAG ' AND n.text <> 'STOP TAG'
"""


def count_in_sql(docker, container, tag):
    """COUNT_SQL's answer for TAG, from the database1 container CONTAINER (DOCKER: its engine)."""
    out = docker("exec", container, "psql", "--username", "database1", "--dbname", "database1", "--no-psqlrc",
                 "--tuples-only", "--no-align", "--command", COUNT_SQL.replace("TAG", tag)).stdout
    return json.loads(out.strip().splitlines()[-1])


TICKS = """
import json
from notes.models import Tick
print(json.dumps([[t.task_id, t.scheduled and t.scheduled.timestamp(), t.origin, t.at.timestamp()]
                  for t in Tick.objects.order_by("scheduled", "at")]))
"""


class JobHost(Host):
    def manage(self, code, timeout=120):
        return self.inv("manage", "--host", "prod", "--", "shell", "-c", code).stdout

    def counted(self, tag):
        return count_in_sql(self.server.docker, self.containers("database1")[0], tag)

    def watch(self, service):
        """The most containers of SERVICE running at once while the block runs."""
        return MostAtOnce({"com.docker.compose.project": PROJECT, "com.docker.compose.service": service,
                           "com.docker.compose.oneoff": "False"}, [self.server.docker_host])

    def containers(self, service):
        return self.server.docker("ps", "--quiet", "--filter", f"label=com.docker.compose.project={PROJECT}",
                                  "--filter", f"label=com.docker.compose.service={service}",
                                  "--filter", "label=com.docker.compose.oneoff=False").stdout.split()


class Producer:
    """The numbered jobs of TAG, enqueued at RATE per second by a manage.py shell in a one-off
    container of the live release on the host (an `inv manage` runs in the app container,
    which a deploy drains) until a note says stop (it looks every second, so it stops between
    two jobs) or LIMIT seconds passed."""

    def __init__(self, host, tag, limit=600):
        self.host, self.tag = host, tag
        code = PRODUCER.replace("TAG", tag).replace("LIMIT", str(limit)).replace("RATE", str(RATE))
        argv = ["docker", "compose", "--project-name", PROJECT, "run", "--rm", "--no-deps", "-T", "djangoapp",
                "python", "manage.py", "shell", "-c", code]
        self.process = subprocess.Popen(argv, cwd=host.dir / "current", stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
                                        env={**os.environ, "DOCKER_HOST": host.server.docker_host})

    def __enter__(self):
        # Jobs flow before the operation starts: the first notes are in the database.
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and self.host.counted(self.tag)["notes"] < RATE:
            assert self.process.poll() is None, self.process.communicate()
            time.sleep(1)
        return self

    def __exit__(self, *exc):
        self.host.manage(STOP.replace("TAG", self.tag))
        out, err = self.process.communicate(timeout=60)
        found = re.search(r"enqueued (\d+)", out)
        assert found, out + err
        self.enqueued = int(found.group(1))


def settle(host, producer, within, cap=900):
    """Wait until every job of PRODUCER ran and none is left in a worker's hand (one still there
    may yet run again: a killed worker's, after the visibility timeout); its counts. A job still
    waiting is late, not lost: the wait goes on while the workers count more, and ends WITHIN
    seconds after they last did (or after CAP seconds in all)."""
    start = time.monotonic()
    last, progress = -1, start
    while True:
        seen = host.counted(producer.tag)
        seen["in_hand"] = in_hand(host)
        now = time.monotonic()
        if seen["counted"] > last:
            last, progress = seen["counted"], now
        if seen["counted"] >= producer.enqueued and seen["in_hand"] == 0 \
                or now - progress > within or now - start > cap:
            break
        time.sleep(2)
    seen["redis"] = redis_state(host)  # what is still queued or in hand, when it timed out
    seen["waited"] = round(time.monotonic() - start)
    seen["enqueued"] = producer.enqueued
    seen["lost"] = producer.enqueued - seen["counted"]
    seen["duplicated"] = seen["runs"] - seen["counted"]
    return seen


REDIS_STATE = ('export REDISCLI_AUTH="$(cat /run/secrets/redis_password)"; '
               'echo "queue $(redis-cli llen celery) unacked $(redis-cli hlen unacked) '
               'index $(redis-cli zcard unacked_index) mutex $(redis-cli exists unacked_mutex)"')


def in_hand(host):
    """How many jobs Redis has recorded as delivered and not acknowledged."""
    found = re.search(r"unacked (\d+)", redis_state(host))
    return int(found.group(1)) if found else -1


def redis_state(host):
    """What Redis holds of the jobs: waiting, delivered and not acknowledged, the restore lock."""
    found = host.containers("redis")
    return host.server.docker("exec", found[0], "sh", "-c", REDIS_STATE, check=False).stdout.strip() if found else ""


# Each operation's counts, printed as a table once the module is done.
COUNTS = {}
# When the workers were frozen and killed: a tick they had in hand may run twice, like a job.
KILLED = []


def report(what, seen):
    COUNTS[what] = seen
    print(f"{what}: enqueued {seen['enqueued']}, run {seen['counted']}, lost {seen['lost']}, "
          f"duplicated {seen['duplicated']}, all run {seen['waited']} s after"
          + (f"; redis: {seen['redis']}" if seen["lost"] else ""))


@pytest.fixture(scope="module", autouse=True)
def table():
    yield
    print("\n| operation (host) | enqueued | run | lost | duplicated |\n|---|---|---|---|---|")
    for what, seen in COUNTS.items():
        print(f"| {what} | {seen['enqueued']:,} | {seen['counted']:,} | {seen['lost']} | {seen['duplicated']} |")


@pytest.fixture(scope="module")
def host(servers, tmp_path_factory):
    server = servers("jobs", images=(*BASE_IMAGES, os.environ.get("REDIS_IMAGE", "redis:7.4")))
    root = copy_project(tmp_path_factory.mktemp("project"))
    with open(root / "config/stack.toml", "a") as handle:
        handle.write(WORKERS + "\n" + server.hosts_entry("prod", str(server.dir / "srv" / "hello"), http_port=PORT,
                                                         project=PROJECT))
    subprocess.run([*INV, "render"], cwd=root, check=True, capture_output=True)
    h = JobHost(server, root)
    shared = h.dir / "shared" / "config"
    shared.mkdir(parents=True, mode=0o700)
    (shared / "django.env").write_text((root / "config/django.env.example").read_text()
                                       + f"DJANGO_TEST_VIEWS=true\nHELLO_TICK_SECONDS={TICK}\n"
                                       + f"STACK_CELERY_VISIBILITY_TIMEOUT={VISIBILITY}\n")
    (shared / "django.env").chmod(0o600)
    h.inv("deploy", "--host", "prod")
    assert h.page()[0] == 200
    assert len(h.containers("worker")) == 2 and len(h.containers("beat")) == 1
    h.first_release = h.current()
    return h


def test_a_code_deploy_loses_no_job_and_runs_none_twice(host):
    host.edit("hello/hello/templates/hello/index.html", "Hello from Django", "Hello from release two")
    workers = set(host.containers("worker"))
    with host.load() as web, Producer(host, "deploy") as producer, host.watch("beat") as beat:
        host.inv("deploy", "--host", "prod")
    seen = settle(host, producer, SETTLE)
    report("code deploy", seen)
    assert_no_request_dropped(web, "code deploy with workers")
    assert producer.enqueued > RATE * 5
    # A warm shutdown finishes the jobs in hand and hands back the rest: none lost, none run twice.
    assert seen["lost"] == 0 and seen["duplicated"] == 0 and seen["in_hand"] == 0, seen
    assert beat.starts >= 1 and beat.most == 1, f"{beat.most} beat containers at once ({beat.starts} started)"
    # Every worker is new: they run the new release.
    assert not workers & set(host.containers("worker"))


def test_a_rollback_loses_no_job_and_runs_none_twice(host):
    workers = set(host.containers("worker"))
    with host.load() as web, Producer(host, "rollback") as producer, host.watch("beat") as beat:
        host.inv("rollback", "--host", "prod")
    seen = settle(host, producer, SETTLE)
    report("rollback", seen)
    assert_no_request_dropped(web, "rollback with workers")
    assert seen["lost"] == 0 and seen["duplicated"] == 0 and seen["in_hand"] == 0, seen
    assert beat.starts >= 1 and beat.most == 1, f"{beat.most} beat containers at once ({beat.starts} started)"
    assert host.current() == host.first_release
    # The workers run the first release's image again: new containers of it.
    assert not workers & set(host.containers("worker")) and len(host.containers("worker")) == 2


STATE = "{{.State.Pid}} {{.RestartCount}} {{.State.Health.Status}}"


def worker_main(init_pid: int) -> int:
    """The worker's main process in a container whose PID 1 is the engine's init (`init: true`,
    INIT_PID): its one child. A stop signal sent to the init stops the init alone (it cannot
    pass on a signal it cannot catch), and the worker would go on. The test hosts share this
    machine's process IDs."""
    children = Path(f"/proc/{init_pid}/task/{init_pid}/children").read_text().split()
    assert len(children) == 1, f"the init {init_pid} runs {children}: one worker expected"
    return int(children[0])


def ready_workers(host, restarts=None, within=120):
    """The two worker containers' main processes, {container: (pid, restart count)}, once both
    run and answer, each restarted since RESTARTS (a crashed one restarts: unless-stopped)."""
    deadline = time.monotonic() + within
    while True:
        ready = {}
        for container in host.containers("worker"):
            state = host.server.docker("inspect", "--format", STATE, container, check=False).stdout.split()
            if len(state) == 3 and int(state[0]) > 1 and state[2] == "healthy" and \
                    int(state[1]) > (restarts or {}).get(container, (0, -1))[1]:
                ready[container] = (int(state[0]), int(state[1]))
        if len(ready) == 2 or time.monotonic() > deadline:
            return ready
        time.sleep(1)


def test_killed_workers_lose_no_job(host):
    """Both workers' main processes are frozen (SIGSTOP) for a second, then killed (SIGKILL, as
    the OOM killer would: the engine restarts the container, which `docker kill` would stop for
    good), KILLS times. Frozen, a worker that was waiting for a job is handed the next one by
    Redis, and that job is on its way to a process that will never read it: the moment a kill
    loses it when taking a job and recording it in hand are two steps (kombu's own transport; it
    lost a job in about half of the kills of an unfrozen worker on a loaded machine). Only a
    main process found running is signalled (a pid 0 would be this test's own group)."""
    with Producer(host, "kill") as producer:
        victims = None
        for _ in range(KILLS):
            victims = ready_workers(host, victims)
            assert len(victims) == 2, f"the killed workers did not come back: {victims}"
            KILLED.append(time.time())
            mains = [worker_main(pid) for pid, _ in victims.values()]
            for pid in mains:
                os.kill(pid, signal.SIGSTOP)
            time.sleep(1)
            for pid in mains:
                os.kill(pid, signal.SIGKILL)
            KILLED.append(time.time())
        time.sleep(3)
    # What they had in hand comes back after the visibility timeout (and kombu's 10 s sweep).
    seen = settle(host, producer, VISIBILITY + SETTLE)
    report(f"both workers killed, {KILLS} times", seen)
    print("redis:", redis_state(host))
    assert seen["lost"] == 0 and seen["in_hand"] == 0, (seen, redis_state(host))
    # Run again: at most the jobs each pool had finished but its frozen worker had not
    # acknowledged (2 a worker, each time).
    assert seen["duplicated"] <= 2 * 2 * KILLS, seen


def test_beat_ticked_once_at_a_time(host):
    """Each tick records its task id, the time beat sent it, the beat process that sent it (its
    origin) and when it ran. Run once: no task id twice, but for one a killed worker had in
    hand (run just before it was frozen or while it was: at least once, like a job). One beat
    at a time: sent about a tick apart, never at once, and once a new beat process took over,
    the old one never sent again. A gap of several ticks is a beat stopped before the next
    started (the singleton's stop-first rollout): one per beat rollout at most (the code
    deploy and the rollback). A gap a little over or under a tick is beat's process waiting
    for a busy machine's CPU or disk: the bounds leave room for that."""
    ticks = json.loads(host.manage(TICKS).strip().splitlines()[-1])
    ids = [task_id for task_id, _, _, _ in ticks]
    sent = [scheduled for _, scheduled, _, _ in ticks]
    origins = [origin for _, _, origin, _ in ticks]
    assert all(sent) and all(ids), ticks[:3]
    # A tick run twice (asserted below: only one a killed worker had in hand) is one send:
    # the gaps between sends count each task id once.
    once = list(dict(zip(ids, sent)).values())
    gaps = [b - a for a, b in zip(once, once[1:])]
    late = sorted(gap for gap in gaps if gap > 5 * TICK)
    missed = sum(round(gap / TICK) - 1 for gap in late)
    takeovers = [b for a, b in zip(origins, origins[1:]) if a != b]
    print(f"beat: {len(ticks)} ticks over {sent[-1] - sent[0]:.0f}s from {len(set(origins))} beat processes, "
          f"gaps {min(gaps):.2f}s to {max(gaps):.2f}s, gaps of a beat stopped {[round(gap, 1) for gap in late]} "
          f"({missed} ticks not sent)")
    assert len(ticks) > 10
    # When a tick run twice first ran (rows in sending order, then running order): a worker
    # had it in hand when the kills came, however long it had waited in the queue before.
    twice = {}
    for task_id, _, _, ran in ticks:
        if ids.count(task_id) > 1:
            twice.setdefault(task_id, ran)
    print(f"beat: ticks run twice {twice}, the workers frozen and killed between {KILLED}")
    assert all(KILLED and KILLED[0] - 5 < ran < KILLED[-1] + 1 for ran in twice.values()), \
        f"a tick ran twice: {twice}"
    assert min(gaps) > 0.2 * TICK, "two ticks sent at once: two beats ran"
    assert len(takeovers) == len(set(takeovers)) == len(set(origins)) - 1, f"beats interleaved: {takeovers}"
    assert len(late) <= 2, f"beat stopped more often than it was rolled out: {late}"
