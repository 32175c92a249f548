"""SSH to hosts (tasks/execution/ssh.py) without a host: Fabric's real Connection, made as
for a host and never opened but in the one test that connects to a closed port of this
machine; what opening it raises is what paramiko raises (RejectPolicy's own error for an
unknown host key). Then the policy of running work on several hosts at once."""
import socket
import threading

import fabric
import paramiko
import pytest
from invoke.exceptions import Exit

from tasks.errors import TaskError
from tasks.execution import ssh
from tasks.execution.stdin import ChunkedStdin
from tasks.plans.release import ALIVE_INTERVAL, DEAD_AFTER
from tasks.source.stack import Host

PROD = Host(name="prod", address="203.0.113.10", directory="/srv/hello", user="deploy", port=2222,
            identity_file="~/.ssh/hello_deploy", known_hosts="/nonexistent/known_hosts")
WHERE = "prod (deploy@203.0.113.10:2222)"
KEY = paramiko.ECDSAKey.generate()
OTHER_KEY = paramiko.ECDSAKey.generate()


@pytest.fixture
def opening(monkeypatch):
    """OPENING(effect): Connection.open does EFFECT(connection); what keep_watch saw is returned."""
    watched = []
    monkeypatch.setattr(ssh, "keep_watch", watched.append)

    def make(effect):
        monkeypatch.setattr(fabric.Connection, "open", effect)
        return watched

    return make


def raising(exc):
    def open_(conn):
        raise exc
    return open_


def unknown_host_key(conn):
    """What paramiko does with a host key its client does not know: asks the policy (which
    logs through the client's transport)."""
    with socket.socket() as sock:
        conn.client._transport = paramiko.Transport(sock)
        conn.client._policy.missing_host_key(conn.client, f"[{conn.host}]:{conn.port}", KEY)


class TestConnection:
    def test_it_uses_the_hosts_key_alone_and_bounds_the_wait(self):
        conn = ssh._connection(PROD)
        assert (conn.host, conn.user, conn.port, conn.connect_timeout) == ("203.0.113.10", "deploy", 2222, 10)
        assert conn.connect_kwargs == {"key_filename": [ssh.os.path.expanduser("~/.ssh/hello_deploy")],
                                       "look_for_keys": False, "allow_agent": False}
        assert not conn.is_connected

    def test_without_an_identity_file_paramikos_defaults_stand(self):
        conn = ssh._connection(Host(name="edge", address="198.51.100.7", directory="/srv/hello"))
        assert (conn.host, conn.port, conn.connect_kwargs) == ("198.51.100.7", 22, {})

    def test_unknown_host_keys_are_rejected_and_known_ones_loaded_from_the_hosts_file(self, tmp_path):
        known = tmp_path / "known_hosts"
        known.write_text(f"[203.0.113.10]:2222 {KEY.get_name()} {KEY.get_base64()}\n")
        conn = ssh._connection(Host(name="prod", address="203.0.113.10", directory="/srv", port=2222,
                                    known_hosts=str(known)))
        assert isinstance(conn.client._policy, paramiko.RejectPolicy)
        assert conn.client.get_host_keys().lookup("[203.0.113.10]:2222") == {KEY.get_name(): KEY}
        assert conn.client.get_host_keys().lookup("203.0.113.10") is None

    def test_a_missing_known_hosts_file_trusts_nothing(self):
        conn = ssh._connection(PROD)
        assert len(conn.client.get_host_keys()) == 0
        assert isinstance(conn.client._policy, paramiko.RejectPolicy)

    def test_piped_input_goes_in_chunks(self):
        assert issubclass(ssh._connection(PROD).config.runners.remote, ChunkedStdin)


