"""`inv init PATH`: an existing Django project becomes the stack's app, its own files
untouched. The projects are made here by Django's own `django-admin startproject` and
`startapp`, in the layouts real projects have; the task runs for real in a throwaway copy
of this repository."""
from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import pytest

from tasks.procedures import importing
from tasks.source import detect, render
from tasks.source.stack import loads
from testkit import INV
from testkit.projectcopy import copy_project, git_status

# A module-scoped copy of the checkout (copy_project reads its live files first).
pytestmark = pytest.mark.live_state

SHA = ["sha256:" + c * 64 for c in "abcdef"]
# The [app] of the example (design of the table): what `inv init hello` writes back.
HELLO_APP = {"path": "hello", "settings": "hello.settings.production", "wsgi": "hello.wsgi:application",
             "python": "3.11", "requirements": "hello/requirements.txt", "build_packages": [], "packages": []}


@functools.cache
def _made(name: str) -> Path:
    """What `django-admin startproject NAME` + `startapp notes` make, once per test process."""
    where = Path(tempfile.mkdtemp(prefix="startproject-"))
    subprocess.run([sys.executable, "-m", "django", "startproject", name], cwd=where, check=True)
    subprocess.run([sys.executable, "manage.py", "startapp", "notes"], cwd=where / name, check=True)
    return where / name


def startproject(where: Path, name: str = "mysite", **files) -> Path:
    """A project as `django-admin startproject NAME` + `startapp notes` make it, in WHERE,
    plus FILES ({relative path: text}; None deletes)."""
    where.mkdir(parents=True, exist_ok=True)
    project = Path(shutil.copytree(_made(name), where / name))
    files.setdefault("requirements.txt", "Django==5.2.1\n")
    for relative, text in files.items():
        path = project / relative
        if text is None:
            path.unlink(missing_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    return project


def settings_package(project: Path, manage_names: str) -> None:
    """The settings module split into a package (base, dev, production), as many projects do."""
    package = project / "mysite/settings"
    package.mkdir()
    (project / "mysite/settings.py").rename(package / "base.py")
    (package / "__init__.py").write_text("")
    (package / "dev.py").write_text("from .base import *  # noqa\nDEBUG = True\n")
    (package / "production.py").write_text("from .base import *  # noqa\nDEBUG = False\n")
    manage = project / "manage.py"
    manage.write_text(manage.read_text().replace("'mysite.settings'", f"'{manage_names}'"))
    assert manage_names in manage.read_text()


def fingerprint(folder: Path) -> dict:
    """Every file's bytes, mode and modification time: what "untouched" means."""
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mode,
                                         p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def app_table(tree: Path) -> dict | None:
    """The keys init writes of [app] in TREE's config/stack.toml."""
    table = tomllib.loads((tree / "config/stack.toml").read_text()).get("app")
    return None if table is None else {key: value for key, value in table.items() if key in HELLO_APP}


PIPFILE = """[[source]]
url = "https://pypi.org/simple"
verify_ssl = true
name = "pypi"

[packages]
django = "~=5.2.0"
psycopg2 = "*"

[requires]
python_version = "3.12"
"""


def pipfile_lock(pipfile: str) -> str:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "config/build"))
    import requirements as build

    digest = build.pipfile_hash(tomllib.loads(pipfile))
    return json.dumps({"_meta": {"hash": {"sha256": digest}, "pipfile-spec": 6, "requires": {"python_version": "3.12"},
                                 "sources": [{"name": "pypi", "url": "https://pypi.org/simple", "verify_ssl": True}]},
                       "default": {"django": {"hashes": [SHA[0]], "version": "==5.2.1"},
                                   "psycopg2": {"hashes": [SHA[1]], "version": "==2.9.9"}},
                       "develop": {}})


