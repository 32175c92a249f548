"""Piped standard input in chunks, not byte by byte.

Invoke reads a stream that is not a terminal one byte per turn of a loop that sleeps 10 ms
between turns (pyinvoke/invoke#774): 100 bytes a second. Every text a task sends to a
command went through that: the host's .env and secret templates on a deploy (about 3 s
each), SQL piped into `inv db.shell`. These runners read such a stream up to 64 KiB per
turn (so up to ~6 MB/s; the loop still sleeps between turns); a terminal is still read key
by key, as Invoke does, for interactive use.

Invoke also naps 10 ms between two looks at whether the command ended, and between two
reads of the stream: 100 wakeups a second each, for as long as the command runs (6 to 10 ms
of CPU a second at rest, more on a busy machine: `inv` calls spent about 25 ms of CPU per
second of their life in CI, over 9,600 s of it). These runners start at Invoke's 10 ms and
lengthen the nap while nothing happens, up to NAP_MAX: a command that ends is seen at most
that late, and a key typed after a pause echoes at most that late.
"""
from __future__ import annotations

import codecs
import errno
import os
import time

from invoke.runners import Local
from invoke.terminals import isatty, ready_for_reading

CHUNK = 64 * 1024
NAP_MAX = 0.05  # seconds
NAP_GROWTH = 1.5


class ChunkedStdin:
    def wait(self) -> None:
        nap = self.__class__.input_sleep
        while not (self.process_is_finished or self.has_dead_threads):
            time.sleep(nap)
            nap = min(nap * NAP_GROWTH, NAP_MAX)

    def read_our_stdin(self, input_):
        # The stdin thread naps input_sleep after each read: Invoke's while data comes, longer
        # while none does.
        data = self._read_our_stdin(input_)
        self.input_sleep = self.__class__.input_sleep if data else min(self.input_sleep * NAP_GROWTH, NAP_MAX)
        return data

    def _read_our_stdin(self, input_):
        if isatty(input_):
            return super().read_our_stdin(input_)
        if not ready_for_reading(input_):
            return None
        try:
            fd = input_.fileno()
        except (AttributeError, OSError, ValueError):
            data = input_.read(CHUNK)  # an in-memory stream (io.StringIO, io.BytesIO)
            return self._decode(data) if isinstance(data, bytes) else data
        # A pipe or a file: take what is there.
        try:
            data = os.read(fd, CHUNK)
        except OSError as exc:
            if exc.errno == errno.EBADF:  # stdin closed or write-only (nohup): no input, as Invoke does
                return ""
            raise
        text = self._decode(data)
        # "" means end of input to Invoke: half a character read so far is "not ready yet".
        return None if data and not text else text

    def _decode(self, data: bytes) -> str:
        # Incrementally, so that a character split between two chunks arrives whole.
        if getattr(self, "_stdin_decoder", None) is None:
            self._stdin_decoder = codecs.getincrementaldecoder(self.encoding or "utf-8")(errors="replace")
        return self._stdin_decoder.decode(data, final=not data)


class ChunkedLocal(ChunkedStdin, Local):
    def _write_proc_stdin(self, data: bytes) -> None:
        # Invoke makes one os.write, enough for one byte; a chunk may go in parts. A broken
        # pipe (the command exited before reading everything) is ignored, as Invoke does.
        if self.using_pty:
            fd = self.parent_fd
        elif self.process and self.process.stdin:
            fd = self.process.stdin.fileno()
        else:
            return super()._write_proc_stdin(data)
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(fd, view):]
        except BrokenPipeError:
            pass


def remote_runner():
    from fabric.runners import Remote

    class ChunkedRemote(ChunkedStdin, Remote):
        pass

    return ChunkedRemote
