"""config/build/requirements.py: what the Dockerfile's builder installs, from the one file
`[app] requirements` names: a Pipfile.lock with its hashes (a lock out of date with the
Pipfile refused, as `pipenv install --deploy` refuses it; built for real by every e2e test),
a requirements .txt (its includes read in place; with hashes, all or nothing), a uv.lock
(the project's default dependencies). Each refusal is one line and exit status 1."""
import copy
import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

sys.path.insert(0, "config/build")
import requirements as req  # noqa: E402

# A Pipfile and the lock pipenv made of it, with an app's packages (the tooling's own
# Pipfile has none: the app's are its own).
LOCKED = Path("tests/golden/pipenv")
PIPFILE = tomllib.load(open(LOCKED / "Pipfile", "rb"))
LOCK = json.load(open(LOCKED / "Pipfile.lock"))


def test_the_pipfile_hash_is_pipenvs_and_every_locked_package_comes_pinned_with_its_hashes():
    assert req.pipfile_hash(PIPFILE) == LOCK["_meta"]["hash"]["sha256"]
    text = req.requirements(PIPFILE, LOCK)
    for name, entry in LOCK["default"].items():
        assert f"\n{name}" in "\n" + text and entry["version"] in text
        assert all(f"--hash={h}" in text for h in entry["hashes"])
    assert "pytest" not in text and "invoke" not in text  # [dev-packages] stay out of the image
    assert "psycopg[binary]==" in text


def script(*args):
    return subprocess.run([sys.executable, "config/build/requirements.py", *map(str, args)],
                          capture_output=True, text=True)


def test_the_script_writes_requirements_pip_can_read_and_exits_1_on_a_stale_lock(tmp_path):
    done = script(LOCKED / "Pipfile.lock")
    assert done.returncode == 0 and done.stdout.count("--hash=sha256:") >= len(LOCK["default"])
    assert done.stdout == req.requirements(PIPFILE, LOCK)
    stale = tmp_path / "Pipfile"
    stale.write_text((LOCKED / "Pipfile").read_text().replace('gunicorn = "~=23.0"', 'gunicorn = "~=22.0"'))
    shutil.copy(LOCKED / "Pipfile.lock", tmp_path / "Pipfile.lock")
    refused = script(tmp_path / "Pipfile.lock")
    assert refused.returncode == 1 and refused.stdout == ""
    assert "Pipfile.lock is out of date with the Pipfile: run `pipenv lock`" in refused.stderr


def test_the_script_takes_one_source_and_says_which_files_it_reads(tmp_path):
    assert script("Pipfile", "Pipfile.lock").returncode == 2
    (tmp_path / "Pipfile.lock").write_text(open("Pipfile.lock").read())
    missing = script(tmp_path / "Pipfile.lock")
    assert missing.returncode == 1 and missing.stderr == f"error: {tmp_path / 'Pipfile'}: no such file\n"
    other = script("Pipfile")
    assert other.returncode == 1 and other.stderr == ("error: Pipfile is not a requirements file this build reads: "
                                                      "a requirements .txt, a Pipfile.lock (its Pipfile beside it) "
                                                      "or a uv.lock\n")


@pytest.mark.parametrize("change, message", [
    (lambda e: e.update(version=">=5.0"), "is not pinned to one version"),
    (lambda e: e.update(hashes=[]), "has no sha256 hashes"),
    (lambda e: e.update(hashes=["md5:abc"]), "has no sha256 hashes"),
    (lambda e: e.update(markers="python_version >= '3.10'; rm -rf /"), "not valid"),
], ids=["range", "no-hashes", "md5", "marker"])
def test_a_lock_entry_that_is_not_exact_is_refused(change, message):
    lock = copy.deepcopy(LOCK)
    change(lock["default"]["django"])
    with pytest.raises(req.Refused, match=message):
        req.requirements(PIPFILE, lock)


SHA = ["sha256:" + c * 64 for c in "abcdef"]


def write(folder: Path, files: dict) -> Path:
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


