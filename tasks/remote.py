"""Running the stack's tasks on hosts: SSH connections with strict host key checking, and
the `--host` option every stack task takes.

A `fabric.Connection` is an `invoke.Context`, so a task body runs unchanged on a host: the
Runner sees the connection's `stack_host` and runs its plans in the host's deployed release.
"""
from __future__ import annotations

import functools
import inspect
import os
import socket
import threading
from concurrent.futures import ThreadPoolExecutor

from invoke.exceptions import Exit

from .runner import TaskError, is_dry
from .stack import Host, StackError, load
from .stdin import remote_runner

HOST_HELP = "Run on these hosts over SSH: a name or group from config/stack.toml, or a comma list (default: here)."


def _connection_class():
    from fabric import Connection

    class HostConnection(Connection):
        # A class attribute, so that assigning it sets an attribute rather than a config key.
        stack_host = None

    return HostConnection


def connect(host: Host, dry: bool = False):
    """A Fabric connection to HOST that only trusts host keys already in its known_hosts.
    Opened at once (unless DRY), so that every SSH problem becomes one clear line here."""
    import paramiko

    connect_kwargs = {}
    if host.identity_file:
        connect_kwargs = {"key_filename": os.path.expanduser(host.identity_file), "look_for_keys": False,
                          "allow_agent": False}
    conn = _connection_class()(host.address, user=host.user, port=host.port, connect_timeout=10,
                               connect_kwargs=connect_kwargs)
    conn.stack_host = host
    conn.config.runners.remote = remote_runner()  # piped input in chunks (tasks/stdin.py)
    known_hosts = os.path.expanduser(host.known_hosts)
    conn.client.set_missing_host_key_policy(paramiko.RejectPolicy())
    if os.path.exists(known_hosts):
        conn.client.load_host_keys(known_hosts)
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
        reason = "connection refused" if "refused" in str(exc).lower() or getattr(exc, "errno", None) == 111 else str(exc)
        raise TaskError(f"cannot reach {where}: {reason}") from None
    return conn


def on_hosts(func):
    """Give a task `--host`: without it the task runs here; with it, on each named host in
    parallel, with a result line per host."""
    signature = inspect.signature(func)
    params = list(signature.parameters.values())
    params.insert(len(params) - 1 if params[-1].name == "dry" else len(params),
                  inspect.Parameter("host", inspect.Parameter.KEYWORD_ONLY, default=None))
    params = [p.replace(kind=inspect.Parameter.POSITIONAL_OR_KEYWORD) if p.kind == inspect.Parameter.KEYWORD_ONLY else p
              for p in params]

    @functools.wraps(func)
    def wrapper(c, *args, host=None, **kwargs):
        if not host:
            return func(c, *args, **kwargs)
        try:
            hosts = load().resolve_hosts(host)
        except StackError as exc:
            raise TaskError(str(exc)) from None
        dry = is_dry(c, kwargs.get("dry", False))
        if len(hosts) == 1:
            return _run_on(hosts[0], func, c, args, kwargs, dry)
        return _run_in_parallel(hosts, func, c, args, kwargs, dry)

    wrapper.__signature__ = signature.replace(parameters=params)
    return wrapper


def _run_on(host, func, c, args, kwargs, dry):
    conn = connect(host, dry=dry)
    if c.config.run.dry:
        conn.config.run.dry = True
    try:
        return func(conn, *args, **kwargs)
    finally:
        conn.close()


_print_lock = threading.Lock()


def _run_in_parallel(hosts, func, c, args, kwargs, dry):
    def one(host):
        try:
            _run_on(host, func, c, args, kwargs, dry)
            return host.name, None
        except Exit as exc:
            return host.name, exc.message or f"exit status {exc.code}"
        except Exception as exc:  # report every host, whatever happened on one of them
            return host.name, f"{type(exc).__name__}: {exc}"

    with ThreadPoolExecutor(max_workers=len(hosts)) as pool:
        results = list(pool.map(one, hosts))
    with _print_lock:
        for name, error in results:
            print(f"[{name}] {'ok' if error is None else error}")
    failed = [name for name, error in results if error]
    if failed:
        raise TaskError(f"failed on {', '.join(failed)} (of {len(hosts)} hosts)")
