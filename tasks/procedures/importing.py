"""Bringing a Django project into the repository as the stack's app (`inv init`): what to
copy, the record of what was copied (config/app-import.json, to tell local changes from a
re-import), `[app]` written into config/stack.toml, and the copy put in place in one step.

The project's own folder is only read. The copy is made beside its target under a
temporary name and renamed into place after every other file is written.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..errors import TaskError
from ..execution.files import unfinished, write_all, writer_mark
from ..source import render
from ..source.detect import SKIPPED_DIRS
from ..source.stack import STACK_FILE, loads

IMPORT_RECORD = Path("config/app-import.json")
# The stack's own folders: a project is never copied over one of them.
STACK_FOLDERS = frozenset({"config", "tasks", "tests", "testkit", "docs", "backups", "bench", ".ci"})
# What config/stack.toml says about each key when init adds [app] (design of the table).
APP_COMMENTS = {
    "path": "The Django project's folder in this repository (it holds manage.py).",
    "settings": "The project's own settings module; the stack's overlay imports it.",
    "wsgi": "The WSGI application the stack serves, module:attribute.",
    "python": "The Python of the image: python:<python>-slim unless python_image names another image.",
    "python_image": "The image the app is built on, when not python:<python>-slim.",
    "requirements": "The pinned requirements, relative to the repository: a requirements .txt, a Pipfile.lock "
                    "(its Pipfile beside it) or a uv.lock.",
    "build_packages": "Debian packages the builder stage needs to build sdists; the runtime stage never gets them.",
    "packages": "Debian packages the running app needs (shared libraries of compiled extensions).",
}


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def project_files(folder: Path, listed: list[str] | None = None) -> tuple[dict[str, str], list[str]]:
    """({relative path: sha256} of FOLDER's regular files, the symbolic links left out):
    those LISTED (what the project's git tracks or would, its .gitignore applied), else
    every file; never the virtualenvs, caches and VCS folders of SKIPPED_DIRS nor compiled
    Python."""
    if listed is None:
        listed = []
        for top, dirs, names in os.walk(folder):
            dirs[:] = sorted(dirs)
            listed += [(Path(top) / name).relative_to(folder).as_posix() for name in sorted(names)]
            listed += [(Path(top) / name).relative_to(folder).as_posix() for name in dirs
                       if (Path(top) / name).is_symlink()]
    files, links = {}, []
    for relative in sorted(set(listed)):
        path = folder / relative
        if SKIPPED_DIRS & set(Path(relative).parts[:-1]) or relative.endswith((".pyc", ".pyo")):
            continue
        if any(parent.is_symlink() for parent in path.relative_to(folder).parents if parent != Path(".")):
            continue
        if path.is_symlink():
            links.append(relative)
        elif path.is_file():  # a file git tracks may be deleted from the tree
            files[relative] = sha256(path)
    return files, links


def read_record(root: Path) -> dict:
    try:
        record = json.loads((root / IMPORT_RECORD).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except json.JSONDecodeError as exc:
        raise TaskError(f"{IMPORT_RECORD} is not valid JSON ({exc}): restore it from git, or delete it and "
                        "pass --force") from None
    return record if isinstance(record, dict) else {}


def local_changes(recorded: dict | None, current: dict) -> list[str]:
    """What differs in the copy from what was imported (RECORDED None: nothing was): files
    changed, deleted or added."""
    if recorded is None:
        return sorted(current)
    return sorted({name for name in {*recorded, *current} if recorded.get(name) != current.get(name)})


def check_target(root: Path, name: str, force: bool) -> None:
    """Refuse a target that is the stack's own, or that holds changes since the last import."""
    target = root / name
    if name in STACK_FOLDERS:
        raise TaskError(f"{name}/ is one of the stack's own folders: copy the project under another folder name")
    if target.exists() and not target.is_dir():
        raise TaskError(f"{name} exists in the repository and is not a folder: copy the project under another name")
    if not target.is_dir() or force:
        return
    recorded = read_record(root).get(name)
    changed = local_changes(recorded, project_files(target)[0])
    if recorded is None and changed:
        raise TaskError(f"{name}/ exists and was not imported by `inv init` ({len(changed)} files): "
                        "pass --force to replace it, or import the project under another folder name")
    if changed:
        more = f", {len(changed) - 1} more" if len(changed) > 1 else ""
        raise TaskError(f"{name}/ has local changes since it was imported ({name}/{changed[0]}{more}): "
                        "make them in the project you import from, or pass --force to replace them")


def with_app(text: str, app: dict) -> str:
    """The stack file's TEXT with [app] set to APP's keys: those present are replaced in
    place (their comments kept), a new table gets the comments of APP_COMMENTS. What the
    user wrote by hand (python_image, [app.env]) stays for the same project, and goes with
    the project it was written for."""
    import tomlkit  # edits keep the user's comments and layout; only needed here

    doc = tomlkit.parse(text)
    if "app" in doc:
        table = doc["app"]
        same_project = table.get("path") == app.get("path")
        for key in [key for key in table if key not in app]:
            if not (same_project and key in ("python_image", "env")):
                del table[key]
        for key, value in app.items():
            table[key] = value
    else:
        table = tomlkit.table()
        for key, value in app.items():
            table.add(tomlkit.comment(APP_COMMENTS[key]))
            table.add(key, value)
        doc.add(tomlkit.nl())
        doc.add("app", table)
    return tomlkit.dumps(doc)


@dataclass
class Import:
    """Copy SOURCE's FILES to ROOT/NAME (no SOURCE: the project is already there) and write
    TEXTS (the stack file, what renders from it, the record)."""
    root: Path
    name: str
    source: Path | None
    files: dict
    texts: dict
    links: list

    def run(self) -> None:
        staged = self._stage() if self.source else None
        try:
            write_all(self.texts)
        except BaseException:
            if staged:
                shutil.rmtree(staged, ignore_errors=True)
            raise
        if staged:
            target, old = self.root / self.name, self.root / f".{self.name}.old{writer_mark()}"
            if target.exists():
                os.rename(target, old)
            os.rename(staged, target)
            shutil.rmtree(old, ignore_errors=True)

    def _stage(self) -> Path:
        staged = self.root / f".{self.name}{writer_mark()}"
        try:
            for relative in self.files:
                dest = staged / relative
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(self.source / relative, dest)
        except BaseException:
            shutil.rmtree(staged, ignore_errors=True)
            raise
        return staged


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def leftovers(root: Path, name: str) -> list[Path]:
    """The staged copies of NAME a killed `inv init` left."""
    names = [p.name for p in root.glob(f".{name}.*.tmp") if p.is_dir()]
    return [root / found for found in unfinished(names)]


def image_python(image: str) -> str | None:
    """The Python version an image's tag names (python:3.11-slim-bookworm: 3.11), if any."""
    found = re.match(r"[^@]*:(3\.[0-9]+)(?![0-9])", image.rpartition("/")[2])
    return found.group(1) if found else None


def without_app_keys(text: str, keys) -> str:
    """The stack file's TEXT without the [app] KEYS, the rest as it was."""
    import tomlkit

    doc = tomlkit.parse(text)
    for key in keys:
        doc.get("app", {}).pop(key, None)
    return tomlkit.dumps(doc)


def prepare(root: Path, name: str, source: Path | None, app: dict, listed: list[str] | None = None,
            drop=()) -> Import:
    """Everything an import writes, rendered in memory: a bad [app] is refused here, before
    anything is copied or written. LISTED: the files to copy (default: all of SOURCE's);
    DROP: keys of [app] to remove."""
    new_text = without_app_keys(with_app((root / STACK_FILE).read_text(encoding="utf-8"), app), drop)
    stack = loads(new_text)
    texts = {STACK_FILE: new_text, **render.rendered(stack)}
    files, links = {}, []
    if source:
        files, links = project_files(source, listed)
        record = {key: value for key, value in read_record(root).items() if key != name}
        record[name] = files
        texts[IMPORT_RECORD] = json.dumps(dict(sorted(record.items())), indent=1, sort_keys=True) + "\n"
    changed = {root / path: text for path, text in texts.items()
               if not (root / path).is_file() or (root / path).read_text(encoding="utf-8") != text}
    return Import(root, name, source, files, changed, links)