UV_LOCK = f"""version = 1
requires-python = ">=3.11, <3.13"

[[package]]
name = "django"
version = "5.2.1"
source = {{ registry = "https://pypi.org/simple" }}
wheels = [{{ url = "https://files.pythonhosted.org/django-5.2.1-py3-none-any.whl", hash = "{SHA[0]}" }}]

[[package]]
name = "mysite"
version = "0.1.0"
source = {{ editable = "." }}
dependencies = [{{ name = "django" }}, {{ name = "uwsgi" }}]

[package.metadata]
requires-dist = [{{ name = "django", specifier = ">=5.2" }}, {{ name = "uwsgi" }}]

[[package]]
name = "uwsgi"
version = "2.0.28"
source = {{ registry = "https://pypi.org/simple" }}
sdist = {{ url = "https://files.pythonhosted.org/uwsgi-2.0.28.tar.gz", hash = "{SHA[1]}" }}
"""
PYPROJECT = """[project]
name = "mysite"
version = "0.1.0"
requires-python = ">=3.11, <3.13"
dependencies = ["django>=5.2", "uwsgi"]
"""

# Each layout, and what init reads from it: settings, wsgi, python, requirements (relative
# to the project), build packages, run-time packages.
LAYOUTS = {
    "requirements-txt": ({}, ("mysite.settings", "mysite.wsgi:application", None, "requirements.txt", [], [])),
    "requirements-folder": (
        {"requirements.txt": None, "requirements/base.txt": "Django==5.2.1\n",
         "requirements/production.txt": "-r base.txt\npsycopg2==2.9.9\n",
         "requirements/dev.txt": "-r base.txt\ndjango-debug-toolbar==4.4\n"},
        ("mysite.settings", "mysite.wsgi:application", None, "requirements/production.txt",
         ["build-essential", "libpq-dev"], ["libpq5"])),
    "pipfile": ({"requirements.txt": None, "Pipfile": PIPFILE, "Pipfile.lock": pipfile_lock(PIPFILE)},
                ("mysite.settings", "mysite.wsgi:application", "3.12", "Pipfile.lock",
                 ["build-essential", "libpq-dev"], ["libpq5"])),
    "uv": ({"requirements.txt": None, "pyproject.toml": PYPROJECT, "uv.lock": UV_LOCK},
           ("mysite.settings", "mysite.wsgi:application", "3.12", "uv.lock", ["build-essential"], [])),
    "python-version": ({".python-version": "3.13\n", "requirements-dev.txt": "pytest==8.3\n"},
                       ("mysite.settings", "mysite.wsgi:application", "3.13", "requirements.txt", [], [])),
}


