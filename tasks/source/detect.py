"""What an existing Django project needs from the stack, read from its files: the settings
module, the WSGI entry, the Python version, the requirements and the Debian packages
they build with (`inv init`).

Each guess is a `Guess`: its value (None when it could not be decided) and one line that
says where it came from or why it could not be decided. Files are only read, never run.
"""
from __future__ import annotations

import functools
import importlib.util
import re
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

from .stack import ROOT

# The Python versions an image can be built for, and those a version range may pick
# (the newest it admits), when nothing names one exactly.
PYTHONS = range(10, 15)
PICKED_PYTHONS = range(10, 14)
DEFAULT_PYTHON = "3.11"
SETDEFAULT = re.compile(r"""os\.environ\.setdefault\(\s*['"]DJANGO_SETTINGS_MODULE['"]\s*,\s*"""
                        r"""['"]([A-Za-z_][A-Za-z0-9_.]*)['"]\s*\)""")
WSGI_SETTING = re.compile(r"""^WSGI_APPLICATION\s*=\s*['"]([A-Za-z_][A-Za-z0-9_.]*)\.([A-Za-z_][A-Za-z0-9_]*)['"]""",
                          re.M)
# A settings module meant for the server, over the others of its package.
PRODUCTION = ("production", "prod")
NOT_PRODUCTION = {"base", "common", "default", "defaults", "dev", "development", "local", "test", "tests",
                  "testing", "ci"}
# Words in a requirements file's name that say it is not what the server installs.
NOT_SERVED = re.compile(r"(?:^|[-_.])(dev|develop|development|test|tests|testing|local|docs|lint|ci)(?:[-_.]|$)")
# Folders never searched (nor copied: tasks/adopt.py).
SKIPPED_DIRS = frozenset({".git", ".hg", "__pycache__", ".venv", "venv", "node_modules", ".tox", ".nox",
                          ".mypy_cache", ".pytest_cache", ".ruff_cache"})
# Packages that build from source, by canonical name: (Debian packages the build needs,
# those the running app needs).
COMPILED = {
    "uwsgi": (("build-essential",), ()),
    "psycopg2": (("build-essential", "libpq-dev"), ("libpq5",)),
    "psycopg-c": (("build-essential", "libpq-dev"), ("libpq5",)),
    "mysqlclient": (("build-essential", "default-libmysqlclient-dev", "pkg-config"), ("libmariadb3",)),
    "python-ldap": (("build-essential", "libldap-dev", "libsasl2-dev"), ("libsasl2-2",)),
}
# Run-time libraries whose Debian name changes with the release (the image's base decides).
BY_RELEASE = {"python-ldap": "the OpenLDAP library (libldap-2.5-0 on bookworm, libldap2 on trixie)"}


@dataclass(frozen=True)
class Guess:
    """VALUE (None: none could be found) and WHY, one line; DECIDED False when VALUE is a
    default standing in for what the project does not say."""
    value: object
    why: str
    decided: bool = True

    def __post_init__(self):
        if self.value is None:
            object.__setattr__(self, "decided", False)


