"""Ctrl-C held back while a task puts things back the way they were.

A Ctrl-C on a terminal reaches the task and the command it runs at once (both are in the
terminal's foreground process group). While a task starts again what it stopped, a second
Ctrl-C must not leave the site down: `held_interrupts` records it instead of raising it,
and `again` runs the command once more when the interrupt cut it short.
"""
from __future__ import annotations

import signal
import threading


class held_interrupts:
    """SIGINT recorded, not raised, while the block runs (in the main thread, the only one
    Python delivers signals to); `interrupted` says whether one came, `taken()` reads and
    clears it."""

    def __init__(self):
        self.interrupted = False
        self.previous = None

    def _note(self, signum, frame):
        self.interrupted = True

    def taken(self) -> bool:
        was, self.interrupted = self.interrupted, False
        return was

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._note)
        return self

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
        return False


# A Ctrl-C pressed again and again still lets the command finish one of these attempts.
ATTEMPTS = 3


def again(r, argv, what: str, compose: bool = True):
    """Run the compose command ARGV (without COMPOSE: the command ARGV) until it succeeds,
    Ctrl-C held back: a run that an interrupt cut short is tried again, up to ATTEMPTS
    times; one that failed by itself is not. Returns (its last result, whether a Ctrl-C came
    meanwhile)."""
    interrupted = False
    with held_interrupts() as held:
        for attempt in range(1, ATTEMPTS + 1):
            result = (r.compose if compose else r.run)(argv, what=what, check=False)
            cut = held.taken()
            interrupted = interrupted or cut
            if result.ok or not cut or attempt == ATTEMPTS:
                break
            r.say(f"{what} was interrupted: once more, to put back what the task changed")
    return result, interrupted
