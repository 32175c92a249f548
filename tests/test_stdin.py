"""Piped input reaches commands in chunks (tasks/stdin.py), not 100 bytes a second, and
arrives intact: multibyte characters split between chunks included."""
import hashlib
import io
import os
import threading

from invoke import Config, Context

from tasks.execution.stdin import ChunkedLocal

TEXT = "é€ line of a dump\n" * 20_000  # ~440 kB: hours at Invoke's 100 bytes a second


def context():
    return Context(config=Config(overrides={"runners": {"local": ChunkedLocal}}))


def digest(text):
    return hashlib.sha256(text.encode()).hexdigest()


def test_an_in_memory_stream_arrives_whole():
    result = context().run("sha256sum", in_stream=io.StringIO(TEXT), hide=True, timeout=60)
    assert result.stdout.split()[0] == digest(TEXT)


def test_a_pipe_arrives_whole_with_characters_split_between_chunks():
    data = TEXT.encode()
    read_end, write_end = os.pipe()

    def feed():
        with os.fdopen(write_end, "wb") as pipe:
            for start in range(0, len(data), 1001):  # odd sizes: multibyte characters get cut
                pipe.write(data[start:start + 1001])

    threading.Thread(target=feed, daemon=True).start()
    with os.fdopen(read_end, "r") as stream:
        result = context().run("sha256sum", in_stream=stream, hide=True, timeout=60)
    assert result.stdout.split()[0] == digest(TEXT)


def test_a_character_split_between_two_reads_arrives_whole():
    runner = ChunkedLocal(context())
    runner.encoding = "utf-8"
    read_end, write_end = os.pipe()
    with os.fdopen(read_end, "r") as stream:
        os.write(write_end, "€".encode()[:2])
        first = runner.read_our_stdin(stream)
        os.write(write_end, "€".encode()[2:] + b"!")
        os.close(write_end)
        second = runner.read_our_stdin(stream)
        # Half a character is "not ready yet" (None), never "" (which Invoke takes for the end).
        assert (first, second, runner.read_our_stdin(stream)) == (None, "€!", "")


def test_bytes_streams_and_closed_stdin():
    runner = ChunkedLocal(context())
    runner.encoding = "utf-8"
    assert runner.read_our_stdin(io.BytesIO("é".encode())) == "é"
    read_end, write_end = os.pipe()
    with os.fdopen(write_end, "w") as write_only:  # what stdin is under some nohup setups
        os.close(read_end)
        assert runner.read_our_stdin(write_only) in ("", None)


def test_the_tasks_use_the_chunked_runners():
    from tasks import ns
    from tasks.execution.ssh import connect
    from tasks.source.stack import Host

    assert ns.configuration()["runners"]["local"] is ChunkedLocal
    conn = connect(Host(name="h", address="127.0.0.1", directory="/srv/hello"), dry=True)
    assert conn.config.runners.remote.__name__ == "ChunkedRemote"


class TestNaps:
    """Invoke's 10 ms naps, lengthened while nothing happens (up to NAP_MAX)."""

    def runner(self, monkeypatch, finished_after):
        from tasks.execution import stdin

        naps = []
        monkeypatch.setattr(stdin.time, "sleep", naps.append)
        runner = ChunkedLocal(context())
        looks = iter([False] * finished_after + [True])
        monkeypatch.setattr(ChunkedLocal, "process_is_finished", property(lambda self: next(looks)))
        monkeypatch.setattr(ChunkedLocal, "has_dead_threads", property(lambda self: False))
        return runner, naps

    def test_the_wait_starts_at_invokes_nap_and_lengthens_it_up_to_the_most(self, monkeypatch):
        from tasks.execution.stdin import NAP_MAX

        runner, naps = self.runner(monkeypatch, finished_after=30)
        runner.wait()
        assert len(naps) == 30 and naps[0] == 0.01 and naps == sorted(naps) and naps[-1] == NAP_MAX

    def test_a_command_that_ends_at_once_is_seen_after_one_short_nap(self, monkeypatch):
        runner, naps = self.runner(monkeypatch, finished_after=1)
        runner.wait()
        assert naps == [0.01]

    def test_the_stdin_nap_lengthens_while_nothing_comes_and_is_short_again_when_something_does(self):
        from tasks.execution.stdin import NAP_MAX

        runner = ChunkedLocal(context())
        runner.encoding = "utf-8"  # set by run()
        read_end, write_end = os.pipe()
        with os.fdopen(read_end, "rb", buffering=0) as stream:
            for _ in range(20):
                assert runner.read_our_stdin(stream) is None
            assert runner.input_sleep == NAP_MAX
            os.write(write_end, b"x")
            assert runner.read_our_stdin(stream) == "x" and runner.input_sleep == 0.01
        os.close(write_end)
