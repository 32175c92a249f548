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


def table(value, what: str, hint: str) -> dict:
    """VALUE if it is a TOML table; else a StackError saying WHAT and HINT (what it should hold)."""
    if not isinstance(value, dict):
        raise StackError(f"{what} {_shown(value)} is not valid: {hint}")
    return value


def choice(value, allowed, what: str) -> str:
    """VALUE if it is one of the words ALLOWED."""
    if not isinstance(value, str) or value not in allowed:
        raise StackError(f"{what} {_shown(value)} is not valid: one of {', '.join(allowed)}")
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


# A log file's largest size as the engine reads it: a whole number and k, m or g (lowercase,
# never 0: the engine would take 0 for "no limit").
LOG_SIZE = re.compile(r"[1-9][0-9]{0,2}[kmg]")


def log_size(value, what: str) -> str:
    return text(value, LOG_SIZE, what, "a size of 1k to 999g, such as 10m, 512k or 1g")


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


# A DNS name the site answers to: lowercase labels of letters, digits and inner hyphens, at
# least two of them; no wildcard (HTTP-01 cannot prove one), no trailing dot.
DOMAIN = re.compile(r"(?=.{1,253}\Z)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?")
# An address for certificate expiry notices: it ends up on certbot's command line, so never
# an option (no leading '-'). A dot-atom local part (no leading, trailing or double dot) of at
# most 64 characters, then a domain of letter-or-digit-edged labels; 254 at most in all.
EMAIL = re.compile(r"(?=[^@]{1,64}@)(?=.{6,254}\Z)[A-Za-z0-9_%+][A-Za-z0-9_%+-]*(?:\.[A-Za-z0-9_%+-]+)*"
                   r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}")
# An ACME directory URL: https, a host, an optional port and a plain path.
ACME_URL = re.compile(r"https://[A-Za-z0-9.-]{1,253}(?::[0-9]{1,5})?(?:/[A-Za-z0-9._~/-]*)?")


def domains(value, what: str = "domains") -> tuple[str, ...]:
    """A non-empty list of distinct DNS names (at most 100: one certificate names them all)."""
    if not isinstance(value, list) or not value:
        raise StackError(f"{what} {_shown(value)} is not valid: a list of DNS names, such as [\"example.com\"]")
    if len(value) > 100:
        raise StackError(f"{what} lists {len(value)} names: at most 100 (one certificate holds them all)")
    names = tuple(text(name, DOMAIN, f"{what} entry", "a lowercase DNS name such as www.example.com "
                                                     "(no wildcard, no trailing dot, no scheme or port)")
                  for name in value)
    if len(set(names)) != len(names):
        raise StackError(f"{what} {_shown(value)} names a domain twice")
    return names


def email(value, what: str) -> str:
    return text(value, EMAIL, what, "an e-mail address such as ops@example.com (not starting with '-' or '.')")


def acme_url(value, what: str) -> str:
    return text(value, ACME_URL, what, "an https:// ACME directory URL, or \"production\" or \"staging\" "
                                       "(Let's Encrypt's)")


def ip_address(value, what: str) -> str:
    import ipaddress

    try:
        if not isinstance(value, str):
            raise ValueError
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise StackError(f"{what} {_shown(value)} is not valid: an IP address such as 0.0.0.0 or 203.0.113.10") from None


def networks(value, what: str) -> tuple[str, ...]:
    """A list of IP addresses or networks (CIDR), as Nginx's set_real_ip_from takes them."""
    import ipaddress

    if not isinstance(value, list) or not value:
        raise StackError(f"{what} {_shown(value)} is not valid: a list of addresses or networks, such as [\"10.0.0.0/8\"]")
    found = []
    for entry in value:
        try:
            if not isinstance(entry, str):
                raise ValueError
            found.append(str(ipaddress.ip_network(entry, strict=False)))
        except ValueError:
            raise StackError(f"{what} entry {_shown(entry)} is not an IP address or network (such as 10.0.0.0/8)") from None
    return tuple(found)