def module_file(project: Path, dotted: str) -> Path | None:
    """The file of module DOTTED under PROJECT (a module or a package's __init__.py)."""
    base = project.joinpath(*dotted.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def settings(project: Path) -> Guess:
    """manage.py's DJANGO_SETTINGS_MODULE, or the production module beside it or in it."""
    manage = project / "manage.py"
    found = SETDEFAULT.search(manage.read_text(encoding="utf-8", errors="replace")) if manage.is_file() else None
    if found is None:
        return Guess(None, "manage.py does not set DJANGO_SETTINGS_MODULE (os.environ.setdefault): pass --settings")
    named = found.group(1)
    path = module_file(project, named)
    if path is None:
        return Guess(None, f"manage.py names {named}, which is not in the project: pass --settings")
    folder, stem = (path.parent, None) if path.name == "__init__.py" else (path.parent, path.stem)
    package = named if stem is None else named.rpartition(".")[0]
    siblings = sorted(p.stem for p in folder.glob("*.py") if p.name != "__init__.py") \
        if (folder / "__init__.py").is_file() else []
    production = next((name for name in PRODUCTION if name in siblings), None)
    if stem is None and production:
        return Guess(f"{package}.{production}", f"manage.py names the package {named}; took its {production} module")
    if stem in NOT_PRODUCTION and production:
        return Guess(f"{package}.{production}", f"manage.py names {named}; took its sibling {production} for the server")
    if stem is None and siblings:
        return Guess(named, f"manage.py's {named} (a package without a production or prod module among "
                            f"{', '.join(siblings)})")
    return Guess(named, f"manage.py's {named}")


def _defines(path: Path, attribute: str) -> bool:
    text = path.read_text(encoding="utf-8", errors="replace")
    return re.search(rf"^(?:{re.escape(attribute)}\s*[:=]|def {re.escape(attribute)}\b)", text, re.M) is not None


def _python_files(project: Path, name: str, depth: int = 2) -> list[Path]:
    """Files called NAME at most DEPTH folders down, outside SKIPPED_DIRS, sorted."""
    found = []
    for level in range(1, depth + 1):
        for path in project.glob("/".join(["*"] * level)):
            if path.name == name and path.is_file() and not SKIPPED_DIRS & set(path.relative_to(project).parts):
                found.append(path)
    return sorted(found)


def _module_name(project: Path, path: Path) -> str:
    return ".".join(path.relative_to(project).with_suffix("").parts)


def wsgi(project: Path, settings_module: str | None) -> Guess:
    """The WSGI application the settings name (WSGI_APPLICATION), else the wsgi.py beside
    the settings' package, else the one wsgi.py of the project; an ASGI-only project is said."""
    if settings_module:
        path = module_file(project, settings_module)
        files = [path] if path else []
        if path and path.parent.joinpath("__init__.py").is_file():
            files += sorted(p for p in path.parent.glob("*.py") if p != path)  # base.py and its siblings
        for file in files:
            found = WSGI_SETTING.search(file.read_text(encoding="utf-8", errors="replace"))
            module = found and module_file(project, found.group(1))
            if module and _defines(module, found.group(2)):
                return Guess(f"{found.group(1)}:{found.group(2)}",
                             f"WSGI_APPLICATION in {file.relative_to(project)}")
        top = module_file(project, f"{settings_module.split('.')[0]}.wsgi")
        if top and _defines(top, "application"):
            return Guess(f"{_module_name(project, top)}:application", f"{top.relative_to(project)}")
    candidates = [p for p in _python_files(project, "wsgi.py") if _defines(p, "application")]
    if len(candidates) == 1:
        return Guess(f"{_module_name(project, candidates[0])}:application", f"{candidates[0].relative_to(project)}")
    if candidates:
        shown = ", ".join(str(p.relative_to(project)) for p in candidates)
        return Guess(None, f"several WSGI modules ({shown}): pass --wsgi MODULE:ATTRIBUTE")
    asgi = [p for p in _python_files(project, "asgi.py") if _defines(p, "application")]
    if asgi:
        return Guess(None, f"only an ASGI application ({asgi[0].relative_to(project)}): the stack serves WSGI "
                           "(gunicorn); add a wsgi.py (django-admin startproject makes one) and pass --wsgi")
    return Guess(None, "no wsgi.py defines `application`: pass --wsgi MODULE:ATTRIBUTE")


def exact_python(version: str, where: str) -> Guess:
    found = re.match(r"(?:cpython-|python-)?3\.(\d+)(?:\.\d+)?", version.strip())
    if found is None:
        return Guess(None, f"{where} says {version.strip()!r}, not a CPython 3.N version: pass --python")
    minor = int(found.group(1))
    if minor not in PYTHONS:
        return Guess(None, f"{where} says Python 3.{minor}, which the stack does not build "
                           f"(3.{PYTHONS[0]} to 3.{PYTHONS[-1]}): pass --python")
    return Guess(f"3.{minor}", where)


def _release(text: str) -> tuple:
    return tuple(int(part) for part in re.findall(r"\d+", text))


def admits(specifier: str, minor: int) -> bool:
    """Whether the PEP 440 SPECIFIER (`>=3.10,<3.13`) admits some Python 3.MINOR.P."""
    clauses = [c.strip() for c in specifier.split(",") if c.strip()]

    def holds(version: tuple, clause: str) -> bool:
        op, wanted = re.fullmatch(r"(~=|===|==|!=|<=|>=|<|>)\s*(.+)", clause).groups()
        if wanted.endswith(".*"):
            prefix = _release(wanted[:-2])
            return (version[:len(prefix)] == prefix) == (op == "==")
        target = _release(wanted)
        padded = target + (0,) * (3 - len(target))
        if op == "~=":
            return version >= padded and version[:len(target) - 1] == target[:-1]
        return {"==": version == padded, "===": version == padded, "!=": version != padded,
                "<=": version <= padded, ">=": version >= padded, "<": version < padded,
                ">": version > padded}[op]

    for clause in clauses:
        if re.fullmatch(r"(~=|===|==|!=|<=|>=|<|>)\s*[0-9][0-9.]*(\.\*)?", clause) is None:
            raise ValueError(clause)
    return any(all(holds((3, minor, patch), clause) for clause in clauses) for patch in range(100))


def _ranged(specifier: str, where: str) -> Guess:
    try:
        admitted = [minor for minor in PICKED_PYTHONS if admits(specifier, minor)]
    except ValueError as exc:
        return Guess(None, f"{where} {specifier!r} has a clause this cannot read ({exc}): pass --python")
    if not admitted:
        return Guess(None, f"{where} {specifier!r} admits none of 3.{PICKED_PYTHONS[0]} to "
                           f"3.{PICKED_PYTHONS[-1]}: pass --python")
    return Guess(f"3.{admitted[-1]}", f"the newest {where} {specifier!r} admits")


def _toml(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return {}


def python(project: Path) -> Guess:
    """.python-version, runtime.txt, pyproject.toml's requires-python, the Pipfile's [requires],
    in that order; else the stack's default, said as not decided."""
    version_file = project / ".python-version"
    if version_file.is_file():
        lines = [line for line in version_file.read_text(encoding="utf-8").splitlines()
                 if line.strip() and not line.startswith("#")]
        if lines:
            return exact_python(lines[0], ".python-version")
    runtime = project / "runtime.txt"
    if runtime.is_file() and runtime.read_text(encoding="utf-8").strip():
        return exact_python(runtime.read_text(encoding="utf-8"), "runtime.txt")
    requires = _toml(project / "pyproject.toml").get("project", {}).get("requires-python")
    if isinstance(requires, str):
        return _ranged(requires, "pyproject.toml requires-python")
    pipfile = _toml(project / "Pipfile").get("requires", {})
    for key in ("python_full_version", "python_version"):
        if isinstance(pipfile.get(key), str):
            return exact_python(pipfile[key], f"Pipfile [requires] {key}")
    return Guess(DEFAULT_PYTHON, "no .python-version, runtime.txt, pyproject.toml requires-python nor Pipfile "
                                 f"[requires]: using {DEFAULT_PYTHON} (--python to choose)", decided=False)


def _txt_rank(path: Path, project: Path) -> int | None:
    """How much a requirements .txt looks like what the server installs: production 2,
    plain 1, development and tests None."""
    words = path.relative_to(project).with_suffix("").as_posix().lower()
    if NOT_SERVED.search(path.stem.lower()):
        return None
    return 2 if re.search(r"prod", words) else 1 if path.stem.lower() in ("requirements", "base", "common") \
        or path.parent.name == "requirements" else 0


def requirements(project: Path) -> Guess:
    """The file the server's packages come from, relative to PROJECT: Pipfile.lock, a
    uv.lock with its pyproject.toml, or the requirements .txt for production."""
    if (project / "Pipfile.lock").is_file():
        return Guess("Pipfile.lock", "locked by pipenv: the Pipfile's [packages]")
    if (project / "uv.lock").is_file():
        return Guess("uv.lock", "locked by uv: pyproject.toml's default dependencies")
    files = sorted({*project.glob("requirements*.txt"), *project.glob("requirements/*.txt")})
    ranked = sorted(((rank, path) for path in files if (rank := _txt_rank(path, project)) is not None),
                    key=lambda item: (-item[0], len(item[1].parts), str(item[1])))
    if not ranked:
        if (project / "pyproject.toml").is_file():
            return Guess(None, "pyproject.toml without uv.lock: run `uv lock` in the project, or pass --requirements")
        others = f" (only {', '.join(str(p.relative_to(project)) for p in files)})" if files else ""
        return Guess(None, f"no requirements*.txt, requirements/*.txt, Pipfile.lock or uv.lock{others}: "
                           "pass --requirements")
    best = [path for rank, path in ranked if rank == ranked[0][0]]
    chosen = best[0]
    if len(best) > 1 and ranked[0][0] == 2:
        return Guess(None, f"several production requirements ({', '.join(str(p.relative_to(project)) for p in best)})"
                           ": pass --requirements")
    left = [str(p.relative_to(project)) for p in files if p != chosen]
    return Guess(str(chosen.relative_to(project)), f"over {', '.join(left)}" if left else "the only requirements file")


@functools.cache
def _build_script():
    """config/build/requirements.py, the script the image's builder runs, as a module."""
    spec = importlib.util.spec_from_file_location("stack_build_requirements", ROOT / "config/build/requirements.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def package_names(requirements_file: Path) -> list[str]:
    """The canonical names of what REQUIREMENTS_FILE installs, read as the image's builder
    reads it; a ValueError says in one line why the builder would refuse it."""
    script = _build_script()
    try:
        return [script.canonical(p.name) for p in script.read(requirements_file).packages]
    except script.Refused as exc:
        raise ValueError(str(exc)) from None


def debian_packages(names) -> tuple[Guess, Guess, list[str]]:
    """(build packages, run-time packages, what could not be decided) for the packages NAMES."""
    build, run, undecided, compiled = [], [], [], []
    for name in names:
        if name in COMPILED:
            compiled.append(name)
            build += [p for p in COMPILED[name][0] if p not in build]
            run += [p for p in COMPILED[name][1] if p not in run]
            if name in BY_RELEASE:
                undecided.append(f"{name} needs {BY_RELEASE[name]} at run time, named per Debian release: "
                                 "pass --package")
    why = f"{', '.join(compiled)} build{'s' if len(compiled) == 1 else ''} from source" if compiled else \
        "no package that builds from source"
    return Guess(build, why), Guess(run, why), undecided