class TestARequirementsFile:
    def test_a_hashed_list_comes_back_as_it_is(self):
        done = script("hello/requirements.txt")
        assert done.returncode == 0 and done.stderr == ""
        kept = "".join(line for line in open("hello/requirements.txt") if not line.startswith("#"))
        assert done.stdout == kept

    def test_pins_and_ranges_are_taken_and_each_range_is_noted(self, tmp_path):
        write(tmp_path, {"requirements.txt": (
            "# the site\n"
            "Django>=5.2,<5.3  # LTS\n"
            "gunicorn == 23.0.0\n"
            "psycopg[binary]==3.2.1 ; python_version >= '3.10'\n"
            "whitenoise\n"
            "--index-url https://pypi.org/simple\n")})
        done = script(tmp_path / "requirements.txt")
        assert done.returncode == 0
        assert done.stdout == ("--index-url https://pypi.org/simple\nDjango>=5.2,<5.3\ngunicorn==23.0.0\n"
                               "psycopg[binary]==3.2.1; python_version >= '3.10'\nwhitenoise\n")
        assert done.stderr.splitlines() == [
            f"note: {tmp_path}/requirements.txt:2: Django>=5.2,<5.3 is not pinned (==): "
            "the build takes the newest version it allows",
            f"note: {tmp_path}/requirements.txt:5: whitenoise is not pinned (==): the build takes the newest "
            "version it allows"]

    def test_includes_are_read_relative_to_the_file_that_names_them(self, tmp_path):
        write(tmp_path, {
            "requirements/base.txt": f"-r ../common.txt\ndjango==5.2.1 --hash={SHA[0]}\n",
            "common.txt": f"asgiref==3.8.1 \\\n    --hash={SHA[1]} \\\n    --hash={SHA[2]}\n",
            "requirements/production.txt": f"-r base.txt\n--requirement=base.txt\ngunicorn==23.0.0 --hash {SHA[3]}\n",
            "requirements/dev.txt": "-r base.txt\npytest==8.0\n",
        })
        done = script(tmp_path / "requirements/production.txt")
        assert done.returncode == 0 and done.stderr == ""
        assert done.stdout == (f"asgiref==3.8.1 \\\n    --hash={SHA[1]} \\\n    --hash={SHA[2]}\n"
                               f"django==5.2.1 \\\n    --hash={SHA[0]}\n"
                               f"gunicorn==23.0.0 \\\n    --hash={SHA[3]}\n")
        assert "pytest" not in done.stdout

    def test_a_hashed_list_with_pinned_constraints_installs_the_list_alone(self, tmp_path):
        write(tmp_path, {"requirements.txt": f"-c constraints.txt\ndjango==5.2.1 --hash={SHA[0]}\n",
                         "constraints.txt": "django==5.2.1\nasgiref==3.8.1\n"})
        done = script(tmp_path / "requirements.txt")
        assert done.returncode == 0 and done.stdout == f"django==5.2.1 \\\n    --hash={SHA[0]}\n"

    def test_a_url_with_its_hash_is_taken(self, tmp_path):
        url = "https://files.example.org/pkg-1.0-py3-none-any.whl"
        write(tmp_path, {"requirements.txt": f"pkg @ {url} --hash={SHA[0]}\n"})
        done = script(tmp_path / "requirements.txt")
        assert done.returncode == 0 and done.stdout == f"pkg @ {url} \\\n    --hash={SHA[0]}\n"

    @pytest.mark.parametrize("files, message", [
        ({"requirements.txt": f"django==5.2.1 --hash={SHA[0]}\nrequests>=2\n"},
         "requirements.txt:2: requests>=2 is not pinned with ==: with --hash on any line pip checks every requirement"),
        ({"requirements.txt": f"django==5.2.1 --hash={SHA[0]}\nrequests==2.32.0\n"},
         "requirements.txt:2: requests==2.32.0 has no --hash: with --hash on any line pip checks every requirement"),
        ({"requirements.txt": f"-r base.txt\ndjango==5.2.1 --hash={SHA[0]}\n", "base.txt": "asgiref==3.8.1\n"},
         "base.txt:1: asgiref==3.8.1 has no --hash"),
        ({"requirements.txt": "django==5.2.1 --hash=md5:0123\n"},
         "requirements.txt:1: --hash=md5:0123 is not a sha256, sha384 or sha512 hash pip can check"),
        ({"requirements.txt": "-e .\n"}, "requirements.txt:1: -e . is an editable install of a local folder"),
        ({"requirements.txt": "./vendor/pkg-1.0.tar.gz\n"}, "requirements.txt:1: ./vendor/pkg-1.0.tar.gz is a local path"),
        ({"requirements.txt": f"vendor/pkg-1.0.tar.gz --hash={SHA[0]}\n"}, "vendor/pkg-1.0.tar.gz is a local path"),
        ({"requirements.txt": "pkg @ file:///srv/pkg.whl\n"}, "pkg @ file:///srv/pkg.whl is not an http(s) URL"),
        ({"requirements.txt": "git+https://github.com/org/pkg.git@v1#egg=pkg\n"},
         "comes from a version control URL, which no hash can check"),
        ({"requirements.txt": "pkg @ git+https://github.com/org/pkg.git@v1\n"}, "comes from a version control URL"),
        ({"requirements.txt": "pkg @ https://files.example.org/pkg.whl\n"},
         "pkg @ https://files.example.org/pkg.whl has no --hash: a URL alone does not say which file it was"),
        ({"requirements.txt": f"https://files.example.org/pkg.whl --hash={SHA[0]}\n"}, "has no package name"),
        ({"requirements.txt": "-r missing.txt\n"}, "missing.txt: no such file"),
        ({"requirements.txt": "-r /etc/requirements.txt\n"}, "only a file beside the requirements is read"),
        ({"requirements.txt": "-r https://example.org/r.txt\n"}, "only a file beside the requirements is read"),
        ({"requirements.txt": "-r base.txt\n", "base.txt": "-r requirements.txt\n"}, "includes a file that includes it"),
        ({"requirements.txt": "--trusted-host example.org\n"}, "the option --trusted-host is not one this build takes"),
        ({"requirements.txt": "django==5.2.1 --config-settings=x=y\n"},
         "--config-settings=x=y after a requirement is not taken here (only --hash=...)"),
        ({"requirements.txt": "-c constraints.txt\ndjango\n", "constraints.txt": "django==5.2.1\n"},
         "constraints (-c) are taken only in a list pinned with --hash"),
        ({"requirements.txt": f"-c constraints.txt\ndjango==5.2.1 --hash={SHA[0]}\n", "constraints.txt": "django>5\n"},
         "constraints.txt:1: the constraint django>5 is not pinned with =="),
        ({"requirements.txt": "django=5.2\n"}, "django has a version '=5.2' pip cannot read"),
        ({"requirements.txt": "django==5.2; python_version >= '3.10' | true\n"}, "django has extras or markers that are not valid"),
        ({"requirements.txt": "-r\n"}, "requirements.txt:1: -r needs a value"),
    ], ids=["hashed-range", "hashed-unhashed", "include-unhashed", "md5", "editable", "dot-path", "bare-path",
            "file-url", "vcs", "vcs-at", "url-no-hash", "url-no-name", "include-missing", "include-absolute",
            "include-url", "include-cycle", "unknown-option", "per-requirement-option", "constraints-unhashed",
            "constraint-range", "bad-version", "bad-marker", "option-without-value"])
    def test_what_the_builder_cannot_fetch_or_check_is_refused_in_one_line(self, tmp_path, files, message):
        write(tmp_path, files)
        refused = script(tmp_path / "requirements.txt")
        assert refused.returncode == 1 and refused.stdout == ""
        assert refused.stderr.startswith(f"error: {tmp_path}/") and refused.stderr.count("\n") == 1
        assert message in refused.stderr