class TestDetection:
    @pytest.mark.parametrize("files, expected", LAYOUTS.values(), ids=list(LAYOUTS))
    def test_each_layout_gives_what_the_image_needs(self, tmp_path, files, expected):
        project = startproject(tmp_path, **files)
        settings = detect.settings(project)
        requirements = detect.requirements(project)
        build, run, undecided = detect.debian_packages(detect.package_names(project / requirements.value))
        found = (settings.value, detect.wsgi(project, settings.value).value, detect.python(project),
                 requirements.value, build.value, run.value)
        assert found[:2] + (found[2].value if found[2].decided else None,) + found[3:] == expected
        assert undecided == []

    def test_without_a_version_anywhere_python_is_the_default_and_said_to_be_undecided(self, tmp_path):
        guess = detect.python(startproject(tmp_path))
        assert (guess.value, guess.decided) == ("3.11", False)
        assert guess.why == ("no .python-version, runtime.txt, pyproject.toml requires-python nor Pipfile "
                             "[requires]: using 3.11 (--python to choose)")

    @pytest.mark.parametrize("manage_names, chosen, why", [
        ("mysite.settings.dev", "mysite.settings.production",
         "manage.py names mysite.settings.dev; took its sibling production for the server"),
        ("mysite.settings", "mysite.settings.production",
         "manage.py names the package mysite.settings; took its production module"),
        ("mysite.settings.production", "mysite.settings.production", "manage.py's mysite.settings.production"),
    ], ids=["dev-module", "package", "production"])
    def test_a_settings_package_gives_its_production_module(self, tmp_path, manage_names, chosen, why):
        project = startproject(tmp_path)
        settings_package(project, manage_names)
        guess = detect.settings(project)
        assert (guess.value, guess.why) == (chosen, why)
        assert detect.wsgi(project, guess.value).value == "mysite.wsgi:application"

    def test_the_examples_manage_py_leads_to_its_production_settings(self):
        root = Path(__file__).resolve().parent.parent
        assert detect.settings(root / "hello").value == "hello.settings.production"
        assert detect.wsgi(root / "hello", "hello.settings.production").value == "hello.wsgi:application"

    def test_an_asgi_only_project_is_said_to_be_one(self, tmp_path):
        project = startproject(tmp_path, **{"mysite/wsgi.py": None})
        guess = detect.wsgi(project, "mysite.settings")
        assert guess.value is None
        assert guess.why == ("only an ASGI application (mysite/asgi.py): the stack serves WSGI (gunicorn); add a "
                             "wsgi.py (django-admin startproject makes one) and pass --wsgi")

    @pytest.mark.parametrize("files, python", [
        ({"runtime.txt": "python-3.12.4\n"}, "3.12"),
        ({".python-version": "3.10.14\n", "runtime.txt": "python-3.12.4\n"}, "3.10"),
        ({"pyproject.toml": '[project]\nrequires-python = ">=3.10"\n'}, "3.13"),
        ({"pyproject.toml": '[project]\nrequires-python = "~=3.11.2"\n'}, "3.11"),
        ({"pyproject.toml": '[project]\nrequires-python = ">=3.10,!=3.13.*"\n'}, "3.12"),
        ({"Pipfile": '[requires]\npython_full_version = "3.12.1"\n'}, "3.12"),
    ], ids=["runtime-txt", "python-version-first", "newest-admitted", "compatible", "excluded", "pipfile-full"])
    def test_the_python_version_comes_from_the_first_file_that_names_one(self, tmp_path, files, python):
        assert detect.python(startproject(tmp_path, **files)).value == python

    @pytest.mark.parametrize("files, why", [
        ({".python-version": "3.8\n"}, ".python-version says Python 3.8, which the stack does not build (3.10 to 3.14)"),
        ({".python-version": "pypy3.10\n"}, ".python-version says 'pypy3.10', not a CPython 3.N version"),
        ({"pyproject.toml": '[project]\nrequires-python = "<3.9"\n'}, "admits none of 3.10 to 3.13"),
    ], ids=["too-old", "pypy", "range-too-old"])
    def test_a_python_the_stack_cannot_build_is_undecided(self, tmp_path, files, why):
        guess = detect.python(startproject(tmp_path, **files))
        assert guess.value is None and why in guess.why and guess.why.endswith("pass --python")

    @pytest.mark.parametrize("files, why", [
        ({"requirements.txt": None}, "no requirements*.txt, requirements/*.txt, Pipfile.lock or uv.lock"),
        ({"requirements.txt": None, "requirements-dev.txt": "pytest\n"},
         "no requirements*.txt, requirements/*.txt, Pipfile.lock or uv.lock (only requirements-dev.txt)"),
        ({"requirements.txt": None, "pyproject.toml": PYPROJECT}, "pyproject.toml without uv.lock: run `uv lock`"),
        ({"requirements/production.txt": "django\n", "requirements/prod.txt": "django\n"},
         "several production requirements (requirements/prod.txt, requirements/production.txt)"),
    ], ids=["none", "dev-only", "pyproject-unlocked", "two-productions"])
    def test_requirements_that_cannot_be_chosen_are_said(self, tmp_path, files, why):
        guess = detect.requirements(startproject(tmp_path, **files))
        assert guess.value is None and why in guess.why

    def test_packages_that_build_from_source_bring_their_debian_packages(self):
        build, run, undecided = detect.debian_packages(["django", "uwsgi", "mysqlclient", "psycopg2-binary"])
        assert build.value == ["build-essential", "default-libmysqlclient-dev", "pkg-config"]
        assert run.value == ["libmariadb3"] and build.why == "uwsgi, mysqlclient build from source"
        build, run, undecided = detect.debian_packages(["python-ldap"])
        assert build.value == ["build-essential", "libldap-dev", "libsasl2-dev"] and run.value == ["libsasl2-2"]
        assert undecided == ["python-ldap needs the OpenLDAP library (libldap-2.5-0 on bookworm, libldap2 on trixie) "
                             "at run time, named per Debian release: pass --package"]
        assert detect.debian_packages(["django"])[0].value == []

    @pytest.mark.parametrize("specifier, admitted", [
        (">=3.10", [10, 11, 12, 13]), (">=3.11,<3.13", [11, 12]), ("==3.12.*", [12]), ("~=3.10", [10, 11, 12, 13]),
        (">3.12", [12, 13]), ("<=3.11.0", [10, 11]), ("!=3.11.*", [10, 12, 13]), ("==3.12.4", [12]),
    ])
    def test_a_version_range_admits_the_minors_it_should(self, specifier, admitted):
        assert [minor for minor in range(10, 14) if detect.admits(specifier, minor)] == admitted


