"""Piped input reaches commands in chunks (tasks/stdin.py), not 100 bytes a second, and
arrives intact: multibyte characters split between chunks included."""
import hashlib
import io
import os
import threading

from invoke import Config, Context

from tasks.stdin import CHUNK, ChunkedLocal

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


def test_the_tasks_use_the_chunked_runners():
    from tasks import ns
    from tasks.remote import connect
    from tasks.stack import Host

    assert ns.configuration()["runners"]["local"] is ChunkedLocal
    conn = connect(Host(name="h", address="127.0.0.1", directory="/srv/hello"), dry=True)
    assert conn.config.runners.remote.__name__ == "ChunkedRemote"
