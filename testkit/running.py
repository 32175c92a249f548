"""The most containers of a kind that ran at once while an operation ran: the tests' proof
that a singleton never ran twice, and that a new worker started beside the old one.

From the engines' own events (start, die), filtered by label on the engine, not by polling
`docker ps`: a poll every 0.1-0.2 s cost a fifth of a core for as long as it ran (two
engines' worth on a cluster), and missed any overlap shorter than its period. Events from
several engines (a cluster's nodes, one clock: test hosts share this machine's kernel) are
replayed in time order when the block ends.
"""
from __future__ import annotations

import os
import subprocess
import threading
import time

# How long the events of the block's last moments get to arrive once it ends.
SETTLE = 0.5


class MostAtOnce:
    """`with MostAtOnce(labels, engines) as seen:`; then `seen.most` (the most containers with
    every one of LABELS running at once on ENGINES, DOCKER_HOST values, None for this
    machine's) and `seen.starts` (how many of them started in the block)."""

    def __init__(self, labels: dict[str, str], engines=(None,)):
        self.labels, self.engines = labels, list(engines)
        self.most = self.starts = 0
        self.events: list[tuple[int, str, str]] = []
        self.lock = threading.Lock()

    def _docker(self, engine, *args, **kwargs):
        env = {**os.environ, **({"DOCKER_HOST": engine} if engine else {})}
        return subprocess.Popen(["docker", *args], env=env, text=True, **kwargs)

    def _filters(self):
        return [arg for name, value in self.labels.items() for arg in ("--filter", f"label={name}={value}")]

    def __enter__(self):
        # From a second back: what started while the stream connected is replayed, not missed.
        self.entered = time.time_ns()
        since = f"{self.entered / 1e9 - 1:.3f}"
        self.streams = [self._docker(engine, "events", "--since", since, "--filter", "type=container",
                                     "--filter", "event=start", "--filter", "event=die", *self._filters(),
                                     "--format", "{{.TimeNano}} {{.Actor.ID}} {{.Action}}",
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
                        for engine in self.engines]
        self.readers = [threading.Thread(target=self._read, args=(stream,), daemon=True) for stream in self.streams]
        for reader in self.readers:
            reader.start()
        self.running = set()
        for engine in self.engines:
            listed = self._docker(engine, "ps", "--quiet", "--no-trunc", *self._filters(), stdout=subprocess.PIPE)
            out, _ = listed.communicate(timeout=60)
            assert listed.returncode == 0, f"docker ps on {engine or 'this machine'} failed"
            self.running |= set(out.split())
        return self

    def _read(self, stream):
        for line in stream.stdout:
            fields = line.split()
            if len(fields) == 3 and fields[0].isdigit():
                with self.lock:
                    self.events.append((int(fields[0]), fields[1], fields[2]))

    def __exit__(self, *exc):
        time.sleep(SETTLE)
        for stream in self.streams:
            stream.terminate()
            stream.wait(timeout=10)
        for reader in self.readers:
            reader.join(timeout=10)
        running = set(self.running)
        self.most = len(running)
        for at, container, action in sorted(self.events):
            if action == "start":
                self.starts += at >= self.entered  # not one replayed from before the block
                running.add(container)
            else:
                running.discard(container)
            self.most = max(self.most, len(running))
        return False
