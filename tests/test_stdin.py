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
