"""[[processes]] in config/stack.toml: more processes from the app image, each with its own
command (a Celery worker, beat, a long-running management command), replica count, stop
signal, grace period and health test.

Each one becomes a compose service (and a Swarm service) named after it, running
`python -m djangostack.run COMMAND...` so that it gets the app's conventional variables.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import StackError
from . import values

KEYS = {"name", "command", "replicas", "singleton", "stop_signal", "stop_grace_period", "health", "services"}
MAX_REPLICAS = 20
SIGNALS = ("SIGTERM", "SIGINT", "SIGQUIT", "SIGHUP", "SIGUSR1", "SIGUSR2")
HEALTHS = ("celery", "heartbeat")
# The file a process touches to say it is alive (health = "heartbeat"), and how old it may be.
HEARTBEAT_FILE = "/tmp/stack-heartbeat"
HEARTBEAT_SECONDS = 60
# A Celery worker's (health = "celery"): djangostack.run touches it at each of the worker's
# event heartbeats (every 2 s); 5 missed make a failed check.
CELERY_HEARTBEAT_FILE = "/tmp/stack-celery-heartbeat"
CELERY_HEARTBEAT_SECONDS = 10
# What every process runs in front of its command: the stack's variables, then exec.
RUN = ("python", "-m", "djangostack.run")
# An argument: printable, one line (a control character would only hide what runs).
ARGUMENT = re.compile(r"[^\x00-\x1f\x7f]*")


@dataclass(frozen=True)
class Process:
    name: str
    command: tuple[str, ...]
    replicas: int = 1
    singleton: bool = False
    stop_signal: str = "SIGTERM"
    stop_grace_period: int = 60
    health: str | tuple[str, ...] | None = None   # "celery", "heartbeat", ("CMD", ...) or None
    services: tuple[str, ...] | None = ()        # the [[services]] it reaches; None: all of them
    # More volumes than the app's (compose's short syntax, SOURCE:TARGET[:ro]): the stack's
    # own processes only (the scheduler's state), never from config/stack.toml.
    mounts: tuple[str, ...] = ()

    @property
    def argv(self) -> tuple[str, ...]:
        """What its containers run."""
        return (*RUN, *self.command)

    @property
    def health_test(self) -> tuple[str, ...] | None:
        """Its compose `healthcheck.test`, or None: running counts as healthy."""
        if self.health == "celery":
            # Touched by djangostack.run at the worker's heartbeats (environment, below).
            return fresh_file(CELERY_HEARTBEAT_FILE, CELERY_HEARTBEAT_SECONDS)
        if self.health == "heartbeat":
            return fresh_file(HEARTBEAT_FILE, HEARTBEAT_SECONDS)
        return self.health

    @property
    def environment(self) -> dict[str, str]:
        """Variables of its own (beside the app's)."""
        return {"STACK_CELERY_HEARTBEAT": CELERY_HEARTBEAT_FILE} if self.health == "celery" else {}


def fresh_file(path: str, seconds: int) -> tuple[str, ...]:
    """A health test: PATH was touched less than SECONDS ago. In sh, not Python: it runs every
    few seconds for as long as the process does, and costs little."""
    return ("CMD", "sh", "-c", f'm=$(stat -c %Y "$1") && [ $(( $(date +%s) - m )) -lt {seconds} ] || exit 1',
            "heartbeat", path)


def compose_text(value: str) -> str:
    """VALUE as Compose must read it to pass it on unchanged: `$` is interpolation there."""
    return value.replace("$", "$$")


def celery_worker(command, name: str = "") -> None:
    """Refuse health = "celery" for a COMMAND whose heartbeats djangostack.run cannot see: one
    that is not Celery's own program (`celery ...`, `python -m celery ...`: a wrapper in front
    of it runs it out of reach), or that turns the heartbeats off."""
    program = command[0].rsplit("/", 1)[-1]
    if not (program == "celery" or (program.startswith("python") and list(command[1:3]) == ["-m", "celery"])):
        raise StackError(f'[[processes]] {name}: health = "celery" needs Celery\'s own program first in command '
                         f'(celery ... or python -m celery ...), not {command[0]!r}; or give it a test of its own')
    if "--without-heartbeat" in command:
        raise StackError(f'[[processes]] {name}: health = "celery" reads the worker\'s heartbeats, which '
                         '--without-heartbeat turns off')


def celery_app(command, name: str = "") -> str:
    """The Celery app of COMMAND (its -A/--app), which health = "celery" pings."""
    for index, word in enumerate(command):
        if word in ("-A", "--app") and index + 1 < len(command):
            found = command[index + 1]
        elif word.startswith("--app="):
            found = word[len("--app="):]
        elif word.startswith("-A") and len(word) > 2:
            found = word[2:]
        else:
            continue
        return values.module(found, f"[[processes]] {name} command's Celery app")
    raise StackError(f'[[processes]] {name}: health = "celery" needs the Celery app in command (-A APP or --app APP)')


def parse_processes(entries, services, databases) -> tuple[Process, ...]:
    """[[processes]], each value checked; SERVICES and DATABASES (objects with a name) are the
    names a process may not take, and SERVICES those its `services` may list."""
    from .stack import MAX_NAME_LENGTH, RESERVED_NAMES  # stack.py imports this module

    if not isinstance(entries, list):
        raise StackError(f"processes {entries!r} is not valid: [[processes]] tables, each with name and command")
    service_names = tuple(s.name for s in services)
    taken = {db.name: "a database" for db in databases} | {name: "a service" for name in service_names}
    processes = []
    for index, entry in enumerate(entries):
        entry = values.table(entry, f"[[processes]] entry {index + 1}", 'a table with name = "..." and command = [...]')
        name = values.text(entry.get("name"), values.DATABASE, f"[[processes]] entry {index + 1} name",
                           "lowercase letters, digits and underscores, starting with a letter (such as worker)")
        where = f"[[processes]] {name}"
        if len(name) > MAX_NAME_LENGTH:
            raise StackError(f"{where}: the name is too long ({len(name)} characters; at most {MAX_NAME_LENGTH})")
        if name in RESERVED_NAMES:
            raise StackError(f"{where}: the name is reserved (it names a service of the stack or a built-in); pick another")
        if name in taken:
            raise StackError(f"{where}: the name is already {taken[name]}'s; pick another")
        taken[name] = "another process"
        unknown = sorted(set(entry) - KEYS)
        if unknown:
            raise StackError(f"{where}: unknown setting(s) {', '.join(map(repr, unknown))} "
                             f"(known: {', '.join(sorted(KEYS))})")
        processes.append(_parse_process(name, where, entry, service_names))
    return tuple(processes)


def _parse_process(name: str, where: str, entry: dict, service_names: tuple[str, ...]) -> Process:
    if "command" not in entry:
        raise StackError(f'{where} needs command, a list of strings such as ["celery", "-A", "mysite", "worker"]')
    command = _argv(entry["command"], f"{where} command")
    singleton = values.flag(entry.get("singleton", False), f"{where} singleton")
    replicas = values.whole(entry.get("replicas", 1), f"{where} replicas", 0, 1 if singleton else MAX_REPLICAS)
    health = entry.get("health")
    if isinstance(health, list):
        health = _argv(health, f"{where} health")
        if health[0] not in ("CMD", "CMD-SHELL") or len(health) < 2:
            raise StackError(f'{where} health {list(health)!r} is not valid: "celery", "heartbeat" or a test '
                             f'such as ["CMD", "test", "-e", "/tmp/ready"]')
    elif health is not None:
        if health not in HEALTHS:
            raise StackError(f'{where} health {health!r} is not valid: "celery", "heartbeat" or a test '
                             f'such as ["CMD", "test", "-e", "/tmp/ready"]')
        if health == "celery":
            celery_worker(command, name)
    reached = entry.get("services", list(service_names))
    if not isinstance(reached, list) or not all(isinstance(s, str) for s in reached):
        raise StackError(f"{where} services {reached!r} is not valid: a list of [[services]] names")
    for service in reached:
        if service not in service_names:
            raise StackError(f"{where} services: no service named {service!r} in [[services]] "
                             f"(known: {', '.join(service_names) or 'none'})")
    return Process(
        name=name,
        command=command,
        replicas=replicas,
        singleton=singleton,
        stop_signal=values.choice(entry.get("stop_signal", "SIGTERM"), SIGNALS, f"{where} stop_signal"),
        stop_grace_period=values.whole(entry.get("stop_grace_period", 60), f"{where} stop_grace_period", 1, 3600),
        health=health,
        services=tuple(dict.fromkeys(reached)),
    )


def _argv(value, what: str) -> tuple[str, ...]:
    hint = 'a non-empty list of strings, one per argument, such as ["celery", "-A", "mysite", "worker"]'
    if not isinstance(value, list) or not value or not all(isinstance(word, str) for word in value):
        raise StackError(f"{what} {value!r} is not valid: {hint}")
    if not value[0]:
        raise StackError(f"{what} {value!r} is not valid: the program (first item) cannot be empty")
    for word in value:
        values.text(word, ARGUMENT, f"{what} argument", "one line of printable characters")
    return tuple(value)


# What `inv scale` takes: NAME=COUNT, several separated by spaces or commas.
SCALE_WORD = re.compile(r"([a-z][a-z0-9_]*)=([0-9]{1,4})")


def scale_request(text) -> dict[str, int]:
    """{process: replicas} from `inv scale` words such as "worker=3 beat=0"."""
    words = [word for word in re.split(r"[\s,]+", text or "") if word]
    if not words:
        raise StackError("give NAME=COUNT, such as `inv scale worker=3` (several: `inv scale \"worker=3 beat=0\"`)")
    wanted: dict[str, int] = {}
    for word in words:
        matched = SCALE_WORD.fullmatch(word)
        if matched is None:
            raise StackError(f"{word!r} is not NAME=COUNT, such as worker=3")
        name, count = matched[1], int(matched[2])
        if name in wanted:
            raise StackError(f"{name} is given twice")
        wanted[name] = count
    return wanted


def with_replicas(text: str, wanted: dict[str, int]) -> str:
    """The stack file's TEXT with the replicas of each process of WANTED set, comments kept
    (the caller loads the result: a count out of range is refused there, in one line)."""
    import tomlkit  # edits keep the user's comments and layout; only needed here

    doc = tomlkit.parse(text)
    entries = doc.get("processes", [])
    names = [entry.get("name") for entry in entries]
    for name, count in wanted.items():
        if name not in names:
            raise StackError(f"no process named {name!r} in [[processes]] of config/stack.toml "
                             f"(known: {', '.join(map(str, names)) or 'none'})")
        entries[names.index(name)]["replicas"] = count
    return tomlkit.dumps(doc)
