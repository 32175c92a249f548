"""Quoting for the shell scripts plans write, in one place: a word (a path, a name) as one
argument, whatever it holds."""
from __future__ import annotations

import shlex


def quote(word) -> str:
    return shlex.quote(str(word))
