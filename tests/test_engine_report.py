"""`inv doctor`'s engine report: the facts of `docker info` and df in one line, then what the
stack cannot run on (FAIL) or runs on badly (warn). The facts are those the engines of CI
answer (20.10 classic, 28 with the containerd store)."""
import json
import shlex

import pytest
from invoke import Result

from tasks import doctor
from tasks.execution.runner import Runner
from tasks.execution.targets import HostTarget, LocalTarget
from tasks.plans import compose
from tasks.source.stack import loads
from tests.fakes import Recorder
from tests.stacks import COMMITTED

ENGINE_20 = {"ServerVersion": "20.10.24+dfsg1", "Driver": "overlay2", "OSType": "linux",
             "DriverStatus": [["Backing Filesystem", "extfs"], ["Supports d_type", "true"]],
             "CgroupVersion": "1", "CgroupDriver": "cgroupfs", "LoggingDriver": "json-file",
             "DockerRootDir": "/var/lib/docker"}
ENGINE_28 = {**ENGINE_20, "ServerVersion": "28.5.2+dfsg4", "Driver": "overlayfs",
             "DriverStatus": [["driver-type", "io.containerd.snapshotter.v1"]], "CgroupVersion": "2",
             "CgroupDriver": "systemd"}
GIB = 1024 ** 3


def df(free_bytes, root="/var/lib/docker"):
    return ("Filesystem     1024-blocks     Used Available Capacity Mounted on\n"
            f"/dev/vda         263174212 54321000 {free_bytes // 1024} 51% /\n")


def test_the_facts_of_engine_28_with_the_containerd_store_in_one_line():
    assert doctor.engine_report(ENGINE_28, df(50 * GIB), " on prod") == [
        (True, "Docker Engine 28.5.2+dfsg4 on prod: containerd image store (overlayfs snapshotter), cgroup v2 "
               "(systemd driver), log driver json-file, 50.0 GiB free under /var/lib/docker", None)]


def test_engine_20_10_is_classic_and_warned_of_without_failing():
    facts, warning = doctor.engine_report(ENGINE_20, df(50 * GIB))
    assert facts[1].startswith("Docker Engine 20.10.24+dfsg1: overlay2 storage driver (classic image store), cgroup v1")
    assert warning == (None, "Docker Engine 20.10.24+dfsg1 is past its end of life (2023); the stack is tested on it "
                             "and on 28", "upgrade Docker Engine (28 or later)")


@pytest.mark.parametrize("change, expected", [
    ({"ServerVersion": "19.03.15"},
     (False, "Docker Engine 19.03.15 is older than 20.10, the oldest the stack is tested on",
      "upgrade Docker Engine (28 or later)")),
    ({"Driver": "devicemapper", "DriverStatus": []},
     (False, "storage driver devicemapper is removed from Docker Engine 25",
      "move the engine to overlay2 or the containerd image store")),
    ({"Driver": "vfs", "DriverStatus": []},
     (None, "storage driver vfs copies every layer in full: builds and disk use grow many times",
      "move the engine to overlay2 or the containerd image store")),
    ({"OSType": "windows"},
     (False, "the engine runs windows containers: the stack's images are Linux ones",
      "switch the engine to Linux containers")),
    ({"LoggingDriver": "none"},
     (None, "the engine's default log driver is none: `inv logs` shows nothing of a container that keeps it",
      "set log-driver in the engine's daemon.json")),
], ids=["too-old", "devicemapper", "vfs", "windows", "no-logs"])
def test_what_the_stack_does_not_run_on_fails_and_what_it_runs_on_badly_warns(change, expected):
    found = doctor.engine_report({**ENGINE_28, **change}, df(50 * GIB))
    assert found[0][0] is True and found[1:] == [expected]


@pytest.mark.parametrize("free, ok", [(50 * GIB, True), (5 * GIB, None), (GIB, False)], ids=["plenty", "low", "full"])
def test_free_space_under_the_data_root_warns_then_fails(free, ok):
    found = doctor.engine_report(ENGINE_28, df(free))
    if ok:
        assert found[1:] == []
    else:
        assert found[1:] == [(ok, f"only {free / GIB:.1f} GiB free under /var/lib/docker: a build or a deploy needs "
                                  "about 2 GiB", "`docker system prune` removes unused images and build cache; or "
                                                 "grow the disk")]


def test_unknown_free_space_is_said_and_nothing_else_assumed():
    (facts,) = doctor.engine_report(ENGINE_28, "")
    assert facts[1].endswith("log driver json-file, free space under /var/lib/docker unknown")


def test_on_a_host_it_asks_the_host_s_engine_then_df_of_its_data_root():
    parsed = loads(COMMITTED + '\n[hosts.prod]\naddress = "203.0.113.10"\n'
                                                       'directory = "/srv/hello"\nproject = "hello-prod"\n')
    conn = Recorder({shlex.join(compose.engine_info()): Result(json.dumps({**ENGINE_28, "DockerRootDir": "/data/d"})),
                     shlex.join(compose.free_space("/data/d")): Result(df(50 * GIB))})
    found = doctor.check_engine_report(Runner(HostTarget(conn, parsed.hosts["prod"], parsed, local_c=Recorder())))
    assert found[0][1].startswith("Docker Engine 28.5.2+dfsg4 on prod: containerd image store")
    assert found[0][1].endswith("50.0 GiB free under /data/d")
    assert [c for c in conn.commands if "docker info" in c or "df -Pk" in c] == [
        "docker info --format '{{json .}}'", "df -Pk -- /data/d"]
    assert "engine_report" in HostTarget.doctor_checks and "engine_report" in LocalTarget.doctor_checks


def test_an_engine_that_does_not_answer_is_one_failed_line():
    parsed = loads(COMMITTED + '\n[hosts.prod]\naddress = "203.0.113.10"\n'
                                                       'directory = "/srv/hello"\n')
    conn = Recorder({shlex.join(compose.engine_info()): Result("", stderr="Cannot connect to the Docker daemon",
                                                               exited=1)})
    found = doctor.check_engine_report(Runner(HostTarget(conn, parsed.hosts["prod"], parsed, local_c=Recorder())))
    assert found == (False, "could not read the engine's facts on prod (Cannot connect to the Docker daemon)", None)
