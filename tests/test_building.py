"""A failed build said in one line (tasks/procedures/building.py): outputs as BuildKit, pip
and compilers print them, each read back as what to change and the key that changes it."""
import pytest

from invoke import Result

from tasks.errors import TaskError
from tasks.execution.runner import Runner
from tasks.execution.targets import LocalTarget
from tasks.procedures import building
from tasks.source.stack import App
from tests.fakes import Recorder
from tests.stacks import stack

APP = App(path="mysite", settings="mysite.settings", wsgi="mysite.wsgi:application", python="3.13",
          requirements="mysite/requirements.txt")

PYTHON_MISMATCH = """\
#7 [builder 2/6] RUN python -c 'import sys; ...' "local/python:3.11-slim-bookworm"
#7 0.412 [app] python = "3.13" but local/python:3.11-slim-bookworm has Python 3.11: set [app] python_image (or PYTHON_IMAGE) to a Python 3.13 image
#7 ERROR: process "/bin/sh -c python -c ..." did not complete successfully: exit code: 1
failed to solve: executor failed running [/bin/sh -c python -c 'import sys; ...']: exit code: 1
"""

NO_COMPILER = """\
#11 12.31   Building wheel for uWSGI (pyproject.toml): started
#11 13.02   error: subprocess-exited-with-error
#11 13.02   × Building wheel for uWSGI (pyproject.toml) did not run successfully.
#11 13.02   │ exit code: 1
#11 13.02   ╰─> [8 lines of output]
#11 13.02       using profile: buildconf/default.ini
#11 13.02       detected include path: []
#11 13.02       Exception: you need a C compiler to build uWSGI
#11 13.05   Failed to build uWSGI
#11 13.06 ERROR: Failed to build installable wheels for some pyproject.toml based projects (uWSGI)
"""

NO_HEADER = """\
#11 20.1   x86_64-linux-gnu-gcc -Wsign-compare -fPIC -I/usr/include/python3.13 -c psycopg/psycopgmodule.c
#11 20.2   In file included from psycopg/psycopgmodule.c:28:
#11 20.2   ./psycopg/psycopg.h:36:10: fatal error: libpq-fe.h: No such file or directory
#11 20.3   error: command '/usr/bin/x86_64-linux-gnu-gcc' failed with exit code 1
#11 20.5   Failed building wheel for psycopg2
"""

NO_BASE_IMAGE = """\
#4 [internal] load metadata for docker.io/library/python:3.14-slim
#4 ERROR: failed to do request: Head "https://registry-1.docker.io/v2/library/python/manifests/3.14-slim": dial tcp: lookup registry-1.docker.io: no such host
failed to solve: rpc error: code = Unknown desc = failed to solve with frontend dockerfile.v0
"""

REFUSED = """\
#9 0.231 error: mysite/requirements.txt line 3: -e ./vendor/lib: a local path is not in the image's build
failed to solve: executor failed running [/bin/sh -c python /build/requirements.py ...]: exit code: 1
"""


@pytest.mark.parametrize("output, expected", [
    (PYTHON_MISMATCH, '[app] python = "3.13" but local/python:3.11-slim-bookworm has Python 3.11: set [app] '
                      'python_image (or PYTHON_IMAGE) to a Python 3.13 image'),
    (NO_COMPILER, 'uWSGI failed to build from source: the builder lacks a compiler; add the Debian packages it needs '
                  'to [app] build_packages in config/stack.toml (e.g. "build-essential"), then build again'),
    (NO_HEADER, 'psycopg2 failed to build from source: the builder lacks the package that has libpq-fe.h; add the '
                'Debian packages it needs to [app] build_packages in config/stack.toml (e.g. "build-essential" and '
                'the -dev package with libpq-fe.h), then build again'),
    (NO_BASE_IMAGE, 'the base image python:3.14-slim could not be had (no registry answers, or no such tag): it comes '
                    'from the PYTHON_IMAGE variable'),
    (NO_BASE_IMAGE.replace("3.14", "3.13"), 'the base image python:3.13-slim could not be had (no registry answers, or '
                                            'no such tag): it comes from [app] python = "3.13"'),
    (REFUSED, "mysite/requirements.txt line 3: -e ./vendor/lib: a local path is not in the image's build"),
    ("#5 ERROR: something nobody planned for\nfailed to solve: exit code: 1\n", None),
], ids=["python", "compiler", "header", "base-image-variable", "base-image", "refused", "unknown"])
def test_a_failed_build_is_read_back_as_what_to_change(output, expected):
    assert building.why(output, APP) == expected


@pytest.mark.parametrize("exited, stderr, message", [
    (1, NO_COMPILER, r"^building failed: uWSGI failed to build from source: .*\[app\] build_packages"),
    (17, "something else\n", r"^building failed \(exit status 17\)$"),
])
def test_the_build_raises_that_line_or_the_exit_status_when_the_cause_is_unknown(exited, stderr, message):
    build = "docker compose --project-name hello build djangoapp"
    conn = Recorder({build: Result(stdout="", stderr=stderr, exited=exited)})
    r = Runner(LocalTarget(conn, stack()))
    r.ensure_engine = lambda: None
    with pytest.raises(TaskError, match=message):
        building.build_app(r, "building")
    assert conn.commands[-1] == build


def test_a_base_image_named_by_python_image_is_said_so():
    app = App(path="mysite", settings="mysite.settings", wsgi="mysite.wsgi:application", python="3.13",
              python_image="pyhton:3.13-slim", requirements="mysite/requirements.txt")
    output = NO_BASE_IMAGE.replace("library/python:3.14-slim", "library/pyhton:3.13-slim")
    assert building.why(output, app) == ('the base image pyhton:3.13-slim could not be had (no registry answers, or no '
                                         'such tag): it comes from [app] python_image = "pyhton:3.13-slim"')
