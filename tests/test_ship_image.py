"""Shipping an image to a host (procedures/images.py): what a failure says, and what a dry
run prints. The host is a recording connection; this machine's `docker` is a small script
first on PATH, so the commands run here are real processes without an engine."""
import os
import shlex
import stat

import pytest
from invoke import Context, Result

from tasks.errors import TaskError
from tasks.execution.runner import Runner
from tasks.execution.targets import HostTarget
from tasks.plans import images as plans
from tasks.procedures import images
from tests.fakes import Recorder
from tests.stacks import PROD_8080, stack

STACK = stack(PROD_8080)
HOST = STACK.hosts["prod"]
IMAGE = "hello-prod-djangoapp:abcdef012345"
INSPECT = shlex.join(plans.identity(IMAGE))
IDENTITY = '["sha256:aaaa"] 2026-12-06T06:14:19Z linux/amd64 {"User":"app"}'


@pytest.fixture
def docker_here(tmp_path, monkeypatch):
    """A `docker` here that shows IMAGE and fails to save it, as an engine does when its
    disk is full."""
    folder = tmp_path / "bin"
    folder.mkdir()
    script = folder / "docker"
    script.write_text('#!/bin/sh\n'
                      'case "$1 $2" in\n'
                      f'  "image inspect") echo {shlex.quote(IDENTITY)};;\n'
                      '  "save "*) echo "write /var/lib/docker/tmp/docker-export-1: no space left on device" >&2; exit 1;;\n'
                      '  *) exit 2;;\n'
                      'esac\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")


def host(dry=False):
    conn = Recorder({INSPECT: Result(IDENTITY.replace("06:14", "05:00") + "\n")})  # the host has another build
    return Runner(HostTarget(conn, HOST, STACK, local_c=Context()), dry), conn


def test_a_failing_docker_save_is_one_line_naming_the_image_and_why(docker_here):
    r, conn = host()
    with pytest.raises(TaskError) as failed:
        images.ship_image(r, r.here(), IMAGE)
    assert str(failed.value.message) == (
        f"error: docker save {IMAGE} failed (exit status 1): "
        "write /var/lib/docker/tmp/docker-export-1: no space left on device")
    # Nothing reached the host but the reads.
    assert conn.commands == [INSPECT, f"bash -c {shlex.quote(plans.HOST_LAYERS)}"]
