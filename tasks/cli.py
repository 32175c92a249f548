"""What every task shares: the `stack_task` decorator and tables.

`stack_task` is Invoke's @task plus what each stack task needs, written once:
- `--dry` (or Invoke's global `inv --dry TASK`) and, unless `hosts=None`, `--host`;
- the short flags of SHORT_FLAGS, the same in every task, and no other (`-h` stays help);
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
from .execution.cluster import ClusterRun
from .execution.runner import Runner, dry_run
from .execution.ssh import connect, each_host
from .execution.targets import HostTarget, LocalTarget
from .source import settings
from .source.stack import load

CLUSTER_HELP = "The cluster (a name from [clusters] in config/stack.toml)."
OR_CLUSTER_HELP = "Run on this cluster instead: a name from [clusters] in config/stack.toml (default: none)."
HOST_HELP = "Run on these hosts over SSH: a name or group from config/stack.toml, or a comma list (default: here)."
ONE_HOST_HELP = "The host (a name from config/stack.toml)."
DRY_HELP = "Print what would be run and written, and change nothing (default: off)."
# The only short flags, each naming one long flag in every task; `-h` is never one (it is
# help). -H as Fabric's hosts, -n as make's and rsync's dry run, -y as apt's yes; -t, -s, -f
# and -a as docker's timeout, service, follow and all (-f takes Invoke's --config after a
# task's name, where no one writes it).
SHORT_FLAGS = {"host": "H", "cluster": "C", "dry": "n", "yes": "y", "timeout": "t", "service": "s",
               "follow": "f", "all": "a"}
# Flags whose default lives in source/settings.py, and the settings key each one reads.
CONFIGURED = {"timeout": "timeout", "tail": "tail"}
ARG = inspect.Parameter.POSITIONAL_OR_KEYWORD


def print_table(rows) -> None:
    """Rows of cells as aligned columns, the first row as the header."""
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())


class StackTask(Task):
    """A Task whose flags defaulting to None still parse as their settings' type (Invoke
    infers a flag's type from its default), whose short flags are SHORT_FLAGS' and no
    others (Invoke would take each flag's first free letter), and whose help survives
    reading its flags (Invoke's own empties it)."""

    kinds: dict = {}

    def arg_opts(self, name, default, taken_names):
        opts = super().arg_opts(name, default, taken_names)
        if name in self.kinds:
            opts["kind"] = self.kinds[name]
        long_name = opts["names"][0]
        opts["names"] = [long_name, *([SHORT_FLAGS[long_name]] if long_name in SHORT_FLAGS else [])]
        return opts

    def get_arguments(self, ignore_unknown_help=None):
        kept = dict(self.help)
        try:
            return super().get_arguments(ignore_unknown_help)
        finally:
            self.help = kept


def _task_signature(body_params, hosts) -> inspect.Signature:
    """(c, [host], the body's parameters without r, [host], dry): `--host` comes first
    when it is required, so that `inv deploy prod` works too."""
    params = [p.replace(kind=ARG) for p in body_params]
    required = [p for p in params if p.default is inspect.Parameter.empty]
    optional = [p for p in params if p.default is not inspect.Parameter.empty]
    ordered = [inspect.Parameter("c", ARG)]
    if hosts in ("one", "cluster"):
        ordered.append(inspect.Parameter("host" if hosts == "one" else "cluster", ARG))
    elif hosts == "one-or-cluster":
        ordered.append(inspect.Parameter("host", ARG, default=None))
    ordered += required + optional
    if hosts in ("many", "many-or-cluster"):
        ordered.append(inspect.Parameter("host", ARG, default=None))
    if hosts in ("one-or-cluster", "many-or-cluster"):
        ordered.append(inspect.Parameter("cluster", ARG, default=None))
    ordered.append(inspect.Parameter("dry", ARG, default=False))
    return inspect.Signature(ordered)


def _help_texts(given, names, keys, hosts) -> dict:
    texts = dict(given or {})
    if "dry" in texts:
        raise TypeError("--dry has one help text in every task (DRY_HELP): drop the task's own")
    for name, key in keys.items():
        if name in names and name in texts:
            texts[name] = f"{texts[name]} (default: {settings.DEFAULTS[key]}; config stack.{key})"
    if hosts == "cluster":
        texts.setdefault("cluster", CLUSTER_HELP)
    elif hosts in ("one-or-cluster", "many-or-cluster"):
        texts.setdefault("cluster", OR_CLUSTER_HELP)
    if hosts == "one-or-cluster":
        texts.setdefault("host", ONE_HOST_HELP)
    elif hosts in ("many", "many-or-cluster"):
        texts.setdefault("host", HOST_HELP)
    elif hosts == "one":
        texts.setdefault("host", ONE_HOST_HELP)
    texts.setdefault("dry", DRY_HELP)
    return texts


def _refuse_help_as_value(signature, values) -> None:
    """Invoke reads `inv TASK -h` as help unless TASK still wants a positional argument,
    which then gets "-h" as its value: refused, so that a task never runs on it."""
    for param in signature.parameters.values():
        if param.default is inspect.Parameter.empty and values.get(param.name) in ("-h", "--help"):
            raise TaskError(f"{values[param.name]} was read as the {param.name.upper()} argument: for the help, "
                            "put --help before the task's name (inv --help TASK)")


def _run_on_cluster(func, stack, name, dry, values):
    """FUNC with a ClusterRun: a Runner on each of the cluster's nodes, every one connected
    first (an unreachable node is one line before anything changes)."""
    cluster = stack.cluster(name)
    connections = {}
    try:
        for node in cluster.nodes:
            connections[node] = connect(stack.hosts[node], dry=dry)
        nodes = {node: Runner(HostTarget(conn, stack.hosts[node], stack), dry) for node, conn in connections.items()}
        return func(ClusterRun(cluster, nodes), **values)
    finally:
        for conn in connections.values():
            conn.close()


def _run(func, c, host, hosts, dry, values):
    """FUNC with a Runner here, or on each host named by HOST (a cluster's name for
    cluster tasks)."""
    stack = load()
    if hosts == "cluster":
        return _run_on_cluster(func, stack, host, dry, values)
    if hosts in ("one-or-cluster", "many-or-cluster"):
        host, cluster = host
        if host and cluster or (hosts == "one-or-cluster" and not (host or cluster)):
            raise TaskError("name a host (--host NAME) or a cluster (--cluster NAME), one of the two")
        if cluster:
            return _run_on_cluster(func, stack, cluster, dry, values)
        hosts = "one" if hosts == "one-or-cluster" else "many"
    if not host and hosts != "one":
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

    return on(chosen[0]) if len(chosen) == 1 else each_host(chosen, on)


def _place_flags(values: dict, hosts) -> object:
    """--host, --cluster, or both as a pair (the "-or-cluster" kinds), taken out of VALUES."""
    if hosts == "cluster":
        return values.pop("cluster", None)
    if hosts and hosts.endswith("-or-cluster"):
        return values.pop("host", None), values.pop("cluster", None)
    return values.pop("host", None)


def stack_task(help=None, *, hosts="many", configured=None, **task_kwargs):
    """Decorate FUNC(r, ...) as the task FUNC(c, ..., host, dry).

    HOSTS: "many" gives `--host` (default here; a group or comma list runs on each host in
    parallel), "one" a required `--host` naming a single host, "cluster" a required
    `--cluster` (FUNC gets a ClusterRun, a Runner per node), "one-or-cluster" and
    "many-or-cluster" either, None no `--host` (tasks that edit this checkout). CONFIGURED maps more flags to the settings key of their default."""
    keys = {**CONFIGURED, **(configured or {})}

    def decorate(func):
        body_params = list(inspect.signature(func).parameters.values())[1:]  # without r
        names = {p.name for p in body_params}
        for param in body_params:
            if param.name in keys and param.default is not None:
                raise TypeError(f"{func.__name__}: --{param.name} takes its default from the settings; default it to None")
        signature = _task_signature(body_params, hosts)

        @functools.wraps(func)
        def wrapper(c, *args, **kwargs):
            values = signature.bind(c, *args, **kwargs)
            values.apply_defaults()
            values = dict(values.arguments)
            del values["c"]
            _refuse_help_as_value(signature, values)
            host = _place_flags(values, hosts)
            dry = dry_run(c, values.pop("dry"))
            for name in names & keys.keys():
                values[name] = settings.option(c.config, keys[name], values[name])
            try:
                return _run(func, c, host, hosts, dry, values)
            except StackError as exc:
                raise TaskError(str(exc)) from None

        wrapper.__signature__ = signature
        made = task(help=_help_texts(help, names, keys, hosts), klass=StackTask, **task_kwargs)(wrapper)
        made.kinds = {name: type(settings.DEFAULTS[keys[name]]) for name in names & keys.keys()}
        return made

    return decorate


def renamed(made, old: str, new: str) -> Task:
    """MADE under OLD, the name it had before NEW, for one release: the same flags, a summary
    that names NEW, and a reminder on standard error when it runs."""

    @functools.wraps(made.body)
    def body(c, *args, **kwargs):
        print(f"note: `inv {old}` is now `inv {new}`; the old name goes in the next release", file=sys.stderr)
        return made.body(c, *args, **kwargs)

    body.__doc__ = f"Run {new} (old name; removed next release).\n\n{inspect.getdoc(made)}"
    task_ = StackTask(body, name=old.rsplit(".", 1)[-1], positional=made.positional, optional=made.optional,
                      default=made.is_default, help=dict(made.help), iterable=made.iterable)
    task_.kinds = made.kinds
    return task_
