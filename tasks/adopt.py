"""`inv init PATH`: make an existing Django project the stack's app, its files untouched.

What the project needs is read from its files (source/detect.py), each guess said in one
line and overridden by its flag; the project is copied in as its folder's name, `[app]`
is written into config/stack.toml and the generated files rendered from it
(procedures/importing.py). It never asks: what it cannot decide is said, and a flag
supplies it.
"""
from __future__ import annotations

import tomllib
from pathlib import Path

from .cli import stack_task
from .errors import TaskError
from .procedures import importing
from .procedures.locks import project_lock
from .source import detect
from .source.stack import read_text


def _given(flag: str, value, guess: detect.Guess) -> detect.Guess:
    return guess if value is None else detect.Guess(value, f"--{flag}")


def _shown(key: str, value, name: str) -> str:
    if key == "requirements":
        return f"{name}/{value}"
    return (", ".join(value) or "(none)") if isinstance(value, (list, tuple)) else str(value)


def _place(r, path: str) -> tuple[Path, str, Path | None]:
    """(the project's folder, its name in the repository, the folder to copy from: None
    when the project is already a folder of the repository)."""
    project = Path(path).expanduser().resolve()
    root = Path(r.root).resolve()
    if not (project / "manage.py").is_file():
        raise TaskError(f"{path} holds no manage.py: name the folder of a Django project (where manage.py is)")
    if project == root or root.is_relative_to(project):
        raise TaskError(f"{path} holds this repository: name the Django project's own folder")
    name = project.name
    if project.parent == root:
        return project, name, None
    return project, name, project


def _listed(r, source: Path) -> list[str] | None:
    """The files of SOURCE its git tracks or would track (its .gitignore keeps local
    databases, uploads and .env secrets out); None when SOURCE is not in a git work tree."""
    found = r.probe(["git", "-C", str(source), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                    anywhere=True)
    names = [name for name in found.stdout.split("\0") if name]
    return names if found.exited == 0 and names else None


def _stale_image(r, python: str) -> tuple[str, ...]:
    """[app] python_image, to be dropped when its tag names another Python than PYTHON (the
    build would refuse it); kept, and said, when its tag names none."""
    image = tomllib.loads(read_text(r.root)).get("app", {}).get("python_image", "")
    if not image:
        return ()
    named = importing.image_python(image)
    if named is None:
        r.say(f"could not decide python_image: kept {image}, whose tag names no Python version: "
              f"check that it has Python {python}")
        return ()
    if named == python:
        return ()
    r.say(f"python_image: dropped {image} (Python {named}); the image is python:{python}-slim")
    return ("python_image",)


def _check_flags(project: Path, settings, wsgi, python, requirements) -> None:
    """What a flag names must be in the project (the grammar of [app] checks the rest)."""
    if settings and detect.module_file(project, settings) is None:
        raise TaskError(f"--settings {settings}: no such module in {project} (a dotted name, e.g. mysite.settings)")
    if wsgi:
        module, _, attribute = wsgi.partition(":")
        if not attribute or detect.module_file(project, module) is None:
            raise TaskError(f"--wsgi {wsgi}: not a module:attribute of {project} (e.g. mysite.wsgi:application)")
    if python and detect.exact_python(python, "--python").value != python:
        raise TaskError(f"--python {python}: the stack builds 3.{detect.PYTHONS[0]} to 3.{detect.PYTHONS[-1]} "
                        "(e.g. --python 3.12)")
    if requirements and (Path(requirements).is_absolute() or ".." in Path(requirements).parts
                         or not (project / requirements).is_file()):
        raise TaskError(f"--requirements {requirements}: no such file inside {project} (a path relative to it)")


@stack_task(hosts=None, iterable=["build_package", "package"], help={
    "path": "The Django project's folder (it holds manage.py); a folder of this repository is used in place.",
    "settings": "Its settings module (default: manage.py's, or the production one beside it).",
    "wsgi": "Its WSGI application, module:attribute (default: WSGI_APPLICATION, or wsgi.py's application).",
    "python": "The Python version, 3.N (default: .python-version, runtime.txt, requires-python, Pipfile, or 3.11).",
    "requirements": "Its requirements file, relative to PATH (default: Pipfile.lock, uv.lock, or the production "
                    "requirements*.txt).",
    "build_package": "A Debian package the build needs (repeatable; default: those of the known packages that "
                     "build from source).",
    "package": "A Debian package the app needs at run time (repeatable; default: as for --build-package).",
    "force": "Replace the copy even when it has changed since it was imported (default: off).",
})
def init(r, path, settings=None, wsgi=None, python=None, requirements=None, build_package=None, package=None,
         force=False):
    """Import an existing Django project as the app.

    Copies PATH in as its folder's name (its own files are never changed), writes [app]
    into config/stack.toml from what it finds, renders, and prints each guess; a flag
    overrides a guess. Re-running it is safe; local changes to the copy need --force."""
    project, name, source = _place(r, path)
    _check_flags(project, settings, wsgi, python, requirements)
    guesses = {"settings": _given("settings", settings, detect.settings(project))}
    guesses["wsgi"] = _given("wsgi", wsgi, detect.wsgi(project, guesses["settings"].value))
    guesses["python"] = _given("python", python, detect.python(project))
    guesses["requirements"] = _given("requirements", requirements, detect.requirements(project))
    undecided = []
    if guesses["requirements"].decided:
        try:
            names = detect.package_names(project / guesses["requirements"].value)
        except ValueError as exc:
            raise TaskError(f"{exc} (the image's build would refuse it; nothing changed)") from None
        build, run, undecided = detect.debian_packages(names)
        guesses["build_packages"] = _given("build-package", build_package or None, build)
        guesses["packages"] = _given("package", package or None, run)
        if package:
            undecided = []
    for key, guess in guesses.items():
        r.say(f"{key}: {_shown(key, guess.value, name)} ({guess.why})" if guess.decided else
              f"could not decide {key}: {guess.why}")
    for line in undecided:
        r.say(f"could not decide packages: {line}")
    missing = [key for key, guess in guesses.items() if guess.value is None]
    if missing:
        raise TaskError(f"could not decide {', '.join(missing)}: pass {', '.join('--' + k for k in missing)} "
                        "(nothing changed)")
    app = {
        "path": name,
        "settings": guesses["settings"].value,
        "wsgi": guesses["wsgi"].value,
        "python": guesses["python"].value,
        "requirements": f"{name}/{guesses['requirements'].value}",
        "build_packages": list(guesses["build_packages"].value),
        "packages": list(guesses["packages"].value),
    }
    drop = _stale_image(r, app["python"])
    with project_lock(r):
        for leftover in importing.leftovers(r.root, name):
            r.do(f"delete {leftover.name}: left by an import that was killed", importing.remove_tree, leftover)
        if source:
            importing.check_target(r.root, name, force)
        plan = importing.prepare(r.root, name, source, app, _listed(r, source) if source else None, drop)
        if plan.links:
            r.say(f"left out symbolic links (only files are copied): {', '.join(plan.links)}")
        what = [f"copy {path} to {name}/ ({len(plan.files)} files)"] if source else []
        what += [f"write {p.relative_to(r.root)}" for p in plan.texts]
        if what:
            r.do(", ".join(what), plan.run)
        else:
            r.say(f"{name} is already the stack's app and the generated files are up to date")
    if source:
        r.report(f"copied {path} to {name}/ ({len(plan.files)} files; {path} itself is unchanged)")
    for written in plan.texts:
        r.report(f"wrote {written.relative_to(r.root)}")
    r.report(f"{name} is the stack's app. Next: `inv up` serves it; commit {name}/ and config/.")
