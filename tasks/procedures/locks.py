"""Locks between tasks: one per project for the tasks that edit the source of truth and
the generated files, one per volume for backing it up and restoring it.

A second task waits a little (WAIT seconds; VOLUME_WAIT for a volume) for the first, then
refuses and names it. A
lock left by a task that died on this machine is noticed (its process is gone) and taken
over; one left by a task elsewhere is named, with the command that removes it.
"""
from __future__ import annotations

import getpass
import os
import re
import socket
import sys
from datetime import datetime, timezone

from ..errors import TaskError, last_line
from ..execution.runner import Runner
from ..plans import locks as plans

WAIT = 10
# A backup of a large volume (or one on a busy machine) takes longer than an edit of the
# source of truth: a second backup or restore of the same volume waits up to this long.
VOLUME_WAIT = 120
LOCKS = ".locks"


def _task() -> str:
    words = [w for w in sys.argv[1:] if not w.startswith("-")]
    return f"inv {words[0]}" if words and re.fullmatch(r"[a-z][a-z0-9._-]*", words[0]) else "a task"


def _stale(owner: str) -> bool:
    """Whether OWNER's process ran on this machine and is gone."""
    match = re.search(r" by \S+@(\S+) pid (\d+) ", owner)
    if not match or match.group(1) != socket.gethostname():
        return False
    try:
        os.kill(int(match.group(2)), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class held:
    """Hold the lock at PATH (on R's target) while the block runs; WHAT names it in errors."""

    def __init__(self, r: Runner, path, what: str, wait: int = WAIT):
        self.r, self.path, self.what, self.wait = r, path, what, wait

    def __enter__(self):
        owner = (f"{_task()} by {getpass.getuser()}@{socket.gethostname()} pid {os.getpid()} "
                 f"since {datetime.now(timezone.utc).isoformat(timespec='seconds')}")
        # Taken over at once when its task is gone (killed), before waiting for it; or when
        # its task died while this one waited.
        for wait in (0, self.wait):
            if self._take(owner, wait):
                return self
            holder = self._holder()
            if _stale(holder):
                self.r.say(f"{self.what} was left by a task that is gone ({holder}); taking it over")
                self.r.shell(plans.release(self.path), check=False)
                if self._take(owner, 0):
                    return self
                holder = self._holder()
        raise TaskError(f"{self.what} is held by {holder or 'another task'} (waited {self.wait}s); "
                        f"try again once it is done, or if it died elsewhere, remove {self.path}")

    def _take(self, owner: str, wait: int) -> bool:
        taken = self.r.shell(plans.take(self.path, owner, wait), check=False)
        if taken.ok:
            return True
        if taken.exited != plans.HELD:
            raise TaskError(f"taking {self.what} failed: {last_line(taken.stderr, f'exit status {taken.exited}')}")
        return False

    def _holder(self) -> str:
        return self.r.shell(plans.holder(self.path), check=False).stdout.strip()

    def __exit__(self, *exc):
        self.r.shell(plans.release(self.path), check=False)
        return False


def project_lock(r: Runner) -> held:
    return held(r, r.root / LOCKS / "project", "the project lock")


def volume_lock(r: Runner, volume: str) -> held:
    return held(r, r.backups / LOCKS / f"volume-{volume}", f"the lock of volume {volume}", wait=VOLUME_WAIT)