# A uv.lock as `uv lock` writes one (format 1): the project (virtual), Django with its
# dependencies (tzdata on Windows alone), psycopg with its `binary` extra, and pytest in a
# dev group, which the image leaves out.
UV_LOCK = f"""version = 1
requires-python = ">=3.12"

[[package]]
name = "asgiref"
version = "3.8.1"
source = {{ registry = "https://pypi.org/simple" }}
sdist = {{ url = "https://files.pythonhosted.org/asgiref-3.8.1.tar.gz", hash = "{SHA[0]}", size = 1 }}
wheels = [
    {{ url = "https://files.pythonhosted.org/asgiref-3.8.1-py3-none-any.whl", hash = "{SHA[1]}", size = 1 }},
]

[[package]]
name = "django"
version = "5.2.1"
source = {{ registry = "https://pypi.org/simple" }}
dependencies = [
    {{ name = "asgiref" }},
    {{ name = "tzdata", marker = "sys_platform == 'win32'" }},
]
wheels = [
    {{ url = "https://files.pythonhosted.org/django-5.2.1-py3-none-any.whl", hash = "{SHA[2]}", size = 1 }},
]

[[package]]
name = "mysite"
version = "0.1.0"
source = {{ virtual = "." }}
dependencies = [
    {{ name = "django" }},
    {{ name = "psycopg", extra = ["binary"] }},
]

[package.dev-dependencies]
dev = [
    {{ name = "pytest" }},
]

[package.metadata]
requires-dist = [
    {{ name = "django", specifier = ">=5.2,<5.3" }},
    {{ name = "psycopg", extras = ["binary"], specifier = ">=3.2" }},
]

[package.metadata.requires-dev]
dev = [{{ name = "pytest", specifier = ">=8" }}]

[[package]]
name = "psycopg"
version = "3.2.1"
source = {{ registry = "https://pypi.org/simple" }}
dependencies = [
    {{ name = "tzdata", marker = "sys_platform == 'win32'" }},
]
sdist = {{ url = "https://files.pythonhosted.org/psycopg-3.2.1.tar.gz", hash = "{SHA[3]}", size = 1 }}

[package.optional-dependencies]
binary = [
    {{ name = "psycopg-binary", marker = "implementation_name != 'pypy'" }},
]

[[package]]
name = "psycopg-binary"
version = "3.2.1"
source = {{ registry = "https://pypi.org/simple" }}
wheels = [
    {{ url = "https://files.pythonhosted.org/psycopg_binary-3.2.1-cp312-manylinux.whl", hash = "{SHA[4]}", size = 1 }},
]

[[package]]
name = "pytest"
version = "8.3.0"
source = {{ registry = "https://pypi.org/simple" }}
wheels = [
    {{ url = "https://files.pythonhosted.org/pytest-8.3.0-py3-none-any.whl", hash = "{SHA[5]}", size = 1 }},
]

[[package]]
name = "tzdata"
version = "2024.1"
source = {{ registry = "https://pypi.org/simple" }}
wheels = [
    {{ url = "https://files.pythonhosted.org/tzdata-2024.1-py2.py3-none-any.whl", hash = "{SHA[5]}", size = 1 }},
]
"""
PYPROJECT = """[project]
name = "mysite"
version = "0.1.0"
requires-python = ">=3.12"
dependencies = ["Django>=5.2,<5.3", "psycopg[binary]>=3.2"]

[dependency-groups]
dev = ["pytest>=8"]
"""


