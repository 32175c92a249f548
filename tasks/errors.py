"""The two kinds of failure a user sees, each explained in one line."""
from __future__ import annotations

from invoke.exceptions import Exit


class StackError(Exception):
    """A problem with config/stack.toml or with a value given for it; the message is for users."""


class TaskError(Exit):
    """A failure explained in one line; Invoke prints it and exits with status 1."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(f"error: {message}", code)


class HostLost(TaskError):
    """The SSH connection to a host broke or cannot be made again (a cut link, a dead sshd,
    a host down): nothing more can be done there until it answers."""

    def __init__(self, name: str, why: str):
        super().__init__(f"lost the connection to {name} ({why})")


def last_line(text: str, default: str) -> str:
    """The last non-empty line of a command's stderr: usually the one that says why."""
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else default


def reason(exc: BaseException) -> str:
    """What went wrong, for a message that goes on to say what was undone."""
    # Invoke answers a Ctrl-C by writing to the command's standard input, which fails when
    # it has none: that error stands for the interrupt.
    if isinstance(exc, KeyboardInterrupt) or isinstance(exc.__context__, KeyboardInterrupt):
        return "interrupted"
    if isinstance(exc, TaskError):
        return str(exc.message).removeprefix("error: ")
    return str(exc) or type(exc).__name__
