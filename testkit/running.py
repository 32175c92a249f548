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
        # The streams replay from here: what happens while they connect is not missed. Events
        # from before the `docker ps` are in what it lists, and are not applied again.
        since = f"{time.time():.3f}"
        self.streams = [self._docker(engine, "events", "--since", since, "--filter", "type=container",
                                     "--filter", "event=start", "--filter", "event=die", *self._filters(),
                                     "--format", "{{.TimeNano}} {{.Actor.ID}} {{.Action}}",
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                        for engine in self.engines]
        self.readers = [threading.Thread(target=self._read, args=(stream,), daemon=True) for stream in self.streams]
        for reader in self.readers:
            reader.start()
        try:
            self.listed = time.time_ns()
            self.running = set()
            for engine in self.engines:
                listed = self._docker(engine, "ps", "--quiet", "--no-trunc", *self._filters(), stdout=subprocess.PIPE)
                out, _ = listed.communicate(timeout=60)
                assert listed.returncode == 0, f"docker ps on {engine or 'this machine'} failed"
                self.running |= set(out.split())
        except BaseException:
            self._stop()
            raise
        return self

    def _stop(self) -> list[str]:
        """Stop the streams; what those that had ended by themselves said."""
        ended = [stream.stderr.read() or f"exit status {stream.returncode}"
                 for stream in self.streams if stream.poll() is not None]
        for stream in self.streams:
            if stream.poll() is None:
                stream.terminate()
            stream.wait(timeout=10)
        for reader in self.readers:
            reader.join(timeout=10)
        return ended

    def _read(self, stream):
        for line in stream.stdout:
            fields = line.split()
            if len(fields) == 3 and fields[0].isdigit():
                with self.lock:
                    self.events.append((int(fields[0]), fields[1], fields[2]))

    def __exit__(self, *exc):
        time.sleep(SETTLE)
        ended = self._stop()
        # A stream that stopped saw nothing after: its engine's count would be a guess.
        assert not ended, f"docker events stopped while watched: {ended}"
        running = set(self.running)
        self.most = len(running)
        for at, container, action in sorted(self.events):
            if at < self.listed:
                continue
            if action == "start":
                self.starts += 1
                running.add(container)
            else:
                running.discard(container)
            self.most = max(self.most, len(running))
        return False