def whole(value, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise StackError(f"{what} {_shown(value)} is not valid: a whole number from {low} to {high}")
    return value


def flag(value, what: str) -> bool:
    if not isinstance(value, bool):
        raise StackError(f"{what} {_shown(value)} is not valid: true or false")
    return value


# One field of a cron expression: numbers, ranges and steps, or `*` (names are not taken).
_CRON_FIELD = re.compile(r"(?:\*|[0-9]{1,2}(?:-[0-9]{1,2})?)(?:/[0-9]{1,2})?(?:,(?:\*|[0-9]{1,2}(?:-[0-9]{1,2})?)(?:/[0-9]{1,2})?)*")
_CRON_RANGES = ((0, 59, "minute"), (0, 23, "hour"), (1, 31, "day of month"), (1, 12, "month"), (0, 7, "day of week"))


def cron(value, what: str) -> str:
    """Five cron fields (minute hour day month weekday), each number within its range."""
    hint = 'five cron fields, minute hour day month weekday, such as "15 3 * * *"'
    if not isinstance(value, str):
        raise StackError(f"{what} {_shown(value)} is not valid: {hint}")
    fields = value.split()
    if len(fields) != 5 or " ".join(fields) != value:
        raise StackError(f"{what} {_shown(value)} is not valid: {hint}")
    for field, (low, high, name) in zip(fields, _CRON_RANGES):
        if _CRON_FIELD.fullmatch(field) is None:
            raise StackError(f"{what} {_shown(value)} is not valid: {hint}")
        for number in re.findall(r"(?<![/0-9])[0-9]+", field):
            if not low <= int(number) <= high:
                raise StackError(f"{what} {_shown(value)} is not valid: the {name} {number} is outside {low}-{high}")
        if re.search(r"/0+(?![0-9])", field):
            raise StackError(f"{what} {_shown(value)} is not valid: a step of 0 in the {name}")
    return value


# A restic repository: an absolute path on the host, sftp:[user@]host:/path, or
# s3:http(s)://host[:port]/bucket[/prefix]. Nothing that could be read as an option.
REPOSITORY = re.compile(
    r"(?:/[A-Za-z0-9_.@+-]+)+"
    r"|sftp:(?:[a-z_][a-z0-9_.-]{0,31}@)?[A-Za-z0-9][A-Za-z0-9.-]{0,252}:/(?:[A-Za-z0-9_.@+-]+/?)*"
    r"|s3:https?://[A-Za-z0-9][A-Za-z0-9.-]{0,252}(?::[0-9]{1,5})?/[a-z0-9][a-z0-9.-]{1,62}(?:/[A-Za-z0-9_.+-]+)*/?")


def repository(value, what: str = "repository") -> str:
    value = text(value, REPOSITORY, what, "an absolute path on the host, sftp:user@host:/path or "
                                          "s3:https://host/bucket/path")
    if "/../" in value + "/" or "/./" in value + "/":
        raise StackError(f"{what} {_shown(value)} is not valid: no '.' or '..' path segments")
    return value


# An apprise URL (schema://...): URL characters only; no space, quote, `$` (Compose would
# expand it) or backslash: it reaches a quoted value of the compose file.
NOTIFY_URL = re.compile(r"[a-z][a-z0-9+]{1,19}://[A-Za-z0-9._~:/?#\[\]@!&()*+,;=%-]+")


def notify_urls(value, what: str = "notify") -> tuple[str, ...]:
    urls = [value] if isinstance(value, str) else value
    if not isinstance(urls, list) or not urls:
        raise StackError(f"{what} must be an apprise URL or a list of them")
    return tuple(text(url, NOTIFY_URL, what, "an apprise URL such as json://hooks.example.com/backup "
                                            "or mailto://user:pass@example.com") for url in urls)


# [app]: the Django project the stack serves. Each value reaches the Dockerfile, the
# .dockerignore or an environment variable, so none may hold a space, a quote or a `$`.
# A folder of the repository, by its plain name.
FOLDER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
# A Python module, dotted (hello.settings.production), and a WSGI/ASGI target module:attribute.
MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
CALLABLE = re.compile(rf"{MODULE.pattern}:[A-Za-z_][A-Za-z0-9_]*")
PYTHON = re.compile(r"3\.(1[0-4])")
# An image reference: [registry[:port]/]name[/name...][:tag][@sha256:digest].
IMAGE = re.compile(r"(?:[A-Za-z0-9][A-Za-z0-9.-]*(?::[0-9]{1,5})?/)?[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
                   r"(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?"
                   r"(?:@sha256:[0-9a-f]{64})?")
# A relative path of plain names: requirements files, whatever folder holds them.
RELATIVE_PATH = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*(?:/[A-Za-z0-9_][A-Za-z0-9_.-]*)*")
REQUIREMENTS_NAME = re.compile(r"requirements[A-Za-z0-9_.-]*\.txt|Pipfile\.lock|uv\.lock")
DEBIAN_PACKAGE = re.compile(r"[a-z0-9][a-z0-9+.-]+")
# An environment variable the project reads, and a Django app label.
ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")
APP_LABEL = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def folder(value, what: str, reserved=()) -> str:
    checked = text(value, FOLDER, what, "one folder of the repository, by its plain name (letters, digits, '_', "
                                        "'.', '-'), such as hello")
    if checked in reserved or checked in (".", ".."):
        raise StackError(f"{what} {_shown(value)} is not valid: it is a folder of the stack's own "
                         f"({', '.join(sorted(reserved))}); name the project's folder")
    return checked


def module(value, what: str) -> str:
    return text(value, MODULE, what, "a dotted Python module name, such as mysite.settings")


def python_callable(value, what: str) -> str:
    return text(value, CALLABLE, what, "module:attribute, such as mysite.wsgi:application")


def python_version(value, what: str) -> str:
    return text(value, PYTHON, what, 'a Python version "3.N" from "3.10" to "3.14", as a string')


def image(value, what: str) -> str:
    return text(value, IMAGE, what, "an image reference such as python:3.12-slim or registry.example.com/python:3.12")


def requirements_file(value, what: str) -> str:
    hint = ("a path relative to the repository (no '..') to a requirements*.txt, a .txt in a requirements/ "
            "folder, a Pipfile.lock or a uv.lock")
    checked = text(value, RELATIVE_PATH, what, hint)
    parts = checked.split("/")
    if ".." in parts or "." in parts:
        raise StackError(f"{what} {_shown(value)} is not valid: {hint}")
    in_requirements_folder = len(parts) > 1 and parts[-2] == "requirements" and parts[-1].endswith(".txt")
    if REQUIREMENTS_NAME.fullmatch(parts[-1]) is None and not in_requirements_folder:
        raise StackError(f"{what} {_shown(value)} is not valid: {hint}")
    return checked


def debian_packages(value, what: str) -> tuple[str, ...]:
    hint = 'a list of Debian package names, such as ["build-essential", "libpq-dev"]'
    if not isinstance(value, list):
        raise StackError(f"{what} {_shown(value)} is not valid: {hint}")
    return tuple(text(name, DEBIAN_PACKAGE, f"{what} entry", "a Debian package name: lowercase letters, digits, "
                                                             "'+', '.', '-'") for name in value)
