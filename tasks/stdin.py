"""Standard input at the speed of a pipe.

Invoke reads a stream that is not a terminal one byte per turn of a loop that sleeps 10 ms
between turns (pyinvoke/invoke#774): 100 bytes a second. Every text a task sends to a
command went through that: the host's .env and secret templates on a deploy (about 3 s
each), SQL piped into `inv db.shell`. These runners read such a stream in chunks of what is
there; a terminal is still read key by key, as Invoke does, for interactive use.
"""
from __future__ import annotations

import codecs
import os

from invoke.runners import Local
from invoke.terminals import isatty, ready_for_reading

CHUNK = 64 * 1024


class ChunkedStdin:
    def read_our_stdin(self, input_):
        if isatty(input_):
            return super().read_our_stdin(input_)
        if not ready_for_reading(input_):
            return None
        try:
            fd = input_.fileno()
        except (AttributeError, OSError, ValueError):
            return input_.read(CHUNK)  # an in-memory stream (io.StringIO)
        # A pipe or a file: take what is there. Bytes are decoded incrementally, so a
        # character split between two chunks arrives whole.
        if getattr(self, "_stdin_decoder", None) is None:
            self._stdin_decoder = codecs.getincrementaldecoder(self.encoding or "utf-8")(errors="replace")
        data = os.read(fd, CHUNK)
        return self._stdin_decoder.decode(data, final=not data)


class ChunkedLocal(ChunkedStdin, Local):
    pass


def remote_runner():
    from fabric.runners import Remote

    class ChunkedRemote(ChunkedStdin, Remote):
        pass

    return ChunkedRemote