class TestAUvLock:
    def test_the_projects_default_dependencies_come_with_their_hashes_and_markers(self, tmp_path):
        write(tmp_path, {"uv.lock": UV_LOCK, "pyproject.toml": PYPROJECT})
        done = script(tmp_path / "uv.lock")
        assert done.returncode == 0 and done.stderr == ""
        assert done.stdout == (
            f"asgiref==3.8.1 \\\n    --hash={SHA[0]} \\\n    --hash={SHA[1]}\n"
            f"django==5.2.1 \\\n    --hash={SHA[2]}\n"
            f"psycopg==3.2.1 \\\n    --hash={SHA[3]}\n"
            f"psycopg-binary==3.2.1; implementation_name != 'pypy' \\\n    --hash={SHA[4]}\n"
            f"tzdata==2024.1; sys_platform == 'win32' \\\n    --hash={SHA[5]}\n")
        assert "pytest" not in done.stdout and "mysite" not in done.stdout

    def test_a_package_reached_two_ways_keeps_each_condition(self, tmp_path):
        lock = UV_LOCK.replace('{ name = "tzdata", marker = "sys_platform == \'win32\'" },\n]\nsdist',
                               '{ name = "tzdata", marker = "python_version < \'3.9\'" },\n]\nsdist')
        write(tmp_path, {"uv.lock": lock})
        done = script(tmp_path / "uv.lock")
        assert done.returncode == 0
        assert (f"tzdata==2024.1; (python_version < '3.9') or (sys_platform == 'win32') \\\n    --hash={SHA[5]}\n"
                in done.stdout)

    @pytest.mark.parametrize("change, message", [
        (lambda lock: lock.replace('source = { virtual = "." }', 'source = { registry = "https://pypi.org/simple" }'),
         'no project entry (source = { editable = "." } or { virtual = "." })'),
        (lambda lock: lock.replace("version = 1\n", "version = 2\n", 1), "lock format version 2 is not one this build reads"),
        (lambda lock: lock.replace('name = "django"\nversion = "5.2.1"\nsource = { registry = "https://pypi.org/simple" }',
                                   'name = "django"\nversion = "5.2.1"\nsource = { git = "https://github.com/django/django" }'),
         "django comes from git (https://github.com/django/django), which the builder cannot fetch and check by hash"),
        (lambda lock: lock.replace('name = "asgiref"\nversion = "3.8.1"\nsource = { registry = "https://pypi.org/simple" }',
                                   'name = "asgiref"\nversion = "3.8.1"\nsource = { path = "../asgiref" }'),
         "asgiref comes from path (../asgiref)"),
        (lambda lock: lock.replace(f'hash = "{SHA[2]}"', 'hash = "md5:00"'), "django has no sha256 hashes"),
        (lambda lock: lock.replace("[[package]]\nname = \"asgiref\"", "[[package]]\nname = \"asgiref\" =", 1),
         "is not valid TOML"),
    ], ids=["no-project", "format", "git", "path", "md5", "toml"])
    def test_what_cannot_be_installed_as_locked_is_refused(self, tmp_path, change, message):
        write(tmp_path, {"uv.lock": change(UV_LOCK)})
        refused = script(tmp_path / "uv.lock")
        assert refused.returncode == 1 and refused.stdout == "" and refused.stderr.count("\n") == 1
        assert message in refused.stderr

    def test_a_lock_older_than_its_pyproject_is_refused(self, tmp_path):
        write(tmp_path, {"uv.lock": UV_LOCK,
                         "pyproject.toml": PYPROJECT.replace('"psycopg[binary]>=3.2"', '"psycopg[binary]>=3.2", "whitenoise"')})
        refused = script(tmp_path / "uv.lock")
        assert refused.returncode == 1
        assert refused.stderr == f"error: {tmp_path}/uv.lock is out of date with pyproject.toml (whitenoise not locked): run `uv lock`\n"


