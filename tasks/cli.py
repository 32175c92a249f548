"""What every task shares: the `stack_task` decorator, confirmation, tables.

`stack_task` is Invoke's @task plus what each stack task needs, written once:
- `--dry` (or Invoke's global `inv --dry TASK`) and, unless `hosts=None`, `--host`;
- a Runner made from the source of truth for the target: here, or each named host (in
  parallel, with a result line per host), handed to the task body instead of `c`;
- flags left at None filled from Invoke's config or the defaults (source/settings.py);
- a StackError (bad config or input) turned into one line and exit status 1.
"""
from __future__ import annotations

import functools
import inspect
import sys

from invoke import Task, task

from .errors import StackError, TaskError
from .execution.runner import Runner
from .execution.ssh import connect, each_host
from .execution.targets import HostTarget, LocalTarget
from .source import settings
from .source.stack import load

HOST_HELP = "Run on these hosts over SSH: a name or group from config/stack.toml, or a comma list (default: here)."
ONE_HOST_HELP = "The host (a name from config/stack.toml)."
DRY_HELP = "Print the commands instead of running them."
# Flags whose default lives in source/settings.py, and the config key each one reads.
CONFIGURED = {"timeout": "timeout", "tail": "tail"}


def interactive() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty()


def confirm(yes: bool, question: str, consequence: str) -> None:
    """Go on with --yes; otherwise ask on a terminal, and refuse when there is none."""
    if yes:
        return
    if not interactive():
        raise TaskError(f"{consequence}: add --yes to confirm")
    if input(f"{question} Type 'yes': ").strip() != "yes":
        raise TaskError("nothing changed")


def print_table(rows) -> None:
    """Rows of cells as aligned columns, the first row as the header."""
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())


class StackTask(Task):
    """A Task whose flags defaulting to None still parse as their settings' type (Invoke
    infers a flag's type from its default)."""

    kinds: dict = {}

    def arg_opts(self, name, default, taken_names):
        opts = super().arg_opts(name, default, taken_names)
        if name in self.kinds:
            opts["kind"] = self.kinds[name]
        return opts


def stack_task(help=None, *, hosts="many", configured=None, **task_kwargs):
    """Decorate FUNC(r, ...) as a task FUNC(c, ..., [host], dry).

    HOSTS: "many" gives `--host` (default here; a group or comma list runs on each host in
    parallel), "one" a required `--host` naming a single host, None no `--host` (tasks that
    edit this checkout). CONFIGURED maps flags to the settings key of their default
    (timeout and tail by default)."""
    keys = {**CONFIGURED, **(configured or {})}

    def decorate(func):
        signature = inspect.signature(func)
        params = list(signature.parameters.values())[1:]  # without r
        for param in params:
            if param.name in keys and param.default is not None:
                raise TypeError(f"{func.__name__}: --{param.name} takes its default from the settings; default it to None")
        extra = []
        if hosts == "one":
            extra.append(inspect.Parameter("host", inspect.Parameter.POSITIONAL_OR_KEYWORD))
        elif hosts == "many":
            extra.append(inspect.Parameter("host", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None))
        extra.append(inspect.Parameter("dry", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=False))
        required = [p for p in params if p.default is inspect.Parameter.empty]
        optional = [p for p in params if p.default is not inspect.Parameter.empty]
        c_param = inspect.Parameter("c", inspect.Parameter.POSITIONAL_OR_KEYWORD)
        if hosts == "one":
            ordered = [c_param, extra[0], *required, *optional, extra[-1]]
        else:
            ordered = [c_param, *required, *optional, *extra]
        ordered = [p.replace(kind=inspect.Parameter.POSITIONAL_OR_KEYWORD) for p in ordered]

        @functools.wraps(func)
        def wrapper(c, *args, **kwargs):
            bound = inspect.Signature(ordered).bind(c, *args, **kwargs)
            bound.apply_defaults()
            values = dict(bound.arguments)
            values.pop("c")
            host = values.pop("host", None)
            dry = bool(values.pop("dry") or c.config.run.dry)
            for name, key in keys.items():
                if name in values:
                    values[name] = settings.option(c.config, key, values[name])
            try:
                stack = load()
                if not host:
                    return func(Runner(LocalTarget(c, stack), dry), **values)
                chosen = stack.resolve_hosts(host)
                if hosts == "one" and len(chosen) != 1:
                    raise TaskError("name a single host: this task runs on one host at a time")

                def on(one_host):
                    conn = connect(one_host, dry=dry)
                    try:
                        return func(Runner(HostTarget(conn, one_host, stack), dry), **values)
                    finally:
                        conn.close()

                if len(chosen) == 1:
                    return on(chosen[0])
                return each_host(chosen, on)
            except StackError as exc:
                raise TaskError(str(exc)) from None

        wrapper.__signature__ = inspect.Signature(ordered)
        texts = dict(help or {})
        for name, key in keys.items():
            if name in signature.parameters and name in texts:
                texts[name] = f"{texts[name]} (default: {settings.DEFAULTS[key]}; config stack.{key})"
        if hosts == "many":
            texts.setdefault("host", HOST_HELP)
        elif hosts == "one":
            texts.setdefault("host", ONE_HOST_HELP)
        texts.setdefault("dry", DRY_HELP)
        made = task(help=texts, klass=StackTask, **task_kwargs)(wrapper)
        made.kinds = {name: type(settings.DEFAULTS[key]) for name, key in keys.items()
                      if name in signature.parameters}
        return made

    return decorate