class TestTheStackFile:
    def test_a_new_app_table_comes_with_its_comments_and_the_rest_is_kept(self):
        text = "# the stack\n[project]\nname = \"hello\"  # compose\n\n[[databases]]\nname = \"database1\"\n"
        written = importing.with_app(text, HELLO_APP)
        assert written.startswith(text)
        assert tomllib.loads(written)["app"] == HELLO_APP
        assert "# The WSGI application the stack serves, module:attribute.\nwsgi = " in written

    def test_an_existing_app_table_is_changed_in_place(self):
        text = ('[project]\nname = "hello"\n\n[app]\n# mine\npath = "hello"  # the example\npython_image = "x:1"\n\n'
                '[app.env]\nDB_HOST = "database1.host"\n\n[[databases]]\nname = "database1"\n')
        written = importing.with_app(text, {**HELLO_APP, "settings": "hello.settings.dev"})
        assert '# mine\npath = "hello"  # the example\npython_image = "x:1"\nsettings = "hello.settings.dev"\n' in written
        data = tomllib.loads(written)
        assert data["app"]["python_image"] == "x:1" and data["app"]["env"] == {"DB_HOST": "database1.host"}

    def test_an_image_for_another_python_is_dropped_with_its_key(self):
        text = '[project]\nname = "hello"\n\n[app]\npath = "hello"\npython_image = "python:3.11-slim-bookworm"\n'
        assert importing.without_app_keys(text, ["python_image"]) == '[project]\nname = "hello"\n\n[app]\npath = "hello"\n'
        assert [importing.image_python(image) for image in ("python:3.11-slim-bookworm", "local/python:3.13-slim",
                                                            "registry:5000/python:3.12", "python:latest",
                                                            "python:3.1")] == ["3.11", "3.13", "3.12", None, "3.1"]

    def test_local_changes_are_what_differs_from_the_record(self):
        assert importing.local_changes({"a": "1", "b": "2"}, {"a": "1", "b": "2"}) == []
        assert importing.local_changes({"a": "1", "b": "2"}, {"a": "9", "c": "3"}) == ["a", "b", "c"]
        assert importing.local_changes(None, {"a": "1"}) == ["a"]


# The task, run for real ---------------------------------------------------------------

@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    return copy_project(tmp_path_factory.mktemp("repository"))


@pytest.fixture
def tree(pristine):
    """The repository's copy as committed, whatever the test before did to it."""
    subprocess.run(["git", "checkout", "-q", "--", "."], cwd=pristine, check=True)
    subprocess.run(["git", "clean", "-qfd"], cwd=pristine, check=True)
    return pristine


