"""The configuration a task runs with, resolved in one place.

- The tasks' defaults (DEFAULTS): a flag beats Invoke's config (`stack.timeout` in
  invoke.yaml, or INVOKE_STACK_TIMEOUT), which beats the value here.
- Where the stack lives here: the compose project and HTTP port come from Compose's own
  variables, read the way Compose reads them (the environment first, then `.env` beside the
  compose file), falling back to config/stack.toml. So `inv` and `docker compose` always
  agree, under `pipenv run` (which loads `.env` itself) or not.
- On a host: the host's entry in config/stack.toml, falling back to the project's values.
"""
from __future__ import annotations

import os
from pathlib import Path

from . import values
from .stack import Host, Stack

DEFAULTS = {
    "timeout": 180,        # seconds to wait for the stack to become healthy
    "keep_releases": 5,    # releases kept on a host after a deploy
    "keep_backups": 7,     # backups kept per volume and database by archive.prune
    "tail": 200,           # log lines shown per service
}
COMPOSE_VARIABLES = ("COMPOSE_PROJECT_NAME", "HTTP_PORT")
DOTENV = ".env"


def option(config, key: str, given=None):
    """GIVEN when the flag was given, else Invoke's `stack.KEY`, else DEFAULTS[KEY]."""
    kind = type(DEFAULTS[key])
    if given is not None:
        return kind(given)
    section = config.get("stack") or {}
    return kind(section.get(key, DEFAULTS[key]))


def compose_variables(root: Path, environ=None) -> dict[str, str]:
    """Compose's variables for the compose file in ROOT: `.env` there, each value overridden
    by the environment (Compose's precedence)."""
    environ = os.environ if environ is None else environ
    values: dict[str, str] = {}
    dotenv = root / DOTENV
    if dotenv.is_file():
        from dotenv import dotenv_values  # the parser Compose's format follows; only needed here

        values = {k: v for k, v in dotenv_values(dotenv).items() if v is not None}
    values.update({k: v for k, v in environ.items() if k in COMPOSE_VARIABLES})
    return values


def local_place(stack: Stack, root: Path, overrides=None, environ=None) -> tuple[str, int]:
    """(compose project, HTTP port) of the stack in ROOT on this machine."""
    variables = {**compose_variables(root, environ), **(overrides or {})}
    origin = f"(from the environment or {DOTENV})"
    project = variables.get("COMPOSE_PROJECT_NAME") or stack.project
    port = variables.get("HTTP_PORT") or stack.http_port
    return (values.project(project, f"COMPOSE_PROJECT_NAME {origin}"),
            values.port(port, f"HTTP_PORT {origin}", from_text=True))


def host_place(stack: Stack, host: Host) -> tuple[str, int]:
    """(compose project, HTTP port) of the stack on HOST."""
    port = host.site.http_port if host.site else host.http_port or stack.http_port
    return host.project or stack.project, port
