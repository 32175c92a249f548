"""SSH to hosts: Fabric connections with strict host key checking, every SSH problem turned
into one clear line, and work run on several hosts in parallel.

A `fabric.Connection` is an `invoke.Context`, so a HostTarget runs the same plans through
it that a LocalTarget runs through Invoke's Context here.
"""
from __future__ import annotations

import errno
import logging
import os
import socket
from concurrent.futures import ThreadPoolExecutor

from invoke.exceptions import Exit

from ..errors import TaskError
from ..plans.release import ALIVE_INTERVAL, DEAD_AFTER
from ..source.stack import Host
from .stdin import remote_runner


# Paramiko logs a broken connection ("Socket exception: ...") from its own thread, which
# Python would print on stderr; the task's own error line says it once, clearly.
logging.getLogger("paramiko").addHandler(logging.NullHandler())
logging.getLogger("paramiko").propagate = False


def connect(host: Host, dry: bool = False):
    """A Fabric connection to HOST that only trusts host keys already in its known_hosts.
    Opened at once (unless DRY), so that every SSH problem becomes one clear line here."""
    import paramiko

    conn = _connection(host)
    if dry:
        return conn
    where = f"{host.name} ({host.user + '@' if host.user else ''}{host.address}:{host.port})"
    keyscan = f"ssh-keyscan -p {host.port} {host.address} >> {host.known_hosts}"
    try:
        conn.open()
    except paramiko.BadHostKeyException:
        raise TaskError(f"the host key of {where} has CHANGED since it was added to {host.known_hosts}: "
                        "this may be an attack; if the server was really reinstalled, remove its old "
                        "line from that file and add the new key") from None
    except paramiko.AuthenticationException:
        raise TaskError(f"{where} refused the login: check user and identity_file in [hosts.{host.name}] "
                        "and that the key is in the server's authorized_keys") from None
    except paramiko.SSHException as exc:
        if "not found in known_hosts" in str(exc):
            raise TaskError(f"the host key of {where} is unknown: check its fingerprint, then add it with "
                            f"`{keyscan}` (host keys are always checked)") from None
        raise TaskError(f"SSH to {where} failed: {exc}") from None
    except (socket.timeout, TimeoutError):
        raise TaskError(f"cannot reach {where}: no answer within 10 s") from None
    except (OSError, paramiko.ssh_exception.NoValidConnectionsError) as exc:
        raise TaskError(f"cannot reach {where}: {_unreachable(exc)}") from None
    keep_watch(conn)
    return conn


def _unreachable(exc: OSError) -> str:
    """Why no connection could be made, in a few words. Paramiko gathers the error of each
    address it tried into one NoValidConnectionsError whose own errno is None: a refusal is
    read from those."""
    causes = list(getattr(exc, "errors", {}).values()) or [exc]
    if all("refused" in str(e).lower() or getattr(e, "errno", None) == errno.ECONNREFUSED for e in causes):
        return "connection refused"
    if causes[0] is not exc and getattr(causes[0], "strerror", None):
        return causes[0].strerror  # "No route to host", say
    return str(exc)


def _connection(host: Host):
    """HOST's connection, not yet open: its key, its known_hosts and nothing else trusted."""
    import paramiko
    from fabric import Connection

    connect_kwargs = {}
    if host.identity_file:
        connect_kwargs = {"key_filename": os.path.expanduser(host.identity_file), "look_for_keys": False,
                          "allow_agent": False}
    conn = Connection(host.address, user=host.user, port=host.port, connect_timeout=10,
                      connect_kwargs=connect_kwargs)
    conn.config.runners.remote = remote_runner()  # piped input in chunks (stdin.py)
    known_hosts = os.path.expanduser(host.known_hosts)
    conn.client.set_missing_host_key_policy(paramiko.RejectPolicy())
    if os.path.exists(known_hosts):
        conn.client.load_host_keys(known_hosts)
    return conn


def keep_watch(conn) -> None:
    """Notice a host that went silent (a cut link, a dead server) within DEAD_AFTER seconds:
    SSH keepalives every ALIVE_INTERVAL seconds keep data in flight, and the kernel drops a
    connection whose data stays unacknowledged that long. Without this a command waits for
    TCP's own timeout, a quarter of an hour."""
    transport = conn.client.get_transport()
    transport.set_keepalive(ALIVE_INTERVAL)
    sock = transport.sock
    if hasattr(socket, "TCP_USER_TIMEOUT") and isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, DEAD_AFTER * 1000)


def in_parallel(named: dict, work) -> list[tuple[str, Exception | None]]:
    """WORK(name, item) for every item of NAMED at once (each its own SSH connection), every
    one to its end whatever happens to another: (name, its failure or None), in NAMED's
    order. What a failure means is the caller's policy."""
    def one(pair):
        name, item = pair
        try:
            work(name, item)
            return name, None
        except Exception as exc:  # every machine finishes, whatever happened on another
            return name, exc

    with ThreadPoolExecutor(max_workers=max(1, len(named))) as pool:
        return list(pool.map(one, named.items()))


def each_host(hosts, work) -> None:
    """WORK(host) for every host, in parallel, then a result line per host; one failure
    fails the whole, once every host has finished."""
    results = in_parallel({host.name: host for host in hosts}, lambda name, host: work(host))
    for name, error in results:
        why = error.message or f"exit status {error.code}" if isinstance(error, Exit) else \
            f"{type(error).__name__}: {error}" if error else "ok"
        print(f"[{name}] {why}", flush=True)
    failed = [name for name, error in results if error]
    if failed:
        raise TaskError(f"failed on {', '.join(failed)} (of {len(hosts)} hosts)")
