"""Adding a database or a service, all or nothing (`inv db.add NAME`, `inv service.add NAME`,
with `--up` started at once).

What the add changes is copied first: config/stack.toml, the files rendered from it and the
part's secret file, each as it is (or absent). When a step fails, or Ctrl-C comes, before
the app serves with the new part (writing the files, starting it, the migrations, the new
app container), everything goes back: the container, network and volume the start made are
removed (a volume that was there before is kept: it holds the data of an earlier add), then
the files are put back byte for byte. Once the app serves with it, nothing is undone: the
error says what was kept and why.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import TaskError, reason
from ..execution.files import unfinished_in, write_all, write_atomic
from ..execution.interrupts import held_interrupts
from ..execution.runner import Runner
from ..plans import compose
from ..plans import rollout as rollout_plans
from ..source import render
from ..source.stack import STACK_FILE, loads


@dataclass(frozen=True)
class Saved:
    """A file as it was: its text and mode, or None when it did not exist."""
    text: str | None
    mode: int = 0o644


def paths_changed_by(old_stack, new_stack, secret_file) -> list[Path]:
    """What adding a database or service may write, relative to the root: the source of
    truth, the files rendered from either version of it, its secret file (if it has one)."""
    return sorted({STACK_FILE, *render.rendered(old_stack), *render.rendered(new_stack),
                   *([Path(secret_file)] if secret_file else [])})


def write_stack_change(r: Runner, new_text: str) -> Runner:
    """Render every file for the new source of truth in memory, then write those that
    change (each atomically, all prepared before the first rename); return the new runner."""
    new_stack = loads(new_text)
    files = {STACK_FILE: new_text, **render.rendered(new_stack)}
    changed = {}
    for path, text in files.items():
        target = r.root / path
        if not target.exists() or target.read_text(encoding="utf-8") != text:
            changed[target] = text
    if changed:
        r.do("write " + " and ".join(str(p.relative_to(r.root)) for p in changed), write_all, changed)
    for path in changed:
        r.report(f"wrote {path.relative_to(r.root)}")
    return r.with_stack(new_stack)


def remove_unfinished(r: Runner, stack) -> None:
    """Delete the temporary files a killed add or remove left (a secret among them, perhaps)
    where these write: the source of truth, the generated files, the secrets."""
    paths = [STACK_FILE, *render.rendered(stack), *render.secret_files(stack)]
    for folder in sorted({(r.root / path).parent for path in paths}):
        for leftover in unfinished_in(folder):
            r.remove(leftover)
            r.say(f"deleted {leftover.relative_to(r.root)}: left by a task that was killed")


def save(root: Path, paths) -> dict[Path, Saved]:
    """The safety copy: each of PATHS under ROOT as it is now."""
    saved = {}
    for path in paths:
        target = root / path
        if target.is_file():
            saved[path] = Saved(target.read_bytes().decode("utf-8"), target.stat().st_mode & 0o777)
        else:
            saved[path] = Saved(None)
    return saved


def put_back(root: Path, saved: dict[Path, Saved]) -> tuple[list[Path], list[Path]]:
    """Every file of SAVED as it was: written back, or deleted when it did not exist;
    return (those written back, those deleted)."""
    written, deleted = [], []
    for path, was in saved.items():
        target = root / path
        now = target.read_bytes().decode("utf-8") if target.is_file() else None
        if now == was.text and (was.text is None or target.stat().st_mode & 0o777 == was.mode):
            continue
        if was.text is None:
            target.unlink(missing_ok=True)
            deleted.append(path)
        else:
            write_atomic(target, was.text, was.mode)
            os.chmod(target, was.mode)
            written.append(path)
    return written, deleted


class AddUndo:
    """What an add made, and how to take it back (see the module's docstring)."""

    def __init__(self, r: Runner, saved: dict[Path, Saved], name: str, part: str = "database"):
        self.r, self.saved, self.name, self.part = r, saved, name, part  # part: database | service
        self.started = None        # the runner of the new stack, once its database may run
        self.volume_existed = True
        self.serving = False       # the app serves with the new database: nothing is undone

    def starting(self, new: Runner, volume: str | None) -> None:
        """NEW (the runner of the stack with the new part) is about to start it, with its data
        in VOLUME (None: a service that keeps none)."""
        self.volume_existed = new.probe(compose.volume_exists(volume)).ok if volume else None
        self.started = new

    def undo(self, exc: BaseException) -> TaskError:
        """Take the add back; the error to raise, saying what failed and what was done."""
        if self.serving:
            return TaskError(f"{reason(exc)}; the app already serves with {self.name}, so it stays in {STACK_FILE} "
                             f"and docker-compose.yml: fix the cause and run `inv up`, or take it out with "
                             f"`inv {'db' if self.part == 'database' else self.part}.remove {self.name}`")
        kept = []
        with held_interrupts():  # a second Ctrl-C must not leave half of it
            if self.started is not None:
                kept = self._stop(self.started)
            written, deleted = self.r.do("put back the files as they were", put_back, self.r.root,
                                         self.saved) or ([], [])
            if self.started is not None:
                # The app's secrets as the restored stack has them (without the new password).
                self.r.compose(rollout_plans.run_once("secrets-init"), check=False, hide=True)
        done = [f"put back {', '.join(map(str, written))}" if written else "no file had changed",
                *([f"deleted the new {', '.join(map(str, deleted))}"] if deleted else []),
                *([f"removed its container{' and new volume' if self.volume_existed is False else ''}"]
                  if self.started is not None else []),
                *kept]
        return TaskError(f"{reason(exc)}; {self.part} {self.name} was not added: {'; '.join(done)}")

    def _stop(self, new: Runner) -> list[str]:
        added = new.stack.database(self.name) if self.part == "database" else new.stack.service(self.name)
        new.compose(compose.rm([added.name]), check=False, hide=True)
        new.run(compose.remove_network(f"{new.project}_{added.network}"), check=False, hide=True)
        volume = f"{new.project}_{added.volume}"
        if self.volume_existed is None:
            return []
        if self.volume_existed:
            return [f"kept the volume {volume}: it was there before this add (data of an earlier one)"]
        new.run(compose.remove_volume(volume), check=False, hide=True)
        return []
