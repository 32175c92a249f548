"""config/build/requirements.py where the builder runs it: in the bare Python image, on
each form a project keeps its requirements in, and what it writes read back by that
image's own pip (its requirements-file parser) as the packages and hashes meant."""
import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.test_build_requirements import PYPROJECT, SHA, UV_LOCK, write

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
IMAGE = os.environ.get("PYTHON_IMAGE", "python:3.11-slim-bookworm")
# What the image's pip reads from a requirements file: each requirement and its hashes.
READ_BACK = """
import json, sys
from pip._internal.network.session import PipSession
from pip._internal.req.req_file import parse_requirements
from pip._vendor.packaging.requirements import Requirement
print(json.dumps([[str(Requirement(r.requirement)), sorted(r.options.get("hashes", {}).get("sha256", []))]
                  for r in parse_requirements(sys.argv[1], session=PipSession())]))
"""


def in_image(project: Path, source: str) -> subprocess.CompletedProcess:
    script = (f"python /build/requirements.py /src/{source} > /tmp/pinned.txt "
              "&& python -c \"$READ_BACK\" /tmp/pinned.txt")
    return subprocess.run(["docker", "run", "--rm", "--network", "none", "-e", f"READ_BACK={READ_BACK}",
                           "-v", f"{ROOT / 'config/build'}:/build:ro", "-v", f"{project}:/src:ro",
                           IMAGE, "sh", "-c", script], capture_output=True, text=True, timeout=120)


def test_each_form_of_requirements_becomes_the_list_pip_reads(tmp_path):
    write(tmp_path, {
        "uv.lock": UV_LOCK, "pyproject.toml": PYPROJECT,
        "requirements/base.txt": f"Django==5.2.1 --hash={SHA[0]}\n",
        "requirements/production.txt": f"-r base.txt\ngunicorn==23.0.0 \\\n    --hash={SHA[1]}\n",
        "plain/requirements.txt": "Django>=5.2,<5.3\n",
    })
    (tmp_path / "pipenv").mkdir()
    for name in ("Pipfile", "Pipfile.lock"):
        (tmp_path / "pipenv" / name).write_bytes((ROOT / name).read_bytes())
    expected_lock = {name: sorted(h.removeprefix("sha256:") for h in entry["hashes"])
                     for name, entry in json.loads((ROOT / "Pipfile.lock").read_text())["default"].items()}
    cases = {
        "uv.lock": [["asgiref==3.8.1", [SHA[0][7:], SHA[1][7:]]], ["django==5.2.1", [SHA[2][7:]]],
                    ["psycopg==3.2.1", [SHA[3][7:]]],
                    ["psycopg-binary==3.2.1; implementation_name != \"pypy\"", [SHA[4][7:]]],
                    ["tzdata==2024.1; sys_platform == \"win32\"", [SHA[5][7:]]]],
        "requirements/production.txt": [["Django==5.2.1", [SHA[0][7:]]], ["gunicorn==23.0.0", [SHA[1][7:]]]],
        "plain/requirements.txt": [["Django<5.3,>=5.2", []]],
    }
    for source, expected in cases.items():
        done = in_image(tmp_path, source)
        assert done.returncode == 0, f"{source}: {done.stderr}"
        assert json.loads(done.stdout) == expected, source
    done = in_image(tmp_path, "pipenv/Pipfile.lock")
    assert done.returncode == 0, done.stderr
    read = {requirement.split("==")[0].split("[")[0]: hashes for requirement, hashes in json.loads(done.stdout)}
    assert read == expected_lock


def test_a_refusal_in_the_image_is_one_line_and_no_list(tmp_path):
    write(tmp_path, {"requirements.txt": f"Django==5.2.1 --hash={SHA[0]}\nrequests>=2\n"})
    done = in_image(tmp_path, "requirements.txt")
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr == ("error: /src/requirements.txt:2: requests>=2 is not pinned with ==: with --hash on any "
                           "line pip checks every requirement (pip-compile --generate-hashes pins them all)\n")
