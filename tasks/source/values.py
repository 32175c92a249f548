"""The one validation layer: every value that reaches a template, a command line or a file
name passes one of these grammars first, whether it comes from config/stack.toml, a task's
argument or the environment.

Each grammar is matched in full (`fullmatch`: no trailing newline slips through `$`), and
types are checked before values (TOML's `true` is not a port, nor is `8000.9`). A refusal is
a StackError naming WHAT and the value, in one line.
"""
from __future__ import annotations

import re

from ..errors import StackError

# A compose project (also the prefix of every container, network, volume and image name).
PROJECT = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
# A database: compose service, network prefix, PostgreSQL database and role, Django alias.
DATABASE = re.compile(r"[a-z][a-z0-9_]*")
# A [hosts.NAME] or [groups] key: it names a host in messages and on the command line.
HOST_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
# Nginx's size syntax, and nothing after it: a value ends up inside nginx.conf.
BODY_SIZE = re.compile(r"[0-9]{1,9}[kKmMgG]?")
# A host name, an IPv4 address or a bare IPv6 address; never an option (`-oProxyCommand=`).
ADDRESS = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})|[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*")
# A login name as useradd accepts it; never an option.
USER = re.compile(r"[a-z_][a-z0-9_.-]{0,31}")
# An absolute directory on a host: plain path segments, no `..`, not `/` itself.
DIRECTORY = re.compile(r"(?:/[A-Za-z0-9_.@+-]+)+/?")
# A local file the SSH client reads (a key, a known_hosts file): printable, no control characters.
LOCAL_FILE = re.compile(r"[^\x00-\x1f\x7f]+")


def _shown(value) -> str:
    return repr(value)


def text(value, grammar: re.Pattern, what: str, hint: str) -> str:
    """VALUE if it is a string matching GRAMMAR in full; else a StackError saying WHAT and HINT."""
    if not isinstance(value, str) or grammar.fullmatch(value) is None:
        raise StackError(f"{what} {_shown(value)} is not valid: {hint}")
    return value


def port(value, what: str, from_text: bool = False) -> int:
    """A TCP port: an integer (not a boolean, not a float) from 1 to 65535. FROM_TEXT: the
    value comes from the environment or a .env file, where it is digits."""
    if from_text and isinstance(value, str) and re.fullmatch(r"[0-9]{1,5}", value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise StackError(f"{what} {_shown(value)} is not a TCP port (a whole number from 1 to 65535)")
    return value


def project(value, what: str = "project name") -> str:
    return text(value, PROJECT, what, "lowercase letters, digits, '-' or '_', starting with a letter or "
                                      "digit, at most 63 characters")


def body_size(value) -> str:
    return text(value, BODY_SIZE, "client_max_body_size", "a size as Nginx writes it, such as 20m, 512k or 1g")


def address(value, what: str) -> str:
    return text(value, ADDRESS, what, "a host name or an IP address (it may not start with '-')")


def user(value, what: str) -> str:
    return text(value, USER, what, "a login name: lowercase letters, digits, '_', '.', '-', not starting with '-'")


def directory(value, what: str) -> str:
    checked = text(value, DIRECTORY, what, "an absolute path of plain names (not '/', no '..', no spaces)")
    if any(part in (".", "..") for part in checked.split("/")):
        raise StackError(f"{what} {_shown(value)} is not valid: an absolute path of plain names (no '.' or '..')")
    return checked.rstrip("/")


def local_file(value, what: str) -> str:
    return text(value, LOCAL_FILE, what, "a file path without control characters")


def host_name(value, what: str = "host name") -> str:
    return text(value, HOST_NAME, what, "letters, digits, '_', '.', '-', starting with a letter or digit")
