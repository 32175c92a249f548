"""A recording stand-in for a Fabric connection (or an Invoke context), so that what runs on
a host is checked as exact commands without an SSH server or an engine."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from invoke import Config, Result


class Recorder:
    """Records every command with the directory it ran in and the input it was given.
    ANSWERS maps a command (exact) to a Result, or to an exception to raise; anything
    else succeeds with empty output."""

    def __init__(self, answers=None):
        self.answers = dict(answers or {})
        self.calls: list[tuple[str | None, str, str | None]] = []
        self.transfers: list[tuple[str, str, str]] = []
        self.cwd = None
        self.config = Config()

    @contextmanager
    def cd(self, path):
        previous, self.cwd = self.cwd, path
        try:
            yield
        finally:
            self.cwd = previous

    def run(self, command, **kwargs):
        stream = kwargs.get("in_stream")
        self.calls.append((self.cwd, command, stream.read() if hasattr(stream, "read") else None))
        answer = self.answers.get(command, Result(stdout="", exited=0))
        if isinstance(answer, BaseException):
            raise answer
        return Result(stdout=answer.stdout, stderr=answer.stderr, exited=answer.exited, command=command)

    def get(self, remote, local):
        self.transfers.append(("get", remote, local))
        Path(local).write_text(f"copy of {remote}")

    def put(self, local, remote):
        self.transfers.append(("put", local, remote))

    @property
    def commands(self) -> list[str]:
        return [command for _, command, _ in self.calls]