def init(tree: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run([*INV, "init", *map(str, args)], cwd=tree, capture_output=True, text=True)


class TestInit:
    def test_a_project_is_copied_in_and_becomes_the_app_its_own_files_untouched(self, tree, tmp_path):
        project = startproject(tmp_path / "src", **{"requirements.txt": "Django==5.2.1\npsycopg2==2.9.9\n"})
        before, stack_text = fingerprint(project), (tree / "config/stack.toml").read_text()
        done = init(tree, project)
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines()[:6] == [
            "settings: mysite.settings (manage.py's mysite.settings)",
            "wsgi: mysite.wsgi:application (WSGI_APPLICATION in mysite/settings.py)",
            "could not decide python: no .python-version, runtime.txt, pyproject.toml requires-python nor Pipfile "
            "[requires]: using 3.11 (--python to choose)",
            "requirements: mysite/requirements.txt (the only requirements file)",
            "build_packages: build-essential, libpq-dev (psycopg2 builds from source)",
            "packages: libpq5 (psycopg2 builds from source)",
        ]
        assert f"copied {project} to mysite/ (" in done.stdout and "wrote config/stack.toml" in done.stdout
        assert app_table(tree) == {"path": "mysite", "settings": "mysite.settings", "wsgi": "mysite.wsgi:application",
                                   "python": "3.11", "requirements": "mysite/requirements.txt",
                                   "build_packages": ["build-essential", "libpq-dev"], "packages": ["libpq5"]}
        assert fingerprint(project) == before
        copied = {name: digest for name, (digest, _, _) in fingerprint(tree / "mysite").items()}
        assert copied == {name: digest for name, (digest, _, _) in before.items()}
        record = json.loads((tree / "config/app-import.json").read_text())
        assert record == {"mysite": copied}
        assert (tree / "config/stack.toml").read_text() == importing.with_app(stack_text, app_table(tree))
        assert subprocess.run([*INV, "render", "--check"], cwd=tree, capture_output=True).returncode == 0
        generated = {str(path) for path in render.rendered(loads((tree / "config/stack.toml").read_text()))}
        assert sorted({line[3:] for line in git_status(tree).splitlines()} - generated) == \
            ["config/app-import.json", "config/stack.toml", "mysite/"]

    def test_a_rerun_is_safe_local_changes_are_refused_and_force_replaces_them(self, tree, tmp_path):
        project = startproject(tmp_path / "src")
        assert init(tree, project).returncode == 0
        again = init(tree, project)
        assert again.returncode == 0, again.stderr
        (project / "notes/views.py").write_text("# changed in the project imported from\n")
        assert init(tree, project).returncode == 0
        assert (tree / "mysite/notes/views.py").read_text() == "# changed in the project imported from\n"
        (tree / "mysite/notes/models.py").write_text("# changed in the copy\n")
        before = git_status(tree, ignored=True), fingerprint(tree / "mysite"), fingerprint(tree / "config")
        refused = init(tree, project)
        assert refused.returncode == 1
        assert refused.stderr == ("error: mysite/ has local changes since it was imported (mysite/notes/models.py): "
                                  "make them in the project you import from, or pass --force to replace them\n")
        assert (git_status(tree, ignored=True), fingerprint(tree / "mysite"), fingerprint(tree / "config")) == before
        forced = init(tree, project, "--force")
        assert forced.returncode == 0, forced.stderr
        assert (tree / "mysite/notes/models.py").read_bytes() == (project / "notes/models.py").read_bytes()
        assert not list(tree.glob(".mysite*"))

    def test_a_folder_that_was_not_imported_is_not_replaced_without_force(self, tree, tmp_path):
        project = startproject(tmp_path / "src")
        (tree / "mysite").mkdir()
        (tree / "mysite/notes.txt").write_text("mine\n")
        stack_text = (tree / "config/stack.toml").read_text()
        refused = init(tree, project)
        assert refused.returncode == 1 and refused.stderr == (
            "error: mysite/ exists and was not imported by `inv init` (1 files): pass --force to replace it, "
            "or import the project under another folder name\n")
        assert (tree / "mysite/notes.txt").read_text() == "mine\n"
        assert (tree / "config/stack.toml").read_text() == stack_text

    @pytest.mark.parametrize("name, message", [
        ("config", "config/ is one of the stack's own folders: copy the project under another folder name"),
        ("tests", "tests/ is one of the stack's own folders"),
        ("Pipfile", "Pipfile exists in the repository and is not a folder"),
    ])
    def test_a_name_of_the_stacks_own_is_refused_and_nothing_changes(self, tree, tmp_path, name, message):
        project = startproject(tmp_path / "src", name=name if name.isidentifier() else "mysite")
        if not name.isidentifier():
            project = project.rename(project.parent / name)
        before = git_status(tree, ignored=True), fingerprint(tree / "config")
        refused = init(tree, project, "--force")
        assert refused.returncode == 1 and refused.stderr.startswith(f"error: {message}")
        assert refused.stderr.count("\n") == 1
        assert (git_status(tree, ignored=True), fingerprint(tree / "config")) == before

    def test_the_example_goes_back_to_being_the_app_in_place(self, tree, tmp_path):
        assert init(tree, startproject(tmp_path / "src")).returncode == 0
        before = fingerprint(tree / "hello")
        done = init(tree, "hello")
        assert done.returncode == 0, done.stderr
        assert app_table(tree) == HELLO_APP
        assert "copied" not in done.stdout and fingerprint(tree / "hello") == before
        assert "hello" not in json.loads((tree / "config/app-import.json").read_text())

    def test_flags_override_each_guess(self, tree, tmp_path):
        project = startproject(tmp_path / "src", **{"requirements/production.txt": "Django==5.2.1\n"})
        settings_package(project, "mysite.settings.dev")
        done = init(tree, project, "--settings", "mysite.settings.dev", "--wsgi", "mysite.asgi:application",
                    "--python", "3.12", "--requirements", "requirements.txt", "--build-package", "gcc",
                    "--build-package", "libc6-dev", "--package", "libxml2")
        assert done.returncode == 0, done.stderr
        assert "settings: mysite.settings.dev (--settings)" in done.stdout
        assert "build_packages: gcc, libc6-dev (--build-package)" in done.stdout
        assert app_table(tree) == {"path": "mysite", "settings": "mysite.settings.dev",
                                   "wsgi": "mysite.asgi:application", "python": "3.12",
                                   "requirements": "mysite/requirements.txt", "build_packages": ["gcc", "libc6-dev"],
                                   "packages": ["libxml2"]}

    @pytest.mark.parametrize("files, args, message", [
        ({"mysite/wsgi.py": None}, [],
         "could not decide wsgi: pass --wsgi (nothing changed)"),
        ({"requirements.txt": None}, [], "could not decide requirements: pass --requirements (nothing changed)"),
        ({".python-version": "3.8\n"}, [], "could not decide python: pass --python (nothing changed)"),
        ({"requirements.txt": "-e .\n"}, [], "is an editable install of a local folder"),
        ({}, ["--settings", "mysite.nope"], "--settings mysite.nope: no such module in"),
        ({}, ["--wsgi", "mysite.wsgi"], "--wsgi mysite.wsgi: not a module:attribute of"),
        ({}, ["--python", "3.9"], "--python 3.9: the stack builds 3.10 to 3.14 (e.g. --python 3.12)"),
        ({}, ["--requirements", "../requirements.txt"], "--requirements ../requirements.txt: no such file inside"),
    ], ids=["asgi-only", "no-requirements", "old-python", "editable", "settings-flag", "wsgi-flag", "python-flag",
            "requirements-flag"])
    def test_what_cannot_be_decided_or_used_is_one_line_and_nothing_changes(self, tree, tmp_path, files, args, message):
        project = startproject(tmp_path / "src", **files)
        before = git_status(tree, ignored=True), fingerprint(tree / "config"), fingerprint(project)
        refused = init(tree, project, *args)
        assert refused.returncode == 1 and refused.stderr.count("\n") == 1 and message in refused.stderr
        assert (git_status(tree, ignored=True), fingerprint(tree / "config"), fingerprint(project)) == before

    def test_an_asgi_only_project_says_so_before_refusing(self, tree, tmp_path):
        refused = init(tree, startproject(tmp_path / "src", **{"mysite/wsgi.py": None}))
        assert ("could not decide wsgi: only an ASGI application (mysite/asgi.py): the stack serves WSGI (gunicorn); "
                "add a wsgi.py (django-admin startproject makes one) and pass --wsgi\n") in refused.stdout

    def test_a_path_without_manage_py_is_refused(self, tree, tmp_path):
        refused = init(tree, tmp_path)
        assert refused.returncode == 1
        assert refused.stderr == (f"error: {tmp_path} holds no manage.py: name the folder of a Django project "
                                  "(where manage.py is)\n")

    def test_a_dry_run_prints_the_guesses_and_changes_nothing(self, tree, tmp_path):
        project = startproject(tmp_path / "src", **{".python-version": "3.13\n"})
        before = git_status(tree, ignored=True), fingerprint(tree / "config")
        done = init(tree, project, "--dry")
        assert done.returncode == 0, done.stderr
        assert "python: 3.13 (.python-version)" in done.stdout
        assert f"would copy {project} to mysite/ (" in done.stdout and "write config/stack.toml" in done.stdout
        assert (git_status(tree, ignored=True), fingerprint(tree / "config")) == before
        assert not (tree / "mysite").exists()

    def test_symbolic_links_are_left_out_and_said(self, tree, tmp_path):
        project = startproject(tmp_path / "src")
        os.symlink("/etc", project / "etc")
        done = init(tree, project)
        assert done.returncode == 0, done.stderr
        assert "left out symbolic links (only files are copied): etc" in done.stdout
        assert not (tree / "mysite/etc").exists()

    def test_a_git_project_brings_what_git_tracks_not_what_it_ignores(self, tree, tmp_path):
        project = startproject(tmp_path / "src", **{".gitignore": ".env\ndb.sqlite3\nmedia/\n",
                                                    ".env": "SECRET_KEY=do-not-copy\n", "db.sqlite3": "local data\n",
                                                    "media/upload.png": "an upload\n", "notes/extra.py": "# new\n"})
        subprocess.run(["git", "init", "-q"], cwd=project, check=True)
        subprocess.run(["git", "add", "manage.py", "mysite", ".gitignore"], cwd=project, check=True)
        before = fingerprint(project)
        done = init(tree, project)
        assert done.returncode == 0, done.stderr
        copied = {str(p.relative_to(tree / "mysite")) for p in (tree / "mysite").rglob("*") if p.is_file()}
        assert {".gitignore", "manage.py", "notes/extra.py", "requirements.txt", "mysite/settings.py"} <= copied
        assert not {".env", "db.sqlite3", "media/upload.png"} & copied and not any(".git/" in p for p in copied)
        assert fingerprint(project) == before

    @pytest.mark.parametrize("args, kept", [(["--python", "3.13"], False), ([], True)], ids=["3.13", "3.11"])
    def test_an_image_of_another_python_goes_and_one_of_the_same_stays(self, tree, args, kept):
        stack = tree / "config/stack.toml"
        stack.write_text(importing.with_app(stack.read_text(), {**HELLO_APP, "python_image": "python:3.11-slim-bookworm"}))
        done = init(tree, "hello", *args)
        assert done.returncode == 0, done.stderr
        table = tomllib.loads(stack.read_text())["app"]
        assert table["python"] == ("3.11" if kept else "3.13") and ("python_image" in table) == kept
        dropped = "python_image: dropped python:3.11-slim-bookworm (Python 3.11); the image is python:3.13-slim"
        assert (dropped in done.stdout) != kept
