"""[[schedules]] in config/stack.toml: management commands run on a cron schedule.

When there is one, the stack has one more process, `scheduler` (a singleton: one container,
on one node of a cluster), running config/app/djangostack/scheduler.py from the app image;
it runs each schedule's `manage.py COMMAND` when due, never two runs of one schedule at
once, and keeps what happened in its state volume for `inv schedule.status`.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass

from ..errors import StackError
from . import values

SCHEDULE_KEYS = {"name", "cron", "command", "timeout"}
MAX_NAME_LENGTH = 30
DEFAULT_TIMEOUT = 3600
MAX_TIMEOUT = 86400
MAX_ARGUMENTS = 50
# The first word: a Django management command's name (its module's name).
COMMAND_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
# Each argument after it: option or value, in URL-safe characters, nothing a shell, Compose
# (`$`) or a YAML/JSON value would read otherwise (no space, quote, `$`, backslash or control).
ARGUMENT = re.compile(r"[A-Za-z0-9_@%+=:,./-]{1,200}")
# Options that would run another project's code than the release's settings say.
REFUSED_OPTIONS = ("--settings", "--pythonpath")

# The scheduler process: its program, in the venv of its own the Dockerfile builds when
# there are schedules (croniter, apprise), not the app's (the project pins what it likes).
SCHEDULER = "scheduler"
SCHEDULER_COMMAND = ("/app/scheduler/bin/python", "/app/stack/djangostack/scheduler.py")
SCHEDULER_STATE = "/var/lib/stack-scheduler"
SCHEDULER_VOLUME = "scheduler_state"
STATUS_FILE = f"{SCHEDULER_STATE}/status.json"
# What the longest run may take to end after a stop, past its timeout; the engine's cap.
STOP_MARGIN = 10
MAX_GRACE = 3600


@dataclass(frozen=True)
class Schedule:
    name: str
    cron: str                      # five fields, the host's timezone
    command: tuple[str, ...]       # manage.py arguments
    timeout: int = DEFAULT_TIMEOUT  # seconds; a run still going then is killed (a failure)

    def as_json(self) -> dict:
        return {"name": self.name, "cron": self.cron, "command": list(self.command), "timeout": self.timeout}


from .processes import Process


def _name(value, taken) -> str:
    shown = repr(value)
    values.text(value, values.DATABASE, "[[schedules]] name", "lowercase letters, digits and underscores, starting "
                                                             "with a letter (for example clearsessions)")
    if len(value) > MAX_NAME_LENGTH:
        raise StackError(f"[[schedules]] name {shown} is too long ({len(value)} characters; at most {MAX_NAME_LENGTH})")
    if value in taken:
        raise StackError(f"[[schedules]] name {shown} is used twice: each schedule needs a name of its own")
    return value


def _command(value, where: str) -> tuple[str, ...]:
    hint = 'a list of manage.py arguments, such as ["clearsessions"] or ["check", "--deploy"]'
    if not isinstance(value, list) or not value or len(value) > MAX_ARGUMENTS:
        raise StackError(f"{where} command {value!r} is not valid: {hint} (1 to {MAX_ARGUMENTS} strings)")
    first, *rest = value
    values.text(first, COMMAND_NAME, f"{where} command", "it starts with a management command's name "
                                                         "(lowercase letters, digits, '_'), such as clearsessions")
    for argument in rest:
        values.text(argument, ARGUMENT, f"{where} command argument",
                    "letters, digits and _@%+=:,./- only (no space, quote or $)")
        if argument.split("=", 1)[0] in REFUSED_OPTIONS:
            raise StackError(f"{where} command argument {argument!r} is not allowed: the stack sets the settings "
                             f"and the code a schedule runs (the release's)")
    return tuple(value)


def parse_schedules(entries) -> tuple[Schedule, ...]:
    """[[schedules]]: each entry's keys and values checked; a refusal is one line."""
    if not isinstance(entries, list):
        raise StackError(f"schedules {entries!r} is not valid: [[schedules]] tables, each with name, cron and command")
    schedules: list[Schedule] = []
    for index, entry in enumerate(entries):
        values.table(entry, f"[[schedules]] entry {index + 1}", "a table with name, cron and command")
        for key in ("name", "cron", "command"):
            if key not in entry:
                raise StackError(f"[[schedules]] entry {index + 1} needs {key}")
        name = _name(entry["name"], {s.name for s in schedules})
        where = f"[[schedules]] {name}"
        unknown = sorted(set(entry) - SCHEDULE_KEYS)
        if unknown:
            raise StackError(f"{where}: unknown setting(s) {', '.join(map(repr, unknown))} "
                             f"(known: {', '.join(sorted(SCHEDULE_KEYS))})")
        schedules.append(Schedule(
            name=name,
            cron=values.cron(entry["cron"], f"{where} cron"),
            command=_command(entry["command"], where),
            timeout=values.whole(entry.get("timeout", DEFAULT_TIMEOUT), f"{where} timeout", 1, MAX_TIMEOUT)))
    return tuple(schedules)


def schedules_variable(schedules) -> str:
    """STACK_SCHEDULES: what the scheduler reads, as compact JSON."""
    return json.dumps([s.as_json() for s in schedules], separators=(",", ":"))


def scheduler_process(schedules) -> Process:
    """The process that runs SCHEDULES: one at most (a singleton: no schedule fires twice),
    healthy while it touches its heartbeat file, given the longest run's time to end."""
    longest = max(s.timeout for s in schedules)
    return Process(name=SCHEDULER, command=SCHEDULER_COMMAND, replicas=1, singleton=True, stop_signal="SIGTERM",
                   stop_grace_period=min(longest + STOP_MARGIN, MAX_GRACE), health="heartbeat", services=None,
                   mounts=(f"{SCHEDULER_VOLUME}:{SCHEDULER_STATE}", "/etc/localtime:/etc/localtime:ro"))
