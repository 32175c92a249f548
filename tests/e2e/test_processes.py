"""[[processes]] for real: a long-running management command that beats, does one-second
"jobs" and, on SIGTERM, finishes the job in hand before it records that it stopped; a
worker (heartbeat health test) and a singleton. `inv up` starts them, a code change moves
them after the release phase with the old ones stopped gracefully and the singleton never
twice at once, a new worker that fails its health test takes the whole rollout back, and
`inv scale` changes their number. No broker is needed."""
import re
import time
import tomllib

import pytest

from testkit.projectcopy import copy_project
from testkit.running import MostAtOnce

from .conftest import Stack, free_port

pytestmark = pytest.mark.e2e
PROJECT = "hello-e2e-proc"
JOBS = '''"""Jobs for the end-to-end tests of [[processes]]."""
import pathlib
import signal
import socket
import time

VERSION = 1
HEALTHY = True
RECORDS = pathlib.Path("/srv/media/stackjobs")


def main(role):
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(time.time()))
    RECORDS.mkdir(exist_ok=True)
    me = f"{role}-v{VERSION}-{socket.gethostname()}"
    job = 0
    while not stopping:
        job += 1
        if HEALTHY:
            pathlib.Path("/tmp/stack-heartbeat").touch()
        time.sleep(1.0)  # the job: a SIGTERM during it lets it finish
    (RECORDS / f"{me}.stopped").write_text(f"finished job {job} {time.time() - stopping[0]:.1f}s after SIGTERM")
'''
PROCESSES = '''
[[processes]]
name = "worker"
command = ["python", "manage.py", "shell", "-c", "import stackjobs; stackjobs.main('worker')"]
health = "heartbeat"
stop_grace_period = 20

[[processes]]
name = "beat"
command = ["python", "manage.py", "shell", "-c", "import stackjobs; stackjobs.main('beat')"]
singleton = true
stop_grace_period = 20
'''
TEMPLATE = "hello/hello/templates/hello/index.html"


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    s = Stack(PROJECT, free_port(0), root=copy_project(tmp_path_factory.mktemp("proc")))
    s.purge()
    (s.root / "hello/stackjobs.py").write_text(JOBS)
    with open(s.root / "config/stack.toml", "a") as handle:
        handle.write(PROCESSES)
    s.inv("render")
    s.inv("up")
    yield s
    s.purge()


def edit(s, path, old, new):
    file = s.root / path
    assert old in file.read_text(), (path, old)
    file.write_text(file.read_text().replace(old, new))


def running(s, service):
    """The names of SERVICE's running containers, the oldest first."""
    out = s.docker("ps", "--filter", f"label=com.docker.compose.project={s.project}",
                   "--filter", f"label=com.docker.compose.service={service}", "--format", "{{.Names}}").stdout
    return sorted(out.split(), key=lambda name: int(name.rsplit("-", 1)[1]))


def records(s):
    """What the stopped jobs wrote: {role-vN-hostname: text}."""
    out = s.compose("exec", "-T", "djangoapp", "sh", "-c",
                    'cd /srv/media/stackjobs && for f in *.stopped; do [ -e "$f" ] && echo "${f%.stopped}: $(cat "$f")"; done'
                    ).stdout
    return dict(line.split(": ", 1) for line in out.splitlines())


def replicas(s):
    entries = tomllib.loads((s.root / "config/stack.toml").read_text())["processes"]
    return {entry["name"]: entry.get("replicas", 1) for entry in entries}


def hostname(s, container):
    return s.docker("inspect", "--format", "{{.Config.Hostname}}", container).stdout.strip()


def watch(s, service):
    """The most containers of SERVICE running at once while the block runs (their events)."""
    return MostAtOnce({"com.docker.compose.project": s.project, "com.docker.compose.service": service,
                       "com.docker.compose.oneoff": "False"})


def test_up_starts_every_process(local):
    assert len(running(local, "worker")) == 1 and len(running(local, "beat")) == 1
    worker = running(local, "worker")[0]
    health = local.docker("inspect", "--format", "{{.State.Health.Status}}", worker).stdout.strip()
    assert health in ("healthy", "starting")
    # Their command runs behind djangostack.run: the app's conventional variables are there,
    # in the process alone (not in the container's environment `docker inspect` shows).
    seen = local.compose("exec", "-T", "worker", "python", "-m", "djangostack.run", "sh", "-c",
                         'test -n "$DATABASE_URL" && echo set').stdout
    assert seen == "set\n"
    assert "DATABASE_URL" not in local.docker("inspect", "--format", "{{json .Config.Env}}", worker).stdout