@pytest.mark.parametrize("marker, version, holds", [
    ("python_version >= '3.12'", (3, 11, 7), False),
    ("python_version >= '3.12'", (3, 12, 0), True),
    ("python_version >= '3.10' and python_version < '3.14'", (3, 13, 1), True),
    ("python_full_version < '3.11.4' or python_version > '3.12'", (3, 11, 7), False),
    ("sys_platform == 'linux'", (3, 11, 7), None),
    ("python_version >= '3.12' and implementation_name != 'pypy'", (3, 11, 7), None),
])
def test_a_marker_on_the_python_version_alone_is_decided(marker, version, holds):
    assert req.for_python(marker, version) is holds


def test_django_that_this_python_would_skip_is_refused_in_one_line(tmp_path):
    """A lock made for Python 3.12 (Django 6) read by a 3.11 image: pip would install the
    rest and leave Django out, silently."""
    listed = tmp_path / "requirements.txt"
    listed.write_text(f"asgiref==3.13.0\ndjango==6.0; python_version >= '{sys.version_info[0]}.{sys.version_info[1] + 1}'\n")
    refused = script(listed)
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr == (f"error: Django==6.0 is for python_version >= '{sys.version_info[0]}.{sys.version_info[1] + 1}', "
                              f"and this image has Python {sys.version_info[0]}.{sys.version_info[1]}: set [app] python to "
                              "a Python that Django version supports\n")
    listed.write_text(f"django==5.2.19; python_version >= '{sys.version_info[0]}.{sys.version_info[1]}'\n")
    assert script(listed).returncode == 0
