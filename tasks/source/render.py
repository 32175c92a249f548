"""Rendering the generated files from the source of truth through the Jinja2 templates.

`rendered(stack)` is pure: it returns {path: text} and writes nothing. The tasks compare it
with the tree (`inv render --check`) or write it (`inv render`, `inv db.add`).
"""
from __future__ import annotations

import secrets
from pathlib import Path

from .stack import ROOT, Stack

TEMPLATES = ROOT / "config" / "templates"
COMPOSE_FILE = Path("docker-compose.yml")
NGINX_CONF = Path("config/nginx/default.conf")
DJANGO_ENV = Path("config/django.env")
# What the examples show where the real files hold a generated secret.
PLACEHOLDER = "<generated-by-inv>"


def _environment():
    import jinja2  # imported on use: tasks that render nothing start faster without it

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )


def _render(env, template: str, **values) -> str:
    return env.get_template(template).render(**values)


def _django_env(env, stack: Stack, secret_key: str) -> str:
    return _render(env, "django.env.j2", secret_key=secret_key, http_port=stack.http_port)


def _database_env(env, db, password: str) -> str:
    return _render(env, "database.env.j2", name=db.name, password=password,
                   password_variable=db.password_variable)


def rendered(stack: Stack) -> dict[Path, str]:
    """Every committed generated file, by path relative to the project root."""
    env = _environment()
    values = {
        "project": stack.project,
        "http_port": stack.http_port,
        "client_max_body_size": stack.client_max_body_size,
        "databases": stack.databases,
    }
    files = {
        COMPOSE_FILE: _render(env, "docker-compose.yml.j2", **values),
        NGINX_CONF: _render(env, "nginx.conf.j2", **values),
        Path(f"{DJANGO_ENV}.example"): _django_env(env, stack, PLACEHOLDER),
    }
    for db in stack.databases:
        files[Path(f"{db.env_file}.example")] = _database_env(env, db, PLACEHOLDER)
    return files


def drift(stack: Stack, root: Path = ROOT) -> list[Path]:
    """The generated files whose content in the tree differs from a fresh rendering."""
    stale = []
    for path, text in rendered(stack).items():
        try:
            current = (root / path).read_text(encoding="utf-8")
        except FileNotFoundError:
            current = None
        if current != text:
            stale.append(path)
    return stale


def stale_examples(root: Path, known: set[Path]) -> list[Path]:
    """Database env examples left behind by a database no longer in the stack."""
    return sorted(p.relative_to(root) for p in (root / "config/db").glob("*.env.example")
                  if p.relative_to(root) not in known)


def secret_files(stack: Stack, token: str | None = None) -> dict[Path, str]:
    """The git-ignored env files, each with a freshly generated secret; with TOKEN, with
    TOKEN where the secret goes instead, for a host to fill in itself."""
    env = _environment()

    def secret(nbytes: int) -> str:
        return token if token is not None else secrets.token_urlsafe(nbytes)

    files = {DJANGO_ENV: _django_env(env, stack, secret(50))}
    for db in stack.databases:
        files[Path(db.env_file)] = _database_env(env, db, secret(32))
    return files


def env_keys(text: str) -> set[str]:
    """The variable names an env file's TEXT sets, as Compose's env_file reading sees them."""
    import io

    from dotenv import dotenv_values

    return set(dotenv_values(stream=io.StringIO(text)))