class TestConnect:
    def test_it_opens_at_once_and_keeps_watch(self, opening):
        opened = []
        watched = opening(lambda conn: opened.append(conn))
        conn = ssh.connect(PROD)
        assert opened == [conn] and watched == [conn]

    def test_a_dry_run_opens_nothing(self, opening):
        watched = opening(raising(AssertionError("opened in a dry run")))
        assert isinstance(ssh.connect(PROD, dry=True), fabric.Connection) and watched == []

    @pytest.mark.parametrize("effect, message", [
        (unknown_host_key,
         f"the host key of {WHERE} is unknown: check its fingerprint, then add it with "
         "`ssh-keyscan -p 2222 203.0.113.10 >> /nonexistent/known_hosts` (host keys are always checked)"),
        (raising(paramiko.BadHostKeyException("[203.0.113.10]:2222", OTHER_KEY, KEY)),
         f"the host key of {WHERE} has CHANGED since it was added to /nonexistent/known_hosts: this may be an "
         "attack; if the server was really reinstalled, remove its old line from that file and add the new key"),
        (raising(paramiko.AuthenticationException("Authentication failed.")),
         f"{WHERE} refused the login: check user and identity_file in [hosts.prod] and that the key is in the "
         "server's authorized_keys"),
        (raising(paramiko.SSHException("Error reading SSH protocol banner")),
         f"SSH to {WHERE} failed: Error reading SSH protocol banner"),
        (raising(socket.timeout("timed out")), f"cannot reach {WHERE}: no answer within 10 s"),
        (raising(TimeoutError()), f"cannot reach {WHERE}: no answer within 10 s"),
        (raising(ConnectionRefusedError(111, "Connection refused")), f"cannot reach {WHERE}: connection refused"),
        (raising(paramiko.ssh_exception.NoValidConnectionsError(
            {("203.0.113.10", 2222): ConnectionRefusedError(111, "Connection refused")})),
         f"cannot reach {WHERE}: connection refused"),
        (raising(paramiko.ssh_exception.NoValidConnectionsError(
            {("203.0.113.10", 2222): OSError(113, "No route to host")})),
         f"cannot reach {WHERE}: No route to host"),
        (raising(socket.gaierror(-2, "Name or service not known")),
         f"cannot reach {WHERE}: [Errno -2] Name or service not known"),
    ], ids=["unknown-host-key", "changed-host-key", "login-refused", "ssh-failed", "socket-timeout", "timeout",
            "refused", "refused-by-every-address", "no-route", "no-such-name"])
    def test_every_ssh_problem_is_one_line_saying_what_to_do(self, opening, effect, message):
        watched = opening(effect)
        with pytest.raises(TaskError) as failed:
            ssh.connect(PROD)
        assert failed.value.message == f"error: {message}" and failed.value.code == 1
        assert failed.value.__suppress_context__  # one line: no traceback of paramiko's
        assert watched == []

    def test_a_closed_port_here_is_connection_refused(self):
        with socket.socket() as probe:  # a port of this machine that nothing listens on
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        host = Host(name="closed", address="127.0.0.1", directory="/srv/hello", port=port,
                    known_hosts="/nonexistent/known_hosts")
        with pytest.raises(TaskError) as failed:
            ssh.connect(host)
        assert failed.value.message == f"error: cannot reach closed (127.0.0.1:{port}): connection refused"


class Transport:
    def __init__(self, sock):
        self.sock, self.keepalive = sock, None

    def set_keepalive(self, seconds):
        self.keepalive = seconds


class Client:
    def __init__(self, transport):
        self.transport = transport

    def get_transport(self):
        return self.transport


class Watched:
    def __init__(self, sock):
        self.client = Client(Transport(sock))


class TestKeepWatch:
    def test_keepalives_flow_and_the_kernel_gives_up_on_silence_after_dead_after(self):
        with socket.socket() as sock:
            conn = Watched(sock)
            ssh.keep_watch(conn)
            assert conn.client.transport.keepalive == ALIVE_INTERVAL
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == DEAD_AFTER * 1000

    def test_a_proxy_command_gets_keepalives_alone(self):
        proxy = object()  # not a socket: a ProxyCommand's pipe, say
        conn = Watched(proxy)
        ssh.keep_watch(conn)
        assert conn.client.transport.keepalive == ALIVE_INTERVAL


class TestInParallel:
    def test_every_item_runs_at_the_same_time_and_answers_in_order(self):
        together = threading.Barrier(3, timeout=10)  # broken unless all three wait at once
        seen = []

        def work(name, item):
            seen.append((name, item))
            together.wait()

        assert ssh.in_parallel({"a": 1, "b": 2, "c": 3}, work) == [("a", None), ("b", None), ("c", None)]
        assert sorted(seen) == [("a", 1), ("b", 2), ("c", 3)]

    def test_a_failure_is_returned_and_the_others_run_to_their_end(self):
        done = []
        boom = RuntimeError("boom")

        def work(name, item):
            if name == "a":
                raise boom
            done.append(name)

        assert ssh.in_parallel({"a": 1, "b": 2, "c": 3}, work) == [("a", boom), ("b", None), ("c", None)]
        assert sorted(done) == ["b", "c"]

    def test_nothing_to_do_is_done(self):
        assert ssh.in_parallel({}, lambda name, item: None) == []


HOSTS = [Host(name=name, address=f"10.0.0.{n}", directory="/srv/hello") for n, name in enumerate("abcd", 1)]


class TestEachHost:
    def test_a_line_per_host_in_order_and_no_error_when_all_went_well(self, capsys):
        ran = []
        ssh.each_host(HOSTS[:2], lambda host: ran.append(host.name))
        assert sorted(ran) == ["a", "b"]
        assert capsys.readouterr().out == "[a] ok\n[b] ok\n"

    def test_one_failure_fails_the_whole_once_every_host_finished(self, capsys):
        ran = []
        failures = {"a": TaskError("service djangoapp is not running"), "b": Exit(code=3), "c": KeyError("x")}

        def work(host):
            ran.append(host.name)
            if host.name in failures:
                raise failures[host.name]

        with pytest.raises(TaskError) as failed:
            ssh.each_host(HOSTS, work)
        assert failed.value.message == "error: failed on a, b, c (of 4 hosts)"
        assert sorted(ran) == ["a", "b", "c", "d"]
        assert capsys.readouterr().out.splitlines() == [
            "[a] error: service djangoapp is not running", "[b] exit status 3", "[c] KeyError: 'x'", "[d] ok"]
