"""Ctrl-C while a volume's users are stopped, stopping or starting again: whatever was
stopped is started again, on every way out (the commands recorded, no engine)."""
import os
import signal
import shlex

import pytest
from invoke import Result

from tasks.errors import TaskError
from tasks.execution.runner import Runner
from tasks.execution.targets import LocalTarget
from tasks.plans import compose
from tasks.procedures.volume_copy import VolumeInfo, settled_helpers, stopped_services
from tasks.source.stack import loads
from tests.fakes import Recorder
from tests.stacks import COMMITTED

COMPOSE = "docker compose --project-name hello"
RUNNING = shlex.join(compose.running_services("hello"))
STOP, START = f"{COMPOSE} stop djangoapp nginx", f"{COMPOSE} start djangoapp nginx"
CTRL_C = Result(exited=130)  # what a command that got the terminal's SIGINT answers


@pytest.fixture(autouse=True)
def terminal_sigint():
    """SIGINT as a terminal's Python has it: a shell's `&` starts its job with SIGINT ignored,
    and Python then leaves it ignored (pytest run in the background, a CI runner)."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


class Terminal(Recorder):
    """A Recorder where a Ctrl-C is pressed while the commands of CTRL_C_DURING run (their
    Nth run, for each N listed): the task's process gets SIGINT, the command exits 130."""

    def __init__(self, ctrl_c_during):
        super().__init__({"docker compose version --short": Result("2.40.3\n"),
                          "docker version --format '{{.Server.Version}}'": Result("28\n"),
                          RUNNING: Result("djangoapp\nnginx\nfront\ndatabase1\n")})
        self.ctrl_c_during = ctrl_c_during

    def run(self, command, **kwargs):
        result = super().run(command, **kwargs)
        if self.commands.count(command) in self.ctrl_c_during.get(command, ()):
            os.kill(os.getpid(), signal.SIGINT)  # Python raises it at the next instruction, unless held
            return CTRL_C
        return result


def runner(conn):
    return Runner(LocalTarget(conn, loads(COMMITTED)))


def ran(conn):
    return [c for c in conn.commands if c.startswith(COMPOSE) and c != RUNNING]


def test_ctrl_c_while_stopping_finishes_the_stop_then_starts_all_again():
    conn = Terminal({STOP: (1,)})
    with pytest.raises((TaskError, KeyboardInterrupt)):
        with stopped_services(runner(conn), ["djangoapp", "nginx", "certbot"]):
            pytest.fail("the block runs only once they are stopped")
    # The engine goes on with a stop its client gave up on: waited for, then all started.
    assert ran(conn) == [STOP, STOP, START]


def test_ctrl_c_in_the_block_starts_them_again():
    conn = Terminal({})
    with pytest.raises(KeyboardInterrupt):
        with stopped_services(runner(conn), ["djangoapp", "nginx"]):
            os.kill(os.getpid(), signal.SIGINT)
    assert ran(conn) == [STOP, START]


@pytest.mark.parametrize("presses", [(1,), (1, 2)], ids=["once", "twice"])
def test_ctrl_c_while_starting_again_is_held_until_they_run(presses):
    conn = Terminal({START: presses})
    with pytest.raises(KeyboardInterrupt):  # the user's Ctrl-C, raised once they run
        with stopped_services(runner(conn), ["djangoapp", "nginx"]):
            pass
    assert ran(conn) == [STOP] + [START] * (len(presses) + 1)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_start_that_fails_by_itself_is_named_with_what_to_run(capsys):
    conn = Terminal({})
    conn.answers[START] = Result(exited=1)
    with pytest.raises(TaskError, match="in the block"):
        with stopped_services(runner(conn), ["djangoapp", "nginx"]):
            raise TaskError("in the block")
    assert ran(conn) == [STOP, START]  # not tried again: it did not fail for a Ctrl-C
    assert "djangoapp, nginx did not start again (exit status 1): `inv up` starts them" in capsys.readouterr().out


MEDIA = VolumeInfo("media_volume", "hello_media_volume", ("djangoapp",), ("nginx",), "hello-djangoapp:latest", False)
UNSTARTED = ("docker ps --all --quiet --filter label=hello.backup-helper=hello "
             "--filter volume=hello_media_volume --filter status=created")


@pytest.mark.parametrize("ending", [None, KeyboardInterrupt, TaskError], ids=["done", "ctrl-c", "error"])
def test_helpers_a_stopped_docker_run_left_never_started_are_removed_on_every_way_out(ending):
    # `docker run --rm` stopped while it makes its container leaves it made, never started,
    # never removed: it holds the volume, and the app image's labels make it look like one
    # of the compose project's containers.
    conn = Terminal({})
    conn.answers[UNSTARTED] = Result("c0ffee\ndecade\n")
    try:
        with settled_helpers(runner(conn), MEDIA):
            if ending:
                raise ending("in the block")
    except (KeyboardInterrupt, TaskError) as exc:
        assert type(exc) is ending
    assert conn.commands[-2:] == [UNSTARTED, "docker rm --force --volumes c0ffee decade"]


def test_no_helper_left_removes_nothing():
    conn = Terminal({})
    with settled_helpers(runner(conn), MEDIA):
        pass
    assert conn.commands[-1] == UNSTARTED


def test_a_temporary_file_is_unfinished_once_its_writer_is_gone():
    import socket
    import subprocess

    from tasks.execution.files import unfinished, writer_mark

    gone = subprocess.Popen(["true"])
    gone.wait()
    here = socket.gethostname()
    names = [f".a.dump.0badf00d{writer_mark()}",            # this process: still writing
             f".a.dump.0badf00d.{gone.pid}@{here}.tmp",    # its writer is gone
             f".a.dump.0badf00d.{gone.pid}@elsewhere.tmp",  # another machine's: unknown
             ".a.dump.0badf00d.tmp"]                       # an earlier version's: unknown
    assert unfinished(names) == [names[1]]
