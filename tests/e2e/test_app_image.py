"""The app image rendered from [app], built for real: a base image whose Python is not the one
[app] names stops the build in one line naming the image and the key, before anything is
installed."""
import os

import pytest

from tests.e2e.conftest import Stack, free_port

pytestmark = pytest.mark.e2e

PYTHON_IMAGE = os.environ.get("PYTHON_IMAGE", "python:3.11-slim-bookworm")


@pytest.fixture(scope="module")
def copy(tmp_path_factory):
    from testkit.projectcopy import copy_project

    s = Stack("hello-e2e-appimage", free_port(0), root=copy_project(tmp_path_factory.mktemp("project")))
    yield s
    s.docker("image", "rm", "--force", "hello-e2e-appimage-djangoapp:latest", check=False)


def test_another_python_than_apps_stops_the_build_in_one_line(copy):
    stack_file = copy.root / "config/stack.toml"
    text = stack_file.read_text().replace('python = "3.11"', 'python = "3.13"', 1)
    stack_file.write_text(text.replace('python_image = "python:3.11-slim-bookworm"\n', "", 1))
    copy.inv("render")
    assert "ARG PYTHON_IMAGE=python:3.13-slim\n" in (copy.root / "Dockerfile").read_text()
    result = copy.inv("build", check=False, env={"PYTHON_IMAGE": PYTHON_IMAGE})
    assert result.returncode != 0
    line = f'[app] python = "3.13" but {PYTHON_IMAGE} has Python 3.11: set [app] python_image (or PYTHON_IMAGE) ' \
           f'to a Python 3.13 image'
    assert line in result.stdout + result.stderr
    assert copy.docker("image", "inspect", "hello-e2e-appimage-djangoapp:latest", check=False).returncode != 0
