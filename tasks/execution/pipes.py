"""Commands on this machine whose standard input or output is bytes that Python makes or
reads as they flow: an image's layers into `ssh HOST docker load`, a backup through its
decompressor. Invoke's runners carry text, so these run as plain processes; the Runner
(runner.py) decides whether they run at all.
"""
from __future__ import annotations

import os
import subprocess
import tempfile
import threading
from pathlib import Path

CHUNK = 1 << 20


def feed(argv, write, env=None) -> tuple[int, str]:
    """Run ARGV (ENV added to this process's environment) with WRITE(stdin) writing its
    standard input: (exit status, standard error). A command that stops reading ends
    WRITE's work, and its own message says why."""
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(list(argv), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=errors,
                                env=_environment(env))
        try:
            write(proc.stdin)
            proc.stdin.close()
        except OSError:  # a broken pipe among them
            pass
        finally:
            _close(proc.stdin)
            code = proc.wait()
        errors.seek(0)
        return code, errors.read().decode(errors="replace")


def filter_file(argv, path: Path, tap, read, env=None) -> tuple[int, str | None]:
    """Run ARGV with the file at PATH on its standard input and READ(stdout) reading its
    output: (exit status, why PATH could not be read, or None). TAP sees every chunk of the
    file, those sent after the command stopped reading too (a checksum covers the whole file).
    READ returns whether it read to the end: when it did not (or raised), the command is
    stopped."""
    failed: list[str] = []
    with subprocess.Popen(list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, env=_environment(env)) as proc:
        feeder = threading.Thread(target=_tap_and_feed, args=(path, tap, proc.stdin, failed), daemon=True)
        feeder.start()
        whole = False
        try:
            whole = read(proc.stdout)
        finally:
            if not whole:  # a refusal, or Ctrl-C: the feeder must not wait on a reader that left
                proc.kill()
            feeder.join()
    return proc.returncode, failed[0] if failed else None


def _environment(env) -> dict | None:
    return {**os.environ, **env} if env else None


def _tap_and_feed(path: Path, tap, pipe, failed: list) -> None:
    """Give TAP the whole file at PATH, writing it to PIPE for as long as the reader takes
    it; an error reading it goes into FAILED."""
    try:
        with open(path, "rb") as source:
            while chunk := source.read(CHUNK):
                tap(chunk)
                if pipe is not None:
                    try:
                        pipe.write(chunk)
                    except (BrokenPipeError, ValueError):  # the reader stopped (a refusal)
                        _close(pipe)
                        pipe = None  # the rest goes to TAP all the same
    except OSError as exc:
        failed.append(exc.strerror or str(exc))
    finally:
        if pipe is not None:
            _close(pipe)


def _close(pipe) -> None:
    try:
        pipe.close()  # closed even when flushing what is left fails
    except OSError:
        pass