def test_a_code_change_moves_them_gracefully_after_the_release_phase_and_the_singleton_never_runs_twice(local):
    old_worker, old_beat = running(local, "worker")[0], running(local, "beat")[0]
    old_hosts = {"worker": hostname(local, old_worker), "beat": hostname(local, old_beat)}
    edit(local, "hello/stackjobs.py", "VERSION = 1", "VERSION = 2")
    with watch(local, "beat") as beat, watch(local, "worker") as worker:
        result = local.inv("up")
    assert beat.starts >= 1 and worker.starts >= 1, (beat.events, worker.events)  # the watch saw the moves
    assert beat.most == 1, "two beats ran at once"
    assert worker.most == 2  # the new worker started beside the old one
    out = result.stdout
    assert out.index("Nginx sends requests to") < out.index(f"worker: stopped and removed {old_worker}")
    new_worker, new_beat = running(local, "worker"), running(local, "beat")
    assert len(new_worker) == 1 and new_worker != [old_worker] and len(new_beat) == 1 and new_beat != [old_beat]
    done = records(local)
    for role in ("worker", "beat"):
        said = done[f"{role}-v1-{old_hosts[role]}"]
        assert re.fullmatch(r"finished job [0-9]+ [0-9.]+s after SIGTERM", said), said
        assert float(said.split()[3].rstrip("s")) < 20  # within its grace, not killed


def test_scale_starts_and_stops_workers_and_writes_the_count(local):
    local.inv("scale", "worker=3")
    assert len(running(local, "worker")) == 3
    assert replicas(local) == {"worker": 3, "beat": 1}
    keep, *extra = running(local, "worker")
    extra_hosts = [hostname(local, name) for name in extra]
    local.inv("scale", "worker=1")
    assert running(local, "worker") == [keep]  # the newest went
    done = records(local)
    for host in extra_hosts:  # each stopped gracefully
        assert done[f"worker-v2-{host}"].startswith("finished job "), done
    assert replicas(local) == {"worker": 1, "beat": 1}
    refused = local.inv("scale", "beat=2", check=False)
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [
        "error: config/stack.toml: [[processes]] beat replicas 2 is not valid: a whole number from 0 to 1"]
    assert len(running(local, "beat")) == 1


def test_a_process_gone_from_the_stack_file_is_stopped_gracefully_and_removed(local):
    old_beat = running(local, "beat")[0]
    beat_host = hostname(local, old_beat)
    stack_file = local.root / "config/stack.toml"
    stack_file.write_text(stack_file.read_text().split('\n[[processes]]\nname = "beat"')[0])  # its last entry
    local.inv("render")
    local.inv("up")
    assert running(local, "beat") == [] and running(local, "worker") != []
    assert local.docker("ps", "--all", "--quiet", "--filter", f"name={old_beat}").stdout == ""
    assert records(local)[f"beat-v2-{beat_host}"].startswith("finished job "), "not stopped gracefully"


def test_a_new_worker_that_fails_its_health_check_takes_the_rollout_back(local):
    old_worker, old_beat = running(local, "worker"), running(local, "beat")
    edit(local, "hello/stackjobs.py", "HEALTHY = True", "HEALTHY = False")
    edit(local, TEMPLATE, "Hello from Django", "Hello from a broken release")
    failed = local.inv("up", "--timeout", "40", check=False)
    assert failed.returncode == 1
    errors = [line for line in failed.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0] == failed.stderr.strip().splitlines()[-1], failed.stderr
    assert errors[0].startswith("error: the new worker container(s) ") and "did not become healthy within 40s" in errors[0] \
        and f"{old_worker[0]} still run(s)" in errors[0], errors
    assert running(local, "worker") == old_worker and running(local, "beat") == old_beat
    assert len(running(local, "djangoapp")) == 1
    page = local.get("/")[2]
    assert b"Hello from Django" in page and b"broken release" not in page


# On a host, `inv deploy --host` and `inv rollback --host` move them the same way, with a
# real Celery worker and beat: tests/e2e/test_jobs.py.


# On a cluster each process is a Swarm service of the stack, rolled by Swarm with the app
# (the singleton never twice at once), scaled by `inv scale --cluster`: with a real Celery
# worker, beat and scheduler, in tests/e2e/test_cluster_jobs.py.
